#!/usr/bin/env bash
# One open-loop run against a pinned `surge serve --durability sync`, with the server's CPU per
# order and each server thread's run time, run-queue wait and time slices (/proc/PID/task/*/
# schedstat): the probe behind the half-load analysis in notes.md (issue 13).
#
#   bash benches/compare/half_load.sh [RATE]        (default 132000 orders/s; 0: closed loop)
#
# Env: SURGE_BIN (default target/release/surge), DURATION_S (10), PORT_BASE (17990: three ports
# from it), SERVER_CPU (0), CLIENT_CPU (1). The server gets the same limits and heap sizing as
# run.sh's Surge rows; its data directory is a temporary one, removed at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RATE="${1:-132000}"
BIN="${SURGE_BIN:-$ROOT/target/release/surge}"
DURATION_S="${DURATION_S:-10}"
PORT_BASE="${PORT_BASE:-17990}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
[[ -x $BIN ]] || { echo "half_load.sh: $BIN not found (cargo build --release)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/surge-half-load.XXXXXX)"
PID=""
cleanup() {
  if [[ -n $PID ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

export SURGE_ADMIN_TOKEN="half-load-admin-$$" SURGE_SERVICE_TOKEN="half-load-service-$$"
env SURGE_CONFIG="$ROOT/config/surge.toml" SURGE_ENGINE_LIVE_ORDERS_EXPECTED=2000000 \
  SURGE_LIMITS_PER_CONNECTION_RPS=10000000 SURGE_LIMITS_PER_CONNECTION_BURST=10000000 \
  SURGE_LIMITS_PER_USER_RPS=1000000 SURGE_LIMITS_PER_USER_BURST=1000000 \
  taskset -c "$SERVER_CPU" "$BIN" serve --tcp-addr "127.0.0.1:$PORT_BASE" \
  --http-addr "127.0.0.1:$((PORT_BASE + 1))" --metrics-addr "127.0.0.1:$((PORT_BASE + 2))" \
  --data-dir "$WORK/data" --durability sync </dev/null >"$WORK/serve.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do
  (echo >"/dev/tcp/127.0.0.1/$((PORT_BASE + 1))") 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
  sleep 0.2
done

# comm, run ns, wait ns, slices per thread; utime+stime ticks of the process.
threads() { for t in /proc/"$PID"/task/*; do echo "$(tr ' ' '_' <"$t/comm") $(cat "$t/schedstat")"; done; }
ticks() { local f; read -r -a f <<<"$(sed 's/.*) //' /proc/"$PID"/stat)"; echo $((f[11] + f[12])); }
threads >"$WORK/before"
t0="$(ticks)"
rate=(--rate "$RATE")
[[ $RATE == 0 ]] && rate=()
taskset -c "$CLIENT_CPU" "$BIN" bench --target "tcp://127.0.0.1:$PORT_BASE" --scenario hot-sku \
  --connections 50 --pipeline 16 "${rate[@]}" --duration "${DURATION_S}s" >"$WORK/bench.txt" 2>&1
t1="$(ticks)"
threads >"$WORK/after"

grep -E "^(load|requests|latency)|^ +[0-9]" "$WORK/bench.txt"
orders="$(grep -oP '^requests\s+\K[0-9]+' "$WORK/bench.txt")"
hz="$(getconf CLK_TCK)"
awk -v t="$((t1 - t0))" -v hz="$hz" -v n="$orders" -v s="$DURATION_S" \
  'BEGIN { printf "server CPU %.2f s of %d s, %.2f us per order\n", t / hz, s, t / hz / n * 1e6 }'
paste "$WORK/before" "$WORK/after" | awk '{ r = ($6 - $2) / 1e6; w = ($7 - $3) / 1e6; n = $8 - $4;
  if (n > 0 && r >= 1) printf "  %-16s run %6.0f ms  run-queue wait %6.0f ms  slices %7d  %6.1f us per slice\n", $1, r, w, n, r * 1000 / n }'
