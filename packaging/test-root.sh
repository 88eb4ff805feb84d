#!/usr/bin/env bash
# A clean Debian 13 (trixie) root with only nodejs (and what minbase brings), for installing the .deb into:
#   ${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}/roots/debian13-node   (never in the repo)
# Built once with debootstrap and reused while this script is unchanged; tests copy it before use.
set -euo pipefail
CACHE=${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}
OUT="$CACHE/roots/debian13-node"
MIRROR=${NETBOOT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
recipe=$(sha256sum "$0" | cut -d' ' -f1)
if [ -f "$OUT/.complete" ] && [ "$(cat "$OUT/.complete")" = "$recipe" ]; then
  echo "debian13-node: up to date ($OUT)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "packaging/test-root.sh: needs root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
mkdir -p "$CACHE/roots"
exec {lock}>"$CACHE/roots/.debian13-node.lock"
flock "$lock"
work="$OUT.work"
rm -rf "$work"
t0=$(date +%s)
debootstrap --variant=minbase --include=nodejs,init-system-helpers trixie "$work" "$MIRROR" >"$CACHE/roots/debian13-node.log" 2>&1 ||
  { tail -20 "$CACHE/roots/debian13-node.log" >&2; exit 1; }
chroot "$work" apt-get clean
rm -rf "$work/var/lib/apt/lists/"* "$work/usr/share/doc/"* "$work/usr/share/man/"*
echo "$recipe" >"$work/.complete"
rm -rf "$OUT"
mv "$work" "$OUT"
echo "debian13-node: built in $(( $(date +%s) - t0 )) s ($(du -sh "$OUT" | cut -f1), node $(chroot "$OUT" node --version))"
