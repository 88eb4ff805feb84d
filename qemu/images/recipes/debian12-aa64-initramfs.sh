# shellcheck shell=bash
# hash-files: netboot-marker mini-initrd
# Debian 12 arm64 from Debian's arm64 packages, built without running arm64 code: a full
# `debootstrap --arch=arm64` second stage under qemu-user took far too long on a 2-core machine,
# so this is the smaller route. Debian's signed arm64 kernel (linux-image-arm64); an initrd
# assembled from busybox-static, open-iscsi's iscsistart and the kernel's own modules, that takes
# the same open-iscsi (initramfs-tools) arguments, logs in, mounts the root from the LUN and
# switches to it; a small root filesystem (busybox-static) with the same /sbin/netboot-marker.
IMAGE_ARCH=arm64
IMAGE_UUID=6e657462-6f6f-4000-8000-000000000003
IMAGE_IQN=iqn.2024-01.lab.netboot:debian12-aa64-initramfs
IMAGE_MODULES="virtio_pci virtio_mmio virtio_net virtio_blk iscsi_tcp sd_mod ext4 crc32c_generic"
IMAGE_APPLETS="sh ash mount umount mkdir modprobe insmod ip udhcpc findfs switch_root sleep cat sed awk
  echo ls hostname sync poweroff reboot head grep tr cut"

# Kernel command line that boots it (filled in by the lab):
#   console=ttyAMA0,115200 ip=dhcp iscsi_initiator=<iqn> iscsi_target_name=<iqn>
#   iscsi_target_ip=<ip> iscsi_target_port=3260 iscsi_target_group=1 root=UUID=<uuid> rw
#   init=/sbin/netboot-marker

build_image() {
  local root=$1 out=$2 started=$3 hash=$4
  ensure_packages jq e2fsprogs binutils kmod cpio gzip
  local work debs tree initrd kver m f a
  work=$(dirname "$root")
  debs="$work/debs" tree="$work/tree" initrd="$work/initrd"
  download_arm64_closure "$debs" linux-image-arm64 open-iscsi busybox-static
  log "unpacking $(ls "$debs" | wc -l) arm64 packages"
  mkdir -p "$tree"
  : >"$work/packages.tsv"
  for f in "$debs"/*.deb; do
    dpkg-deb -x "$f" "$tree"
    dpkg-deb -f "$f" Package Version | paste -sd '\t' | sed 's/Package: //; s/Version: //' >>"$work/packages.tsv"
  done
  kver=$(basename "$(ls -d "$tree"/lib/modules/* | sort -V | tail -1)")

  log "initrd for $kver (busybox-static, iscsistart, $(wc -w <<<"$IMAGE_MODULES") modules + deps)"
  mkdir -p "$initrd"/{bin,sbin,etc,lib,proc,sys,dev,run,root,tmp}
  cp "$tree/bin/busybox" "$initrd/bin/busybox"
  for a in $IMAGE_APPLETS; do ln -sf busybox "$initrd/bin/$a"; done
  f=$(ls "$tree"/sbin/iscsistart "$tree"/usr/sbin/iscsistart 2>/dev/null | head -n 1 || true)
  cp "$f" "$initrd/sbin/iscsistart"
  copy_elf_with_libs "$tree" "$initrd/sbin/iscsistart" "$initrd"
  cp -L "$tree/lib/ld-linux-aarch64.so.1" "$initrd/lib/ld-linux-aarch64.so.1"
  depmod -b "$tree" "$kver"
  for m in $IMAGE_MODULES; do
    modprobe -d "$tree" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
  done | sort -u | while read -r f; do
    mkdir -p "$initrd$(dirname "${f#"$tree"}")"
    cp "$f" "$initrd${f#"$tree"}"
  done
  cp "$tree/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$initrd/lib/modules/$kver/" 2>/dev/null || true
  depmod -b "$initrd" "$kver"
  echo "$IMAGE_MODULES" | tr ' ' '\n' >"$initrd/etc/modules"
  printf 'InitiatorName=%s\n' "$IMAGE_IQN" >"$initrd/etc/initiatorname.iscsi"
  install -m 0755 "$IMAGES_DIR/files/mini-initrd/init" "$initrd/init"
  install -m 0755 "$IMAGES_DIR/files/mini-initrd/udhcpc.script" "$initrd/bin/udhcpc.script"
  (cd "$initrd" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >"$out/initrd.img"
  cp "$tree/boot/vmlinuz-$kver" "$out/vmlinuz"

  log "root filesystem (busybox-static + /sbin/netboot-marker)"
  mkdir -p "$root"/{bin,sbin,etc/iscsi,proc,sys,dev,run,tmp,root,var/lib/dpkg}
  cp "$tree/bin/busybox" "$root/bin/busybox"
  for a in $IMAGE_APPLETS; do ln -sf busybox "$root/bin/$a"; done
  install -m 0755 "$IMAGES_DIR/files/netboot-marker" "$root/sbin/netboot-marker"
  printf 'UUID=%s / ext4 rw 0 0\n' "$IMAGE_UUID" >"$root/etc/fstab"
  printf 'InitiatorName=%s\n' "$IMAGE_IQN" >"$root/etc/iscsi/initiatorname.iscsi"
  cp "$work/packages.tsv" "$root/etc/netboot-packages.tsv"
  make_root_image "$root" "$out/root.img" "$IMAGE_UUID" 256M
  printf '%s\n' "$IMAGE_UUID" >"$out/rootfs.uuid"
  PACKAGES_TSV="$work/packages.tsv" write_manifest "$out" "$IMAGE_NAME" "$root" "$IMAGE_ARCH" \
    initramfs-tools "$kver" "$IMAGE_UUID" "$started" "$hash"
  log "root.img $(du -h --apparent-size "$out/root.img" | cut -f1), initrd $(du -h "$out/initrd.img" | cut -f1), kernel $(du -h "$out/vmlinuz" | cut -f1)"
}
