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
