#!/usr/bin/env bash
# Fetches the signed UEFI loaders the appliance serves, from Debian's packages (never committed):
#   OUTDIR/x64/{shimx64.efi,mmx64.efi,grubx64.efi}   (amd64: shim-signed, shim-helpers-amd64-signed,
#                                                    grub-efi-amd64-signed's grubnetx64.efi.signed)
#   OUTDIR/aa64/{shimaa64.efi,mmaa64.efi,grubaa64.efi} (the same packages for arm64)
#   OUTDIR/{x64,aa64}/ipxe.efi                       (trixie's ipxe: snponly.efi, ipxe-arm64.efi; unsigned)
#   OUTDIR/manifest.json                             (packages, versions, sha256 of every file)
# The signed netboot GRUB is stored as grubx64.efi / grubaa64.efi because shim loads that fixed name.
# Usage: firmware/fetch.sh [OUTDIR] [--force]   (OUTDIR defaults to firmware/out)
# amd64 packages come through the host's apt (apt-get download); arm64 packages and trixie's iPXE through
# apt with a private state directory, so the host's sources and dpkg architectures stay as they are. Both are unpacked with dpkg -x. Idempotent: returns at once when OUTDIR is complete
# and this script has not changed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=""
FORCE=no
for a in "$@"; do
  case $a in
  --force) FORCE=yes ;;
  -h | --help)
    sed -n '2,14p' "$0"
    exit 0
    ;;
  *) OUT=$a ;;
  esac
done
OUT=${OUT:-$HERE/out}
SUITE=bookworm
IPXE_SUITE=trixie

log() { printf '[firmware %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

recipe=$(sha256sum "$0" | cut -d' ' -f1)
if [ $FORCE = no ] && [ -f "$OUT/.complete" ] && [ "$(cat "$OUT/.complete")" = "$recipe" ]; then
  log "up to date ($OUT)"
  exit 0
fi

need=()
for c in apt-get dpkg-deb jq sha256sum od; do command -v "$c" >/dev/null || need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need[*]} (install jq)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends jq >/dev/null
fi

work=$(mktemp -d /tmp/netboot-firmware.XXXXXX)
trap 'rm -rf "$work"' EXIT
# apt's download sandbox user must be able to write here.
chmod 755 "$work"

# PE/COFF machine type of a file, as 4 hex digits (8664 for x64, aa64 for aarch64), or "none".
pe_machine() {
  local f=$1 off sig
  [ "$(head -c 2 "$f")" = MZ ] || {
    echo none
    return
  }
  off=$(od -An -tu4 -j60 -N4 "$f" | tr -d ' ')
  sig=$(od -An -tx1 -j"$off" -N4 "$f" | tr -d ' ')
  [ "$sig" = 50450000 ] || {
    echo none
    return
  }
  od -An -tx2 -j$((off + 4)) -N2 "$f" | tr -d ' '
}

# The configured Debian mirror and security mirror (deb822 or one-line sources).
mirror_for() {
  local want=$1 uri
  uri=$(awk -v w="$want" '/^URIs:/ {u=$2} /^Suites:/ {
      for (i = 2; i <= NF; i++) if ($i == w) { print u; exit } }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk -v w="$want" '$1 == "deb" && $3 == w {print $2; exit}' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  echo "$uri"
}
MIRROR=${NETBOOT_DEBIAN_MIRROR:-$(mirror_for $SUITE)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=$(mirror_for $SUITE-security)
SECURITY=${SECURITY:-http://deb.debian.org/debian-security}

# Downloads .debs for one architecture into $work/<arch>/debs.
download_amd64() {
  local dir=$1
  shift
  mkdir -p "$dir"
  chmod 777 "$dir"
  (cd "$dir" && apt-get download -q "$@" >/dev/null 2>&1) || {
    log "apt-get download failed; refreshing the host's package lists once"
    apt-get update -q >/dev/null
    (cd "$dir" && apt-get download -q "$@" >/dev/null)
  }
}
# Downloads .debs through apt with a private state directory: download_private <arch> <suite> <dir> <pkg>...
# (arm64 loaders from bookworm; iPXE from trixie, whose build has an arm64 binary). The host's sources,
# lists and dpkg architectures stay as they are.
download_private() {
  local arch=$1 suite=$2 dir=$3
  shift 3
  local st="$work/apt-$arch-$suite"
  mkdir -p "$st/lists/partial" "$st/cache/archives/partial" "$dir"
  chmod -R 777 "$st" "$dir"
  : >"$st/status"
  local key=/usr/share/keyrings/debian-archive-keyring.gpg
  {
    echo "deb [arch=$arch signed-by=$key] $MIRROR $suite main"
    echo "deb [arch=$arch signed-by=$key] $MIRROR $suite-updates main"
    echo "deb [arch=$arch signed-by=$key] $SECURITY $suite-security main"
  } >"$st/sources.list"
  local opts=(-o APT::Architecture="$arch" -o APT::Architectures="$arch"
    -o Dir::State="$st" -o Dir::State::Lists="$st/lists" -o Dir::State::status="$st/status"
    -o Dir::Cache="$st/cache" -o Dir::Etc::SourceList="$st/sources.list"
    -o Dir::Etc::SourceParts=/dev/null -o Dir::Etc::Preferences=/dev/null
    -o Dir::Etc::PreferencesParts=/dev/null -o APT::Get::List-Cleanup=false)
  log "apt-get update (private state, $arch, $suite)"
  apt-get "${opts[@]}" update -q >"$st.log" 2>&1 || {
    cat "$st.log" >&2
    die "$arch $suite apt-get update failed"
  }
  (cd "$dir" && apt-get "${opts[@]}" download -q "$@" >>"$st.log" 2>&1) || {
    cat "$st.log" >&2
    die "$arch $suite apt-get download failed"
  }
}

# Unpacks every .deb and records name/version/architecture.
unpack_all() {
  local debs=$1 tree=$2 d
  mkdir -p "$tree"
  for d in "$debs"/*.deb; do
    dpkg-deb -x "$d" "$tree"
    dpkg-deb -c "$d" >"$d.list"
    dpkg-deb -f "$d" Package Version Architecture | jq -R -s '
      split("\n") | map(select(length > 0) | capture("^(?<k>[^:]+): (?<v>.*)$")) |
      map({(.k | ascii_downcase): .v}) | add' >"$d.json"
  done
}

# install_loader <tree> <source path in package> <dest> <expected machine> <debs dir>
FILES_JSON="$work/files.jsonl"
: >"$FILES_JSON"
install_loader() {
  local tree=$1 src=$2 dest=$3 want=$4 debs=$5
  [ -f "$tree/$src" ] || die "$src not found in the unpacked packages"
  local got
  got=$(pe_machine "$tree/$src")
  [ "$got" = "$want" ] || die "$src: PE machine type $got, expected $want"
  mkdir -p "$(dirname "$STAGE/$dest")"
  cp "$tree/$src" "$STAGE/$dest"
  local pkg
  local owner
  owner=$(grep -lE " \./$src( ->|\$)" "$debs"/*.deb.list | head -n 1)
  [ -n "$owner" ] || die "no package lists $src"
  pkg=$(cat "${owner%.list}.json")
  jq -n -c --arg path "$dest" --arg src "/$src" --arg sha "$(sha256sum "$STAGE/$dest" | cut -d' ' -f1)" \
    --argjson bytes "$(stat -c %s "$STAGE/$dest")" --arg machine "0x$want" --argjson pkg "$pkg" \
    '{path: $path, bytes: $bytes, sha256: $sha, peMachine: $machine, package: $pkg.package,
      version: $pkg.version, architecture: $pkg.architecture, sourcePath: $src}' >>"$FILES_JSON"
  log "$dest  <- $(jq -r .package <<<"$pkg") $(jq -r .version <<<"$pkg") ($src, PE 0x$want)"
}

STAGE="$work/stage"
mkdir -p "$STAGE"

log "amd64: shim-signed shim-helpers-amd64-signed grub-efi-amd64-signed"
download_amd64 "$work/amd64/debs" shim-signed:amd64 shim-helpers-amd64-signed grub-efi-amd64-signed
unpack_all "$work/amd64/debs" "$work/amd64/tree"
install_loader "$work/amd64/tree" usr/lib/shim/shimx64.efi.signed x64/shimx64.efi 8664 "$work/amd64/debs"
install_loader "$work/amd64/tree" usr/lib/shim/mmx64.efi.signed x64/mmx64.efi 8664 "$work/amd64/debs"
install_loader "$work/amd64/tree" usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed x64/grubx64.efi 8664 "$work/amd64/debs"

log "arm64: shim-signed shim-helpers-arm64-signed grub-efi-arm64-signed"
download_private arm64 $SUITE "$work/arm64/debs" shim-signed shim-helpers-arm64-signed grub-efi-arm64-signed
unpack_all "$work/arm64/debs" "$work/arm64/tree"
install_loader "$work/arm64/tree" usr/lib/shim/shimaa64.efi.signed aa64/shimaa64.efi aa64 "$work/arm64/debs"
install_loader "$work/arm64/tree" usr/lib/shim/mmaa64.efi.signed aa64/mmaa64.efi aa64 "$work/arm64/debs"
install_loader "$work/arm64/tree" usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed aa64/grubaa64.efi aa64 "$work/arm64/debs"

# iPXE for the fast loader path (machines without Secure Boot). Debian's source tarballs are not on this
# mirror (pool/main/i/ipxe/*.orig.tar.xz answers 404 for bookworm and trixie), so the packaged build is
# used: trixie's, which has arm64. Its missing embedded script is replaced by autoexec.ipxe, which iPXE
# fetches from beside itself and runs before its banner and autoboot (the boot plan serves it).
log "iPXE ($IPXE_SUITE, packaged build): ipxe"
download_private amd64 $IPXE_SUITE "$work/ipxe/debs" ipxe
unpack_all "$work/ipxe/debs" "$work/ipxe/tree"
install_loader "$work/ipxe/tree" usr/lib/ipxe/snponly.efi x64/ipxe.efi 8664 "$work/ipxe/debs"
install_loader "$work/ipxe/tree" usr/lib/ipxe/ipxe-arm64.efi aa64/ipxe.efi aa64 "$work/ipxe/debs"

packages=$(cat "$work"/amd64/debs/*.deb.json "$work"/arm64/debs/*.deb.json "$work"/ipxe/debs/*.deb.json | jq -s 'sort_by(.architecture, .package)')
jq -s --arg suite "$SUITE" --arg mirror "$MIRROR" --arg at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --argjson packages "$packages" \
  '{suite: $suite, mirror: $mirror, fetchedAt: $at,
    note: "grubx64.efi / grubaa64.efi are the signed netboot GRUB (grubnet*.efi.signed), served under the name shim loads; ipxe.efi is Debian trixie'"'"'s packaged iPXE (unsigned: machines without Secure Boot only)",
    packages: $packages, files: .}' "$FILES_JSON" >"$STAGE/manifest.json"
echo "$recipe" >"$STAGE/.complete"

# Replace OUTDIR's loaders in one go; anything else a person put there stays.
mkdir -p "$OUT"
rm -rf "$OUT/x64" "$OUT/aa64" "$OUT/.complete"
cp -r "$STAGE/x64" "$STAGE/aa64" "$STAGE/manifest.json" "$OUT/"
cp "$STAGE/.complete" "$OUT/.complete"
log "done: $OUT ($(jq '.files | length' "$OUT/manifest.json") files)"
