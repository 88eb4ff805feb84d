#!/usr/bin/env bash
# Lets this amd64 host run arm64 programs (an arm64 root's maintainer scripts, its node) under qemu-user:
# mounts binfmt_misc and registers qemu-user-static's aarch64 entry by writing its line to the register
# file. systemd-binfmt would do this at boot; this host has no systemd as PID 1. The entry's F flag opens
# the interpreter now, so it also works inside a chroot. Idempotent.
set -euo pipefail
command -v qemu-aarch64-static >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
[ -f /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
conf=/usr/lib/binfmt.d/qemu-aarch64.conf
[ -f "$conf" ] || { echo "qemu/binfmt-arm64.sh: $conf missing (qemu-user-static)" >&2; exit 1; }
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  grep -v '^#' "$conf" | grep . >/proc/sys/fs/binfmt_misc/register
fi
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || { echo "qemu/binfmt-arm64.sh: qemu-aarch64 not enabled" >&2; exit 1; }
