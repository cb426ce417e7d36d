#!/usr/bin/env bash
# flowctl's benchmarks: builds and runs the flowctl-bench program (scripts/bench/, one module
# per section). Every figure is a ratio of two things measured in turns in one run; the tables
# are printed and the figures written as JSON (--json FILE, default target/bench/results.json).
#
#   scripts/bench.sh [--quick | --once] [lifecycle scaling datapath cost backends relay processes | all]
#   scripts/bench.sh soak --soak-minutes 10
#   scripts/bench.sh --help
#
# Needs the release binaries and the flowctl/*:dev images (scripts/build-images.sh), and what a
# section names (docker-compose v1, podman for the lifecycle's second engine, s3s-fs, curl).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --manifest-path "$root/Cargo.toml" --release --quiet -p flowctl-bench
exec "$root/target/x86_64-unknown-linux-gnu/release/flowctl-bench" "$@"
