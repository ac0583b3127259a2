#!/usr/bin/env bash
# Builds and installs a fixed nbdkit for Debian bookworm: trixie's nbdkit
# 1.42.3 source package, rebuilt here as nbdkit and nbdkit-plugin-dev
# 1.42.3-1~nbdmp12+1.
#
# Why: bookworm's nbdkit 1.32.5 aborts (connections.c: raw_send_socket:
# Assertion 'sock >= 0') when a client hangs up with requests in flight, and
# in a related window can send a reply to another client's new socket. Both
# were fixed upstream in 1.33.10. bookworm's own 1.32.5 source is no longer on
# the mirror; trixie's 1.42.3 is, and builds on bookworm unchanged once the
# language-binding plugins (Lua, Perl, Python, Tcl, libvirt, libguestfs,
# VDDK: separate binary packages we do not use) are left out.
#
# The version sorts below trixie's 1.42.3-1, so a real upgrade replaces it.
# Idempotent: does nothing when that version is installed, and reuses the
# .debs in $NBDKIT_DEB_CACHE when they were built before.
#
# Usage: scripts/build-nbdkit.sh [--debs-only DIR]
#   --debs-only DIR   build (or reuse) the .debs and copy them to DIR, without
#                     installing them (the container image installs them).
set -euo pipefail

upstream=1.42.3-1
ours=1.42.3-1~nbdmp12+1
cache=${NBDKIT_DEB_CACHE:-/var/cache/nbd-multipath/nbdkit-$ours}
debs_only=
case ${1:-} in
  --debs-only) debs_only=${2:?--debs-only needs a directory} ;;
  "") ;;
  *) echo "build-nbdkit.sh: unknown argument '$1': use --debs-only DIR or nothing" >&2; exit 2 ;;
esac

installed() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

if [[ -z $debs_only && $(installed nbdkit) == "$ours" && $(installed nbdkit-plugin-dev) == "$ours" ]]; then
  exit 0
fi

# The packages the trimmed build needs (Build-Depends of 1.42.3 less the
# dropped plugins and the test suite's).
build_deps=(
  build-essential debhelper dh-exec dh-autoreconf autoconf automake libtool
  perl pkgconf bash-completion xorriso comerr-dev libbz2-dev
  libcurl4-gnutls-dev libext2fs-dev libgnutls28-dev gnutls-bin liblzma-dev
  libselinux1-dev libssh-dev libtorrent-rasterbar-dev zlib1g-dev libzstd-dev
  libnbd-dev dpkg-dev
)

build() {
  "$(dirname "$0")/install-deps.sh" "${build_deps[@]}"
  # Source lines only: they change no binary package apt installs.
  local list=/etc/apt/sources.list.d/nbd-multipath-nbdkit-src.sources
  if ! apt-cache showsrc nbdkit 2>/dev/null | grep -qx "Version: $upstream"; then
    cat >"$list" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -qq
  fi
  local work
  work=$(mktemp -d /var/tmp/nbdkit-build.XXXXXX)
  trap 'rm -rf "$work"' RETURN
  (cd "$work" && apt-get source -qq --download-only "nbdkit=$upstream") >"$work/source.log" 2>&1 || {
    cat "$work/source.log" >&2
    echo "build-nbdkit.sh: cannot download the source package nbdkit=$upstream (is deb.debian.org reachable?)" >&2
    exit 1
  }
  # apt checked the files against the signed Sources index; dpkg-source
  # would only warn that it has no key for the .dsc's own signature.
  dpkg-source -x "$work/nbdkit_${upstream}.dsc" "$work/src" >"$work/extract.log" 2>&1 || {
    cat "$work/extract.log" >&2
    exit 1
  }
  local src=$work/src
  trim "$src"
  (cd "$src" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" \
    dpkg-buildpackage -b -uc -us -j"$(nproc)" >"$work/build.log" 2>&1) || {
    tail -40 "$work/build.log" >&2
    echo "build-nbdkit.sh: the nbdkit build failed (log above)" >&2
    exit 1
  }
  mkdir -p "$cache"
  cp "$work"/nbdkit_"$ours"_*.deb "$work"/nbdkit-plugin-dev_"$ours"_*.deb "$cache"/
}

# Leaves out the binary packages of the language-binding plugins (and their
# build dependencies), configures them off, and names the build.
trim() {
  local src=$1
  python3 - "$src/debian/control" <<'EOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
head, *stanzas = text.split("\n\n")
keep = ("Package: nbdkit\n", "Package: nbdkit-plugin-dev\n")
stanzas = [s for s in stanzas if s.startswith(keep)]
drop = ("libguestfs", "libvirt", "liblua", "libperl", "python3", "tcl-dev",
        "libblkio", "linux-image", "busybox", "iproute2", "jq", "socat",
        "expect", "bsdextrautils", "openssh-server", "qemu-utils", "libnbd-bin",
        "# libguestfs")
lines = []
for line in head.split("\n"):
    if line.startswith(" ") and any(d in line for d in drop):
        continue
    lines.append(line)
head = "\n".join(lines)
# Suggests of nbdkit name the dropped plugin packages: harmless, but keep
# them to packages that exist.
out = "\n\n".join([head] + stanzas)
out = re.sub(r"(?m)^ nbdkit-plugin-(guestfs|libvirt|lua|perl|python|tcl|vddk),?\n", "", out)
open(path, "w").write(out.rstrip("\n") + "\n")
EOF
  rm -f "$src"/debian/nbdkit-plugin-{guestfs,libvirt,lua,perl,python,tcl,vddk}.*
  sed -i 's|^\(\tdh_auto_configure -- .*\)$|\1 --disable-lua --disable-perl --disable-python --disable-tcl --disable-ocaml --disable-rust --disable-golang --disable-vddk --disable-libguestfs-tests --without-libvirt --without-libguestfs --without-libblkio --with-extra=nbd-multipath|' \
    "$src/debian/rules"
  grep -q -- '--with-extra=nbd-multipath' "$src/debian/rules" || {
    echo "build-nbdkit.sh: debian/rules changed shape; cannot add the configure flags" >&2
    exit 1
  }
  # The blkio plugin is listed for amd64 in nbdkit.install; bookworm has no libblkio.
  sed -i '/blkio/d' "$src/debian/nbdkit.install"
  local date
  date=$(date -R)
  {
    printf 'nbdkit (%s) bookworm; urgency=medium\n\n' "$ours"
    printf '  * Rebuilt for bookworm by nbd-multipath (scripts/build-nbdkit.sh):\n'
    printf '    bookworm'"'"'s 1.32.5 aborts when a client hangs up mid-flight.\n'
    printf '  * Language-binding plugins left out.\n\n'
    printf ' -- nbd-multipath maintainers <root@localhost>  %s\n\n' "$date"
    cat "$src/debian/changelog"
  } >"$src/debian/changelog.new"
  mv "$src/debian/changelog.new" "$src/debian/changelog"
}

if ! ls "$cache"/nbdkit_"$ours"_*.deb "$cache"/nbdkit-plugin-dev_"$ours"_*.deb >/dev/null 2>&1; then
  echo "build-nbdkit.sh: building nbdkit $ours (a few minutes; once per machine)"
  build
fi
if [[ -n $debs_only ]]; then
  mkdir -p "$debs_only"
  cp "$cache"/*.deb "$debs_only"/
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --allow-downgrades "$cache"/nbdkit_"$ours"_*.deb "$cache"/nbdkit-plugin-dev_"$ours"_*.deb
