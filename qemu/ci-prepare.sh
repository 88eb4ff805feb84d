#!/usr/bin/env bash
# Prepares the lab artefacts the end-to-end tests boot: Debian's signed loaders and the three root images.
# Everything lands in ${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}, outside the repo, and is reused while its
# recipe is unchanged (a second run takes seconds). Called by .ci/run before npm test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE=${NETBOOT_LAB_CACHE:-/var/cache/netboot-lab}
t0=$(date +%s)

# Returns at once while its recipe is unchanged.
bash firmware/fetch.sh "$CACHE/loaders"
for image in debian12-x64-initramfs debian12-x64-dracut debian12-aa64-initramfs; do
  bash qemu/images/build.sh "$image"
done
# Clean Debian 13 roots for the .deb's install tests (arm64: mmdebstrap under qemu-user, minutes, cached).
bash packaging/test-root.sh amd64
bash packaging/test-root.sh arm64
# The flashable appliance image (x64): Debian 13 with this tree's .deb; its rows boot it under real systemd.
npx tsc -p tsconfig.json
bash packaging/image/build.sh amd64
echo "lab artefacts ready in $(( $(date +%s) - t0 )) s ($CACHE)"
