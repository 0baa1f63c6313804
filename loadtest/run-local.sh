#!/usr/bin/env bash
# Runs a load-test scenario against a local cluster it starts and stops itself:
# redis-server and K roomcast nodes on free loopback ports, then roomcast-loadtest.
#
#   loadtest/run-local.sh SCENARIO [--connections N] [--duration SECONDS] [--rate MSGS_PER_S]
#                                  [--nodes K] [--out DIR] [--via redis|history|ws] [--transport ws|sse|poll]
#                                  [--redis single|cluster]
#
# --redis cluster runs a Redis Cluster of three primaries instead of one redis-server: the
# nodes use bus = "redis-cluster" (sharded pub/sub), the publisher SPUBLISH/FCALL by slot,
# and the report gives each redis-server's CPU and Redis CPU per published message.
# SCENARIO is a name in loadtest/scenarios (fanout, rooms, storm, churn) or a file.
# ROOMCAST_BIN / LOADTEST_BIN point at prebuilt binaries (default: release builds, made
# here when missing). Everything runs on 127.0.0.x and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario="${1:?usage: loadtest/run-local.sh SCENARIO [--connections N] [--duration S] [--rate R] [--nodes K] [--out DIR]}"
shift
nodes=1
out=""
redis_mode=single
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --redis) redis_mode="$2"; shift 2 ;;
    --connections|--duration|--rate|--via|--transport) extra+=("$1" "$2"); shift 2 ;;
    --quiet) extra+=("$1"); shift ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
[ -f "$scenario" ] || scenario="loadtest/scenarios/$scenario.toml"
[ -f "$scenario" ] || { echo "no such scenario: $scenario" >&2; exit 64; }
name="$(basename "$scenario" .toml)"
out="${out:-loadtest/results/$name-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"

if [ -z "${ROOMCAST_BIN:-}" ] || [ -z "${LOADTEST_BIN:-}" ]; then
  cargo build --release -q -p roomcast -p roomcast-loadtest
fi
ROOMCAST_BIN="${ROOMCAST_BIN:-${CARGO_TARGET_DIR:-target}/release/roomcast}"
LOADTEST_BIN="${LOADTEST_BIN:-${CARGO_TARGET_DIR:-target}/release/roomcast-loadtest}"
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 69; }

# Every process may hold this many files; a node holds at most ~19,900 connections here.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

# A cluster node also listens on its port + 10,000 (the cluster bus).
cluster_port() { python3 -c 'import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p < 55000:
        try:
            socket.socket().bind(("127.0.0.1", p + 10000)); print(p); break
        except OSError: pass'; }

start_redis() { # PORT LOGNAME [extra redis-server args...]
  local port="$1" log="$2"; shift 2
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --maxclients 10000 "$@" >"$out/$log.log" 2>&1 &
  pids+=($!)
  redis_pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
}

redis_pids=()
case "$redis_mode" in
  single)
    redis_port="$(free_port)"
    start_redis "$redis_port" redis
    bus=redis
    redis_url="redis://127.0.0.1:$redis_port"
    ;;
  cluster)
    seeds=(); addrs=()
    for i in 1 2 3; do
      port="$(cluster_port)"
      start_redis "$port" "redis-$i" --cluster-enabled yes --cluster-config-file "nodes-$port.conf" --dir "$out"
      seeds+=("redis://127.0.0.1:$port"); addrs+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${addrs[@]}" --cluster-yes >"$out/redis-cluster-create.log" 2>&1
    for a in "${addrs[@]}"; do
      for _ in $(seq 200); do
        redis-cli -p "${a#*:}" cluster info 2>/dev/null | grep -q cluster_state:ok && break
        sleep 0.05
      done
    done
    bus=redis-cluster
    IFS=, ; redis_url="${seeds[*]}"; unset IFS
    ;;
  *) echo "--redis single|cluster" >&2; exit 64 ;;
esac

targets=()
node_pids=()
for i in $(seq 1 "$nodes"); do
  port="$(free_port)"
  "$ROOMCAST_BIN" --listen "127.0.0.1:$port" --node-id "load-$i" --bus "$bus" \
    --redis-url "$redis_url" --log-format json \
    --set limits.max_connections=19900 --set limits.publish_rate=1000000 \
    --set limits.max_connections_per_ip=0 --set metrics.public=true \
    --set limits.publish_burst=1000000 --set shutdown.drain_window_ms=100 \
    >"$out/node-$i.log" 2>&1 &
  pids+=($!)
  node_pids+=($!)
  targets+=("ws://127.0.0.1:$port/ws")
  for _ in $(seq 200); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.05
  done
done

IFS=, ; target_list="${targets[*]}"; pid_list="${node_pids[*]}"; redis_pid_list="${redis_pids[*]}"; unset IFS
"$LOADTEST_BIN" run --scenario "$scenario" --targets "$target_list" \
  --redis-url "$redis_url" --node-pids "$pid_list" --redis-pids "$redis_pid_list" \
  --out "$out" "${extra[@]}"
echo "report: $out/report.md"
