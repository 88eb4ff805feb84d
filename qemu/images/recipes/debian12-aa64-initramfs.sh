# shellcheck shell=bash
# Debian 12 arm64, initramfs-tools + open-iscsi: a full arm64 debootstrap (second stage under
# qemu-user), the same marker and initramfs configuration as the x64 image.
IMAGE_ARCH=arm64
IMAGE_UUID=6e657462-6f6f-4000-8000-000000000003
IMAGE_IQN=iqn.2024-01.lab.netboot:debian12-aa64-initramfs

# Kernel command line that boots it (filled in by the lab):
#   console=ttyAMA0,115200 ip=dhcp iscsi_initiator=<iqn> iscsi_target_name=<iqn>
#   iscsi_target_ip=<ip> iscsi_target_port=3260 iscsi_target_group=1 root=UUID=<uuid> rw
#   init=/sbin/netboot-marker

build_image() {
  local root=$1 out=$2 started=$3 hash=$4
  ensure_packages debootstrap e2fsprogs jq
  ensure_arm64_emulation
  # No isc-dhcp-client: the initramfs uses klibc ipconfig; systemd-sysv stays for a real OS.
  bootstrap_rootfs "$IMAGE_ARCH" "$root" \
    linux-image-arm64,open-iscsi,initramfs-tools,systemd-sysv,udev,kmod,iproute2
  install_initramfs_tools_config "$root" "$IMAGE_IQN"
  install_common_root_files "$root" "$IMAGE_UUID" "$IMAGE_IQN"
  chroot_prepare "$root"
  local kver
  kver=$(basename "$(ls -d "$root"/lib/modules/* | sort -V | tail -1)")
  log "update-initramfs for $kver (emulated)"
  in_chroot "$root" update-initramfs -u -k "$kver" >/dev/null
  chroot_cleanup
  cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
  cp "$root/boot/initrd.img-$kver" "$out/initrd.img"
  write_manifest_after_image "$root" "$out" initramfs-tools "$kver" "$started" "$hash"
}
