#!/usr/bin/env bash
# Builds a lab boot image into the cache (never into the repo):
#   $NETBOOT_LAB_CACHE/images/<name>/{root.img,vmlinuz,initrd.img,rootfs.uuid,manifest.json,.complete}
# Usage: qemu/images/build.sh <name>|all [--force]
# Idempotent: returns at once when the image exists and its recipe hash has not changed.
set -euo pipefail

# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() {
  echo "usage: $0 <image>|all [--force]" >&2
  echo "images: $(cd "$IMAGES_DIR/recipes" && ls -- *.sh | sed 's/\.sh$//' | tr '\n' ' ')" >&2
  exit 2
}

build_one() {
  local name=$1 force=$2
  local recipe="$IMAGES_DIR/recipes/$name.sh"
  [ -f "$recipe" ] || usage
  IMAGE_NAME=$name
  local out="$CACHE/images/$name" hash
  hash=$(recipe_hash "$recipe")
  mkdir -p "$CACHE/images"

  # One builder per image at a time (the lab and a person may both ask for it).
  exec {lockfd}>"$CACHE/images/.$name.lock"
  flock "$lockfd"

  if [ "$force" != yes ] && [ -f "$out/.complete" ] && [ "$(cat "$out/.complete")" = "$hash" ]; then
    log "$name: up to date ($out)"
    flock -u "$lockfd"
    return 0
  fi

  [ "$(id -u)" = 0 ] || die "building images needs root (debootstrap, chroot)"
  local started work
  started=$(date +%s)
  work="$CACHE/images/.$name.work"
  rm -rf "$work"
  mkdir -p "$work/out"
  trap 'chroot_cleanup' EXIT
  trap 'chroot_cleanup; exit 130' INT TERM

  # Recipes define build_image <rootfs dir> <out dir> <started> <hash>.
  # shellcheck source=/dev/null
  . "$recipe"
  log "$name: building (recipe $hash)"
  build_image "$work/rootfs" "$work/out" "$started" "$hash"
  chroot_cleanup

  printf '%s\n' "$hash" >"$work/out/.complete"
  rm -rf "$out.old"
  [ -d "$out" ] && mv "$out" "$out.old"
  mv "$work/out" "$out"
  rm -rf "$out.old" "$work"
  flock -u "$lockfd"
  log "$name: done in $(($(date +%s) - started)) s -> $out"
}

[ $# -ge 1 ] || usage
force=no
[ "${2:-}" = "--force" ] && force=yes
if [ "$1" = all ]; then
  for r in "$IMAGES_DIR"/recipes/*.sh; do build_one "$(basename "$r" .sh)" "$force"; done
else
  build_one "$1" "$force"
fi
