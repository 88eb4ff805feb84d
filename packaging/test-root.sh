#!/usr/bin/env bash
# A clean Debian 13 (trixie) root with only nodejs (and what minbase brings), for installing the .deb into:
#   ${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}/roots/debian13-node         amd64 (debootstrap)
#   ${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}/roots/debian13-node-arm64   arm64 (mmdebstrap, qemu-user)
# never in the repo. Built once and reused while this script is unchanged; tests copy it before use.
# Usage: packaging/test-root.sh [amd64|arm64]
set -euo pipefail
ARCH=${1:-amd64}
CACHE=${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}
case "$ARCH" in
  amd64) NAME=debian13-node ;;
  arm64) NAME=debian13-node-arm64 ;;
  *) echo "packaging/test-root.sh: architecture $ARCH: only amd64 and arm64" >&2; exit 1 ;;
esac
OUT="$CACHE/roots/$NAME"
MIRROR=${NETBOOT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
recipe=$(cat "$0" "$(dirname "$0")/../qemu/binfmt-arm64.sh" | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.complete" ] && [ "$(cat "$OUT/.complete")" = "$recipe" ]; then
  [ "$ARCH" = arm64 ] && bash "$(dirname "$0")/../qemu/binfmt-arm64.sh"
  echo "$NAME: up to date ($OUT)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "packaging/test-root.sh: needs root (debootstrap)" >&2; exit 1; }
mkdir -p "$CACHE/roots"
exec {lock}>"$CACHE/roots/.$NAME.lock"
flock "$lock"
work="$OUT.work"
rm -rf "$work"
t0=$(date +%s)
log="$CACHE/roots/$NAME.log"
if [ "$ARCH" = amd64 ]; then
  command -v debootstrap >/dev/null || apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  debootstrap --variant=minbase --include=nodejs,init-system-helpers trixie "$work" "$MIRROR" >"$log" 2>&1 ||
    { tail -20 "$log" >&2; exit 1; }
  chroot "$work" apt-get clean
else
  command -v mmdebstrap >/dev/null && command -v arch-test >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap arch-test >/dev/null
  # arm64 maintainer scripts run under qemu-user: binfmt_misc must know aarch64 (no systemd registers it here).
  bash "$(dirname "$0")/../qemu/binfmt-arm64.sh"
  mmdebstrap --arch=arm64 --variant=minbase --include=nodejs,init-system-helpers --aptopt='APT::Install-Recommends "false"' \
    trixie "$work" "$MIRROR" >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
fi
rm -rf "$work/var/lib/apt/lists/"* "$work/var/cache/apt/"*.bin "$work/usr/share/doc/"* "$work/usr/share/man/"*
echo "$recipe" >"$work/.complete"
rm -rf "$OUT"
mv "$work" "$OUT"
echo "$NAME: built in $(( $(date +%s) - t0 )) s ($(du -sh "$OUT" | cut -f1), node $(chroot "$OUT" node --version))"
