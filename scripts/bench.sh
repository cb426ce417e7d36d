#!/usr/bin/env bash
# Benchmarks for flowctl (issue 7). Every figure is a ratio of two things measured alternately in
# the same run (medians of RUNS runs), because shared machines are noisy.
#
#   scripts/bench.sh [--quick] [all|lifecycle|scaling|datapath|cost]   (default: all, 5 runs)
#                    (--quick: 3 runs, 20 s idle window; --once: 1 run, to try the script out)
#   scripts/bench.sh soak [MINUTES]                                    (default: 10 minutes)
#
# Needs the release binaries and the flowctl/*:dev images (scripts/build-images.sh), docker and
# docker-compose (v1). Everything it creates carries a project name unique to this invocation
# (fb<pid>...) and is removed on exit, also on Ctrl+C.
#
# 1. lifecycle  the example pipeline (3 images, bounded range) with `flowctl run` versus
#               `docker-compose up --abort-on-container-exit` + `down` on the same pipeline
#               translated by `flowctl translate --to compose` (health checks: each image's own
#               `healthcheck` subcommand, interval 100 ms).
# 2. scaling    fan-out pipelines of 3, 10 and 30 test components (1 source -> N-2 processors ->
#               1 sink, depth 3): time to all-healthy.
# 3. datapath   ledgers/s and events/s through the three containers (consumer summary) versus
#               the in-process floor `ttp-processor events --datalake` (same files, one process).
# 4. cost       flowctl's peak RSS, idle CPU per minute, stripped size, `--version` start time.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir="$root/target/x86_64-unknown-linux-gnu/release"
FLOWCTL="$bin_dir/flowctl"
TTP="$bin_dir/ttp-processor"
DOCKER=${FLOWCTL_DOCKER_BIN:-docker}
COMPOSE=${COMPOSE:-docker-compose}

RUNS=5
IDLE_SECONDS=60
VERSION_RUNS=51
section=all
soak_minutes=10
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) RUNS=3 IDLE_SECONDS=20 VERSION_RUNS=21 ;;
    --once) RUNS=1 IDLE_SECONDS=10 VERSION_RUNS=5 ;;
    all | lifecycle | scaling | datapath | cost) section=$1 ;;
    soak)
      section=soak
      if [ $# -gt 1 ] && [[ $2 =~ ^[0-9]+$ ]]; then
        soak_minutes=$2
        shift
      fi
      ;;
    -h | --help)
      sed -n '2,21p' "$0"
      exit 0
      ;;
    *)
      echo "bench.sh: unknown argument '$1' (see --help)" >&2
      exit 2
      ;;
  esac
  shift
done

for tool in "$FLOWCTL" "$TTP"; do
  [ -x "$tool" ] || {
    echo "bench.sh: $tool is missing: run scripts/build-images.sh first" >&2
    exit 1
  }
done

# A real data lake (the largest of examples/ledgers): 30 ledgers, 7,740 transactions, 15,480
# events. The deterministic generator (examples/stellar/datagen) is not ready, so the data path
# runs on these real ledgers, as they are.
LAKE="$root/examples/ledgers/standalone-p25-10048-10077"
FIRST=10048
LAST=10077
PASSPHRASE="Standalone Network ; February 2017"

work=$(mktemp -d /tmp/flowctl-bench.XXXXXX)
tag="fb$$"
live_pids=()
compose_files=()

cleanup() {
  local pid f
  for pid in "${live_pids[@]}"; do
    kill -INT "$pid" 2>/dev/null || true
  done
  for pid in "${live_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  for f in "${compose_files[@]}"; do
    "$COMPOSE" -p "$(basename "$f" .yaml)" -f "$f" down -v --timeout 2 >/dev/null 2>&1 || true
  done
  engine_floor_cleanup 2>/dev/null || true
  local left
  left=$("$DOCKER" ps -aq --filter label=io.flowctl.managed --filter "name=^$tag" 2>/dev/null || true)
  if [ -n "$left" ]; then
    echo "bench.sh: removing leftovers: $left" >&2
    # shellcheck disable=SC2086
    "$DOCKER" rm -f $left >/dev/null 2>&1 || true
  fi
  [ -n "${BENCH_KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- small helpers -------------------------------------------------------------------------

# Microseconds since the epoch, without forking.
now_us() { echo "${EPOCHREALTIME/./}"; }

# Median of the numbers on stdin.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ratio A B -> A/B with 2 decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || b == "nan" || a == "nan") print "n/a"; else printf "%.2f", a / b }'; }

# Prefixes every line of stdin with the time it arrived (µs). When a line contains $2 (if set),
# sends SIGINT to the pid in file $1: how a long-running `flowctl run` is stopped once it is up.
stamp() {
  local pidfile=${1:-} pattern=${2:-} line
  while IFS= read -r line; do
    printf '%s %s\n' "${EPOCHREALTIME/./}" "$line"
    if [ -n "$pattern" ] && [[ $line == *"$pattern"* ]]; then
      kill -INT "$(cat "$pidfile")" 2>/dev/null || true
    fi
  done
}

# The time stamp (µs) of the first line of log $1 containing $2, or nothing.
stamp_of() { grep -F -m1 -- "$2" "$1" | cut -d' ' -f1 || true; }

# Container events of the project (label $1) between $2 and $3 (µs): "time_us name status".
events_of() {
  "$DOCKER" events --since "$(to_s "$2")" --until "$(to_s "$3")" --filter "label=$1" \
    --filter type=container --format '{{.TimeNano}} {{.Actor.Attributes.name}} {{.Status}}' |
    awk '{ $1 = substr($1, 1, length($1) - 3); print }'
}
to_s() { awk -v t="$1" 'BEGIN { printf "%.6f", t / 1e6 }'; }

# Runs `flowctl run` on a pipeline and waits for its exit; its output, time-stamped, goes to
# log $1. $2: stop it with SIGINT once it is up (1) or let it end by itself (0). Prints the pid
# right after the start on fd 3 when asked (for samplers), returns flowctl's exit code.
flowctl_run_logged() {
  local log=$1 stop_when_up=$2
  shift 2
  local fifo="$work/fifo.$RANDOM" pidfile="$work/pid.$RANDOM"
  mkfifo "$fifo"
  if [ "$stop_when_up" = 1 ]; then
    stamp "$pidfile" " is up: " <"$fifo" >"$log" &
  else
    stamp <"$fifo" >"$log" &
  fi
  local spid=$!
  "$FLOWCTL" run --no-color --control-plane-port 0 "$@" >"$fifo" 2>&1 &
  local fpid=$!
  echo "$fpid" >"$pidfile"
  live_pids+=("$fpid")
  local rc=0
  wait "$fpid" || rc=$?
  wait "$spid" || true
  live_pids=("${live_pids[@]/$fpid/}")
  rm -f "$fifo" "$pidfile"
  return "$rc"
}

# The example pipeline on the real lake: consumer asks for FIRST..$2 (0 = live), prints no
# events, only its summary.
write_example_pipeline() {
  local file=$1 end=$2
  cat >"$file" <<YAML
apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: bench-ttp
spec:
  sources:
    - id: stellar-live-source-datalake
      image: flowctl/stellar-live-source-datalake:dev
      env:
        STORAGE_TYPE: FS
        BUCKET_NAME: /data/ledgers
        NETWORK_PASSPHRASE: "$PASSPHRASE"
      volumes:
        - host_path: $LAKE
          container_path: /data/ledgers
          readonly: true
      ports:
        - {name: grpc, containerPort: 50052}
        - {name: health, containerPort: 8088}
      health_check: /health
      health_port: 8088
      register: true
      grpc:
        port: 50052
        service: raw_ledger_service.RawLedgerService
        verify: {start_ledger: $FIRST}
  processors:
    - id: ttp-processor
      image: flowctl/ttp-processor:dev
      inputs: [stellar-live-source-datalake]
      env:
        NETWORK_PASSPHRASE: "$PASSPHRASE"
        SOURCE_SERVICE_ADDRESS: stellar-live-source-datalake:50052
        PORT: ":50051"
      ports:
        - {name: grpc, containerPort: 50051}
        - {name: health, containerPort: 8088}
      health_check: /health
      health_port: 8088
      register: true
      grpc:
        port: 50051
        service: token_transfer_service.EventService
        verify: {start_ledger: $FIRST, end_ledger: $((FIRST + 1))}
  sinks:
    - id: consumer-app
      image: flowctl/consumer-app:dev
      inputs: [ttp-processor]
      args: ["$FIRST", "$end"]
      env:
        TTP_SERVICE_ADDRESS: ttp-processor:50051
        PRINT_EVENTS: "false"
      ports:
        - {name: health, containerPort: 8088}
      health_check: /health
      health_port: 8088
      register: true
YAML
}

# The same pipeline for Compose: `flowctl translate` when it works, else written by hand with
# the same settings. Health checks probe every 100 ms (flowctl's first probe is at 100 ms).
write_compose_file() {
  local pipeline=$1 file=$2 project=$3
  if "$FLOWCTL" translate --to compose --no-control-plane --project "$project" -o "$file" \
    "$pipeline" >/dev/null 2>"$work/translate.err"; then
    sed -i -e 's/^\( *interval:\) 1s$/\1 100ms/' "$file"
    echo "flowctl translate --to compose (health check interval 100ms)"
  else
    local component
    {
      echo "services:"
      for component in stellar-live-source-datalake ttp-processor consumer-app; do
        cat <<YAML
  $component:
    image: flowctl/$component:dev
    container_name: $project-$component
    networks: {bridge: {aliases: [$component]}}
    healthcheck:
      test: ["CMD", "/$component", "healthcheck"]
      interval: 100ms
      timeout: 3s
      retries: 3
      start_period: 30s
YAML
        case $component in
          stellar-live-source-datalake)
            cat <<YAML
    ports: ["127.0.0.1::50052", "127.0.0.1::8088"]
    environment: {STORAGE_TYPE: FS, BUCKET_NAME: /data/ledgers, NETWORK_PASSPHRASE: "$PASSPHRASE", HEALTH_PORT: "8088"}
    volumes: [{type: bind, source: $LAKE, target: /data/ledgers, read_only: true}]
YAML
            ;;
          ttp-processor)
            cat <<YAML
    ports: ["127.0.0.1::50051", "127.0.0.1::8088"]
    environment: {NETWORK_PASSPHRASE: "$PASSPHRASE", SOURCE_SERVICE_ADDRESS: "stellar-live-source-datalake:50052", PORT: ":50051", HEALTH_PORT: "8088"}
    depends_on: {stellar-live-source-datalake: {condition: service_healthy}}
YAML
            ;;
          consumer-app)
            cat <<YAML
    ports: ["127.0.0.1::8088"]
    command: ["$FIRST", "$LAST"]
    environment: {TTP_SERVICE_ADDRESS: "ttp-processor:50051", PRINT_EVENTS: "false", HEALTH_PORT: "8088"}
    depends_on: {ttp-processor: {condition: service_healthy}}
YAML
            ;;
        esac
      done
      echo "networks: {bridge: {driver: bridge}}"
    } >"$file"
    echo "hand-written (flowctl translate failed: $(head -c 200 "$work/translate.err"))"
  fi
}

# A fan-out of N test components: src -> p01..p(N-2) -> sink.
write_fanout_pipeline() {
  local file=$1 n=$2 i inputs=""
  {
    cat <<YAML
apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: bench-fanout-$n
spec:
  sources:
    - {id: src, image: "flowctl/test-component:dev", health_port: 8088}
  processors:
YAML
    for ((i = 1; i <= n - 2; i++)); do
      printf '    - {id: p%02d, image: "flowctl/test-component:dev", health_port: 8088, inputs: [src]}\n' "$i"
      inputs+="${inputs:+, }$(printf 'p%02d' "$i")"
    done
    echo "  sinks:"
    echo "    - {id: sink, image: \"flowctl/test-component:dev\", health_port: 8088, inputs: [$inputs]}"
  } >"$file"
}

# The consumer's summary JSON field $2 from log $1.
summary_field() {
  grep -F 'consumer-app summary:' "$1" | head -1 | sed 's/.*summary: //' |
    grep -o "\"$2\":[0-9.]*" | cut -d: -f2
}

row() { printf '  %-44s %12s %12s %9s\n' "$@"; }

machine_info() {
  echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ { print $2 }') GB RAM, kernel $(uname -r)"
  echo "engine: docker $("$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null), $("$COMPOSE" version --short 2>/dev/null | sed 's/^/docker-compose /'); flowctl $("$FLOWCTL" --version | awk '{ print $2 }') @ $(git -C "$root" rev-parse --short HEAD 2>/dev/null)"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), runs per figure: $RUNS (alternating)"
}

# --- 1. lifecycle ----------------------------------------------------------------------------

bench_lifecycle() {
  echo
  echo "== 1. lifecycle: flowctl run vs docker-compose up --abort-on-container-exit + down"
  local pipeline="$work/example.yaml" cproject="${tag}c" fproject="${tag}f"
  local compose="$work/$cproject.yaml"
  write_example_pipeline "$pipeline" "$LAST"
  echo "   pipeline: 3 example images, ledgers $FIRST-$LAST of $(basename "$LAKE"), PRINT_EVENTS=false"
  echo "   compose file: $(write_compose_file "$pipeline" "$compose" "$cproject")"
  compose_files+=("$compose")
  : >"$work/lc.tsv"
  local i t0 t1 up die log rc
  for ((i = 1; i <= RUNS; i++)); do
    # flowctl: time to "is up", total, and from the sink's exit (engine event) to the end.
    log="$work/lc-f$i.log"
    t0=$(now_us)
    rc=0
    flowctl_run_logged "$log" 0 --project "$fproject" "$pipeline" || rc=$?
    t1=$(now_us)
    [ "$rc" = 0 ] || {
      echo "flowctl run failed (exit $rc):" >&2
      tail -20 "$log" >&2
      return 1
    }
    up=$(stamp_of "$log" " is up: ")
    die=$(events_of "io.flowctl.project=$fproject" "$t0" "$t1" | awk '$2 ~ /consumer-app$/ && $3 == "die" { print $1; exit }')
    printf 'flowctl\t%s\t%s\t%s\t%s\n' $(((up - t0) / 1000)) $(((t1 - t0) / 1000)) $(((t1 - die) / 1000)) \
      "$(summary_field "$log" events)" >>"$work/lc.tsv"

    # compose: all-healthy = every service healthy (the consumer: healthy or exited, as flowctl
    # counts it), from the engine's own health_status events.
    log="$work/lc-c$i.log"
    t0=$(now_us)
    "$COMPOSE" -p "$cproject" -f "$compose" up --no-color --abort-on-container-exit >"$log" 2>&1 || true
    "$COMPOSE" -p "$cproject" -f "$compose" down -v >>"$log" 2>&1
    t1=$(now_us)
    events_of "com.docker.compose.project=$cproject" "$t0" "$t1" >"$work/ev"
    up=$(awk '
      $3 == "health_status:" && $4 == "healthy" && !($2 in ready) { ready[$2] = $1 }
      $3 == "die" && $2 ~ /consumer-app$/ && !($2 in ready) { ready[$2] = $1 }
      END { n = 0; for (c in ready) { n++; if (ready[c] > m) m = ready[c] } if (n == 3) print m }' "$work/ev")
    die=$(awk '$2 ~ /consumer-app$/ && $3 == "die" { print $1; exit }' "$work/ev")
    if [ -z "$up" ] || [ -z "$die" ]; then
      echo "compose run $i: no health or exit events:" >&2
      cat "$work/ev" >&2
      tail -20 "$log" >&2
      return 1
    fi
    printf 'compose\t%s\t%s\t%s\t%s\n' $(((up - t0) / 1000)) $(((t1 - t0) / 1000)) $(((t1 - die) / 1000)) \
      "$(grep -F 'consumer-app summary:' "$log" | grep -o '"events":[0-9]*' | cut -d: -f2)" >>"$work/lc.tsv"
  done
  local col name f c
  row "median of $RUNS (ms)" flowctl compose ratio
  for col in 2:time\ to\ all-healthy 3:total\ wall\ \(start..cleaned\ up\) 4:teardown\ \(sink\ exit..all\ removed\); do
    name=${col#*:}
    f=$(awk -F'\t' -v c="${col%%:*}" '$1 == "flowctl" { print $c }' "$work/lc.tsv" | median)
    c=$(awk -F'\t' -v c="${col%%:*}" '$1 == "compose" { print $c }' "$work/lc.tsv" | median)
    row "$name" "$f" "$c" "$(ratio "$f" "$c")"
  done
  echo "   events delivered per run: flowctl $(awk -F'\t' '$1 == "flowctl" { printf "%s ", $5 }' "$work/lc.tsv")| compose $(awk -F'\t' '$1 == "compose" { printf "%s ", $5 }' "$work/lc.tsv")"
  echo "   (flowctl also waits for control plane registration and verifies both gRPC streams; the compose run has no control plane)"
}

# --- 2. scaling ------------------------------------------------------------------------------

bench_scaling() {
  echo
  echo "== 2. start-up scaling: fan-out of test components (1 source -> N-2 processors -> 1 sink)"
  local n i t0 up log
  for n in 3 10 30; do
    write_fanout_pipeline "$work/fanout-$n.yaml" "$n"
  done
  : >"$work/sc.tsv"
  for ((i = 1; i <= RUNS; i++)); do
    for n in 3 10 30; do
      log="$work/sc-$n-$i.log"
      t0=$(now_us)
      flowctl_run_logged "$log" 1 --project "${tag}s$n" "$work/fanout-$n.yaml" || true
      up=$(stamp_of "$log" " is up: ")
      [ -n "$up" ] || {
        echo "fan-out of $n did not come up:" >&2
        tail -20 "$log" >&2
        return 1
      }
      printf '%s\t%s\t%s\t%s\n' "$n" $(((up - t0) / 1000)) \
        "$(grep -F ' is up: ' "$log" | grep -o 'in [0-9]* ms' | grep -o '[0-9]*')" \
        "$(engine_floor "$n")" >>"$work/sc.tsv"
    done
  done
  local m3 m10 m30 r3 r10 r30 e3 e10 e30
  for n in 3 10 30; do
    eval "m$n=\$(awk -F'\t' -v n=$n '\$1 == n { print \$2 }' \"$work/sc.tsv\" | median)"
    eval "r$n=\$(awk -F'\t' -v n=$n '\$1 == n { print \$3 }' \"$work/sc.tsv\" | median)"
    eval "e$n=\$(awk -F'\t' -v n=$n '\$1 == n { print \$4 }' \"$work/sc.tsv\" | median)"
  done
  printf '  %-30s %12s %8s %14s %8s %12s\n' "median of $RUNS (ms)" "flowctl" "vs 3" "engine floor" "vs 3" "flowctl/floor"
  for n in 3 10 30; do
    eval "printf '  %-30s %12s %8s %14s %8s %12s\\n' \"\$n components (depth 3)\" \"\$m$n\" \"\$(ratio \$m$n \$m3)\" \"\$e$n\" \"\$(ratio \$e$n \$e3)\" \"\$(ratio \$m$n \$e$n)\""
  done
  echo "   30/3 ratio (target <= 2): flowctl $(ratio "$m30" "$m3"), engine floor $(ratio "$e30" "$e3")"
  echo "   flowctl: process start to its 'is up' line (its own figure, from after the checks: $r3 / $r10 / $r30 ms)."
  echo "   engine floor: network create + N parallel 'docker run -d' of the same image, no health wait."
}

# The engine's own floor for starting N containers: a network and N parallel `docker run -d`
# (what flowctl must do at least), in ms. Removed afterwards (not timed).
engine_floor() {
  local n=$1 net="${tag}e-net" i t0 t1 pids=()
  t0=$(now_us)
  "$DOCKER" network create --label "io.flowctl.bench=$tag" "$net" >/dev/null
  for ((i = 1; i <= n; i++)); do
    "$DOCKER" run -d --name "${tag}e-$i" --label "io.flowctl.bench=$tag" --network "$net" \
      flowctl/test-component:dev >/dev/null &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i"; done
  t1=$(now_us)
  engine_floor_cleanup
  echo $(((t1 - t0) / 1000))
}
engine_floor_cleanup() {
  local ids
  ids=$("$DOCKER" ps -aq --filter "label=io.flowctl.bench=$tag")
  # shellcheck disable=SC2086
  [ -z "$ids" ] || "$DOCKER" rm -f $ids >/dev/null
  ids=$("$DOCKER" network ls -q --filter "label=io.flowctl.bench=$tag")
  # shellcheck disable=SC2086
  [ -z "$ids" ] || "$DOCKER" network rm $ids >/dev/null
}

# --- 3. data path ----------------------------------------------------------------------------

bench_datapath() {
  echo
  echo "== 3. data path: three containers end to end vs the in-process floor"
  local pipeline="$work/example.yaml" ledgers=$((LAST - FIRST + 1))
  write_example_pipeline "$pipeline" "$LAST"
  echo "   lake: $(basename "$LAKE") AS IS (real ledgers; the generator is not ready), $ledgers ledgers $FIRST-$LAST, 258 txs/ledger"
  : >"$work/dp.tsv"
  local i t0 t1 log err events
  for ((i = 1; i <= RUNS; i++)); do
    # floor: read, decompress, decode, extract and print JSON in one process.
    err="$work/floor.err"
    t0=$(now_us)
    "$TTP" events --datalake "$LAKE" --start "$FIRST" --end "$LAST" >/dev/null 2>"$err"
    t1=$(now_us)
    events=$(grep -o '[0-9]* events' "$err" | head -1 | cut -d' ' -f1)
    awk -v l="$ledgers" -v e="$events" -v t="$((t1 - t0))" \
      'BEGIN { printf "floor\t%.1f\t%.1f\t%d\t%.3f\n", l / (t / 1e6), e / (t / 1e6), e, t / 1e6 }' >>"$work/dp.tsv"

    # pipeline: the consumer's own summary (from its request to the last event).
    log="$work/dp-$i.log"
    flowctl_run_logged "$log" 0 --no-verify --project "${tag}d" "$pipeline" || {
      tail -20 "$log" >&2
      return 1
    }
    printf 'pipeline\t%s\t%s\t%s\t%s\n' "$(summary_field "$log" ledgers_per_second)" \
      "$(summary_field "$log" events_per_second)" "$(summary_field "$log" events)" \
      "$(summary_field "$log" elapsed_seconds)" >>"$work/dp.tsv"
  done
  local col name p f
  row "median of $RUNS" pipeline floor ratio
  for col in 2:ledgers/s 3:events/s 5:seconds\ for\ the\ range; do
    name=${col#*:}
    p=$(awk -F'\t' -v c="${col%%:*}" '$1 == "pipeline" { print $c }' "$work/dp.tsv" | median)
    f=$(awk -F'\t' -v c="${col%%:*}" '$1 == "floor" { print $c }' "$work/dp.tsv" | median)
    row "$name" "$p" "$f" "$(ratio "$p" "$f")"
  done
  echo "   events per run: pipeline $(awk -F'\t' '$1 == "pipeline" { printf "%s ", $4 }' "$work/dp.tsv")| floor $(awk -F'\t' '$1 == "floor" { printf "%s ", $4 }' "$work/dp.tsv")"
  echo "   (pipeline: consumer request to last event, containers already up, processor with one decoding"
  echo "   thread per core; floor: one thread, process start to exit, JSON to /dev/null)"
}

# --- 4. flowctl's own cost -------------------------------------------------------------------

# utime+stime (clock ticks) of a process and all its descendants.
cpu_ticks_tree() {
  local pid=$1 total=0 p stat
  for p in $pid $(descendants "$pid"); do
    stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    stat=${stat##*) }
    # fields after "comm)": state is 3rd overall; utime is 14th, stime 15th.
    total=$((total + $(echo "$stat" | awk '{ print $12 + $13 }')))
  done
  echo "$total"
}
descendants() {
  local c
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    echo "$c"
    descendants "$c"
  done
}
cpu_ticks_self() {
  local stat
  stat=$(cat "/proc/$1/stat")
  stat=${stat##*) }
  echo "$stat" | awk '{ print $12 + $13 }'
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }

# Starts a live run (consumer end ledger 0) of the example in the background; waits until up.
# Sets live_pid and live_log.
start_live() {
  local project=$1 pipeline="$work/live.yaml" fifo="$work/live-$1.fifo"
  write_example_pipeline "$pipeline" 0
  live_log="$work/live-$project.log"
  mkfifo "$fifo"
  stamp <"$fifo" >"$live_log" &
  "$FLOWCTL" run --no-color --control-plane-port 0 --project "$project" "$pipeline" >"$fifo" 2>&1 &
  live_pid=$!
  live_pids+=("$live_pid")
  # The fifo stays until the work folder goes: both ends must have opened it first.
  local waited=0
  until grep -qsF ' is up: ' "$live_log"; do
    kill -0 "$live_pid" 2>/dev/null || {
      tail -20 "$live_log" >&2
      return 1
    }
    sleep 0.2
    waited=$((waited + 1))
    [ "$waited" -lt 300 ] || return 1
  done
}
# Stops the live run with SIGINT (as Ctrl+C would); sets live_rc to flowctl's exit code.
stop_live() {
  kill -INT "$live_pid" 2>/dev/null || true
  live_rc=0
  wait "$live_pid" || live_rc=$?
  live_pids=("${live_pids[@]/$live_pid/}")
}

bench_cost() {
  echo
  echo "== 4. flowctl's own cost"
  local ticks
  ticks=$(getconf CLK_TCK)

  # Peak RSS: VmHWM read just before the process ends, for the example run and a 30-fan-out.
  local pipeline="$work/example.yaml" peak_example peak_fanout
  write_example_pipeline "$pipeline" "$LAST"
  [ -f "$work/fanout-30.yaml" ] || write_fanout_pipeline "$work/fanout-30.yaml" 30
  peak_example=$(peak_rss "$pipeline" "${tag}r3" 0)
  peak_fanout=$(peak_rss "$work/fanout-30.yaml" "${tag}r30" 1)

  # Idle supervision: a live pipeline that has caught up; flowctl vs an attached
  # `docker-compose up` (which also follows the logs) over the same time.
  start_live "${tag}i" || return 1
  sleep 3
  local a b fl_self fl_tree rss
  a=$(cpu_ticks_self "$live_pid")
  b=$(cpu_ticks_tree "$live_pid")
  sleep "$IDLE_SECONDS"
  fl_self=$(awk -v x="$(($(cpu_ticks_self "$live_pid") - a))" -v t="$ticks" -v s="$IDLE_SECONDS" 'BEGIN { printf "%.3f", x / t * 60 / s }')
  fl_tree=$(awk -v x="$(($(cpu_ticks_tree "$live_pid") - b))" -v t="$ticks" -v s="$IDLE_SECONDS" 'BEGIN { printf "%.3f", x / t * 60 / s }')
  rss=$(status_kb "$live_pid" VmRSS)
  stop_live

  local cproject="${tag}k" compose="$work/${tag}k.yaml" cpid cmp_tree
  write_compose_file "$work/live.yaml" "$compose" "$cproject" >/dev/null
  compose_files+=("$compose")
  "$COMPOSE" -p "$cproject" -f "$compose" up --no-color >"$work/compose-idle.log" 2>&1 &
  cpid=$!
  # Up = all three healthy.
  local waited=0
  until [ "$("$DOCKER" ps --filter "label=com.docker.compose.project=$cproject" --filter health=healthy -q | wc -l)" = 3 ]; do
    sleep 0.5
    waited=$((waited + 1))
    [ "$waited" -lt 120 ] || break
  done
  sleep 3
  a=$(cpu_ticks_tree "$cpid")
  sleep "$IDLE_SECONDS"
  cmp_tree=$(awk -v x="$(($(cpu_ticks_tree "$cpid") - a))" -v t="$ticks" -v s="$IDLE_SECONDS" 'BEGIN { printf "%.3f", x / t * 60 / s }')
  "$COMPOSE" -p "$cproject" -f "$compose" down -v >/dev/null 2>&1
  wait "$cpid" 2>/dev/null || true

  # Size and start time.
  strip -o "$work/flowctl.stripped" "$FLOWCTL"
  local size stripped v_f v_d i t0
  size=$(stat -c %s "$FLOWCTL")
  stripped=$(stat -c %s "$work/flowctl.stripped")
  : >"$work/v.tsv"
  for ((i = 1; i <= VERSION_RUNS; i++)); do
    t0=$(now_us)
    "$FLOWCTL" --version >/dev/null
    echo "f $(($(now_us) - t0))" >>"$work/v.tsv"
    t0=$(now_us)
    "$DOCKER" --version >/dev/null
    echo "d $(($(now_us) - t0))" >>"$work/v.tsv"
  done
  v_f=$(awk '$1 == "f" { print $2 / 1000 }' "$work/v.tsv" | median)
  v_d=$(awk '$1 == "d" { print $2 / 1000 }' "$work/v.tsv" | median)

  row "" flowctl reference ratio
  row "peak RSS, example run (MB, VmHWM)" "$(mb "$peak_example")" "" ""
  row "peak RSS, 30-component run (MB, VmHWM)" "$(mb "$peak_fanout")" "" ""
  row "RSS after ${IDLE_SECONDS}s idle supervision (MB)" "$(mb "$rss")" "" ""
  row "idle CPU s/min, flowctl process" "$fl_self" "" ""
  row "idle CPU s/min, incl. its docker children" "$fl_tree" "$cmp_tree" "$(ratio "$fl_tree" "$cmp_tree")"
  row "binary size (MB), stripped" "$(mb $((stripped / 1024)))" "" ""
  row "binary size (MB), as built" "$(mb $((size / 1024)))" "" ""
  row "--version start (ms, median of $VERSION_RUNS)" "$v_f" "$v_d" "$(ratio "$v_f" "$v_d")"
  echo "   reference: idle CPU of an attached 'docker-compose up' (with its children) on the same live pipeline;"
  echo "   --version: 'docker --version'. Idle window ${IDLE_SECONDS}s, one sample each; flowctl's exit code after SIGINT: $live_rc"
}
mb() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f", k / 1024 }'; }

# Runs a pipeline to its end ($3 = 1: stop it once up) and prints flowctl's VmHWM (kB), read
# every 100 ms while it runs (the mark only grows, so the last read is the peak).
peak_rss() {
  local pipeline=$1 project=$2 stop=$3 log="$work/peak-$2.log" pid hwm=0 h
  flowctl_run_logged "$log" "$stop" --project "$project" "$pipeline" &
  local runner=$!
  # The pid of flowctl is the child of the runner subshell that is not the stamper.
  local tries=0
  pid=""
  while [ -z "$pid" ] && [ $tries -lt 100 ]; do
    pid=$(pgrep -P "$runner" -x flowctl || true)
    sleep 0.05
    tries=$((tries + 1))
  done
  while kill -0 "$runner" 2>/dev/null; do
    h=$(status_kb "$pid" VmHWM)
    [ -n "$h" ] && hwm=$h
    sleep 0.1
  done
  wait "$runner" || true
  echo "$hwm"
}

# --- soak ------------------------------------------------------------------------------------

bench_soak() {
  echo
  echo "== soak: live example pipeline for $soak_minutes min, sampling flowctl every 30 s"
  local project="${tag}soak" ticks
  ticks=$(getconf CLK_TCK)
  start_live "$project" || return 1
  printf '  %6s %9s %9s %9s  %s\n' "t (s)" "RSS MB" "HWM MB" "CPU s" "heartbeats (component: last heartbeat)"
  local t0 end t hb
  t0=$(date +%s)
  end=$((t0 + soak_minutes * 60))
  while :; do
    t=$(($(date +%s) - t0))
    hb=$("$FLOWCTL" status --project "$project" 2>&1 | awk '
      / ago / { for (i = 1; i <= NF; i++) if ($i == "ago") printf "%s: %s ago  ", $1, $(i - 1) }')
    printf '  %6s %9s %9s %9s  %s\n' "$t" "$(mb "$(status_kb "$live_pid" VmRSS)")" \
      "$(mb "$(status_kb "$live_pid" VmHWM)")" \
      "$(awk -v x="$(cpu_ticks_self "$live_pid")" -v t="$ticks" 'BEGIN { printf "%.2f", x / t }')" "$hb"
    [ "$(date +%s)" -lt "$end" ] || break
    sleep 30
  done
  echo "   warnings during the soak: $(grep -c -i 'warning\|unhealthy' "$live_log" || true)"
  stop_live
  echo "   flowctl's exit code after SIGINT: $live_rc"
}

# --- main ------------------------------------------------------------------------------------

echo "flowctl benchmarks"
machine_info
started=$(date +%s)
case $section in
  all)
    bench_lifecycle
    bench_scaling
    bench_datapath
    bench_cost
    ;;
  lifecycle) bench_lifecycle ;;
  scaling) bench_scaling ;;
  datapath) bench_datapath ;;
  cost) bench_cost ;;
  soak) bench_soak ;;
esac
left=$("$DOCKER" ps -aq --filter label=io.flowctl.managed --filter "name=^$tag" | wc -l)
echo
echo "leftover containers of this run: $left; took $(($(date +%s) - started)) s"
