#!/usr/bin/env bash
# Builds netboot-appliance_<version>_amd64.deb with dpkg-deb (no debhelper needed): the built JS, the
# production node_modules, the native addons as built here (N-API: stable across Node versions), the
# unit, a commented conffile, and `netboot`. Output in ${OUT:-dist-deb}/. Usage: packaging/deb.sh [OUT]
# amd64 only for now (the host's build); arm64 needs the addons cross-built (gcc-aarch64-linux-gnu).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-dist-deb}
VERSION=$(node -p 'require("./package.json").version')
ARCH=amd64
[ "$(dpkg --print-architecture)" = amd64 ] || { echo "packaging/deb.sh: builds on amd64 only" >&2; exit 1; }
for f in dist/src/bin.js native/build/Release/nbdh_udp.node native/build/Release/nbdh_netdev.node native/build/Release/nbdh_intake.node; do
  [ -f "$f" ] || { echo "packaging/deb.sh: $f missing (npm ci && npm run build first)" >&2; exit 1; }
done

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
cp native/build/Release/nbdh_udp.node native/build/Release/nbdh_netdev.node native/build/Release/nbdh_intake.node "$lib/native/build/Release/"
node -e '
  const p = require("./package.json");
  const keep = { name: p.name, version: p.version, type: p.type, description: p.description, license: p.license, dependencies: p.dependencies };
  require("fs").writeFileSync(process.argv[1], JSON.stringify(keep, null, 2) + "\n");
' "$lib/package.json"
cp package-lock.json "$lib/"
(cd "$lib" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
rm -f "$lib/package-lock.json"
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
strip --strip-unneeded "$lib"/native/build/Release/*.node
# The addons' libc requirement, from the newest GLIBC symbol version they use.
glibc=$(objdump -T "$lib"/native/build/Release/*.node | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)

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
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$size/" -e "s/@GLIBC@/$glibc/" packaging/debian/control >"$root/DEBIAN/control"
(cd "$root" && find . -type f -not -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)

mkdir -p "$OUT"
deb="$OUT/netboot-appliance_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
