# shellcheck shell=bash
# Shared helpers for qemu/images/build.sh and its recipes. Sourced, never run.

IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}
SUITE=bookworm

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# Installs host packages only when one of them is missing (apt-get is slow even as a no-op).
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
}

# The machine's configured Debian mirror (deb822 or one-line sources), overridable.
debian_mirror() {
  if [ -n "${NETBOOT_DEBIAN_MIRROR:-}" ]; then
    echo "$NETBOOT_DEBIAN_MIRROR"
    return
  fi
  local uri
  uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / '"$SUITE"'( |$)/ && u !~ /security/ {print u; exit}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  if [ -z "$uri" ]; then
    uri=$(awk '$1=="deb" && $3=="'"$SUITE"'" {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

# Hash of everything that shapes an image: the build driver, this library, the image's own
# recipe and the shared files it names on its "# hash-files:" line (paths under files/). A change
# to any of them rebuilds that image, and only that image.
recipe_hash() {
  local recipe=$1 f
  {
    sha256sum "$IMAGES_DIR/build.sh" "$IMAGES_DIR/lib.sh" "$recipe"
    for f in $(sed -n 's/^# hash-files://p' "$recipe"); do
      find "$IMAGES_DIR/files/$f" -type f -print0 | sort -z | xargs -0 sha256sum
    done
  } | sed "s#$IMAGES_DIR/##" | sha256sum | cut -d' ' -f1
}

# Mount points a chroot step needs; always undone by chroot_cleanup (trap).
CHROOT_MOUNTS=()
chroot_prepare() {
  local root=$1 m
  for m in proc sys dev; do
    mountpoint -q "$root/$m" && continue
    case $m in
    proc) mount -t proc proc "$root/proc" ;;
    sys) mount -t sysfs sys "$root/sys" ;;
    dev) mount --bind /dev "$root/dev" ;;
    esac
    CHROOT_MOUNTS+=("$root/$m")
  done
  # Daemons must not start inside the build chroot.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
}
chroot_cleanup() {
  local i
  for ((i = ${#CHROOT_MOUNTS[@]} - 1; i >= 0; i--)); do
    umount -l "${CHROOT_MOUNTS[$i]}" 2>/dev/null || true
  done
  CHROOT_MOUNTS=()
}
in_chroot() {
  local root=$1
  shift
  DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$root" "$@"
}

# debootstrap minbase with a persistent .deb cache so rebuilds do not download again. The
# untouched result is kept as a tarball keyed by its inputs, so a recipe change that only
# touches configuration does not run debootstrap again.
bootstrap_rootfs() {
  local arch=$1 root=$2 include=$3
  local debs="$CACHE/debs/$SUITE-$arch" key base
  key=$(printf '%s|' "$SUITE" "$arch" "$include" "$(debian_mirror)" "$(dpkg-query -W -f='${Version}' debootstrap)" "${BASE_EXTRA_KEY:-}" |
    sha256sum | cut -c1-16)
  base="$CACHE/base/$SUITE-$arch-$key.tar"
  mkdir -p "$debs" "$CACHE/base" "$root"
  if [ -f "$base" ]; then
    log "reusing debootstrap base $(basename "$base")"
    tar -C "$root" --numeric-owner -xpf "$base"
    return 0
  fi
  local extra=()
  [ "$arch" != "$(dpkg --print-architecture)" ] && extra+=(--foreign)
  log "debootstrap $SUITE $arch (minbase) from $(debian_mirror)"
  debootstrap --variant=minbase --arch="$arch" --components=main --cache-dir="$debs" \
    --include="$include" "${extra[@]}" "$SUITE" "$root" "$(debian_mirror)" >"$root.debootstrap.log" 2>&1 ||
    {
      tail -20 "$root.debootstrap.log" >&2
      die "debootstrap failed (log: $root.debootstrap.log)"
    }
  if [ ${#extra[@]} -gt 0 ]; then
    # Foreign architecture: the second stage runs the target's binaries through qemu-user.
    log "debootstrap second stage ($arch, emulated)"
    chroot "$root" /debootstrap/debootstrap --second-stage >>"$root.debootstrap.log" 2>&1 ||
      {
        tail -20 "$root.debootstrap.log" >&2
        die "debootstrap second stage failed (log: $root.debootstrap.log)"
      }
  fi
  tar -C "$root" --numeric-owner -cpf "$base.tmp" . && mv "$base.tmp" "$base"
}

# arm64 binaries must run on this amd64 host (qemu-user through binfmt_misc, fix-binary flag).
ensure_arm64_emulation() {
  ensure_packages qemu-user-static binfmt-support
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "binfmt_misc has no qemu-aarch64 entry"
}

# Files every flavour shares: the marker, its systemd unit, a quiet small system.
install_common_root_files() {
  local root=$1 uuid=$2 iqn=$3
  install -m 0755 "$IMAGES_DIR/files/netboot-marker" "$root/sbin/netboot-marker"
  install -m 0644 "$IMAGES_DIR/files/netboot-e2e-marker.service" \
    "$root/etc/systemd/system/netboot-e2e-marker.service"
  ln -sf /etc/systemd/system/netboot-e2e-marker.service \
    "$root/etc/systemd/system/multi-user.target.wants/netboot-e2e-marker.service"
  # Nothing in the booted system may wait for the network or sit on the console.
  local unit
  for unit in getty.target apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service \
    systemd-networkd-wait-online.service fstrim.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done
  printf 'UUID=%s / ext4 rw,errors=remount-ro 0 0\n' "$uuid" >"$root/etc/fstab"
  # No /etc/hostname: the name comes from DHCP, the marker falls back to netboot-e2e.
  rm -f "$root/etc/hostname"
  printf '127.0.0.1 localhost\n' >"$root/etc/hosts"
  if [ -d "$root/etc/iscsi" ]; then
    printf 'InitiatorName=%s\n' "$iqn" >"$root/etc/iscsi/initiatorname.iscsi"
  fi
  passwd_unlock_root "$root"
}

# The lab image has an empty root password so a person can log in on the console when debugging.
passwd_unlock_root() {
  sed -i 's/^root:[^:]*:/root::/' "$1/etc/shadow"
}

# Drops what the image never needs at run time (apt caches, docs) to keep the filesystem small.
slim_rootfs() {
  local root=$1
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/usr/sbin/policy-rc.d \
    "$root"/debootstrap
}

# ext4 filesystem image straight from the directory: no partition table, no loop mount.
make_root_image() {
  local root=$1 img=$2 uuid=$3 size=${4:-1800M}
  log "mkfs.ext4 -d ($size sparse, UUID $uuid)"
  rm -f "$img"
  truncate -s "$size" "$img"
  mkfs.ext4 -q -F -L netboot-root -U "$uuid" -E root_owner=0:0 -d "$root" "$img"
}

# manifest.json: what was built, from which packages, and checksums of what the appliance serves.
write_manifest() {
  local out=$1 name=$2 root=$3 arch=$4 flavour=$5 kver=$6 uuid=$7 started=$8 hash=$9
  local pkgs
  pkgs=$({ if [ -n "${PACKAGES_TSV:-}" ]; then cat "$PACKAGES_TSV"; else dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package}\t${Version}\n'; fi; } | jq -R -s '
    split("\n") | map(select(length > 0) | split("\t") | {key: .[0], value: .[1]}) | from_entries')
  jq -n \
    --arg name "$name" --arg arch "$arch" --arg flavour "$flavour" --arg suite "$SUITE" \
    --arg kver "$kver" --arg uuid "$uuid" --arg mirror "$(debian_mirror)" --arg hash "$hash" \
    --arg built "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --argjson seconds "$(($(date +%s) - started))" \
    --arg ksha "$(sha256sum "$out/vmlinuz" | cut -d' ' -f1)" \
    --arg isha "$(sha256sum "$out/initrd.img" | cut -d' ' -f1)" \
    --argjson ksize "$(stat -c %s "$out/vmlinuz")" --argjson isize "$(stat -c %s "$out/initrd.img")" \
    --argjson rsize "$(stat -c %s "$out/root.img")" \
    --argjson rused "$(($(stat -c %b "$out/root.img") * 512))" \
    --argjson pkgs "$pkgs" \
    '{name: $name, arch: $arch, initramfs: $flavour, suite: $suite, mirror: $mirror,
      kernelVersion: $kver, rootfsUuid: $uuid, recipeHash: $hash, builtAt: $built,
      buildSeconds: $seconds,
      files: {
        vmlinuz: {bytes: $ksize, sha256: $ksha},
        "initrd.img": {bytes: $isize, sha256: $isha},
        "root.img": {bytes: $rsize, allocatedBytes: $rused}
      },
      keyPackages: ($pkgs | with_entries(select(.key | test("^(linux-image-|open-iscsi$|initramfs-tools$|dracut|systemd$|udev$|klibc-utils$|busybox$)")))),
      packages: $pkgs}' >"$out/manifest.json"
}

# initramfs-tools for an iSCSI root: network drivers, iscsi_tcp, and the early NIC-up script.
install_initramfs_tools_config() {
  local root=$1 iqn=$2
  sed -i 's/^MODULES=.*/MODULES=netboot/' "$root/etc/initramfs-tools/initramfs.conf"
  printf '%s\n' virtio_net virtio_pci virtio_mmio ext4 iscsi_tcp sd_mod >>"$root/etc/initramfs-tools/modules"
  install -m 0755 "$IMAGES_DIR/files/initramfs-tools/hooks/netboot-nic" "$root/etc/initramfs-tools/hooks/"
  install -m 0755 "$IMAGES_DIR/files/initramfs-tools/scripts/init-premount/netboot-nic-up" \
    "$root/etc/initramfs-tools/scripts/init-premount/"
  mkdir -p "$root/etc/iscsi"
  printf 'InitiatorName=%s\n' "$iqn" >"$root/etc/iscsi/initiatorname.iscsi"
}

# Final steps shared by the recipes: slim, make the filesystem, record the manifest.
write_manifest_after_image() {
  local root=$1 out=$2 flavour=$3 kver=$4 started=$5 hash=$6
  slim_rootfs "$root"
  make_root_image "$root" "$out/root.img" "$IMAGE_UUID"
  printf '%s\n' "$IMAGE_UUID" >"$out/rootfs.uuid"
  write_manifest "$out" "$IMAGE_NAME" "$root" \
    "$IMAGE_ARCH" "$flavour" "$kver" "$IMAGE_UUID" "$started" "$hash"
  log "root.img $(du -h --apparent-size "$out/root.img" | cut -f1) (allocated $(du -h "$out/root.img" | cut -f1)), initrd $(du -h "$out/initrd.img" | cut -f1), kernel $(du -h "$out/vmlinuz" | cut -f1)"
}

# Downloads the full dependency closure of some arm64 packages with apt, using a private state
# directory (empty dpkg status) so the host's architectures and lists stay untouched.
download_arm64_closure() {
  local dest=$1
  shift
  local st="$CACHE/apt-arm64" key=/usr/share/keyrings/debian-archive-keyring.gpg mirror
  mirror=$(debian_mirror)
  mkdir -p "$st/lists/partial" "$st/archives/partial" "$dest"
  : >"$st/status"
  printf 'deb [arch=arm64 signed-by=%s] %s %s main\n' "$key" "$mirror" "$SUITE" "$key" "$mirror" "$SUITE-updates" >"$st/sources.list"
  local opts=(-o APT::Architecture=arm64 -o APT::Architectures=arm64 -o Dir::State="$st"
    -o Dir::State::Lists="$st/lists" -o Dir::State::status="$st/status" -o Dir::Cache="$st"
    -o Dir::Cache::Archives="$st/archives" -o Dir::Etc::SourceList="$st/sources.list"
    -o Dir::Etc::SourceParts=/dev/null -o Dir::Etc::Preferences=/dev/null
    -o Dir::Etc::PreferencesParts=/dev/null -o APT::Sandbox::User=root -o Debug::NoLocking=1)
  log "apt (arm64, private state): $*"
  apt-get "${opts[@]}" update -q >"$st/update.log" 2>&1 || {
    tail "$st/update.log" >&2
    die "arm64 apt-get update failed"
  }
  apt-get "${opts[@]}" install -y -q -d --no-install-recommends "$@" >"$st/download.log" 2>&1 || {
    tail "$st/download.log" >&2
    die "arm64 download failed"
  }
  # Only the packages of this closure (the archive directory keeps older downloads too).
  apt-get "${opts[@]}" install -y -q -s --no-install-recommends "$@" 2>/dev/null |
    awk '$1 == "Inst" {print $2, $3}' | tr -d '()' | while read -r p v; do
    f=$(ls "$st/archives/${p}_${v/:/%3a}_"*.deb 2>/dev/null | head -n 1)
    if [ -n "$f" ]; then cp "$f" "$dest/"; fi
  done
}

# Copies an ELF binary and its shared-library closure (found with readelf, no target code runs).
copy_elf_with_libs() {
  local tree=$1 bin=$2 dest=$3 todo lib need found
  todo=("$bin")
  while [ ${#todo[@]} -gt 0 ]; do
    lib=${todo[0]}
    todo=("${todo[@]:1}")
    for need in $(readelf -d "$lib" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      [ -e "$dest/lib/aarch64-linux-gnu/$need" ] && continue
      found=$(ls "$tree"/lib/aarch64-linux-gnu/"$need" "$tree"/usr/lib/aarch64-linux-gnu/"$need" 2>/dev/null | head -n 1 || true)
      [ -n "$found" ] || die "library $need (for $(basename "$lib")) not in the unpacked packages"
      mkdir -p "$dest/lib/aarch64-linux-gnu"
      cp -L "$found" "$dest/lib/aarch64-linux-gnu/$need"
      todo+=("$found")
    done
  done
}
