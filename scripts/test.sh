#!/usr/bin/env bash
# The project's test command: builds every binary once (release, static), wraps the component
# binaries into FROM scratch images, then runs all unit and integration tests against the real
# container engine with those same release artifacts.
#
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/build-images.sh
cargo test --release --workspace "$@"
