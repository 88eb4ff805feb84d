#!/usr/bin/env bash
# Lists the lab's boot images as JSON (one array) for the lab harness and for people:
# every recipe, whether its cached build is complete and current, and the built files.
# Usage: qemu/images/list.sh [--text]
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

entries=()
for recipe in "$IMAGES_DIR"/recipes/*.sh; do
  name=$(basename "$recipe" .sh)
  dir="$CACHE/images/$name"
  hash=$(recipe_hash "$recipe")
  state=missing
  if [ -f "$dir/.complete" ]; then
    if [ "$(cat "$dir/.complete")" = "$hash" ]; then state=current; else state=stale; fi
  fi
  manifest=null
  [ "$state" != missing ] && [ -f "$dir/manifest.json" ] && manifest=$(jq -c 'del(.packages)' "$dir/manifest.json")
  entries+=("$(jq -n -c --arg name "$name" --arg dir "$dir" --arg state "$state" --argjson m "$manifest" \
    '{name: $name, state: $state, dir: $dir,
      arch: ($m.arch // null), initramfs: ($m.initramfs // null), kernelVersion: ($m.kernelVersion // null),
      rootfsUuid: ($m.rootfsUuid // null), files: ($m.files // null)}')")
done
json=$(printf '%s\n' "${entries[@]}" | jq -s .)
if [ "${1:-}" = --text ]; then
  jq -r '.[] | [.name, .state, (.arch // "-"), (.kernelVersion // "-"), .dir] | @tsv' <<<"$json" | column -t
else
  echo "$json"
fi
