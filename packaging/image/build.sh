#!/usr/bin/env bash
# Builds the flashable appliance image for one architecture, into the cache (never into the repo):
#   ${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}/appliance-image/<arch>/
#     netboot-appliance_<version>_<arch>.img       raw GPT disk (sparse): ESP (FAT) + ext4 root
#     netboot-appliance_<version>_<arch>.img.zst   the same, compressed
#     netboot-appliance_<version>_<arch>.img.bmap  for bmaptool copy (skips the holes)
#     SHA256SUMS, manifest.json, .complete
# The root is Debian 13 (trixie) minbase with systemd, the .deb of this tree installed and enabled, Debian's
# signed loaders in /srv/netboot/tftp, the serial console on, no password and SSH off. systemd-boot on the ESP
# starts the kernel. First-boot configuration comes from the ESP (files/esp-config, files/esp/README.txt).
# Usage: packaging/image/build.sh amd64|arm64 [--force]
# Reused while this script, its files, the .deb's contents and the loaders are unchanged. Needs root
# (chroot); no loop devices: the filesystems are made from folders (mkfs.ext4 -d, mkfs.vfat + mcopy).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ARCH=${1:-}
FORCE=${2:-}
CACHE=${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}
log() { printf '[image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$ARCH" in
amd64) EFI_NAME=BOOTX64.EFI BOOT_EFI=systemd-bootx64.efi CONSOLE=ttyS0 ROOT_TYPE=4f68bce3-e8cd-4db1-96e7-fbcaf984b709 ;;
arm64) EFI_NAME=BOOTAA64.EFI BOOT_EFI=systemd-bootaa64.efi CONSOLE=ttyAMA0 ROOT_TYPE=b921b045-1df0-41c3-af44-4c6f280d3fae ;;
*) echo "usage: $0 amd64|arm64 [--force]" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || die "needs root (chroot into the image's root)"
for tool in mmdebstrap mkfs.ext4 mkfs.vfat mcopy sfdisk zstd bmaptool jq; do
  command -v "$tool" >/dev/null || die "$tool missing (apt-get install mmdebstrap e2fsprogs dosfstools mtools fdisk zstd bmap-tools jq)"
done
VERSION=$(node -p "require('$REPO/package.json').version")
OUT="$CACHE/appliance-image/$ARCH"
NAME="netboot-appliance_${VERSION}_${ARCH}"
# Fixed partition UUIDs: the kernel command line and fstab name them (one such disk per machine).
ESP_UUID=6e657462-0000-4000-8000-0000000000e5
ROOT_UUID=6e657462-0000-4000-8000-0000000000${ARCH:0:1}f
ESP_MIB=96

mkdir -p "$CACHE/appliance-image"
exec {lock}>"$CACHE/appliance-image/.$ARCH.lock"
flock "$lock"
t0=$(date +%s)

# The .deb of this tree and the signed loaders (both return quickly when up to date).
work="$CACHE/appliance-image/.$ARCH.work"
rm -rf "$work"
mkdir -p "$work"
trap 'for m in dev/pts dev sys proc; do mountpoint -q "$work/root/$m" && umount -l "$work/root/$m"; done; rm -rf "$work"' EXIT
[ "$ARCH" = arm64 ] && bash "$REPO/qemu/binfmt-arm64.sh"
deb=$(bash "$REPO/packaging/deb.sh" "$work/deb" "$ARCH" | tail -1)
bash "$REPO/firmware/fetch.sh" "$CACHE/loaders" >&2
recipe=$({
  sha256sum "$0" "$HERE/base.sh"; find "$HERE/files" -type f | sort | xargs sha256sum
  dpkg-deb --contents "$deb" | awk '{print $3, $6}' # sizes and paths: the build date inside the .deb differs
  dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./control ./postinst ./postrm ./prerm | sha256sum
  sha256sum "$CACHE/loaders/manifest.json"
} | sed "s#$REPO/##" | sha256sum | cut -d' ' -f1)
if [ "$FORCE" != --force ] && [ -f "$OUT/.complete" ] && [ "$(cat "$OUT/.complete")" = "$recipe" ]; then
  log "$NAME: up to date ($OUT)"
  exit 0
fi

# 1. The base root (packaging/image/base.sh): cached by everything that shapes it.
# shellcheck source=base.sh
. "$HERE/base.sh"
image_base "$ARCH" "$work/mmdebstrap.log" || die "mmdebstrap failed"
base=$BASE_TAR
excludes=("${BASE_EXCLUDES[@]}")
root="$work/root"
mkdir -p "$root"
tar -C "$root" --numeric-owner -xpf "$base"

# 2. Into the root: the package, the loaders, the image's units and configuration.
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
in_root() { DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$root" "$@"; }
printf 'path-exclude=%s\n' "${excludes[@]}" >"$root/etc/dpkg/dpkg.cfg.d/netboot-image-excludes"
cp "$deb" "$root/tmp/netboot-appliance.deb"
in_root dpkg -i /tmp/netboot-appliance.deb >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; die "dpkg -i failed"; }
rm -f "$root/tmp/netboot-appliance.deb"
mkdir -p "$root/srv/netboot/tftp" "$root/srv/netboot/images"
for a in x64 aa64; do cp -r "$CACHE/loaders/$a" "$root/srv/netboot/tftp/"; done
cp "$CACHE/loaders/manifest.json" "$root/srv/netboot/tftp/"
chmod -R a+rX "$root/srv/netboot"

install -D -m 0755 "$HERE/files/esp-config" "$root/usr/lib/netboot-appliance-image/esp-config"
install -D -m 0644 "$HERE/files/netboot-esp-config.service" "$root/etc/systemd/system/netboot-esp-config.service"
install -D -m 0644 "$HERE/files/netboot-appliance-image.conf" \
  "$root/etc/systemd/system/netboot-appliance.service.d/image.conf"
install -D -m 0644 "$HERE/files/90-netboot-management.network" "$root/etc/systemd/network/90-netboot-management.network"
install -D -m 0644 "$HERE/files/50-root.conf" "$root/usr/lib/repart.d/50-root.conf"
install -D -m 0755 "$HERE/files/esp-kernel-hook" "$root/etc/kernel/postinst.d/zz-netboot-esp"
install -D -m 0755 "$HERE/files/esp-kernel-hook" "$root/etc/initramfs/post-update.d/zz-netboot-esp"
in_root systemctl enable netboot-esp-config.service netboot-appliance.service systemd-networkd.service >/dev/null 2>&1
# ssh starts only when the ESP has a key (esp-config); the wait for every NIC would hold boot up to 2 minutes
# on a site without management DHCP (the appliance waits for prov0 alone); firstboot would prompt on the console.
in_root systemctl disable ssh.service >/dev/null 2>&1 || true
for unit in ssh.socket systemd-networkd-wait-online.service systemd-firstboot.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_reap.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# systemd-ssh-generator looks for AF_VSOCK, which a machine without a hypervisor socket lacks; its "failed" line
# would be the one error on the console. SSH here is the ESP's choice (esp-config), not a generator's.
mkdir -p "$root/etc/systemd/system-generators"
ln -sf /dev/null "$root/etc/systemd/system-generators/systemd-ssh-generator"
# No password anywhere; host keys are made on the machine (esp-config), not shared by every flashed image.
in_root usermod -p '!' root
rm -f "$root"/etc/ssh/ssh_host_*
echo netboot-appliance >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 netboot-appliance\n' >"$root/etc/hosts"
: >"$root/etc/machine-id"
printf 'PARTUUID=%s / ext4 rw,errors=remount-ro,x-systemd.growfs 0 1\nPARTUUID=%s /boot/efi vfat umask=0077,shortname=winnt,nofail 0 2\n' \
  "$ROOT_UUID" "$ESP_UUID" >"$root/etc/fstab"
mkdir -p "$root/boot/efi"
# A small initramfs: the modules an appliance's root disk needs, not every driver of the kernel.
cat >"$root/etc/initramfs-tools/conf.d/netboot-image.conf" <<'EOF'
# Built in a chroot, so "dep" cannot see the target's disk controller: take the common ones by name instead.
MODULES=list
COMPRESS=zstd
EOF
printf '%s\n' ext4 vfat nls_cp437 nls_ascii virtio_pci virtio_blk virtio_scsi nvme ahci sd_mod usb_storage uas \
  xhci_pci ehci_pci mmc_block sdhci_pci sdhci_acpi sdhci_of_arasan crc32c_generic >"$root/etc/initramfs-tools/modules"
kver=$(basename "$(ls -d "$root"/usr/lib/modules/* | sort -V | tail -1)")
in_root update-initramfs -c -k "$kver" >"$work/initramfs.log" 2>&1 || in_root update-initramfs -u -k "$kver" >>"$work/initramfs.log" 2>&1 ||
  { cat "$work/initramfs.log" >&2; die "update-initramfs failed"; }
rm -f "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
for m in dev sys proc; do umount -l "$root/$m"; done

# 3. The ESP: systemd-boot, its entry, the kernel and initrd, and the operator's folder.
esp="$work/esp"
mkdir -p "$esp/EFI/BOOT" "$esp/loader/entries" "$esp/netboot"
cp "$root/usr/lib/systemd/boot/efi/$BOOT_EFI" "$esp/EFI/BOOT/$EFI_NAME"
printf 'default netboot-appliance.conf\ntimeout 0\nconsole-mode keep\n' >"$esp/loader/loader.conf"
printf 'title netboot-appliance %s\nlinux /vmlinuz\ninitrd /initrd.img\noptions root=PARTUUID=%s rw console=tty0 console=%s,115200 quiet\n' \
  "$VERSION" "$ROOT_UUID" "$CONSOLE" >"$esp/loader/entries/netboot-appliance.conf"
cp "$root/boot/vmlinuz-$kver" "$esp/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$esp/initrd.img"
cp "$HERE"/files/esp/* "$esp/netboot/"
sed -i 's/$/\r/' "$esp/netboot/README.txt" # FAT: readable in any laptop's editor
truncate -s "${ESP_MIB}M" "$work/esp.img"
mkfs.vfat -F 32 -n NETBOOT -i 6e657462 "$work/esp.img" >/dev/null
mcopy -s -i "$work/esp.img" "$esp"/* ::/

# 4. The root filesystem, sized to its content plus room for leases and logs (it grows on first boot).
used_mib=$(( $(du -sm "$root" | cut -f1) ))
root_mib=$(( used_mib + used_mib / 10 + 48 ))
truncate -s "${root_mib}M" "$work/root.img"
mkfs.ext4 -q -F -L netboot-root -E root_owner=0:0 -d "$root" "$work/root.img"

# 5. The disk: GPT, 1 MiB alignment, the two filesystems written into place (sparse, no loop device).
disk="$work/$NAME.img"
truncate -s "$(( 1 + ESP_MIB + root_mib + 1 ))M" "$disk"
sfdisk -q "$disk" <<EOF
label: gpt
first-lba: 2048
start=2048, size=$((ESP_MIB * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$ESP_UUID, name="ESP"
start=$(( (1 + ESP_MIB) * 2048 )), size=$((root_mib * 2048)), type=$ROOT_TYPE, uuid=$ROOT_UUID, name="netboot-root"
EOF
dd if="$work/esp.img" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.img" of="$disk" bs=1M seek=$((1 + ESP_MIB)) conv=notrunc,sparse status=none

# 6. What a person flashes: compressed, a block map, checksums, and a manifest with the sizes.
zstd -q -T0 -12 -f "$disk" -o "$disk.zst"
bmaptool -q create -o "$disk.bmap" "$disk"
(cd "$work" && sha256sum "$NAME.img" "$NAME.img.zst" "$NAME.img.bmap" >SHA256SUMS)
jq -n --arg name "$NAME" --arg arch "$ARCH" --arg version "$VERSION" --arg kernel "$kver" \
  --arg node "$(in_root node --version)" --arg recipe "$recipe" --argjson seconds $(( $(date +%s) - t0 )) \
  --argjson raw "$(stat -c %s "$disk")" --argjson allocated "$(( $(stat -c %b "$disk") * 512 ))" \
  --argjson zst "$(stat -c %s "$disk.zst")" --argjson esp $((ESP_MIB * 1048576)) --argjson rootfs $((root_mib * 1048576)) \
  --argjson rootUsed $((used_mib * 1048576)) --arg espUuid "$ESP_UUID" --arg rootUuid "$ROOT_UUID" \
  '{name: $name, arch: $arch, version: $version, suite: "trixie", kernel: $kernel, node: $node, recipe: $recipe,
    buildSeconds: $seconds, bytes: {raw: $raw, allocated: $allocated, zst: $zst, esp: $esp, rootfs: $rootfs,
    rootUsed: $rootUsed}, partitions: {esp: $espUuid, root: $rootUuid}}' >"$work/manifest.json"
mkdir -p "$OUT.new"
mv "$disk" "$disk.zst" "$disk.bmap" "$work/SHA256SUMS" "$work/manifest.json" "$OUT.new/"
echo "$recipe" >"$OUT.new/.complete"
rm -rf "$OUT"
mv "$OUT.new" "$OUT"
log "$NAME: built in $(( $(date +%s) - t0 )) s: raw $(( $(stat -c %s "$OUT/$NAME.img") / 1048576 )) MiB" \
  "($(( $(stat -c %b "$OUT/$NAME.img") * 512 / 1048576 )) MiB allocated), zst $(( $(stat -c %s "$OUT/$NAME.img.zst") / 1048576 )) MiB -> $OUT"
