#!/usr/bin/env bash
# cmake --install puts the plugin into nbdkit's plugindir, and its --help
# lists every key.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require cmake pkg-config
build=$(dirname "$MP_PLUGIN")
[[ -f $build/CMakeCache.txt ]] || mp_skip "MP_PLUGIN is not in a CMake build directory"
plugindir=$(pkg-config --variable=plugindir nbdkit)
DESTDIR=$MP_TMP/root cmake --install "$build" >"$MP_TMP/install.log" 2>&1 ||
  { cat "$MP_TMP/install.log" >&2; fail "cmake --install failed"; }
installed=$MP_TMP/root$plugindir/nbdkit-multipath-plugin.so
[[ -f $installed ]] || fail "not installed at $installed"
${MP_PRELOAD:+env LD_PRELOAD=$MP_PRELOAD} nbdkit "$installed" --help >"$MP_TMP/help.txt" 2>&1 || fail "nbdkit --help failed"
for key in config= path= selector= timeout= request-timeout= connect-timeout= no-path= \
  retries= shared-cache=; do
  assert_contains "$MP_TMP/help.txt" "$key"
done
# --help sends an installed user to the man page and the installed docs, never
# to a file of the source tree.
assert_contains "$MP_TMP/help.txt" "man nbdkit-multipath-plugin"
assert_not_contains "$MP_TMP/help.txt" "config/README.md"
docdir=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build/CMakeCache.txt")/share/doc/nbd-multipath
assert_contains "$MP_TMP/help.txt" "$docdir/CONFIGURATION.md"
[[ -f $MP_TMP/root$docdir/CONFIGURATION.md ]] || fail "CONFIGURATION.md is not installed in $docdir"

# --dump-plugin carries the library versions, as nbdkit's nbd plugin does.
${MP_PRELOAD:+env LD_PRELOAD=$MP_PRELOAD} nbdkit "$installed" --dump-plugin >"$MP_TMP/dump.txt" 2>&1 ||
  fail "nbdkit --dump-plugin failed"
for key in libnbd_version libiscsi_version yaml_cpp_version; do
  assert_contains "$MP_TMP/dump.txt" "^$key=[0-9]+\.[0-9]+"
done

# The rest of the installation: CLI, man pages, unit, docs, examples.
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build/CMakeCache.txt")
for f in bin/nbd-multipath-ctl share/man/man1/nbdkit-multipath-plugin.1 \
  share/man/man8/nbd-multipath-ctl.8 share/doc/nbd-multipath/README.md \
  share/doc/nbd-multipath/METRICS.md share/doc/nbd-multipath/examples/service.yaml; do
  [[ -f $MP_TMP/root$prefix/$f ]] || fail "not installed: $prefix/$f"
done
unitdir=$(sed -n 's/^MP_SYSTEMD_UNITDIR:PATH=//p' "$build/CMakeCache.txt")
[[ -f $MP_TMP/root$unitdir/nbd-multipath@.service ]] || fail "the unit is not installed in $unitdir"
completiondir=$(sed -n 's/^MP_BASH_COMPLETION_DIR:PATH=//p' "$build/CMakeCache.txt")
[[ $completiondir == "$prefix/share/bash-completion/completions" ]] ||
  fail "the bash completion goes to $completiondir, not under $prefix/share"
bash -n "$MP_TMP/root$completiondir/nbd-multipath-ctl" ||
  fail "the bash completion is not installed in $completiondir, or does not parse"
if command -v man >/dev/null; then
  for page in man1/nbdkit-multipath-plugin.1 man8/nbd-multipath-ctl.8; do
    MANWIDTH=80 man -l "$MP_TMP/root$prefix/share/man/$page" >"$MP_TMP/page.txt" 2>&1 ||
      fail "man cannot format $page"
    for section in NAME SYNOPSIS DESCRIPTION EXAMPLES "SEE ALSO"; do
      assert_contains "$MP_TMP/page.txt" "^$section"
    done
  done
fi
"$MP_TMP/root$prefix/bin/nbd-multipath-ctl" --help >"$MP_TMP/ctl-help.txt" 2>&1 || true
assert_contains "$MP_TMP/ctl-help.txt" "nbd-multipath-ctl\(8\)"
