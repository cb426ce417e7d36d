#!/usr/bin/env bash
# A multi-node Docker Swarm on this one machine, for flowctl's Swarm tests and for trying
# `flowctl run --swarm` on a laptop: N Docker daemons (default 3), each in a network namespace of
# its own with its own address, joined into one Swarm (node 1 is the manager). The namespaces hang
# on one bridge, which also has an address for this machine, like a laptop on the cluster's LAN.
#
#   scripts/swarm-lab.sh up [N]          start the lab (idempotent: an existing lab is kept)
#   scripts/swarm-lab.sh load IMAGE...   copy images from this machine's engine to every node
#   scripts/swarm-lab.sh env             print `export DOCKER_HOST=...` for the manager
#   scripts/swarm-lab.sh nodes           one line per node: name, address, socket
#   scripts/swarm-lab.sh down            stop every daemon and remove all the lab made
#
# Needs root (namespaces, veth, iptables) and dockerd. Each daemon gets its own config file (this
# machine's /etc/docker/daemon.json would clash with the flags), data root, exec root (and so its
# own containerd), pid file, socket and bridge subnet, and is started with `nsenter --net=` (not
# `ip netns exec`, which remounts /sys and hides the cgroup mounts) and its own hostname, lab-nI.
# Storage is vfs. Nothing is
# pulled: `load` copies images with `docker save | docker load`.
#
# Environment: FLOWCTL_SWARM_LAB_DIR (default /var/tmp/flowctl-swarm-lab) holds the daemons'
# folders; the addresses are 10.231.0.0/24 (this machine 10.231.0.1, node i 10.231.0.(10+i)).
set -euo pipefail

dir=${FLOWCTL_SWARM_LAB_DIR:-/var/tmp/flowctl-swarm-lab}
bridge=flsw0
subnet_prefix=10.231.0
host_addr=$subnet_prefix.1
rule_comment=flowctl-swarm-lab

node_addr() { echo "$subnet_prefix.$((10 + $1))"; }
node_sock() { echo "$dir/n$1/docker.sock"; }
node_docker() { local i=$1; shift; docker -H "unix://$(node_sock "$i")" "$@"; }
node_count() { cat "$dir/nodes" 2>/dev/null || echo 0; }

die() { echo "swarm-lab: $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, veth and iptables): run it with sudo"
  command -v dockerd >/dev/null || die "dockerd is not installed (Debian: apt-get install docker.io)"
  command -v nsenter >/dev/null || die "nsenter is not installed (Debian: apt-get install util-linux)"
  command -v ip >/dev/null || die "ip is not installed (Debian: apt-get install iproute2)"
}

# Waits until node i's daemon answers, or fails with the end of its log.
wait_daemon() {
  local i=$1 n
  for n in $(seq 1 120); do
    node_docker "$i" version >/dev/null 2>&1 && return 0
    if ! kill -0 "$(cat "$dir/n$i/dockerd.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
      tail -n 20 "$dir/n$i/dockerd.log" >&2
      die "the daemon of node $i exited (log: $dir/n$i/dockerd.log)"
    fi
    sleep 0.25
  done
  tail -n 20 "$dir/n$i/dockerd.log" >&2
  die "the daemon of node $i did not answer within 30 s (log: $dir/n$i/dockerd.log)"
}

start_node() {
  local i=$1 ns=flsw-n$1 addr
  addr=$(node_addr "$i")
  mkdir -p "$dir/n$i"
  if ! ip netns list | grep -qw "$ns"; then
    ip netns add "$ns"
    ip link add "flsw-h$i" type veth peer name "flsw-c$i"
    ip link set "flsw-c$i" netns "$ns"
    ip link set "flsw-h$i" master "$bridge" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "flsw-c$i" name eth0
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
  fi
  if node_docker "$i" version >/dev/null 2>&1; then
    return 0
  fi
  echo '{}' >"$dir/n$i/daemon.json"
  # A UTS namespace of its own too, so each node has its own hostname (Swarm's node name).
  # No registry is reachable from the lab (no default route: a pull fails at once), and its
  # workers use the image they have instead of trying to pull a newer one first.
  DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 nsenter --net="/run/netns/$ns" unshare --uts -- sh -c 'hostname "$0" && exec "$@"' "lab-n$i" dockerd \
    --config-file "$dir/n$i/daemon.json" \
    --data-root "$dir/n$i/data" \
    --exec-root "$dir/n$i/exec" \
    --pidfile "$dir/n$i/daemon.pid" \
    -H "unix://$(node_sock "$i")" -H "tcp://$addr:2375" \
    --bip "172.30.$((10 + i)).1/24" \
    --storage-driver vfs \
    --iptables=true \
    --label "flowctl-lab-node=n$i" \
    >"$dir/n$i/dockerd.log" 2>&1 9>&- &
  echo $! >"$dir/n$i/dockerd.pid"
}

up() {
  need_root
  local count=${1:-3} i
  [ "$count" -ge 1 ] || die "the number of nodes must be at least 1"
  mkdir -p "$dir"
  exec 9>"$dir/lock"
  flock 9
  if [ "$(node_count)" -ne 0 ] && [ "$(node_count)" -ne "$count" ]; then
    die "a lab of $(node_count) nodes is up: '$0 down' first"
  fi
  echo "$count" >"$dir/nodes"
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    ip addr add "$host_addr/24" dev "$bridge"
    ip link set "$bridge" up
  fi
  # Docker's FORWARD policy is DROP and bridged frames pass iptables here: let the lab's own
  # traffic through (and back out to this machine).
  iptables -C FORWARD -i "$bridge" -o "$bridge" -m comment --comment "$rule_comment" -j ACCEPT 2>/dev/null ||
    iptables -I FORWARD -i "$bridge" -o "$bridge" -m comment --comment "$rule_comment" -j ACCEPT
  for i in $(seq 1 "$count"); do start_node "$i"; done
  for i in $(seq 1 "$count"); do wait_daemon "$i"; done
  local manager state token
  manager=$(node_addr 1)
  state=$(node_docker 1 info --format '{{.Swarm.LocalNodeState}}')
  if [ "$state" != active ]; then
    node_docker 1 swarm init --advertise-addr "$manager" --listen-addr "$manager:2377" >/dev/null
  fi
  token=$(node_docker 1 swarm join-token -q worker)
  for i in $(seq 2 "$count"); do
    state=$(node_docker "$i" info --format '{{.Swarm.LocalNodeState}}')
    if [ "$state" != active ]; then
      node_docker "$i" swarm join --token "$token" --advertise-addr "$(node_addr "$i")" \
        --listen-addr "$(node_addr "$i"):2377" "$manager:2377" >/dev/null
    fi
  done
  # Every node Ready and labelled with its lab name (placement tests use node.labels.lab).
  local n ready
  for n in $(seq 1 120); do
    ready=$(node_docker 1 node ls --format '{{.Status}}' | grep -c '^Ready$' || true)
    [ "$ready" -eq "$count" ] && break
    sleep 0.25
  done
  [ "$ready" -eq "$count" ] || die "only $ready of $count nodes are Ready"
  for i in $(seq 1 "$count"); do
    local id
    id=$(node_docker "$i" info --format '{{.Swarm.NodeID}}')
    node_docker 1 node update --label-add "lab=n$i" "$id" >/dev/null
  done
  echo "swarm-lab: $count nodes up; manager tcp://$manager:2375"
}

load() {
  need_root
  [ "$#" -gt 0 ] || die "usage: $0 load IMAGE..."
  local count i
  count=$(node_count)
  [ "$count" -gt 0 ] || die "the lab is not up: '$0 up' first"
  local archive
  archive=$(mktemp "$dir/images.XXXXXX.tar")
  # From this machine's own engine, whatever DOCKER_HOST says (it may name the lab's manager).
  env -u DOCKER_HOST -u DOCKER_CONTEXT docker save -o "$archive" "$@"
  for i in $(seq 1 "$count"); do
    node_docker "$i" load -q -i "$archive" >/dev/null &
  done
  local failed=0
  for i in $(seq 1 "$count"); do wait -n || failed=1; done
  rm -f "$archive"
  [ "$failed" -eq 0 ] || die "loading the images into a node failed"
}

down() {
  need_root
  local i pid ns
  for i in $(seq 1 9); do
    ns=flsw-n$i
    if [ -f "$dir/n$i/dockerd.pid" ]; then
      pid=$(cat "$dir/n$i/dockerd.pid")
      if kill -0 "$pid" 2>/dev/null; then
        # Leave the swarm first so the next lab starts clean; then stop the daemon.
        node_docker "$i" swarm leave --force >/dev/null 2>&1 || true
        node_docker "$i" ps -aq 2>/dev/null | xargs -r docker -H "unix://$(node_sock "$i")" rm -f >/dev/null 2>&1 || true
        kill "$pid" 2>/dev/null || true
        local n
        for n in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null || true
      fi
    fi
    # Whatever still runs in the namespace (containerd, shims, containers) goes with it.
    if ip netns list | grep -qw "$ns"; then
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$ns"
    fi
    ip link del "flsw-h$i" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
  while iptables -D FORWARD -i "$bridge" -o "$bridge" -m comment --comment "$rule_comment" -j ACCEPT 2>/dev/null; do :; done
  if [ -d "$dir" ]; then
    # vfs layers and container mounts live under the data roots.
    grep " $dir/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$dir"
  fi
  echo "swarm-lab: down"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  load) shift; load "$@" ;;
  env) echo "export DOCKER_HOST=tcp://$(node_addr 1):2375" ;;
  nodes)
    for i in $(seq 1 "$(node_count)"); do echo "n$i $(node_addr "$i") $(node_sock "$i")"; done ;;
  down) down ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
