#!/usr/bin/env bash
# The Debian package: dpkg-buildpackage builds a .deb from a copy of the
# tree; it holds the plugin in nbdkit's plugindir, the CLI, the man pages,
# the unit, the docs and the examples; extracted into a throwaway root, the
# installed plugin and CLI run a two-path disk. A build of the installed
# targets (a few minutes): label "package", run with ctest -L package, which
# scripts/test.sh does in its default variant. With MP_DEBS_DIR set, the
# .deb is left in MP_DEBS_DIR/debs/ for container/test-podman.sh.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require dpkg-buildpackage dpkg-deb git nbdkit
mp_require_ctl
src=${MP_SOURCE:?}
[[ -d $src/debian ]] || mp_skip "no debian/ in $src"
# scripts/install-deps.sh installs them: missing ones are a failure.
dpkg-checkbuilddeps "$src/debian/control" >"$MP_TMP/deps.log" 2>&1 ||
  fail "build dependencies missing (run scripts/install-deps.sh): $(cat "$MP_TMP/deps.log")"

# A copy of the tracked files (and the working tree's changes to them).
mkdir -p "$MP_TMP/pkg/nbd-multipath"
(cd "$src" && git ls-files -z --cached --others --exclude-standard | grep -zv '^build' |
  xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$MP_TMP/pkg/nbd-multipath"
mp_log "building the package (a full build)"
(cd "$MP_TMP/pkg/nbd-multipath" &&
  DEB_BUILD_OPTIONS="nocheck parallel=2" dpkg-buildpackage -us -uc -b) >"$MP_TMP/build.log" 2>&1 ||
  { tail -n 40 "$MP_TMP/build.log" >&2; fail "dpkg-buildpackage failed"; }
deb=$(ls "$MP_TMP"/pkg/nbd-multipath_*.deb)
mp_log "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$MP_TMP/files.txt"
plugindir=$(pkg-config --variable=plugindir nbdkit)
for f in "$plugindir/nbdkit-multipath-plugin.so" /usr/bin/nbd-multipath-ctl \
  /usr/share/man/man1/nbdkit-multipath-plugin.1.gz /usr/share/man/man8/nbd-multipath-ctl.8.gz \
  "/lib/systemd/system/nbd-multipath@.service" /usr/share/doc/nbd-multipath/README.md \
  /usr/share/doc/nbd-multipath/CONFIGURATION.md /usr/share/doc/nbd-multipath/examples/service.yaml \
  /usr/share/doc/nbd-multipath/copyright /usr/share/bash-completion/completions/nbd-multipath-ctl; do
  grep -qxF "$f" "$MP_TMP/files.txt" || fail "the package lacks $f"
done
dpkg-deb -f "$deb" Depends | grep -q 'nbdkit (>= 1.33.10)' || fail "Depends lacks the fixed nbdkit"
dpkg-deb -f "$deb" Depends | grep -q 'libprometheus-cpp-core' || fail "Depends lacks prometheus-cpp's core library"
grep -q "^ExecReload=/usr/bin/nbd-multipath-ctl " <(dpkg-deb --fsys-tarfile "$deb" |
  tar -xOf - "./lib/systemd/system/nbd-multipath@.service") || fail "the unit's ExecReload path"
command -v lintian >/dev/null || fail "lintian is not installed (scripts/install-deps.sh installs it)"
lintian --fail-on error "$deb" >"$MP_TMP/lintian.log" 2>&1 || { cat "$MP_TMP/lintian.log" >&2; fail "lintian errors"; }

# The installed files run a two-path disk.
root=$MP_TMP/root
dpkg -x "$deb" "$root"
make_image "$MP_TMP/disk.img" 4M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
MP_PLUGIN=$root$plugindir/nbdkit-multipath-plugin.so
start_multipath mp "$(upstream_uri a)" "$(upstream_uri b)" shared-cache=true
write_pattern "$(mp_uri mp)" 7 4M
verify_pattern "$(mp_uri mp)" 7 4M
"$root/usr/bin/nbd-multipath-ctl" --version | grep -q '^nbd-multipath-ctl ' || fail "the packaged CLI"
# Handed on to the container test (scripts/test.sh sets MP_DEBS_DIR), which
# installs this package in its images instead of building it again.
if [[ -n ${MP_DEBS_DIR:-} ]]; then
  rm -rf "$MP_DEBS_DIR/debs" && mkdir -p "$MP_DEBS_DIR/debs"
  cp "$deb" "$MP_DEBS_DIR/debs/"
  mp_log "package kept for the container test in $MP_DEBS_DIR/debs"
fi
