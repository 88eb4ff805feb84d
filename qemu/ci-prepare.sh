#!/usr/bin/env bash
# Prepares the lab artefacts the end-to-end tests boot: Debian's signed loaders, the three lab root images and
# the two flashable appliance images.
# Everything lands in ${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}, outside the repo, and is reused while its
# recipe is unchanged (a second run takes seconds). Called by .ci/run before npm test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE=${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}
t0=$(date +%s)

# Returns at once while its recipe is unchanged.
bash firmware/fetch.sh "$CACHE/loaders"
npx tsc -p tsconfig.json # the images carry this tree's .deb, built from dist/
# The arm64 appliance image spends minutes in qemu-user, mostly on one core: it is built beside the rest.
mkdir -p "$CACHE"
arm64_log="$CACHE/appliance-image-arm64.log"
bash packaging/image/build.sh arm64 >"$arm64_log" 2>&1 &
arm64_build=$!
for image in debian12-x64-initramfs debian12-x64-dracut debian12-aa64-initramfs; do
  bash qemu/images/build.sh "$image"
done
# The flashable appliance image (x64): Debian 13 with this tree's .deb; its rows boot it under real systemd.
bash packaging/image/build.sh amd64
# Clean Debian 13 roots for the .deb's install tests: the appliance images' base roots, unpacked.
bash packaging/test-root.sh amd64
if ! wait "$arm64_build"; then
  tail -30 "$arm64_log" >&2
  echo "arm64 appliance image failed (log: $arm64_log)" >&2
  exit 1
fi
grep -E '^\[image' "$arm64_log" | tail -3
bash packaging/test-root.sh arm64
echo "lab artefacts ready in $(( $(date +%s) - t0 )) s ($CACHE)"
