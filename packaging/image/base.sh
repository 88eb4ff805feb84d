# shellcheck shell=bash
# The appliance image's base root: Debian 13 (trixie) minbase with systemd, the kernel, nodejs and the few tools
# the image needs, made by mmdebstrap without recommends, docs, locales or the kernel modules an appliance never
# loads. Cached as a tarball keyed by everything that shapes it. Sourced by packaging/image/build.sh (the image)
# and packaging/test-root.sh (the clean root the .deb's tests install into). Never run.

# image_base ARCH LOGFILE: sets BASE_TAR (building it when missing) and BASE_EXCLUDES (dpkg path-excludes).
image_base() {
  local arch=$1 logfile=$2
  local cache=${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}
  local mirror=${NETBOOT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
  local packages=systemd-sysv,udev,linux-image-$arch,initramfs-tools,zstd,nodejs,systemd-boot-efi,systemd-repart,openssh-server,iproute2,e2fsprogs,dosfstools,kmod
  BASE_EXCLUDES=(
    '/usr/share/doc/*'
    '/usr/share/man/*'
    '/usr/share/locale/*'
    '/usr/share/info/*'
    '/usr/lib/modules/*/kernel/drivers/gpu/*'
    '/usr/lib/modules/*/kernel/sound/*'
    '/usr/lib/modules/*/kernel/drivers/media/*'
    '/usr/lib/modules/*/kernel/drivers/net/wireless/*'
    '/usr/lib/modules/*/kernel/net/wireless/*'
    '/usr/lib/modules/*/kernel/net/mac80211/*'
    '/usr/lib/modules/*/kernel/drivers/bluetooth/*'
    '/usr/lib/modules/*/kernel/net/bluetooth/*'
    '/usr/lib/modules/*/kernel/drivers/infiniband/*'
    '/usr/lib/modules/*/kernel/drivers/staging/*'
    '/usr/lib/modules/*/kernel/drivers/iio/*'
    '/usr/lib/modules/*/kernel/drivers/isdn/*'
    # arm64's device trees (56 MB): the image boots UEFI machines, whose firmware hands over ACPI or its own DT.
    '/usr/lib/linux-image-*/*'
  )
  local dpkgopts=() e key
  for e in "${BASE_EXCLUDES[@]}"; do dpkgopts+=("--dpkgopt=path-exclude=$e"); done
  key=$(printf '%s|' "$arch" "$packages" "${BASE_EXCLUDES[*]}" "$mirror" "$(dpkg-query -W -f='${Version}' mmdebstrap)" |
    sha256sum | cut -c1-16)
  mkdir -p "$cache/appliance-image"
  BASE_TAR="$cache/appliance-image/base-trixie-$arch-$key.tar"
  [ -f "$BASE_TAR" ] && return 0
  # One builder per base: the image and the .deb's test root may ask for it at once (CI builds in parallel).
  local lockfd
  exec {lockfd}>"$BASE_TAR.lock"
  flock "$lockfd"
  if [ -f "$BASE_TAR" ]; then
    exec {lockfd}>&-
    return 0
  fi
  # arm64 maintainer scripts run under qemu-user: binfmt_misc must know aarch64 (no systemd registers it here).
  [ "$arch" = arm64 ] && bash "$(dirname "${BASH_SOURCE[0]}")/../../qemu/binfmt-arm64.sh"
  printf '[image %s] mmdebstrap trixie %s (minbase + %s)\n' "$(date +%H:%M:%S)" "$arch" "$packages" >&2
  local started
  started=$(date +%s)
  # INITRD=No: the kernel's postinst makes no initramfs here (minutes under qemu-user); build.sh makes the
  # image's small one, once.
  INITRD=No mmdebstrap --variant=minbase --arch="$arch" --aptopt='APT::Install-Recommends "false"' "${dpkgopts[@]}" \
    --include="$packages" trixie "$BASE_TAR.tmp.tar" "$mirror" >"$logfile" 2>&1 ||
    {
      tail -20 "$logfile" >&2
      rm -f "$BASE_TAR.tmp.tar"
      exec {lockfd}>&-
      return 1
    }
  mv "$BASE_TAR.tmp.tar" "$BASE_TAR"
  exec {lockfd}>&-
  printf '[image %s] base %s: %s s\n' "$(date +%H:%M:%S)" "$(basename "$BASE_TAR")" $(($(date +%s) - started)) >&2
}
