#!/usr/bin/env bash
# Installs the Debian bookworm packages nbd-multipath builds and tests with,
# then the fixed nbdkit (scripts/build-nbdkit.sh: bookworm's own aborts when a
# client hangs up mid-flight); or, given package names, those packages only.
# Idempotent: only missing packages go to apt, and nbdkit is built once.
set -euo pipefail

pkgs=("$@")
all=
((${#pkgs[@]})) || all=1
[[ -z $all ]] || pkgs=(
  build-essential cmake pkg-config clang-format
  libnbd-dev libnbd-bin
  libasio-dev libyaml-cpp-dev doctest-dev liburiparser-dev
  libboost-dev nlohmann-json3-dev libcli11-dev libfmt-dev curl
  prometheus-cpp-dev prometheus bash-completion
  python3-libnbd fio procps util-linux
  libiscsi-dev libiscsi-bin tgt
  iproute2 nftables socat e2fsprogs
  qemu-system-x86 busybox-static nbd-client dmsetup cpio xz-utils zstd
  debhelper dpkg-dev lintian
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [[ -n $all ]]; then
  "$(dirname "$0")/build-nbdkit.sh"
fi
