#!/usr/bin/env bash
# Prepares this machine to build and run nbd-multipath's containers with podman:
# installs podman, runc, debootstrap and podman-compose, configures the engine
# (runc, lowered ulimits) and produces the base image debian:bookworm locally
# from a debootstrap rootfs, since no container registry is reachable here.
# Idempotent; run as root. Usage: container/podman-setup.sh [--force-base]
#   --force-base   rebuild debian:bookworm even if it exists
# Env: MIRROR (default http://deb.debian.org/debian), SUITE (default bookworm).
set -euo pipefail

mirror=${MIRROR:-http://deb.debian.org/debian}
suite=${SUITE:-bookworm}
force_base=0
case "${1:-}" in
  --force-base) force_base=1 ;;
  "") ;;
  *) echo "usage: $0 [--force-base]" >&2; exit 2 ;;
esac

if ((EUID != 0)); then
  echo "$0: must run as root (podman here works rootful only)" >&2
  exit 1
fi

# crun is left out on purpose: it refuses this kernel's hybrid cgroup v1/v2
# layout, runc copes. netavark + aardvark-dns: compose services find each
# other by name on internal networks (CNI's dnsname plugin refuses those).
"$(dirname "$0")/../scripts/install-deps.sh" \
  podman runc debootstrap podman-compose netavark aardvark-dns iptables uidmap

# The network backend is chosen once per machine: switching from CNI strands
# existing containers, so refuse rather than break someone's setup.
if [[ $(podman info --format '{{.Host.NetworkBackend}}') == cni ]] &&
   [[ -n $(podman ps -aq) ]]; then
  echo "$0: podman has containers on the CNI network backend; netavark is needed" \
       "(remove them, or 'podman system reset', then run this again)" >&2
  exit 1
fi

# Engine settings. A drop-in keeps the distribution's containers.conf intact.
# The default ulimits (1048576 files) are above what this sandbox allows a
# process, so the OCI runtime fails to apply them: 4096 fits.
conf_dir=/etc/containers/containers.conf.d
mkdir -p "$conf_dir"
cat >"$conf_dir/50-nbd-multipath.conf" <<'EOF'
# Written by nbd-multipath container/podman-setup.sh.
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"

[network]
network_backend = "netavark"
EOF

# Base image: a minbase debootstrap rootfs imported as debian:bookworm. It is
# also tagged with the fully qualified name so that `FROM debian:bookworm`
# resolves locally whatever the short-name settings say.
if ((force_base)) || ! podman image exists "docker.io/library/debian:$suite"; then
  rootfs=$(mktemp -d /var/tmp/nbdmp-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "debootstrap $suite from $mirror (a few minutes)..." >&2
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
  rm -f "$rootfs.log"
  # Slim it the way Debian's official image is: no apt lists or caches.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
         "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" --numeric-owner -c . |
    podman import --change 'CMD ["/bin/bash"]' - "localhost/debian:$suite" >/dev/null
  podman tag "localhost/debian:$suite" "docker.io/library/debian:$suite"
fi
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -F ":$suite" >&2
echo "podman ready: $(podman --version), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}')" >&2
