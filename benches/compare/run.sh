#!/usr/bin/env bash
# Side-by-side benchmark: the same `surge bench` shapes (hot-sku, flash-sale), same clients and
# pipeline depth, in one run, against
#   * Redis + the classic stock-deduction Lua script (EVALSHA), no persistence;
#   * Redis + Lua with `appendonly yes` + `appendfsync always`, with the classic script and with
#     the full-order script (what Surge's create_order does);
#   * PostgreSQL, conditional UPDATE, fsync=on + synchronous_commit=on;
#   * Surge over TCP and over WebSocket in each durability mode (none, os, sync), plus an
#     in-process sync row;
# then latency runs at half of saturation (Redis always, Surge sync) and, when pinned, the
# hot-sku rows of Redis always and Surge sync once more unpinned. With REDIS_BENCHMARK=1 each
# classic-script Redis hot-sku row (none, always) is run once more with redis-benchmark, the tool
# Redis users measure with, on the same server with the same script: whether our client distorts
# Redis's numbers. Servers run on SERVER_CPUS and the load generator on BENCH_CPUS (taskset);
# each row records the server's CPU time per request.
# Everything listens on 127.0.0.1 only. Writes docs/benchmarks-results.jsonl,
# docs/benchmarks-meta.json and docs/BENCHMARKS.md (via benches/compare/report.py).
#
# Usage (from anywhere):  bash benches/compare/run.sh
# Knobs (environment; defaults in brackets) are listed in benches/compare/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
REPORT_PY="$HERE/report.py"

# ---- knobs --------------------------------------------------------------------------------------
CONNECTIONS="${CONNECTIONS:-50}"
DURATION="${DURATION:-10s}"
PIPELINES="${PIPELINES:-1 16}"
FLASH_PIPELINES="${FLASH_PIPELINES:-16}"
FLASH_USERS="${FLASH_USERS:-100000}"
FLASH_STOCK="${FLASH_STOCK:-100}"
SYSTEMS="${SYSTEMS:-redis-none redis-always redis-full-always postgres surge-tcp-none surge-tcp-os surge-tcp-sync surge-ws-none surge-ws-os surge-ws-sync}"
LATENCY_RUN="${LATENCY_RUN:-1}"     # redis-always and surge-tcp-sync hot-sku at --rate = half their saturation
INPROC_RUN="${INPROC_RUN:-1}"       # in-process sync hot-sku reference row
PIN="${PIN:-1}"                     # servers on SERVER_CPUS, load generator on BENCH_CPUS (needs nproc >= 2)
SERVER_CPUS="${SERVER_CPUS:-0}"     # taskset -c lists
BENCH_CPUS="${BENCH_CPUS:-1}"
UNPINNED_ROWS="${UNPINNED_ROWS:-1}" # when pinned: hot-sku, deepest pipeline, once more unpinned
REDIS_BENCHMARK="${REDIS_BENCHMARK:-1}" # redis-none / redis-always hot-sku rows once more with redis-benchmark
SURGE_LIVE_ORDERS_EXPECTED="${SURGE_LIVE_ORDERS_EXPECTED:-2000000}" # surge serve's heap sizing
RUN_TIMEOUT="${RUN_TIMEOUT:-600}"   # seconds, per bench run
SURGE_SHARDS="${SURGE_SHARDS:-}"    # empty: config default (one shard per core)
PORT_BASE="${PORT_BASE:-17380}"     # servers get free ports from here up (outside the ephemeral range)
BENCH_TMPDIR="${BENCH_TMPDIR:-/tmp}" # temp data dirs go here: put it on the disk you want measured
RESULTS="${RESULTS:-$ROOT/docs/benchmarks-results.jsonl}"
META="${META:-$ROOT/docs/benchmarks-meta.json}"
REPORT="${REPORT:-$ROOT/docs/BENCHMARKS.md}"
NOTES="${NOTES:-$HERE/notes.md}"
SURGE_BIN="${SURGE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/surge}"
BENCH_BIN="${BENCH_BIN:-$SURGE_BIN}" # the load generator (`$BENCH_BIN bench ...`)
SKIP_BUILD="${SURGE_BENCH_SKIP_BUILD:-0}"
SKIP_INSTALL="${SURGE_BENCH_SKIP_INSTALL:-0}"
SERVERS_ONLY="${SURGE_BENCH_SERVERS_ONLY:-0}" # start, check and stop every server; no benchmark
KEEP_WORKDIR="${SURGE_BENCH_KEEP_WORKDIR:-0}"
PG_BINDIR="${PG_BINDIR:-}"          # default: newest /usr/lib/postgresql/*/bin (Debian's, not /usr/local)

LIMIT_ENV=(
  SURGE_LIMITS_PER_CONNECTION_RPS=10000000 SURGE_LIMITS_PER_CONNECTION_BURST=10000000
  SURGE_LIMITS_PER_USER_RPS=1000000 SURGE_LIMITS_PER_USER_BURST=1000000
)

log() { printf '[compare %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
has_system() { [[ " $SYSTEMS " == *" $1 "* ]]; }
has_redis() { [[ " $SYSTEMS " == *" redis-"* ]]; }
# The redis-benchmark rows repeat redis-none's and redis-always's: not systems of their own (they
# need their companion's server, its row to size them, and run hot-sku only).
want_rb() { [[ $REDIS_BENCHMARK == 1 ]] && { has_system redis-none || has_system redis-always; }; }
# Shell-quoted rendering of a command, for the commands list.
q() {
  local out="" a sq="'"
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then out+="$a "; else out+="'${a//$sq/$sq\\$sq$sq}' "; fi
  done
  printf '%s' "${out% }"
}

# ---- state + cleanup ----------------------------------------------------------------------------
WORK=""
REDIS_PIDS=()
REDIS_NONE_PID=""
REDIS_ALWAYS_PID="" # also serves redis-full-always
PG_DATA=""
PG_STARTED=0
PG_PID=""           # the postmaster
SURGE_PID=""
SERVER_PIN=()       # command prefixes: taskset -c CPUS, or empty when not pinned
BENCH_PIN=()
ALL_CPUS=""         # this script's own CPUs: where the unpinned rows run
SURGE_LOG=""
BENCH_PID=""
POLICY_RC_CREATED=0
AS_PG=()

stop_pid() { # pid seconds name
  local pid="$1" secs="$2" name="$3" i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) still running after ${secs}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

stop_surge() {
  [[ -n $SURGE_PID ]] || return 0
  local t0=$SECONDS
  stop_pid "$SURGE_PID" 60 "surge serve"
  log "surge serve stopped ($((SECONDS - t0)) s)"
  SURGE_PID=""
  [[ $KEEP_WORKDIR == 1 ]] || rm -rf "$SURGE_DIR"
}

stop_pg() {
  ((PG_STARTED)) || return 0
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  PG_STARTED=0
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if ((rc != 0)) && [[ -n $WORK && -d $WORK ]]; then
    local f
    for f in "$WORK"/*.log "$WORK"/surge-*/serve.log "$PG_DATA/server.log"; do
      [[ -s $f ]] && { log "---- tail of $f"; tail -n 15 "$f" >&2; }
    done
  fi
  [[ -n $BENCH_PID ]] && stop_pid "$BENCH_PID" 15 "load generator"
  stop_surge
  local pid
  for pid in "${REDIS_PIDS[@]}"; do stop_pid "$pid" 30 redis-server; done
  stop_pg
  cd /
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ $KEEP_WORKDIR == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
  ((POLICY_RC_CREATED)) && rm -f /usr/sbin/policy-rc.d
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- ports --------------------------------------------------------------------------------------
NEXT_PORT="$PORT_BASE"
# free_port VAR: the next port >= NEXT_PORT that binds on 127.0.0.1 (each used once per run).
free_port() {
  local p
  p="$(python3 - "$NEXT_PORT" <<'EOF'
import socket, sys
p = int(sys.argv[1])
while p < 65536:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        print(p)
        break
    except OSError:
        p += 1
    finally:
        s.close()
else:
    sys.exit("no free port")
EOF
)"
  NEXT_PORT=$((p + 1))
  printf -v "$1" '%s' "$p"
}

wait_port() { # port pid seconds name
  local port="$1" pid="$2" secs="$3" name="$4" i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || die "$name exited while starting"
    sleep 0.1
  done
  die "$name did not accept on 127.0.0.1:$port within ${secs}s"
}

# surge serve answers WebSocket upgrades (and /ready) with 503 until it is ready: wait for 200.
wait_ready() { # http-port pid seconds name
  local port="$1" pid="$2" secs="$3" name="$4" i
  for ((i = 0; i < secs * 10; i++)); do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "http://127.0.0.1:$port/ready" 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || die "$name exited while starting"
    sleep 0.1
  done
  die "$name was not ready on 127.0.0.1:$port/ready within ${secs}s"
}

# ---- install ------------------------------------------------------------------------------------
find_pg_bindir() {
  [[ -n $PG_BINDIR ]] && { printf '%s' "$PG_BINDIR"; return; }
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n $d && -x $d/postgres ]] && printf '%s' "$d"
}

install_missing() {
  local pkgs=()
  if has_redis; then
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null || pkgs+=(redis-server)
  fi
  # redis-server pulls in redis-tools (redis-cli, redis-benchmark); ask for it too if only it is missing.
  if want_rb; then command -v redis-benchmark >/dev/null || pkgs+=(redis-tools); fi
  if has_system postgres; then
    [[ -n "$(find_pg_bindir)" ]] || pkgs+=(postgresql)
  fi
  # For the report's chart only: without it the report is written, chartless.
  if ! python3 -c 'import matplotlib' 2>/dev/null; then
    if [[ $SKIP_INSTALL == 1 ]]; then
      log "no matplotlib (SURGE_BENCH_SKIP_INSTALL=1): the report will have no chart"
    else
      log "installing matplotlib (pip)"
      python3 -m pip install --quiet matplotlib >&2 ||
        log "pip could not install matplotlib (apt: python3-matplotlib): the report will have no chart"
    fi
  fi
  ((${#pkgs[@]})) || return 0
  [[ $SKIP_INSTALL == 1 ]] && die "missing ${pkgs[*]} (SURGE_BENCH_SKIP_INSTALL=1)"
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  # Keep the packages' own services (redis on 6379, the main PG cluster) from starting.
  if ((EUID == 0)) && [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
  log "installing ${pkgs[*]} (apt)"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
  if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
}

# ---- servers ------------------------------------------------------------------------------------
CMDS="" # file: every command, in order (servers and benches)
record() { printf '%s\n' "$*" >>"$CMDS"; }

start_redis() { # name port extra-args...
  local name="$1" port="$2"
  shift 2
  local dir="$WORK/$name"
  mkdir -p "$dir"
  local cmd=("${SERVER_PIN[@]}" redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --save "" "$@"
    --dir "$dir" --daemonize no --logfile "$dir/redis.log")
  record "$(q "${cmd[@]}") &"
  "${cmd[@]}" </dev/null >/dev/null 2>&1 &
  local pid=$!
  REDIS_PIDS+=("$pid")
  wait_port "$port" "$pid" 30 "redis-server ($name)"
  local i
  for ((i = 0; i < 100; i++)); do
    [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]] && break
    sleep 0.1
  done
  [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping)" == PONG ]] || die "redis ($name) does not answer PING"
  log "redis ($name) up on 127.0.0.1:$port, pid $pid: appendonly=$(redis-cli -p "$port" config get appendonly | tail -n 1) appendfsync=$(redis-cli -p "$port" config get appendfsync | tail -n 1)"
}

start_pg() {
  PG_BIN="$(find_pg_bindir)"
  [[ -n $PG_BIN ]] || die "no PostgreSQL under /usr/lib/postgresql/*/bin (set PG_BINDIR)"
  local owner
  if ((EUID == 0)); then
    # initdb and postgres refuse to run as root: run them as the postgres user.
    id postgres >/dev/null 2>&1 || die "no 'postgres' user"
    AS_PG=(runuser -u postgres --)
    owner=postgres
  else
    AS_PG=()
    owner="$(id -un)"
  fi
  PG_DATA="$WORK/pg/data"
  mkdir -p "$WORK/pg/sock" "$PG_DATA"
  chown -R "$owner" "$WORK/pg"
  chmod 700 "$PG_DATA"
  record "$(q "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --no-sync)"
  "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --no-sync >"$WORK/pg-initdb.log" 2>&1 ||
    die "initdb failed: $(tail -n 5 "$WORK/pg-initdb.log")"
  local opts="-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$WORK/pg/sock"
  opts+=" -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=300"
  opts+=" -c shared_buffers=128MB"
  # Pinned through pg_ctl: the postmaster and every backend it forks inherit the affinity.
  record "$(q "${SERVER_PIN[@]}" "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 -o "$opts" start)"
  "${SERVER_PIN[@]}" "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 -o "$opts" start >/dev/null ||
    die "postgres did not start: $(tail -n 10 "$PG_DATA/server.log" 2>/dev/null)"
  PG_STARTED=1
  PG_PID="$(head -n 1 "$PG_DATA/postmaster.pid")"
  local psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAtX)
  [[ "$("${psql[@]}" -d postgres -c 'select 1')" == 1 ]] || die "postgres does not answer"
  record "$(q "${psql[@]}" -d postgres -c 'CREATE DATABASE surge_bench')"
  "${psql[@]}" -d postgres -c 'CREATE DATABASE surge_bench'
  [[ "$("${psql[@]}" -d surge_bench -c 'show synchronous_commit')" == on ]] || die "synchronous_commit is not on"
  [[ "$("${psql[@]}" -d surge_bench -c 'show fsync')" == on ]] || die "fsync is not on"
  log "postgres up on 127.0.0.1:$PG_PORT ($("${psql[@]}" -d surge_bench -c 'show server_version')), db surge_bench, fsync=on synchronous_commit=on, postmaster pid $PG_PID"
}

SURGE_DIR=""
SURGE_TCP=""
SURGE_WS=""
SURGE_SEQ=0
start_surge() { # durability [unpinned]
  local mode="$1" tcp http metrics
  local pin=("${SERVER_PIN[@]}")
  if [[ ${2:-} == unpinned ]]; then pin=(); fi
  free_port tcp
  free_port http
  free_port metrics
  SURGE_SEQ=$((SURGE_SEQ + 1))
  SURGE_DIR="$WORK/surge-$mode-$SURGE_SEQ"
  mkdir -p "$SURGE_DIR"
  SURGE_LOG="$SURGE_DIR/serve.log"
  local envs=(SURGE_CONFIG="$ROOT/config/surge.toml" SURGE_ENGINE_LIVE_ORDERS_EXPECTED="$SURGE_LIVE_ORDERS_EXPECTED"
    "${LIMIT_ENV[@]}")
  local cmd=("$SURGE_BIN" serve --tcp-addr "127.0.0.1:$tcp" --http-addr "127.0.0.1:$http"
    --metrics-addr "127.0.0.1:$metrics" --data-dir "$SURGE_DIR/data" --durability "$mode")
  [[ -n $SURGE_SHARDS ]] && cmd+=(--shards "$SURGE_SHARDS")
  record "SURGE_ADMIN_TOKEN=\$SURGE_ADMIN_TOKEN SURGE_SERVICE_TOKEN=\$SURGE_SERVICE_TOKEN $(q "${envs[@]}" "${pin[@]}" "${cmd[@]}") &"
  env "${envs[@]}" SURGE_ADMIN_TOKEN="$ADMIN_TOKEN" SURGE_SERVICE_TOKEN="$SERVICE_TOKEN" \
    "${pin[@]}" "${cmd[@]}" </dev/null >"$SURGE_LOG" 2>&1 &
  SURGE_PID=$!
  # The heap for the expected orders is faulted in before anything listens.
  wait_port "$tcp" "$SURGE_PID" 60 "surge serve ($mode)"
  wait_port "$http" "$SURGE_PID" 30 "surge serve ($mode) http/ws"
  wait_ready "$http" "$SURGE_PID" 30 "surge serve ($mode)"
  SURGE_TCP="tcp://127.0.0.1:$tcp"
  SURGE_WS="ws://127.0.0.1:$http/ws"
  log "surge serve ($mode) up on 127.0.0.1:$tcp and $SURGE_WS, pid $SURGE_PID${pin[*]:+, under ${pin[*]}}"
}

# Move every thread of the running redis-always server onto CPUS (its unpinned row, and back).
# A server that died meanwhile fails its next bench run; that is recorded, not fatal.
redis_always_cpus() { # cpus
  record "taskset -a -p -c $1 \$REDIS_ALWAYS_PID"
  taskset -a -p -c "$1" "$REDIS_ALWAYS_PID" >/dev/null || log "could not move redis-always onto CPU $1"
}

# ---- server CPU ---------------------------------------------------------------------------------
# proc_ticks PID [with-children]: CPU time the process has used, in clock ticks: utime + stime
# (fields 14, 15 of /proc/PID/stat; all its threads), with-children adds cutime + cstime (16, 17:
# its children that exited and were waited for). Field 2 (comm) may hold spaces and ')', so the
# fields are counted after the last ')'.
proc_ticks() {
  local stat f
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  read -r -a f <<<"${stat##*)}"
  # f[0] is field 3 (state): field N is f[N-3].
  if [[ ${2:-} == with-children ]]; then
    echo $((f[11] + f[12] + f[13] + f[14]))
  else
    echo $((f[11] + f[12]))
  fi
}

# PostgreSQL's CPU ticks: the postmaster with its exited children (earlier backends), plus every
# live child (backends, checkpointer, WAL writer...). It first waits (<= 10 s) for the bench's
# backends to exit, so that none is caught between alive and reaped (counted twice, or never).
pg_ticks() {
  local i total c t
  for ((i = 0; i < 100; i++)); do
    pgrep -P "$PG_PID" -f surge_bench >/dev/null || break
    sleep 0.1
  done
  total="$(proc_ticks "$PG_PID" with-children)" || return 1
  for c in $(pgrep -P "$PG_PID" || true); do
    t="$(proc_ticks "$c")" || continue # exited since pgrep
    total=$((total + t))
  done
  echo "$total"
}

# server_ticks SYSTEM: CPU ticks used so far by the server behind SYSTEM's rows; fails for the
# in-process row (no server) and for a server that is gone.
server_ticks() {
  case "$1" in
    redis-none | redis-none-rb) proc_ticks "$REDIS_NONE_PID" ;;
    redis-always* | redis-full-always) proc_ticks "$REDIS_ALWAYS_PID" ;;
    postgres) pg_ticks ;;
    surge-tcp-* | surge-ws-*) proc_ticks "$SURGE_PID" ;;
    *) return 1 ;;
  esac
}

# ---- bench runs ---------------------------------------------------------------------------------
# run_bench SYSTEM [ENV=VALUE...] -- BENCH-ARGS...   (appends one line to the results, with the
# CPU time the server behind SYSTEM spent during the run)
run_bench() {
  local system="$1"
  shift
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  # The load generator gets BENCH_CPUS, except in the unpinned rows and the in-process one: that
  # is engine and load generator in one process, so it gets every core, as the pair does pinned.
  local pin=("${BENCH_PIN[@]}")
  if [[ $system == *-unpinned || $system == surge-inproc-* ]]; then pin=(); fi
  local cmd=("${pin[@]}" "$BENCH_BIN" bench "$@" --label "$system" --json)
  local shown
  shown="$(q "${cmd[@]}")"
  ((${#envs[@]})) && shown="$(q "${envs[@]}") $shown"
  case " $* " in *" tcp://"* | *" ws://"*) shown="SURGE_ADMIN_TOKEN=\$SURGE_ADMIN_TOKEN $shown" ;; esac
  record "$shown"
  log "run $system: $*"
  local rc=0 t0 t1 cpu=()
  t0="$(server_ticks "$system")" || t0=""
  # In the background + wait, so that a signal to this script is handled at once (cleanup).
  env "${envs[@]}" SURGE_ADMIN_TOKEN="$ADMIN_TOKEN" timeout -k 10 "$RUN_TIMEOUT" "${cmd[@]}" \
    </dev/null >"$WORK/bench.out" &
  BENCH_PID=$!
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  t1="$(server_ticks "$system")" || t1=""
  if [[ -n $t0 && -n $t1 ]]; then
    cpu=(--server-cpu-s "$(awk -v d="$((t1 - t0))" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", d / hz }')")
  fi
  python3 "$REPORT_PY" append --results "$RUN_RESULTS" --system "$system" --command "$shown" \
    --exit-code "$rc" "${cpu[@]}" <"$WORK/bench.out"
}

scenario_args() { # scenario pipeline
  case "$1" in
    hot-sku) printf '%s\n' --scenario hot-sku --connections "$CONNECTIONS" --pipeline "$2" --duration "$DURATION" ;;
    flash-sale) printf '%s\n' --scenario flash-sale --connections "$CONNECTIONS" --pipeline "$2" \
      --users "$FLASH_USERS" --stock "$FLASH_STOCK" ;;
    *) die "unknown scenario $1" ;;
  esac
}

# run_row SCENARIO PIPELINE SYSTEM [BENCH-ARGS...]: one row. SYSTEM is one of SYSTEMS, or
# redis-always-half / surge-tcp-sync-half (given --rate) or redis-always-unpinned /
# surge-tcp-sync-unpinned.
run_row() {
  local scenario="$1" pipeline="$2" system="$3" args
  shift 3
  mapfile -t args < <(scenario_args "$scenario" "$pipeline")
  args+=("$@")
  case "$system" in
    redis-none) run_bench "$system" -- "${args[@]}" --target "redis://127.0.0.1:$REDIS_NONE_PORT" ;;
    redis-always | redis-always-half) run_bench "$system" -- "${args[@]}" --target "redis://127.0.0.1:$REDIS_ALWAYS_PORT" ;;
    redis-full-always)
      run_bench "$system" -- "${args[@]}" --redis-script full-order --target "redis://127.0.0.1:$REDIS_ALWAYS_PORT"
      ;;
    redis-always-unpinned)
      # The same server, let onto every core for this row only.
      redis_always_cpus "$ALL_CPUS"
      run_bench "$system" -- "${args[@]}" --target "redis://127.0.0.1:$REDIS_ALWAYS_PORT"
      redis_always_cpus "$SERVER_CPUS"
      ;;
    postgres)
      run_bench "$system" -- "${args[@]}" --target "postgres://postgres@127.0.0.1:$PG_PORT/surge_bench"
      # Flush now, so a later checkpoint's writes do not land on the next rows.
      "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAtX -d surge_bench -c CHECKPOINT >/dev/null || true
      ;;
    surge-tcp-* | surge-ws-*)
      # surge-TRANSPORT-MODE[-half|-unpinned]
      local rest="${system#surge-}" transport mode
      transport="${rest%%-*}"
      mode="${rest#*-}"
      mode="${mode%%-*}"
      if [[ $system == *-unpinned ]]; then start_surge "$mode" unpinned; else start_surge "$mode"; fi
      if [[ $transport == ws ]]; then
        run_bench "$system" -- "${args[@]}" --target "$SURGE_WS"
      else
        run_bench "$system" -- "${args[@]}" --target "$SURGE_TCP"
      fi
      stop_surge
      ;;
    *) die "unknown system $system (SYSTEMS)" ;;
  esac
}

# ---- redis-benchmark rows -----------------------------------------------------------------------
STOCK_LUA_FILE=""       # the classic script, as `surge bench` loads it (load_stock_lua)
STOCK_LUA_SHA=""        # its SHA1: what SCRIPT LOAD returns and EVALSHA takes
RB_STOCK=1000000000000  # the stock key's value: loadgen's HOT_SKU_STOCK, more than any run takes

# load_stock_lua: the classic script's text, extracted from the source `surge bench` embeds it
# from (STOCK_LUA in loadgen/src/client/redis_lua.rs), so that the two cannot drift; report.py
# fails, and so does this, when it is not found there exactly once.
load_stock_lua() {
  STOCK_LUA_FILE="$WORK/stock.lua"
  record "$(q python3 "$REPORT_PY" stock-lua) >stock.lua # STOCK_LUA of loadgen/src/client/redis_lua.rs"
  python3 "$REPORT_PY" stock-lua >"$STOCK_LUA_FILE" ||
    die "could not take the classic script from loadgen/src/client/redis_lua.rs (or set REDIS_BENCHMARK=0)"
  STOCK_LUA_SHA="$(sha1sum <"$STOCK_LUA_FILE")"
  STOCK_LUA_SHA="${STOCK_LUA_SHA%% *}"
  log "classic script for redis-benchmark: STOCK_LUA, $(wc -c <"$STOCK_LUA_FILE") bytes, SHA1 $STOCK_LUA_SHA"
}

# rb_row PIPELINE SYSTEM: SYSTEM-rb, SYSTEM's hot-sku row at PIPELINE (just run by `surge bench`)
# once more with redis-benchmark: same server, script, connections, pipeline depth and pinning,
# and as many requests as `surge bench` answered in DURATION, so that it lasts about as long.
# Server CPU is read around it as around every row; the stock, read after it, tells how many
# requests deducted their unit (redis-benchmark does not look at the replies).
rb_row() {
  local pipeline="$1" system="$2" port
  case "$system" in
    redis-none) port="$REDIS_NONE_PORT" ;;
    redis-always) port="$REDIS_ALWAYS_PORT" ;;
    *) die "no redis-benchmark row for $system" ;;
  esac
  local name="$system-rb" n
  n="$(python3 "$REPORT_PY" rb-requests --results "$RUN_RESULTS" --system "$system" --pipeline "$pipeline" \
    --duration "$DURATION")" || n=""
  if [[ -z $n ]]; then
    log "$name skipped: no $system hot-sku pipeline $pipeline throughput to size it"
    return 0
  fi
  local cli=(redis-cli -h 127.0.0.1 -p "$port")
  # `surge bench` has just SCRIPT LOADed its classic script here: unless the binary embeds
  # another script than the source (stale build), the source's SHA1 is in the script cache.
  [[ "$("${cli[@]}" SCRIPT EXISTS "$STOCK_LUA_SHA")" == 1 ]] ||
    die "redis ($system): no script $STOCK_LUA_SHA after surge bench's row: $BENCH_BIN loads another classic script than loadgen/src/client/redis_lua.rs (rebuild it, or set REDIS_BENCHMARK=0)"
  local sha
  record "$(q "${cli[@]}" -x SCRIPT LOAD) <stock.lua"
  sha="$("${cli[@]}" -x SCRIPT LOAD <"$STOCK_LUA_FILE")"
  [[ $sha == "$STOCK_LUA_SHA" ]] || die "redis ($system): SCRIPT LOAD answered '$sha', not $STOCK_LUA_SHA"
  # A key of the shape of surge bench's (surge_bench:stock:bench-RUN-0), fresh for every row.
  local key="surge_bench:stock:bench-rb-$system-p$pipeline-0"
  record "$(q "${cli[@]}" SET "$key" "$RB_STOCK")"
  [[ "$("${cli[@]}" SET "$key" "$RB_STOCK")" == OK ]] || die "redis ($system): SET $key failed"
  local cmd=("${BENCH_PIN[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -c "$CONNECTIONS" -P "$pipeline" -n "$n"
    --csv EVALSHA "$sha" 1 "$key" 1)
  local shown
  shown="$(q "${cmd[@]}")"
  record "$shown"
  log "run $name: pipeline $pipeline, $n requests"
  local rc=0 t0 t1 w0 w1 cpu=() left=()
  t0="$(server_ticks "$name")" || t0=""
  w0="$(date +%s.%N)"
  # Under timeout, as every run: redis-benchmark spins forever on a server that went away.
  timeout -k 10 "$RUN_TIMEOUT" "${cmd[@]}" </dev/null >"$WORK/rb.out" 2>"$WORK/rb.err" &
  BENCH_PID=$!
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  w1="$(date +%s.%N)"
  t1="$(server_ticks "$name")" || t1=""
  if [[ -n $t0 && -n $t1 ]]; then
    cpu=(--server-cpu-s "$(awk -v d="$((t1 - t0))" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", d / hz }')")
  fi
  local after
  after="$("${cli[@]}" GET "$key" 2>/dev/null)" || after=""
  [[ $after =~ ^-?[0-9]+$ ]] && left=(--remaining-stock "$after")
  python3 "$REPORT_PY" append-rb --results "$RUN_RESULTS" --system "$name" --command "$shown" \
    --exit-code "$rc" "${cpu[@]}" --connections "$CONNECTIONS" --pipeline "$pipeline" --requests "$n" \
    --stock "$RB_STOCK" "${left[@]}" --stderr "$WORK/rb.err" \
    --wall-s "$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", b - a }')" <"$WORK/rb.out"
}

# half_row SYSTEM: SYSTEM-half, hot-sku open loop at half of the throughput SYSTEM reached
# closed-loop at DEEP_PIPELINE (its saturation).
half_row() {
  local system="$1" sat rate
  sat="$(python3 "$REPORT_PY" get --results "$RUN_RESULTS" --system "$system" --scenario hot-sku \
    --pipeline "$DEEP_PIPELINE" --field throughput_rps)" || sat=""
  if [[ -z $sat ]]; then
    log "latency run $system-half skipped: no $system hot-sku pipeline $DEEP_PIPELINE throughput"
    return 0
  fi
  rate="$(python3 -c "import sys; print(max(1, int(float(sys.argv[1]) / 2)))" "$sat")"
  log "latency run: $system hot-sku at $rate req/s (half of $sat)"
  run_row hot-sku "$DEEP_PIPELINE" "$system-half" --rate "$rate"
}

# ---- main ---------------------------------------------------------------------------------------
for s in $SYSTEMS; do
  case "$s" in
    redis-none | redis-always | redis-full-always | postgres) ;;
    surge-tcp-none | surge-tcp-os | surge-tcp-sync | surge-ws-none | surge-ws-os | surge-ws-sync) ;;
    *) die "unknown system $s in SYSTEMS" ;;
  esac
done
command -v python3 >/dev/null || die "python3 is required"

# Servers on SERVER_CPUS and load generators on BENCH_CPUS, so that neither takes CPU from the
# other (on one core there is nothing to split).
NPROC="$(nproc)"
PINNED=0
if [[ $PIN == 1 ]] && ((NPROC >= 2)); then
  command -v taskset >/dev/null || die "PIN=1 needs taskset (util-linux); or set PIN=0"
  taskset -c "$SERVER_CPUS" true 2>/dev/null || die "SERVER_CPUS=$SERVER_CPUS: taskset cannot run there"
  taskset -c "$BENCH_CPUS" true 2>/dev/null || die "BENCH_CPUS=$BENCH_CPUS: taskset cannot run there"
  PINNED=1
  SERVER_PIN=(taskset -c "$SERVER_CPUS")
  BENCH_PIN=(taskset -c "$BENCH_CPUS")
  ALL_CPUS="$(taskset -c -p $$)"
  ALL_CPUS="${ALL_CPUS##*: }"
  log "pinned: servers on CPU $SERVER_CPUS, load generator on CPU $BENCH_CPUS (unpinned rows: CPU $ALL_CPUS)"
elif [[ $PIN == 1 ]]; then
  log "not pinned: nproc is $NPROC"
fi
CLK_TCK="$(getconf CLK_TCK)" # the unit of /proc/PID/stat's CPU times

install_missing

if [[ $SKIP_BUILD != 1 ]]; then
  log "cargo build --release (in $ROOT)"
  (cd "$ROOT" && cargo build --release)
fi
HAVE_SURGE=0
[[ -x $SURGE_BIN ]] && HAVE_SURGE=1
if [[ $SERVERS_ONLY != 1 ]]; then
  ((HAVE_SURGE)) || die "no $SURGE_BIN (build it, or set SURGE_BIN)"
  "$BENCH_BIN" bench --help >/dev/null 2>&1 || die "$BENCH_BIN has no 'bench' subcommand"
fi

mkdir -p "$BENCH_TMPDIR"
WORK="$(mktemp -d "$BENCH_TMPDIR/surge-compare.XXXXXX")"
chmod 755 "$WORK" # the postgres user must reach its data dir inside
cd "$WORK"        # (runuser keeps the cwd; anything a tool writes relative lands here)
CMDS="$WORK/commands.txt"
RUN_RESULTS="$WORK/results.jsonl"
: >"$CMDS"
: >"$RUN_RESULTS"
ADMIN_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
SERVICE_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
log "work dir $WORK; systems: $SYSTEMS"

REDIS_VERSION="" PG_VERSION="" PG_PORT="" REDIS_NONE_PORT="" REDIS_ALWAYS_PORT=""
record "# servers (all on 127.0.0.1; ports and temp dirs are picked per run)"
if has_system redis-none; then
  free_port REDIS_NONE_PORT
  start_redis redis-none "$REDIS_NONE_PORT" --appendonly no
  REDIS_NONE_PID="${REDIS_PIDS[-1]}"
fi
if has_system redis-always || has_system redis-full-always; then
  free_port REDIS_ALWAYS_PORT
  start_redis redis-always "$REDIS_ALWAYS_PORT" --appendonly yes --appendfsync always
  REDIS_ALWAYS_PID="${REDIS_PIDS[-1]}"
fi
if has_redis; then REDIS_VERSION="$(redis-server --version)"; fi
if has_system postgres; then
  free_port PG_PORT
  start_pg
  PG_VERSION="$("$PG_BIN/postgres" --version)"
fi
SURGE_VERSION=""
((HAVE_SURGE)) && SURGE_VERSION="$("$SURGE_BIN" --version 2>/dev/null || true)"
RB_VERSION=""
if want_rb; then
  command -v redis-benchmark >/dev/null || die "REDIS_BENCHMARK=1 needs redis-benchmark (apt: redis-tools)"
  RB_VERSION="$(redis-benchmark --version)"
fi

if [[ $SERVERS_ONLY == 1 ]]; then
  if ((HAVE_SURGE)); then
    for m in none os sync; do
      has_system "surge-tcp-$m" || has_system "surge-ws-$m" || continue
      start_surge "$m"
      stop_surge
    done
  else
    log "no $SURGE_BIN: surge serve start/stop skipped"
  fi
  log "servers-only: every server started and answered; stopping"
  exit 0
fi

if want_rb; then load_stock_lua; fi

# Machine facts (and an fsync probe on the disk holding the data dirs) before the load starts.
python3 "$REPORT_PY" meta --out "$WORK/meta.json" --fsync-dir "$WORK" --repo "$ROOT" \
  --set redis_version="$REDIS_VERSION" --set postgres_version="$PG_VERSION" \
  --set surge_version="$SURGE_VERSION" --set connections="$CONNECTIONS" --set duration="$DURATION" \
  --set pipelines="$PIPELINES" --set flash_pipelines="$FLASH_PIPELINES" \
  --set flash_users="$FLASH_USERS" --set flash_stock="$FLASH_STOCK" --set systems="$SYSTEMS" \
  --set surge_shards="${SURGE_SHARDS:-config default}" --set bench_tmpdir="$BENCH_TMPDIR" \
  --set pin="$PIN" --set pinned="$PINNED" --set server_cpus="$SERVER_CPUS" --set bench_cpus="$BENCH_CPUS" \
  --set unpinned_rows="$UNPINNED_ROWS" --set surge_live_orders_expected="$SURGE_LIVE_ORDERS_EXPECTED" \
  --set redis_benchmark="$REDIS_BENCHMARK" --set redis_benchmark_version="$RB_VERSION"

T0=$SECONDS
record "# benchmark runs"
for p in $PIPELINES; do
  for s in $SYSTEMS; do
    run_row hot-sku "$p" "$s"
    # Right after our client's row: same server state, and its throughput sizes the run.
    if [[ $REDIS_BENCHMARK == 1 && ($s == redis-none || $s == redis-always) ]]; then rb_row "$p" "$s"; fi
  done
done
for p in $FLASH_PIPELINES; do
  for s in $SYSTEMS; do run_row flash-sale "$p" "$s"; done
done

# The pipeline depth of the "pipelined" rows: 16 if measured, else the deepest.
DEEP_PIPELINE="$(printf '%s\n' $PIPELINES | sort -n | tail -n 1)"
[[ " $PIPELINES " == *" 16 "* ]] && DEEP_PIPELINE=16

if [[ $LATENCY_RUN == 1 ]]; then
  for s in redis-always surge-tcp-sync; do
    has_system "$s" || continue
    half_row "$s"
  done
fi

if [[ $INPROC_RUN == 1 ]]; then
  mkdir -p "$WORK/inproc"
  mapfile -t args < <(scenario_args hot-sku "$DEEP_PIPELINE")
  run_bench surge-inproc-sync -- "${args[@]}" --target in-process --durability sync --data-dir "$WORK/inproc/data"
  rm -rf "$WORK/inproc"
fi

# The durable peers' deepest hot-sku rows once more with server and load generator sharing every
# core, as runs before pinning did: what pinning changes.
if ((PINNED)) && [[ $UNPINNED_ROWS == 1 ]]; then
  for s in redis-always surge-tcp-sync; do
    has_system "$s" || continue
    run_row hot-sku "$DEEP_PIPELINE" "$s-unpinned"
  done
fi
log "benchmark runs took $((SECONDS - T0)) s"

# Install the results (only now: a run that dies midway leaves the previous ones in place).
python3 "$REPORT_PY" meta --base "$WORK/meta.json" --commands "$CMDS" --set bench_seconds="$((SECONDS - T0))" \
  --out "$WORK/meta.final.json"
mkdir -p "$(dirname "$RESULTS")" "$(dirname "$META")" "$(dirname "$REPORT")"
cp "$RUN_RESULTS" "$RESULTS"
cp "$WORK/meta.final.json" "$META"
python3 "$REPORT_PY" render --results "$RESULTS" --meta "$META" --notes "$NOTES" --out "$REPORT"
log "wrote $RESULTS, $META, $REPORT"
