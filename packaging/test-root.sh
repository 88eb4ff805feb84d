#!/usr/bin/env bash
# A clean Debian 13 (trixie) root for installing the .deb into, never in the repo:
#   ${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}/roots/debian13-node         amd64
#   ${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}/roots/debian13-node-arm64   arm64 (run under qemu-user)
# It is the appliance image's base root (packaging/image/base.sh: minbase, systemd, the kernel, nodejs) before
# anything of ours is installed, so CI makes each architecture's Debian 13 root once. Unpacked again only when the
# base changes; tests copy it before use.
# Usage: packaging/test-root.sh [amd64|arm64]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ARCH=${1:-amd64}
CACHE=${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}
case "$ARCH" in
  amd64) NAME=debian13-node ;;
  arm64) NAME=debian13-node-arm64 ;;
  *) echo "packaging/test-root.sh: architecture $ARCH: only amd64 and arm64" >&2; exit 1 ;;
esac
[ "$(id -u)" = 0 ] || { echo "packaging/test-root.sh: needs root (mmdebstrap, chroot)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
[ "$ARCH" = arm64 ] && bash "$HERE/../qemu/binfmt-arm64.sh"
OUT="$CACHE/roots/$NAME"
mkdir -p "$CACHE/roots"
exec {lock}>"$CACHE/roots/.$NAME.lock"
flock "$lock"
# shellcheck source=image/base.sh
. "$HERE/image/base.sh"
image_base "$ARCH" "$CACHE/roots/$NAME.log"
recipe=$( { sha256sum "$0" "$HERE/image/base.sh" | cut -d' ' -f1; basename "$BASE_TAR"; } | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.complete" ] && [ "$(cat "$OUT/.complete")" = "$recipe" ]; then
  echo "$NAME: up to date ($OUT)"
  exit 0
fi
t0=$(date +%s)
work="$OUT.work"
rm -rf "$work"
mkdir -p "$work"
tar -C "$work" --numeric-owner -xpf "$BASE_TAR"
rm -rf "$work/var/lib/apt/lists/"* "$work/var/cache/apt/"*.bin
echo "$recipe" >"$work/.complete"
rm -rf "$OUT"
mv "$work" "$OUT"
echo "$NAME: unpacked in $(( $(date +%s) - t0 )) s from $(basename "$BASE_TAR") ($(du -sh "$OUT" | cut -f1), node $(chroot "$OUT" node --version))"
