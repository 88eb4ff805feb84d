#!/usr/bin/env bash
# npm run demo: on a fresh Debian 12 machine, as root, boots one x64 UEFI VM (OVMF) over the network
# through netboot-appliance (`netboot serve`: DHCP, TFTP, GRUB boot_iscsi config) from an iSCSI root volume
# in a throw-away lab, and prints the boot's timeline.
#   1. installs the system packages the lab needs (apt-get), 2. npm ci + build when needed,
#   3. builds or reuses the cached root image and the signed loaders, 4. boots and prints the table.
# Extra arguments go to the boot (see qemu/boot.ts), e.g. `npm run demo -- --systemd`.
# Cache: ${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}. Nothing is left running afterwards.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE=${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}
LOADERS=${NETBOOT_LAB_LOADERS:-$CACHE/loaders}
IMAGE=debian12-x64-initramfs
T0=$(date +%s)

step() { printf '\n[demo +%ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }

[ "$(id -u)" = 0 ] || {
  echo "demo: run as root (network namespaces, tgtd, debootstrap): sudo npm run demo" >&2
  exit 1
}

# The lab itself; the image builder installs its own (debootstrap, e2fsprogs, ...).
# g++, make and python3 build the appliance's small native addon during npm ci.
PACKAGES=(qemu-system-x86 ovmf tgt dnsmasq-base iproute2 g++ make python3)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ]; then
  step "npm ci"
  npm ci --no-audit --no-fund
fi
if [ ! -f dist/qemu/boot.js ] || [ -n "$(find qemu src -name '*.ts' -newer dist/qemu/boot.js -print -quit)" ]; then
  step "npm run build"
  npm run build --silent
fi

step "root image $IMAGE (cached in $CACHE/images; the first build takes a few minutes)"
bash qemu/images/build.sh "$IMAGE"

if [ ! -f "$LOADERS/x64/shimx64.efi" ]; then
  step "signed loaders (shim, GRUB) into $LOADERS"
  bash firmware/fetch.sh "$LOADERS"
fi

step "booting through netboot-appliance: OVMF -> DHCP/TFTP -> shim -> GRUB -> kernel+initrd -> iSCSI root (TCG takes about a minute)"
NETBOOT_LAB_CACHE=$CACHE node dist/qemu/boot.js --loaders "$LOADERS" "$@"
step "done"
