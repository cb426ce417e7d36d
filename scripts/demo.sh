#!/usr/bin/env bash
# The example Stellar pipeline in one command, on a fresh machine with Rust and Docker:
# builds flowctl and the component images (scripts/build-images.sh), then runs
# examples/ttp-pipeline.yaml. Extra arguments go to `flowctl run` (e.g. --project demo).
#
# Usage: scripts/demo.sh [flowctl run flags...]
#        FLOWCTL_DOCKER_BIN=podman scripts/demo.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
engine=${FLOWCTL_DOCKER_BIN:-docker}

for tool in cargo "$engine"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "demo: '$tool' is not installed or not on PATH" >&2
    exit 1
  fi
done

cd "$root"
# Builds every workspace binary (flowctl included) in release mode, then the images.
scripts/build-images.sh
exec "$root/target/x86_64-unknown-linux-gnu/release/flowctl" --docker-bin "$engine" \
  run examples/ttp-pipeline.yaml "$@"
