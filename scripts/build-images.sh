#!/usr/bin/env bash
# Builds every binary of the workspace once (release, statically linked: see .cargo/config.toml)
# and wraps the component binaries into `FROM scratch` images. No registry is needed: nothing is
# pulled, the images hold a single static binary each.
#
# Usage: scripts/build-images.sh            (engine: $FLOWCTL_DOCKER_BIN, default docker)
#        FLOWCTL_DOCKER_BIN=podman scripts/build-images.sh
#        FLOWCTL_IMAGE_TAG=mine scripts/build-images.sh   (flowctl/*:mine instead of the shared
#                                                          flowctl/*:dev; scripts/bench.sh takes
#                                                          the same variable, the tests use :dev)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
engine=${FLOWCTL_DOCKER_BIN:-docker}
bin_dir="$root/target/x86_64-unknown-linux-gnu/release"
tag=${FLOWCTL_IMAGE_TAG:-dev}

# image tag, the binary it runs as its entrypoint and, optionally, the component's metadata file
# (repository path), shipped as /metadata.json as upstream's images do.
IMAGES=(
  "flowctl/stellar-live-source-datalake:$tag stellar-live-source-datalake examples/stellar/components/metadata/stellar-live-source-datalake.json"
  "flowctl/ttp-processor:$tag ttp-processor examples/stellar/components/metadata/ttp-processor.json"
  "flowctl/consumer-app:$tag consumer-app examples/stellar/components/metadata/consumer-app.json"
  "flowctl/test-component:$tag flowctl-test-component"
  # flowctl itself, for `flowctl control-plane` in translated pipelines (flowctl translate).
  "flowctl/flowctl:$tag flowctl"
  # The example pipeline as flowctl.v1 components (examples/ttp-pipeline-v1.yaml).
  "flowctl/stellar-live-source-v1:$tag stellar-live-source-v1 examples/stellar/v1/metadata/stellar-live-source-v1.json"
  # The same source under upstream's name and variables (obsrvr-stellar-components).
  "flowctl/raw-ledger-source:$tag raw-ledger-source examples/stellar/v1/metadata/raw-ledger-source.json"
  "flowctl/ttp-processor-v1:$tag ttp-processor-v1 examples/stellar/v1/metadata/ttp-processor-v1.json"
  "flowctl/consumer-app-v1:$tag consumer-app-v1 examples/stellar/v1/metadata/consumer-app-v1.json"
  # Upstream's ledger batch components, under upstream's names (docs/processes.md).
  "flowctl/stellar-ledger-processor:$tag stellar-ledger-processor examples/stellar/v1/metadata/stellar-ledger-processor.json"
  "flowctl/jsonl-sink:$tag jsonl-sink examples/stellar/v1/metadata/jsonl-sink.json"
  "flowctl/postgres-sink:$tag postgres-sink examples/stellar/v1/metadata/postgres-sink.json"
)

cd "$root"
if [ "${FLOWCTL_SKIP_CARGO_BUILD:-}" != 1 ]; then
  cargo build --release --workspace --bins
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx" "$ctx.err"' EXIT
for entry in "${IMAGES[@]}"; do
  read -r image binary metadata <<<"$entry"
  rm -rf "${ctx:?}"/*
  cp "$bin_dir/$binary" "$ctx/$binary"
  copy_metadata=
  if [ -n "${metadata:-}" ]; then
    cp "$root/$metadata" "$ctx/metadata.json"
    copy_metadata="COPY metadata.json /metadata.json"
  fi
  # 65534 is "nobody": the components never need root, and a scratch image has no /etc/passwd.
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY $binary /$binary
$copy_metadata
USER 65534:65534
ENTRYPOINT ["/$binary"]
DOCKERFILE
  # The legacy builder needs no buildx plugin; its deprecation notice is noise, so stderr is
  # shown only when the build fails.
  if ! DOCKER_BUILDKIT=0 "$engine" build --quiet --label "io.flowctl.image=$tag" --tag "$image" \
    "$ctx" >/dev/null 2>"$ctx.err"; then
    cat "$ctx.err" >&2
    exit 1
  fi
  echo "built $image ($(du -h "$bin_dir/$binary" | cut -f1) binary $binary)"
done
# The S3 server of examples/ttp-pipeline-s3.yaml: s3s-fs from crates.io, built static (see the
# source's README), wrapped the same way. Optional: without it only that example cannot run.
s3s_bin=${S3S_FS_BIN:-$(command -v s3s-fs || true)}
if [ -n "$s3s_bin" ]; then
  rm -rf "${ctx:?}"/*
  cp "$s3s_bin" "$ctx/s3s-fs"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY s3s-fs /s3s-fs
USER 65534:65534
ENTRYPOINT ["/s3s-fs"]
DOCKERFILE
  if ! DOCKER_BUILDKIT=0 "$engine" build --quiet --label "io.flowctl.image=$tag" --tag "flowctl/s3s-fs:$tag" \
    "$ctx" >/dev/null 2>"$ctx.err"; then
    cat "$ctx.err" >&2
    exit 1
  fi
  echo "built flowctl/s3s-fs:$tag ($(du -h "$s3s_bin" | cut -f1) binary s3s-fs)"
else
  echo "skipped flowctl/s3s-fs:$tag: no s3s-fs (scripts/test.sh installs it; or set S3S_FS_BIN)"
fi
# A rebuild moves the tags; drop the untagged images it leaves behind (ours only, by label).
"$engine" image prune --force --filter "label=io.flowctl.image=$tag" >/dev/null
