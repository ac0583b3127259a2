#!/usr/bin/env bash
# The whole test suite, from a fresh Debian bookworm machine: installs what is
# missing, then builds and tests three variants: default, address (asan +
# ubsan) and thread (tsan); the default one also builds and tests the Debian
# package and the containers (podman; MP_CONTAINERS=0 leaves them out).
# MP_VARIANTS="default" runs one variant only. The C++ must be
# clang-formatted, and the default build treats warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/check-format.sh

for v in ${MP_VARIANTS:-default address thread}; do
  case $v in
    default) dir=build sanitize= werror=ON ;;
    address | thread) dir=build-$v sanitize=$v werror=OFF ;;
    *) echo "test.sh: unknown variant '$v': use default, address or thread" >&2; exit 2 ;;
  esac
  echo "=== $v build ($dir)"
  cmake -S . -B "$dir" -DMP_SANITIZE="$sanitize" -DMP_WERROR="$werror" >/dev/null
  cmake --build "$dir" -j"$(nproc)"
  echo "=== $v tests"
  # Integration tests run one at a time: they assert on failover timing.
  (cd "$dir" && ctest --output-on-failure -L unit -j"$(nproc)" &&
    ctest --output-on-failure -L integration)
  # The Debian package, then the containers built from it (podman), once: in
  # the default variant's run. The container images install the package the
  # package test built (MP_DEBS_DIR). MP_CONTAINERS=0 leaves them out.
  if [[ $v == default ]]; then
    export MP_DEBS_DIR=$PWD/$dir/package
    (cd "$dir" && ctest --output-on-failure -L package)
    if [[ ${MP_CONTAINERS:-1} != 0 ]]; then
      ./container/podman-setup.sh
      (cd "$dir" && MP_CONTAINERS_REQUIRED=1 ctest --output-on-failure -L container)
    fi
  fi
done
echo "=== all tests passed: ${MP_VARIANTS:-default address thread}"
