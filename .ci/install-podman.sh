#!/usr/bin/env bash
# Installs and configures rootful Podman from Debian's packages for flowctl's `--docker-bin podman`
# tests. Idempotent, non-interactive, must run as root.
#
# Why each setting (these machines are VMs without systemd, with cgroup v1 and a kernel that
# refuses to raise rlimits):
# - default_ulimits = []: Debian's podman otherwise asks the runtime to set RLIMIT_NOFILE/NPROC
#   above what this kernel lets root raise, and every `podman run` fails.
# - cgroup_manager = cgroupfs, events_logger = file: there is no systemd/journald here.
# - network_backend = netavark (+ aardvark-dns): user-defined networks get DNS, so components
#   find each other by network alias as they do under Docker.
# - runtime = runc: the same OCI runtime the Docker engine on these machines already uses.
# - storage driver overlay: native overlayfs mounts work here (checked by `podman info` below).
# Rootful only: flowctl's CI runs as root. Images are per engine: build them with `podman build`
# (or `docker save IMG | podman load`); Docker's image store is not visible to podman.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-podman.sh: must run as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
packages=(podman netavark aardvark-dns runc conmon uidmap)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >/dev/null
fi

mkdir -p /etc/containers
cat >/etc/containers/containers.conf <<'EOF'
# Written by flowctl's .ci/install-podman.sh (rootful podman on VMs without systemd).
[containers]
# Raising rlimits is not permitted on these machines; do not ask the runtime to.
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"

[network]
network_backend = "netavark"
EOF

cat >/etc/containers/storage.conf <<'EOF'
# Written by flowctl's .ci/install-podman.sh.
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF

# Fail here, not in a test, if the configuration did not take (e.g. a CNI backend left over).
if ! podman info --format '{{.Host.NetworkBackend}}' >/tmp/podman-backend.$$ 2>&1; then
    cat /tmp/podman-backend.$$ >&2
    rm -f /tmp/podman-backend.$$
    echo "install-podman.sh: podman info failed" >&2
    exit 1
fi
backend=$(cat /tmp/podman-backend.$$)
rm -f /tmp/podman-backend.$$
if [ "$backend" != "netavark" ]; then
    echo "install-podman.sh: podman uses network backend '$backend', expected netavark" >&2
    exit 1
fi

echo "podman $(podman version --format '{{.Client.Version}}') ready" \
    "(backend $backend, storage $(podman info --format '{{.Store.GraphDriverName}}'))"
