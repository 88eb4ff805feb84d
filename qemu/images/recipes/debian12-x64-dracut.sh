# shellcheck shell=bash
# hash-files: netboot-marker netboot-e2e-marker.service dracut
# Debian 12 x64, dracut + dracut-network: same root as debian12-x64-initramfs (same debootstrap
# base), with dracut replacing initramfs-tools; the initrd logs in with netroot=iscsi:.
IMAGE_ARCH=amd64
IMAGE_UUID=6e657462-6f6f-4000-8000-000000000002
IMAGE_IQN=iqn.2024-01.lab.netboot:debian12-x64-dracut

# Kernel command line that boots it (filled in by the lab):
#   console=ttyS0,115200 ip=dhcp rd.neednet=1 rd.iscsi.initiator=<iqn>
#   netroot=iscsi:[<user>:<password>@]<ip>::3260:1:<target iqn> root=UUID=<uuid> rw
#   [init=/sbin/netboot-marker]

build_image() {
  local root=$1 out=$2 started=$3 hash=$4
  ensure_packages debootstrap e2fsprogs jq
  bootstrap_rootfs "$IMAGE_ARCH" "$root" \
    linux-image-amd64,open-iscsi,initramfs-tools,systemd-sysv,udev,kmod,iproute2,isc-dhcp-client
  install_common_root_files "$root" "$IMAGE_UUID" "$IMAGE_IQN"
  mkdir -p "$root/etc/dracut.conf.d"
  install -m 0644 "$IMAGES_DIR/files/dracut/netboot.conf" "$root/etc/dracut.conf.d/netboot.conf"
  chroot_prepare "$root"
  # procps: network-legacy requires pgrep, and without network-legacy dracut picks systemd-networkd
  # and drops the network and iscsi modules.
  log "apt-get install dracut dracut-network procps (replaces initramfs-tools; builds the initrd)"
  in_chroot "$root" apt-get update -q >/dev/null
  in_chroot "$root" apt-get install -y -q --no-install-recommends dracut dracut-network procps >"$root.apt.log" 2>&1 ||
    {
      tail -20 "$root.apt.log" >&2
      die "apt-get install dracut failed"
    }
  in_chroot "$root" apt-get purge -y -q initramfs-tools initramfs-tools-core >/dev/null 2>&1 || true
  local kver
  kver=$(basename "$(ls -d "$root"/lib/modules/* | sort -V | tail -1)")
  # dracut's own trigger built the initrd during the install; build it only if that did not happen.
  grep -q "Generating /boot/initrd.img-$kver" "$root.apt.log" || {
    log "dracut for $kver"
    in_chroot "$root" dracut -f --kver "$kver" "/boot/initrd.img-$kver" >"$root.dracut.log" 2>&1 ||
    {
      tail -20 "$root.dracut.log" >&2
      die "dracut failed"
    }
  }
  chroot_cleanup
  cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
  cp "$root/boot/initrd.img-$kver" "$out/initrd.img"
  write_manifest_after_image "$root" "$out" dracut "$kver" "$started" "$hash"
}
