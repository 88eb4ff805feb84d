#!/usr/bin/env bash
# Builds netboot-appliance_<version>_<arch>.deb with dpkg-deb (no debhelper needed): the built JS, the
# production node_modules, the native addons (N-API: stable across Node versions), the unit, a commented
# conffile, and `netboot`. Output in OUT (default dist-deb/). Usage: packaging/deb.sh [OUT] [amd64|arm64]
# amd64 takes the addons as `npm ci` built them here. arm64 cross-compiles them with Debian's
# gcc-aarch64-linux-gnu: they are four C files on N-API and libc only, so a cross compiler builds them in
# a second, where node-gyp under qemu-user would need an arm64 root and minutes. Everything else in the
# package is JavaScript (the production dependencies have no native code; this script checks).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-dist-deb}
ARCH=${2:-amd64}
VERSION=$(node -p 'require("./package.json").version')
ADDONS="nbdh_udp nbdh_netdev nbdh_intake nbdh_file"
[ "$(dpkg --print-architecture)" = amd64 ] || { echo "packaging/deb.sh: builds on amd64 hosts only" >&2; exit 1; }
case "$ARCH" in
  amd64) TOOL_PREFIX="" GRUB_SIGNED=grub-efi-amd64-signed ;;
  arm64) TOOL_PREFIX=aarch64-linux-gnu- GRUB_SIGNED=grub-efi-arm64-signed ;;
  *) echo "packaging/deb.sh: architecture $ARCH: only amd64 and arm64" >&2; exit 1 ;;
esac
[ -f dist/src/bin.js ] || { echo "packaging/deb.sh: dist/src/bin.js missing (npm ci && npm run build first)" >&2; exit 1; }
if [ "$ARCH" = amd64 ]; then
  for a in $ADDONS; do
    [ -f "native/build/Release/$a.node" ] || { echo "packaging/deb.sh: native/build/Release/$a.node missing (npm ci)" >&2; exit 1; }
  done
else
  command -v aarch64-linux-gnu-gcc >/dev/null || {
    echo "packaging/deb.sh: aarch64-linux-gnu-gcc missing (apt-get install gcc-aarch64-linux-gnu)" >&2
    exit 1
  }
  [ -f /usr/include/node/node_api.h ] || { echo "packaging/deb.sh: /usr/include/node/node_api.h missing (nodejs headers)" >&2; exit 1; }
fi

work=$(mktemp -d /tmp/netboot-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
root="$work/root"
lib="$root/usr/lib/netboot-appliance"
mkdir -p "$lib/native/build/Release" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/netboot-appliance" \
  "$root/usr/share/doc/netboot-appliance" "$root/DEBIAN"

# The program: built JS (no tests, benchmarks or lab), templates, the web page, the firmware script.
mkdir -p "$lib/dist"
cp -r dist/src "$lib/dist/src"
cp -r templates web "$lib/"
mkdir -p "$lib/firmware" && cp firmware/fetch.sh "$lib/firmware/"
for a in $ADDONS; do
  if [ "$ARCH" = amd64 ]; then
    cp "native/build/Release/$a.node" "$lib/native/build/Release/"
  else
    # The flags of native/binding.gyp; N-API symbols stay undefined and resolve against node at load time.
    aarch64-linux-gnu-gcc -O2 -Wall -Wextra -Werror -fPIC -shared -pthread -I/usr/include/node -Inative \
      -o "$lib/native/build/Release/$a.node" "native/$a.c"
  fi
done
node -e '
  const p = require("./package.json");
  const keep = { name: p.name, version: p.version, type: p.type, description: p.description, license: p.license, dependencies: p.dependencies };
  require("fs").writeFileSync(process.argv[1], JSON.stringify(keep, null, 2) + "\n");
' "$lib/package.json"
cp package-lock.json "$lib/"
(cd "$lib" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
rm -f "$lib/package-lock.json"
if [ -n "$(find "$lib/node_modules" -name '*.node' -print -quit)" ]; then
  echo "packaging/deb.sh: a production dependency ships native code; it would need building for $ARCH" >&2
  exit 1
fi
# Leave out what a runtime never reads: docs, tests, sources maps of dependencies, dotfiles.
find "$lib/node_modules" \( -iname '*.md' -o -iname '*.markdown' -o -name '*.map' -o -name '*.ts' -not -name '*.d.ts' \
  -o -name '.*' -o -iname 'CHANGELOG*' -o -iname 'HISTORY*' \) -type f -delete
find "$lib/node_modules" -name '*.d.ts' -type f -delete
find "$lib/node_modules" -type d \( -name test -o -name tests -o -name __tests__ -o -name example -o -name examples -o -name docs \) -prune -exec rm -rf {} +
find "$lib/node_modules" -type d -name '.*' -prune -exec rm -rf {} +
find "$lib/node_modules" -type f -iname '*.html' -delete # module docs (they load CDNs)
find "$lib/node_modules" -type d -empty -delete
find "$root" -type d -exec chmod 755 {} + ; find "$root" -type f -exec chmod 644 {} +
# Scripts keep their execute bit (lintian: script-not-executable).
find "$lib" -type f \( -name '*.js' -o -name '*.mjs' -o -name '*.sh' -o -path '*/bin/*' \) -print0 |
  while IFS= read -r -d '' f; do [ "$(head -c 2 "$f")" = '#!' ] && chmod 755 "$f"; done
"${TOOL_PREFIX}strip" --strip-unneeded "$lib"/native/build/Release/*.node
# The addons' libc requirement, from the newest GLIBC symbol version they use.
glibc=$("${TOOL_PREFIX}objdump" -T "$lib"/native/build/Release/*.node | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)

cat >"$root/usr/bin/netboot" <<'SH'
#!/bin/sh
exec /usr/bin/node /usr/lib/netboot-appliance/dist/src/bin.js "$@"
SH
chmod 755 "$root/usr/bin/netboot" "$lib/firmware/fetch.sh"
sed -e 's|/usr/bin/node /opt/netboot-appliance/dist/src/bin.js|/usr/bin/netboot|' \
  -e 's|file:///opt/netboot-appliance/README.md|man:netboot(1)|' \
  -e 's|^Documentation=.*|Documentation=file:///usr/share/doc/netboot-appliance/README.md.gz|' \
  systemd/netboot-appliance.service >"$root/lib/systemd/system/netboot-appliance.service"
cp packaging/debian/config.yaml "$root/etc/netboot-appliance/config.yaml"
chmod 640 "$root/etc/netboot-appliance/config.yaml"
gzip -9n -c README.md >"$root/usr/share/doc/netboot-appliance/README.md.gz"
cp packaging/debian/copyright "$root/usr/share/doc/netboot-appliance/copyright"
date_r=$(date -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")
printf 'netboot-appliance (%s) unstable; urgency=medium\n\n  * Built from the repository.\n\n -- netboot-appliance team <netboot@example.org>  %s\n' \
  "$VERSION" "$date_r" | gzip -9n >"$root/usr/share/doc/netboot-appliance/changelog.gz"
mkdir -p "$root/usr/share/man/man1" "$root/usr/share/lintian/overrides"
gzip -9n -c packaging/debian/netboot.1 >"$root/usr/share/man/man1/netboot.1.gz"
cp packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/netboot-appliance"
chmod 644 "$root/usr/share/man/man1/netboot.1.gz" "$root/usr/share/lintian/overrides/netboot-appliance"

cp packaging/debian/conffiles packaging/debian/postinst packaging/debian/postrm packaging/debian/prerm "$root/DEBIAN/"
chmod 755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm" "$root/DEBIAN/prerm"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$size/" -e "s/@GLIBC@/$glibc/" \
  -e "s/@GRUB_SIGNED@/$GRUB_SIGNED/" packaging/debian/control >"$root/DEBIAN/control"
(cd "$root" && find . -type f -not -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)

mkdir -p "$OUT"
deb="$OUT/netboot-appliance_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
