# shellcheck shell=bash
# hash-files: netboot-marker netboot-e2e-marker.service initramfs-tools
# Debian 12 x64, initramfs-tools + open-iscsi: the initrd logs in with the iscsi_* arguments.
IMAGE_ARCH=amd64
IMAGE_UUID=6e657462-6f6f-4000-8000-000000000001
IMAGE_IQN=iqn.2024-01.lab.netboot:debian12-x64-initramfs

# Kernel command line that boots it (filled in by the lab):
#   console=ttyS0,115200 ip=dhcp iscsi_initiator=<iqn> iscsi_target_name=<iqn> iscsi_target_ip=<ip>
#   iscsi_target_port=3260 iscsi_target_group=1 root=UUID=<uuid> rw [init=/sbin/netboot-marker]

build_image() {
  local root=$1 out=$2 started=$3 hash=$4
  ensure_packages debootstrap e2fsprogs jq
  bootstrap_rootfs "$IMAGE_ARCH" "$root" \
    linux-image-amd64,open-iscsi,initramfs-tools,systemd-sysv,udev,kmod,iproute2,isc-dhcp-client
  install_initramfs_tools_config "$root" "$IMAGE_IQN"
  install_common_root_files "$root" "$IMAGE_UUID" "$IMAGE_IQN"
  chroot_prepare "$root"
  local kver
  kver=$(basename "$(ls -d "$root"/lib/modules/* | sort -V | tail -1)")
  log "update-initramfs for $kver"
  in_chroot "$root" update-initramfs -u -k "$kver" >/dev/null
  chroot_cleanup
  cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
  cp "$root/boot/initrd.img-$kver" "$out/initrd.img"
  write_manifest_after_image "$root" "$out" initramfs-tools "$kver" "$started" "$hash"
}
