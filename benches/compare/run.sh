#!/usr/bin/env bash
# Side-by-side benchmark: the same `surge bench` shapes (hot-sku, flash-sale), same clients and
# pipeline depth, in one run, against
#   * Redis + the classic stock-deduction Lua script (EVALSHA), no persistence;
#   * Redis + Lua with `appendonly yes` + `appendfsync always`;
#   * PostgreSQL, conditional UPDATE, fsync=on + synchronous_commit=on;
#   * Surge over TCP in each durability mode (none, os, sync), plus an in-process sync row and a
#     latency run at half of saturation.
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
SYSTEMS="${SYSTEMS:-redis-none redis-always postgres surge-tcp-none surge-tcp-os surge-tcp-sync}"
LATENCY_RUN="${LATENCY_RUN:-1}"     # surge-tcp-sync hot-sku at --rate = half its saturation
INPROC_RUN="${INPROC_RUN:-1}"       # in-process sync hot-sku reference row
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
PG_DATA=""
PG_STARTED=0
SURGE_PID=""
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
  [[ -n $BENCH_PID ]] && stop_pid "$BENCH_PID" 15 "surge bench"
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

# ---- install ------------------------------------------------------------------------------------
find_pg_bindir() {
  [[ -n $PG_BINDIR ]] && { printf '%s' "$PG_BINDIR"; return; }
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n $d && -x $d/postgres ]] && printf '%s' "$d"
}

install_missing() {
  local pkgs=()
  if has_system redis-none || has_system redis-always; then
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null || pkgs+=(redis-server)
  fi
  if has_system postgres; then
    [[ -n "$(find_pg_bindir)" ]] || pkgs+=(postgresql)
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
  local cmd=(redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --save "" "$@"
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
  record "$(q "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 -o "$opts" start)"
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 -o "$opts" start >/dev/null ||
    die "postgres did not start: $(tail -n 10 "$PG_DATA/server.log" 2>/dev/null)"
  PG_STARTED=1
  local psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAtX)
  [[ "$("${psql[@]}" -d postgres -c 'select 1')" == 1 ]] || die "postgres does not answer"
  record "$(q "${psql[@]}" -d postgres -c 'CREATE DATABASE surge_bench')"
  "${psql[@]}" -d postgres -c 'CREATE DATABASE surge_bench'
  [[ "$("${psql[@]}" -d surge_bench -c 'show synchronous_commit')" == on ]] || die "synchronous_commit is not on"
  [[ "$("${psql[@]}" -d surge_bench -c 'show fsync')" == on ]] || die "fsync is not on"
  log "postgres up on 127.0.0.1:$PG_PORT ($("${psql[@]}" -d surge_bench -c 'show server_version')), db surge_bench, fsync=on synchronous_commit=on"
}

SURGE_DIR=""
SURGE_TCP=""
SURGE_SEQ=0
start_surge() { # durability
  local mode="$1" tcp http metrics
  free_port tcp
  free_port http
  free_port metrics
  SURGE_SEQ=$((SURGE_SEQ + 1))
  SURGE_DIR="$WORK/surge-$mode-$SURGE_SEQ"
  mkdir -p "$SURGE_DIR"
  SURGE_LOG="$SURGE_DIR/serve.log"
  local envs=(SURGE_CONFIG="$ROOT/config/surge.toml" "${LIMIT_ENV[@]}")
  local cmd=("$SURGE_BIN" serve --tcp-addr "127.0.0.1:$tcp" --http-addr "127.0.0.1:$http"
    --metrics-addr "127.0.0.1:$metrics" --data-dir "$SURGE_DIR/data" --durability "$mode")
  [[ -n $SURGE_SHARDS ]] && cmd+=(--shards "$SURGE_SHARDS")
  record "SURGE_ADMIN_TOKEN=\$SURGE_ADMIN_TOKEN SURGE_SERVICE_TOKEN=\$SURGE_SERVICE_TOKEN $(q "${envs[@]}" "${cmd[@]}") &"
  env "${envs[@]}" SURGE_ADMIN_TOKEN="$ADMIN_TOKEN" SURGE_SERVICE_TOKEN="$SERVICE_TOKEN" \
    "${cmd[@]}" </dev/null >"$SURGE_LOG" 2>&1 &
  SURGE_PID=$!
  wait_port "$tcp" "$SURGE_PID" 60 "surge serve ($mode)"
  SURGE_TCP="tcp://127.0.0.1:$tcp"
  log "surge serve ($mode) up on 127.0.0.1:$tcp, pid $SURGE_PID"
}

# ---- bench runs ---------------------------------------------------------------------------------
# run_bench SYSTEM [ENV=VALUE...] -- BENCH-ARGS...   (appends one line to the results)
run_bench() {
  local system="$1"
  shift
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  local cmd=("$BENCH_BIN" bench "$@" --label "$system" --json)
  local shown
  shown="$(q "${cmd[@]}")"
  ((${#envs[@]})) && shown="$(q "${envs[@]}") $shown"
  case " $* " in *" tcp://"*) shown="SURGE_ADMIN_TOKEN=\$SURGE_ADMIN_TOKEN $shown" ;; esac
  record "$shown"
  log "run $system: $*"
  # In the background + wait, so that a signal to this script is handled at once (cleanup).
  local rc=0
  env "${envs[@]}" SURGE_ADMIN_TOKEN="$ADMIN_TOKEN" timeout -k 10 "$RUN_TIMEOUT" "${cmd[@]}" \
    </dev/null >"$WORK/bench.out" &
  BENCH_PID=$!
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  python3 "$REPORT_PY" append --results "$RUN_RESULTS" --system "$system" --command "$shown" \
    --exit-code "$rc" <"$WORK/bench.out"
}

scenario_args() { # scenario pipeline
  case "$1" in
    hot-sku) printf '%s\n' --scenario hot-sku --connections "$CONNECTIONS" --pipeline "$2" --duration "$DURATION" ;;
    flash-sale) printf '%s\n' --scenario flash-sale --connections "$CONNECTIONS" --pipeline "$2" \
      --users "$FLASH_USERS" --stock "$FLASH_STOCK" ;;
    *) die "unknown scenario $1" ;;
  esac
}

run_row() { # scenario pipeline system
  local scenario="$1" pipeline="$2" system="$3" args
  mapfile -t args < <(scenario_args "$scenario" "$pipeline")
  case "$system" in
    redis-none) run_bench "$system" -- "${args[@]}" --target "redis://127.0.0.1:$REDIS_NONE_PORT" ;;
    redis-always) run_bench "$system" -- "${args[@]}" --target "redis://127.0.0.1:$REDIS_ALWAYS_PORT" ;;
    postgres)
      run_bench "$system" -- "${args[@]}" --target "postgres://postgres@127.0.0.1:$PG_PORT/surge_bench"
      # Flush now, so a later checkpoint's writes do not land on the next rows.
      "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAtX -d surge_bench -c CHECKPOINT >/dev/null || true
      ;;
    surge-tcp-none | surge-tcp-os | surge-tcp-sync)
      start_surge "${system#surge-tcp-}"
      run_bench "$system" -- "${args[@]}" --target "$SURGE_TCP"
      stop_surge
      ;;
    *) die "unknown system $system (SYSTEMS)" ;;
  esac
}

# ---- main ---------------------------------------------------------------------------------------
for s in $SYSTEMS; do
  case "$s" in redis-none | redis-always | postgres | surge-tcp-none | surge-tcp-os | surge-tcp-sync) ;;
    *) die "unknown system $s in SYSTEMS" ;; esac
done
command -v python3 >/dev/null || die "python3 is required"

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
fi
if has_system redis-always; then
  free_port REDIS_ALWAYS_PORT
  start_redis redis-always "$REDIS_ALWAYS_PORT" --appendonly yes --appendfsync always
fi
if has_system redis-none || has_system redis-always; then REDIS_VERSION="$(redis-server --version)"; fi
if has_system postgres; then
  free_port PG_PORT
  start_pg
  PG_VERSION="$("$PG_BIN/postgres" --version)"
fi
SURGE_VERSION=""
((HAVE_SURGE)) && SURGE_VERSION="$("$SURGE_BIN" --version 2>/dev/null || true)"

if [[ $SERVERS_ONLY == 1 ]]; then
  if ((HAVE_SURGE)); then
    for m in none os sync; do
      has_system "surge-tcp-$m" || continue
      start_surge "$m"
      stop_surge
    done
  else
    log "no $SURGE_BIN: surge serve start/stop skipped"
  fi
  log "servers-only: every server started and answered; stopping"
  exit 0
fi

# Machine facts (and an fsync probe on the disk holding the data dirs) before the load starts.
python3 "$REPORT_PY" meta --out "$WORK/meta.json" --fsync-dir "$WORK" --repo "$ROOT" \
  --set redis_version="$REDIS_VERSION" --set postgres_version="$PG_VERSION" \
  --set surge_version="$SURGE_VERSION" --set connections="$CONNECTIONS" --set duration="$DURATION" \
  --set pipelines="$PIPELINES" --set flash_pipelines="$FLASH_PIPELINES" \
  --set flash_users="$FLASH_USERS" --set flash_stock="$FLASH_STOCK" --set systems="$SYSTEMS" \
  --set surge_shards="${SURGE_SHARDS:-config default}" --set bench_tmpdir="$BENCH_TMPDIR"

T0=$SECONDS
record "# benchmark runs"
for p in $PIPELINES; do
  for s in $SYSTEMS; do run_row hot-sku "$p" "$s"; done
done
for p in $FLASH_PIPELINES; do
  for s in $SYSTEMS; do run_row flash-sale "$p" "$s"; done
done

# The pipeline depth of the "pipelined" rows: 16 if measured, else the deepest.
LAT_PIPELINE="$(printf '%s\n' $PIPELINES | sort -n | tail -n 1)"
[[ " $PIPELINES " == *" 16 "* ]] && LAT_PIPELINE=16

if [[ $LATENCY_RUN == 1 ]] && has_system surge-tcp-sync; then
  sat="$(python3 "$REPORT_PY" get --results "$RUN_RESULTS" --system surge-tcp-sync --scenario hot-sku \
    --pipeline "$LAT_PIPELINE" --field throughput_rps || true)"
  if [[ -n $sat ]]; then
    rate="$(python3 -c "import sys; print(max(1, int(float(sys.argv[1]) / 2)))" "$sat")"
    log "latency run: surge-tcp-sync hot-sku at $rate req/s (half of $sat)"
    mapfile -t args < <(scenario_args hot-sku "$LAT_PIPELINE")
    start_surge sync
    run_bench surge-tcp-sync-half -- "${args[@]}" --target "$SURGE_TCP" --rate "$rate"
    stop_surge
  else
    log "latency run skipped: no surge-tcp-sync hot-sku pipeline $LAT_PIPELINE throughput"
  fi
fi

if [[ $INPROC_RUN == 1 ]]; then
  mkdir -p "$WORK/inproc"
  mapfile -t args < <(scenario_args hot-sku "$LAT_PIPELINE")
  run_bench surge-inproc-sync -- "${args[@]}" --target in-process --durability sync --data-dir "$WORK/inproc/data"
  rm -rf "$WORK/inproc"
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
