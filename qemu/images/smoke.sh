#!/usr/bin/env bash
# Boots a cached image for real, without the appliance: QEMU direct kernel boot (-kernel/-initrd)
# in a throw-away network namespace with tgtd exporting a fresh sparse copy of root.img as LUN 1
# and dnsmasq handing out the address. Proves the initrd logs in and mounts the root from the LUN.
# Usage: qemu/images/smoke.sh <image> [marker|systemd] [--chap] [--quiet]
# Prints the kernel command line, a timestamped console and the boot time; exit 0 on the marker.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

name=${1:?usage: $0 <image> [marker|systemd] [--chap] [--quiet]}
mode=${2:-marker}
chap=no
quiet=no
for a in "${@:3}"; do
  case $a in
  --chap) chap=yes ;;
  --quiet) quiet=yes ;;
  esac
done
img="$CACHE/images/$name"
[ -f "$img/.complete" ] || die "image $name is not built (qemu/images/build.sh $name)"
[ "$(id -u)" = 0 ] || die "needs root (namespaces, tgtd)"
arch=$(jq -r .arch "$img/manifest.json")
flavour=$(jq -r .initramfs "$img/manifest.json")
uuid=$(cat "$img/rootfs.uuid")
ensure_packages tgt dnsmasq-base qemu-utils
[ "$arch" = arm64 ] && ensure_packages qemu-system-arm qemu-efi-aarch64
[ "$arch" = amd64 ] && ensure_packages qemu-system-x86

id=$(($$ % 10000))
ns="nbim-smoke-$id"
br="nbim-br$id"
tap="nbim-tap$id"
ctl=$((20000 + id))
ip_srv=192.0.2.1
tiqn="iqn.2024-01.lab.netboot:smoke-$id"
iiqn="iqn.2024-01.lab.netboot:initiator-$id"
mac=52:54:00:12:$(printf '%02x:%02x' $((id / 256)) $((id % 256)))
tmp=$(mktemp -d /tmp/nbim-smoke.XXXXXX)
chmod 755 "$tmp"
pids=()

cleanup() {
  local p n
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # tgtd ignores SIGTERM while it has targets: give it a moment, then SIGKILL (only our PIDs).
  for p in "${pids[@]}"; do
    for n in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.2
    done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$ns"
nsx() { ip netns exec "$ns" "$@"; }
nsx ip link set lo up
nsx ip link add "$br" type bridge
nsx ip addr add "$ip_srv/24" dev "$br"
nsx ip link set "$br" up
nsx ip tuntap add dev "$tap" mode tap
nsx ip link set "$tap" master "$br"
nsx ip link set "$tap" up

# Fresh sparse copy per boot: a sysrq power-off leaves the journal dirty.
cp --sparse=always "$img/root.img" "$tmp/root.img"

# Started with ip netns exec directly (not the nsx function) so that $! is the daemon itself.
ip netns exec "$ns" tgtd -f -C "$ctl" --iscsi portal="$ip_srv:3260" >"$tmp/tgtd.log" 2>&1 &
pids+=($!)
tgt() { nsx tgtadm -C "$ctl" --lld iscsi "$@"; }
for _ in $(seq 50); do tgt --op show --mode sys >/dev/null 2>&1 && break || sleep 0.1; done
tgt --op new --mode target --tid 1 -T "$tiqn"
tgt --op new --mode logicalunit --tid 1 --lun 1 -b "$tmp/root.img"
tgt --op bind --mode target --tid 1 -I ALL
user="" pass=""
if [ $chap = yes ]; then
  user=nbimuser pass=nbimsecret1234
  tgt --op new --mode account --user "$user" --password "$pass"
  tgt --op bind --mode account --tid 1 --user "$user"
fi

ip netns exec "$ns" dnsmasq -k --conf-file=/dev/null --port=0 --interface="$br" --bind-interfaces --no-ping \
  --dhcp-range=192.0.2.50,192.0.2.99,1h --dhcp-host="$mac,192.0.2.60,nbim-smoke" \
  --dhcp-leasefile="$tmp/leases" --pid-file="$tmp/dnsmasq.pid" --user=root --log-dhcp --log-facility=- \
  >"$tmp/dnsmasq.log" 2>&1 &
pids+=($!)

case $arch in
amd64) console=ttyS0,115200 ;;
arm64) console=ttyAMA0,115200 ;;
esac
case $flavour in
initramfs-tools)
  auth=""
  [ $chap = yes ] && auth="iscsi_username=$user iscsi_password=$pass "
  cmdline="console=$console ip=dhcp iscsi_initiator=$iiqn iscsi_target_name=$tiqn iscsi_target_ip=$ip_srv iscsi_target_port=3260 iscsi_target_group=1 ${auth}root=UUID=$uuid rw"
  ;;
dracut)
  auth=""
  [ $chap = yes ] && auth="$user:$pass@"
  cmdline="console=$console ip=dhcp rd.neednet=1 rd.iscsi.initiator=$iiqn netroot=iscsi:$auth$ip_srv::3260:1:$tiqn root=UUID=$uuid rw"
  ;;
*) die "unknown initramfs flavour $flavour" ;;
esac
cmdline="$cmdline panic=-1"
[ "$mode" = marker ] && cmdline="$cmdline init=/sbin/netboot-marker"
[ $quiet = yes ] && cmdline="$cmdline quiet"

accel=tcg
if [ "$arch" = amd64 ] && [ -w /dev/kvm ] && [ "${NETBOOT_SMOKE_KVM:-probe}" != no ]; then
  # /dev/kvm may be a PVM host that cannot run a guest: probe with a short run.
  if timeout 10 qemu-system-x86_64 -accel kvm -M q35 -m 128 -nodefaults -display none -no-reboot \
    -kernel "$img/vmlinuz" -append "console=ttyS0 panic=-1 init=/bin/false" -serial stdio 2>/dev/null |
    grep -q 'Linux version'; then accel=kvm; fi
fi
case $arch in
amd64) qemu=(qemu-system-x86_64 -accel "$accel" -M q35 -m 1024 -smp 2) ;;
arm64) qemu=(qemu-system-aarch64 -accel tcg -M virt -cpu cortex-a57 -m 1024 -smp 2) ;;
esac
qemu+=(-nodefaults -display none -no-reboot -serial stdio
  -kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "$cmdline"
  -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no"
  -device "virtio-net-pci,netdev=n0,mac=$mac,romfile=")

log "image $name ($arch, $flavour, $accel), mode $mode, chap $chap"
log "cmdline: $cmdline"
limit=${NETBOOT_SMOKE_TIMEOUT:-300}
start=${EPOCHREALTIME/./}
set +e
nsx timeout "$limit" "${qemu[@]}" </dev/null 2>"$tmp/qemu.err" | while IFS= read -r line; do
  el=$((${EPOCHREALTIME/./} - start))
  printf '%4d.%02d %s\n' $((el / 1000000)) $((el % 1000000 / 10000)) "${line%$'\r'}"
done | tee "$tmp/console.log" | { if [ "${NETBOOT_SMOKE_VERBOSE:-1}" = 1 ]; then cat; else cat >/dev/null; fi; }
rc=${PIPESTATUS[0]}
set -e
[ -s "$tmp/qemu.err" ] && cat "$tmp/qemu.err" >&2
sessions=$(grep -c 'iscsi\|login' "$tmp/tgtd.log" || true)
marker=$(grep -m1 'NETBOOT-E2E-OK' "$tmp/console.log" || true)
if [ -n "$marker" ]; then
  log "MARKER at $(awk '{print $1}' <<<"$marker") s (qemu rc $rc): $(sed 's/^ *[0-9.]* //' <<<"$marker")"
  grep -m1 -E 'Linux version' "$tmp/console.log" | awk '{print "  first kernel line at " $1 " s"}' >&2 || true
  grep -m1 -E 'Attached SCSI disk' "$tmp/console.log" | awk '{print "  iSCSI disk attached at " $1 " s"}' >&2 || true
  [ -n "${NETBOOT_SMOKE_KEEP_LOG:-}" ] && cp "$tmp/console.log" "$NETBOOT_SMOKE_KEEP_LOG"
  exit 0
fi
log "FAILED: no marker within $limit s (qemu rc $rc, tgtd log lines $sessions)"
[ -n "${NETBOOT_SMOKE_KEEP_LOG:-}" ] && cp "$tmp/console.log" "$NETBOOT_SMOKE_KEEP_LOG"
exit 1
