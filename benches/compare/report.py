#!/usr/bin/env python3
"""Results and report for benches/compare/run.sh (python3 standard library; matplotlib for the chart).

    report.py [render] [--results F] [--meta F] [--notes F] [--engine F] [--out F]
        Write docs/BENCHMARKS.md from docs/benchmarks-results.jsonl + docs/benchmarks-meta.json
        (regenerate any time: `python3 benches/compare/report.py`), and next to it
        benchmarks-chart.png (throughput and p99 per system) if matplotlib is importable.
    report.py append --results F --system NAME --command CMD --exit-code N [--server-cpu-s X]
        Append one `surge bench --json` result (stdin), tagged with the system, its exact command
        and the server's CPU seconds over the run; a failed run is recorded as
        {"failed": true, ...} so the table shows it.
    report.py append-rb --results F --system NAME --command CMD --exit-code N --connections C
                        --pipeline P --requests N --stock S [--remaining-stock R] [--wall-s X]
                        [--server-cpu-s X] [--stderr F]
        Append one `redis-benchmark --csv` result (stdin) as a hot-sku row of the same shape as
        `surge bench --json`'s (rps, p50/p95/p99/max), verified by the stock: S before the run, R
        after, so S - R must equal the N requests sent.
    report.py get --results F --system NAME --scenario S --pipeline P --field K
        Print one field of a recorded run (run.sh: the saturation throughput for the latency runs).
    report.py rb-requests --results F --system NAME --pipeline P --duration D
        Print how many requests a redis-benchmark row gets: as many as NAME's hot-sku row at
        pipeline P answered in D (a `surge bench --duration`), a multiple of P.
    report.py stock-lua [--source F]
        Print the classic script `surge bench` loads (STOCK_LUA in
        loadgen/src/client/redis_lua.rs), byte for byte; fail if it cannot be found there.
    report.py meta --out F [--base F] [--fsync-dir D] [--repo D] [--commands F] [--set k=v ...]
        Collect machine facts (CPU, memory, kernel, disk, an fsync probe, git commit) into F.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = ROOT / "docs" / "benchmarks-results.jsonl"
DEFAULT_META = ROOT / "docs" / "benchmarks-meta.json"
DEFAULT_NOTES = ROOT / "benches" / "compare" / "notes.md"
DEFAULT_OUT = ROOT / "docs" / "BENCHMARKS.md"
DEFAULT_ENGINE = ROOT / "benches" / "compare" / "engine.md"
CHART_NAME = "benchmarks-chart.png"  # written next to the report

# Display order, names and durability of every system run.sh knows.
SYSTEMS = {
    "redis-none": ("Redis + Lua", "none (no AOF, no RDB)"),
    "redis-none-rb": ("Redis + Lua, redis-benchmark", "none (no AOF, no RDB)"),
    "redis-always": ("Redis + Lua", "AOF, appendfsync always"),
    "redis-always-rb": ("Redis + Lua, redis-benchmark", "AOF, appendfsync always"),
    "redis-full-always": ("Redis + full-order Lua", "AOF, appendfsync always"),
    "postgres": ("PostgreSQL, conditional UPDATE", "fsync=on, synchronous_commit=on"),
    "surge-tcp-none": ("Surge, TCP", "none (memory only)"),
    "surge-tcp-os": ("Surge, TCP", "os (write, no fsync)"),
    "surge-tcp-sync": ("Surge, TCP", "sync (fsync before reply)"),
    "surge-ws-none": ("Surge, WebSocket", "none (memory only)"),
    "surge-ws-os": ("Surge, WebSocket", "os (write, no fsync)"),
    "surge-ws-sync": ("Surge, WebSocket", "sync (fsync before reply)"),
    "redis-always-unpinned": ("Redis + Lua, unpinned", "AOF, appendfsync always"),
    "surge-tcp-sync-unpinned": ("Surge, TCP, unpinned", "sync (fsync before reply)"),
    "surge-inproc-sync": ("Surge, in-process (reference)", "sync (fsync before reply)"),
    "redis-always-half": ("Redis + Lua, at half of saturation", "AOF, appendfsync always"),
    "surge-tcp-sync-half": ("Surge, TCP, at half of saturation", "sync (fsync before reply)"),
}
PEERS = ["redis-none", "redis-always", "redis-full-always", "postgres"]
PEER_SHORT = {
    "redis-none": "Redis (none)",
    "redis-always": "Redis (always)",
    "redis-full-always": "Redis full-order (always)",
    "postgres": "PostgreSQL",
}
SURGE_SERVED = [  # (system, how its row is named in the Surge/peer ratio tables)
    *((f"surge-tcp-{m}", f"TCP `{m}`") for m in ("none", "os", "sync")),
    *((f"surge-ws-{m}", f"WebSocket `{m}`") for m in ("none", "os", "sync")),
]
HALF = ["redis-always-half", "surge-tcp-sync-half"]  # open loop: their own table, not the groups'
# The classic-script Redis rows that run.sh repeats with redis-benchmark (as SYSTEM-rb): whether
# our own client distorts Redis's numbers. The acceptance table keeps using our client's rows.
RB_OF = ["redis-none", "redis-always"]
# Where `surge bench` keeps its classic script (run.sh hands the same text to redis-benchmark).
STOCK_LUA_SOURCE = ROOT / "loadgen" / "src" / "client" / "redis_lua.rs"


# ---------------------------------------------------------------------------------------------
# append / get


def parse_bench_output(text):
    """The JSON object `surge bench --json` printed (the last line that parses as one)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    try:  # maybe pretty-printed over several lines
        obj = json.loads(text)
        return obj if isinstance(obj, dict) else None
    except ValueError:
        return None


def failed_record(a, text):
    return {
        "system": a.system,
        "command": a.command,
        "failed": True,
        "exit_code": a.exit_code,
        "output_tail": text.strip()[-500:],
    }


def cmd_append(a):
    text = sys.stdin.read()
    obj = parse_bench_output(text)
    if obj is None:
        rec = failed_record(a, text)
        # Keep what the command line says, so the row lands in the right table.
        for flag, key in (("--scenario", "scenario"), ("--pipeline", "pipeline"), ("--rate", "rate_rps")):
            m = re.search(re.escape(flag) + r"\s+(\S+)", a.command)
            if m:
                rec[key] = int(m.group(1)) if key == "pipeline" else (float(m.group(1)) if key == "rate_rps" else m.group(1))
    else:
        rec = {"system": a.system, "command": a.command, **obj}
    store(a, rec)


def store(a, rec):
    """Add the server CPU to a run's record, say how it went (stderr) and append it."""
    if rec.get("failed"):
        print(f"  {a.system}: FAILED (exit {a.exit_code})", file=sys.stderr)
    else:
        if a.exit_code != 0:  # it printed a result but exited non-zero (e.g. verification failed)
            rec["exit_code"] = a.exit_code
        if a.server_cpu_s is not None and rec.get("requests"):
            rec["server_cpu_s"] = round(a.server_cpu_s, 3)
            rec["server_cpu_us_per_op"] = round(a.server_cpu_s * 1e6 / rec["requests"], 3)
        lat = rec.get("latency_us") or {}
        cpu = rec.get("server_cpu_us_per_op")
        print(
            f"  {a.system}: {fmt_int(rec.get('throughput_rps'))} req/s, ok {fmt_int(rec.get('ok_rps'))}/s, "
            f"p50 {fmt_ms(lat.get('p50'))} ms, p99 {fmt_ms(lat.get('p99'))} ms, errors {fmt_errors(rec.get('errors'))}"
            + (f", server CPU {fmt_us(cpu)} µs/op" if cpu is not None else ""),
            file=sys.stderr,
        )
    with open(a.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, sort_keys=False) + "\n")


def load_results(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                print(f"{path}:{n}: skipped, not JSON ({e})", file=sys.stderr)
    return rows


def system_of(r):
    if r.get("system"):
        return r["system"]
    if r.get("label") in SYSTEMS:
        return r["label"]
    kind = r.get("target_kind") or "?"
    if kind == "in-process":
        return f"surge-inproc-{r.get('durability') or '?'}"
    if kind in ("surge-tcp", "surge-ws"):
        return f"{kind}-{r.get('durability') or '?'}"
    return kind


def find_field(results, system, scenario, pipeline, field):
    """`field` of the last successful run of system / scenario / pipeline that has it, or None."""
    for r in reversed(results):
        if (
            system_of(r) == system
            and r.get("scenario") == scenario
            and str(r.get("pipeline")) == str(pipeline)
            and not r.get("failed")
            and r.get(field) is not None
        ):
            return r[field]
    return None


def cmd_get(a):
    v = find_field(load_results(a.results), a.system, a.scenario, a.pipeline, a.field)
    if v is None:
        return 1
    print(v)
    return 0


# ---------------------------------------------------------------------------------------------
# redis-benchmark rows

# humantime's units (what `surge bench --duration` parses), in seconds.
DURATION_UNITS = {
    **dict.fromkeys(("nsec", "ns"), 1e-9),
    **dict.fromkeys(("usec", "us", "µs"), 1e-6),
    **dict.fromkeys(("msec", "ms"), 1e-3),
    **dict.fromkeys(("seconds", "second", "sec", "s"), 1.0),
    **dict.fromkeys(("minutes", "minute", "min", "mins", "m"), 60.0),
    **dict.fromkeys(("hours", "hour", "hr", "hrs", "h"), 3600.0),
}


def duration_seconds(text):
    """Seconds in a `surge bench --duration` value: `10s`, `500ms`, `1m 30s`, `2min`."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([^\d\s]+)", text)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([^\d\s]+)", "", text).strip():
        raise ValueError(f"not a duration: {text!r}")
    total = 0.0
    for number, unit in parts:
        if unit not in DURATION_UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r}")
        total += float(number) * DURATION_UNITS[unit]
    return total


def cmd_rb_requests(a):
    rps = find_field(load_results(a.results), a.system, "hot-sku", a.pipeline, "throughput_rps")
    if not rps:
        return 1
    # A multiple of the pipeline depth: redis-benchmark sends whole batches of -P requests, so
    # then it sends exactly -n of them (the stock check counts on it).
    p = max(1, int(a.pipeline))
    print(max(p, round(float(rps) * duration_seconds(a.duration) / p) * p))
    return 0


def parse_rb_csv(text):
    """The result line of `redis-benchmark --csv` (Redis 7: "test","rps","avg_latency_ms",
    "min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms") as a
    dict of column to string, or None when there is none (the run failed)."""
    rows = list(csv.reader(line for line in text.splitlines() if line.strip()))
    for i, row in enumerate(rows[:-1]):
        if "rps" in row and len(rows[i + 1]) == len(row):
            return dict(zip(row, rows[i + 1]))
    return None


RB_LATENCY = {"mean": "avg_latency_ms", "min": "min_latency_ms", "p50": "p50_latency_ms",
              "p95": "p95_latency_ms", "p99": "p99_latency_ms", "max": "max_latency_ms"}


def rb_record(a, text):
    """A redis-benchmark row as a record of the same shape as `surge bench --json`'s, or None
    when its output has no result line."""
    d = parse_rb_csv(text)
    try:
        rps = float(d["rps"]) if d else None
    except ValueError:
        rps = None
    if not rps:
        return None
    latency = {}
    for key, col in RB_LATENCY.items():
        try:
            latency[key] = round(float(d[col]) * 1000)  # ms (3 decimals) -> µs, as surge bench
        except (KeyError, ValueError):
            pass
    rec = {
        "system": a.system,
        "command": a.command,
        "label": a.system,
        "client": "redis-benchmark",
        "scenario": "hot-sku",
        "target_kind": "redis",
        "connections": a.connections,
        "pipeline": a.pipeline,
        "elapsed_s": round(a.requests / rps, 3),  # redis-benchmark's own clock
        "requests": a.requests,
        "throughput_rps": rps,
        "latency_us": latency,
    }
    if a.wall_s is not None:
        rec["wall_s"] = a.wall_s  # the process, start to exit (connecting and all)
    # redis-benchmark does not look at what the script returns: the stock says how many
    # requests deducted their unit. Every one must have (the key holds more than any run takes).
    if a.remaining_stock is None:
        rec["errors"] = {}
        rec["ok_rps"] = None
        rec["verify"] = {"stock": a.stock, "passed": False, "detail": "stock not read after the run"}
        return rec
    units = a.stock - a.remaining_stock
    rec["ok"] = units
    rec["ok_rps"] = rps * units / a.requests
    rec["errors"] = {} if units == a.requests else {"not_deducted": a.requests - units}
    passed = units == a.requests and a.remaining_stock >= 0
    rec["verify"] = {
        "stock": a.stock,
        "orders_ok": units,
        "units_ok": units,
        "oversold": max(0, -a.remaining_stock),
        "remaining_stock": a.remaining_stock,
        "passed": passed,
        "detail": "" if passed else f"the stock went down by {units:,} for {a.requests:,} requests",
    }
    return rec


def cmd_append_rb(a):
    text = sys.stdin.read()
    rec = rb_record(a, text)
    if rec is None:
        err = ""
        if a.stderr and os.path.exists(a.stderr):
            with open(a.stderr, encoding="utf-8", errors="replace") as f:
                err = f.read()
        rec = failed_record(a, (text + "\n" + err).strip())
        rec.update(scenario="hot-sku", pipeline=a.pipeline, client="redis-benchmark")
    store(a, rec)


def stock_lua(source=STOCK_LUA_SOURCE):
    """The text of `pub const STOCK_LUA: &str = r#"…"#;` in the loadgen's source: a raw string,
    so its text between the quotes is the script, byte for byte."""
    with open(source, encoding="utf-8") as f:
        src = f.read()
    found = re.findall(r'\bconst STOCK_LUA: &str = r(#*)"(.*?)"\1;', src, re.S)
    if len(found) != 1:
        raise SystemExit(f"{source}: expected one raw-string `const STOCK_LUA: &str = r#\"…\"#;`, found "
                         f"{len(found)}; update stock_lua() in benches/compare/report.py to match")
    return found[0][1]


def cmd_stock_lua(a):
    sys.stdout.buffer.write(stock_lua(a.source).encode("utf-8"))
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# meta


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def fsync_probe(directory, seconds=2.0):
    """Appends of 4 KiB, each followed by fdatasync, for `seconds`: what a durable log pays."""
    path = os.path.join(directory, f".fsync-probe-{os.getpid()}")
    buf = b"\0" * 4096
    lat = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            os.write(fd, buf)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    return {
        "ops_per_s": round(len(lat) / sum(lat), 1) if lat else None,
        "p50_us": round(lat[len(lat) // 2] * 1e6) if lat else None,
        "p99_us": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6) if lat else None,
        "seconds": seconds,
    }


def disk_info(directory):
    src = sh("findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", directory)
    info = {"mount": src}
    dev = src.split()[0] if src else ""
    if dev.startswith("/dev/"):
        parent = sh("lsblk", "-n", "-d", "-o", "PKNAME", dev) or os.path.basename(dev)
        line = sh("lsblk", "-n", "-d", "-o", "NAME,ROTA,TYPE,SIZE,MODEL", "/dev/" + parent.strip())
        if line:
            info["device"] = re.sub(r"\s+", " ", line)
            parts = line.split()
            if len(parts) > 1:
                # Virtual disks often claim ROTA=1 whatever lies below; say so.
                info["rotational"] = parts[1] == "1"
    return info


def machine_info(repo, fsync_dir):
    cpu = {}
    for line in sh("lscpu").splitlines():
        k, _, v = line.partition(":")
        cpu[k.strip()] = v.strip()
    mem_kib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    os_name = ""
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    commit = sh("git", "-C", repo, "rev-parse", "HEAD")
    dirty = bool(sh("git", "-C", repo, "status", "--porcelain", "--untracked-files=no"))
    m = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu.get("Model name", platform.processor()),
        "cpu_mhz": cpu.get("CPU max MHz") or cpu.get("CPU MHz"),
        "threads_per_core": cpu.get("Thread(s) per core"),
        "hypervisor": cpu.get("Hypervisor vendor"),
        "mem_total_gib": round(mem_kib / 1048576, 1) if mem_kib else None,
        "kernel": platform.release(),
        "os": os_name,
        "git_commit": commit,
        "git_dirty": dirty,
        "repo_root": str(repo),
    }
    if fsync_dir:
        m["disk"] = disk_info(fsync_dir)
        try:
            m["fsync_probe"] = fsync_probe(fsync_dir)
        except OSError as e:
            m["fsync_probe"] = {"error": str(e)}
    return m


def cmd_meta(a):
    meta = {}
    if a.base:
        with open(a.base, encoding="utf-8") as f:
            meta = json.load(f)
    else:
        meta.update(machine_info(a.repo or str(ROOT), a.fsync_dir))
    for kv in a.set or []:
        k, _, v = kv.partition("=")
        meta[k] = v
    if a.commands:
        with open(a.commands, encoding="utf-8") as f:
            meta["commands"] = [line.rstrip("\n") for line in f if line.strip()]
    tmp = a.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    os.replace(tmp, a.out)


# ---------------------------------------------------------------------------------------------
# render


def fmt_int(v):
    return "—" if v is None else f"{round(v):,}"


def fmt_ms(us):
    if us is None:
        return "—"
    ms = us / 1000
    if ms < 10:
        return f"{ms:.3f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:,.0f}"


def fmt_us(us):
    """Server CPU µs per operation; blank when the run has none (in-process, older results)."""
    if us is None:
        return ""
    if us < 10:
        return f"{us:.2f}"
    if us < 100:
        return f"{us:.1f}"
    return f"{us:,.0f}"


def fmt_errors(e):
    if not e:
        return "—"
    if isinstance(e, dict):
        return ", ".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in sorted(e.items()))
    return str(e)


def fmt_ratio(a, b):
    if not a or not b:
        return "—"
    return f"{a / b:.2f}×"


def pass_fail(ok):
    return "**PASS**" if ok else "**FAIL**"


def esc(s):
    return str(s).replace("|", "\\|")


def flash_ok(r):
    v = r.get("verify")
    if not v:
        return None
    stock = v.get("stock")
    return bool(v.get("passed")) and v.get("oversold", 0) == 0 and (stock is None or v.get("orders_ok") == stock)


def verified(r):
    """The load generator's own check of the run (no oversell, counts add up)."""
    v = r.get("verify")
    if not v:
        return "—"
    if r.get("scenario") == "flash-sale":
        return "yes" if flash_ok(r) else "**NO**"
    if v.get("passed") and not v.get("oversold"):
        return "yes"
    detail = v.get("detail") or r.get("first_failure") or ""
    return "**NO**" + (f": {esc(str(detail)[:80])}" if detail else "")


def thr(r):
    return None if not r or r.get("failed") else r.get("throughput_rps")


def deepest(pipes):
    """The pipeline depth of the "pipelined" rows: 16 if measured, else the deepest."""
    pipes = [p for p in pipes if isinstance(p, int)]
    return 16 if 16 in pipes else (max(pipes) if pipes else None)


class Runs:
    """The results indexed by (scenario, pipeline, system); the first of duplicates wins."""

    def __init__(self, results):
        self.results = results
        self.by = {}
        for r in results:
            self.by.setdefault((r.get("scenario"), r.get("pipeline"), system_of(r)), r)
        groups = []  # (scenario, pipeline) in a stable order
        for r in results:
            g = (r.get("scenario"), r.get("pipeline"))
            if system_of(r) not in HALF and g not in groups:
                groups.append(g)
        scen_rank = {"hot-sku": 0, "flash-sale": 1, "mixed": 2}
        groups.sort(key=lambda g: (scen_rank.get(g[0], 9), g[0] or "", g[1] if isinstance(g[1], int) else 0))
        self.groups = groups
        self.hot = deepest(p for s, p in groups if s == "hot-sku")
        self.flash = deepest(p for s, p in groups if s == "flash-sale")

    def get(self, scenario, pipeline, system):
        return self.by.get((scenario, pipeline, system))

    def group_rows(self, scenario, pipeline):
        """The rows of one results table: known systems in display order, then unknown ones."""
        rows = [self.get(scenario, pipeline, s) for s in SYSTEMS if s not in HALF]
        rows = [r for r in rows if r]
        rows += [r for r in self.results if (r.get("scenario"), r.get("pipeline")) == (scenario, pipeline)
                 and system_of(r) not in SYSTEMS]
        return rows

    def last(self, system):
        rs = [r for r in self.results if system_of(r) == system]
        return rs[-1] if rs else None


def verdict(value, must, aim, higher_is_better):
    if value is None:
        return "n/a"
    meets = (lambda bound: value >= bound) if higher_is_better else (lambda bound: value <= bound)
    if not meets(must):
        return "**FAIL**"
    return "**PASS**, aim met" if meets(aim) else "**PASS**, aim not met"


def absent(*runs):
    """Why a measure cannot be computed from these (system, run) pairs: 'n/a: no `x` run',
    'n/a: `x` failed'; None when it can."""
    why = []
    for name, r in runs:
        if r is None:
            why.append(f"no `{name}` run")
        elif r.get("failed"):
            why.append(f"`{name}` failed")
    return "n/a: " + ", ".join(why) if why else None


def acceptance(runs, meta):
    """Issue 13's acceptance table: one row per measure, Measure | Measured | Must | Aim | Result."""
    out = ["| Measure | Measured | Must | Aim | Result |", "|---|---|---|---|---|"]
    hot, flash = runs.hot, runs.flash
    hot_p, flash_p = ("?" if p is None else p for p in (hot, flash))
    pinning = {"1": ", pinned", "0": ", not pinned on this run"}.get(str(meta.get("pinned")), "")

    def ratio(measure, scenario, pipeline, num, den, must, aim, unit, what):
        a = runs.get(scenario, pipeline, num) if pipeline is not None else None
        b = runs.get(scenario, pipeline, den) if pipeline is not None else None
        why = absent((num, a), (den, b))
        if why is None and not (thr(a) and thr(b)):
            why = "n/a: no throughput"
        value = None if why else thr(a) / thr(b)
        measured = why or f"{fmt_int(thr(a))} ÷ {fmt_int(thr(b))} {what} = {value:.2f}{unit}"
        out.append(f"| {measure} | {measured} | ≥ {must}{unit} | ≥ {aim}{unit} | "
                   f"{verdict(value, float(must), float(aim), True)} |")

    def cpu(measure, scenario, pipeline, what, must, aim):
        r = runs.get(scenario, pipeline, "surge-tcp-sync") if pipeline is not None else None
        why = absent(("surge-tcp-sync", r))
        value = None if why else r.get("server_cpu_us_per_op")
        if why is None and value is None:
            why = "n/a: server CPU not recorded"
        measured = why or (f"{fmt_us(value)} µs ({r.get('server_cpu_s')} s of server CPU over "
                           f"{fmt_int(r.get('requests'))} {what})")
        out.append(f"| {measure} | {measured} | ≤ {must} µs | ≤ {aim} µs | {verdict(value, must, aim, False)} |")

    hot_where = f"hot-sku, pipeline {hot_p}, TCP{pinning}"
    ratio(f"{hot_where}: Surge `sync` ÷ Redis classic script, `appendfsync always`",
          "hot-sku", hot, "surge-tcp-sync", "redis-always", "1.0", "2", "×", "req/s")
    ratio(f"{hot_where}: Surge `sync` ÷ Redis full-order script, `appendfsync always`",
          "hot-sku", hot, "surge-tcp-sync", "redis-full-always", "3", "6", "×", "req/s")
    ratio(f"flash-sale, pipeline {flash_p}, answers/s: Surge `sync` TCP ÷ "
          "Redis classic script, `appendfsync always`",
          "flash-sale", flash, "surge-tcp-sync", "redis-always", "1.0", "2", "×", "answers/s")
    cpu(f"Server CPU per created order (hot-sku, pipeline {hot_p}, Surge `sync` TCP)",
        "hot-sku", hot, "orders", 6, 3)
    cpu(f"Server CPU per rejection (flash-sale, pipeline {flash_p}, Surge `sync` TCP; nearly every answer is "
        "`sold_out`)", "flash-sale", flash, "answers", 2.5, 1.2)

    h = runs.last("surge-tcp-sync-half")
    why = absent(("surge-tcp-sync-half", h))
    p99 = None if why else (h.get("latency_us") or {}).get("p99")
    if why is None and p99 is None:
        why = "n/a: no p99"
    measured = why or (f"p99 {fmt_ms(p99)} ms at {fmt_int(h.get('rate_rps'))} req/s offered "
                       f"({fmt_int(h.get('throughput_rps'))} achieved)")
    out.append(f"| p99 at half of saturation, open loop, hot-sku over TCP (Surge `sync`) | {measured} | ≤ 5 ms | "
               f"≤ 2 ms | {verdict(None if p99 is None else p99 / 1000, 5, 2, False)} |")

    ratio(f"WebSocket ÷ TCP throughput (hot-sku, pipeline {hot_p}, Surge `sync`)",
          "hot-sku", hot, "surge-ws-sync", "surge-tcp-sync", "0.75", "0.9", "", "req/s")

    flash_runs = [r for r in runs.results if r.get("scenario") == "flash-sale"]
    if flash_runs:
        good = sum(1 for r in flash_runs if not r.get("failed") and flash_ok(r))
        bad = [system_of(r) for r in flash_runs if r.get("failed") or flash_ok(r) is False]
        unver = [system_of(r) for r in flash_runs if not r.get("failed") and flash_ok(r) is None]
        measured = f"{good} of {len(flash_runs)} runs verified"
        if bad:
            measured += "; failed: " + ", ".join(bad)
        if unver:
            measured += "; not verified: " + ", ".join(unver)
        result = pass_fail(not bad and not unver)
    else:
        measured, result = "n/a: no flash-sale run", "n/a"
    out.append(f"| Flash sale: exactly the stock sold, 0 oversold | {measured} | on every target | — | {result} |")
    return out


def chart_color(system):
    if system.startswith("redis-full"):
        return "#ff7f0e"
    if system.startswith("redis"):
        return "#d62728"
    if system == "postgres":
        return "#1f77b4"
    if system.startswith("surge-ws"):
        return "#17becf"
    if system.startswith("surge-inproc"):
        return "#9467bd"
    return "#2ca02c"


def draw_chart(runs, path):
    """Throughput bars and p99 markers per system, one panel for hot-sku at the deepest pipeline
    and one for flash-sale. Returns None once written, else why there is no chart."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return "matplotlib is not installed (`python3 -m pip install matplotlib`)"
    panels = []
    for scenario, pipeline in (("hot-sku", runs.hot), ("flash-sale", runs.flash)):
        rows = [r for r in runs.group_rows(scenario, pipeline) if thr(r)] if pipeline is not None else []
        if rows:
            panels.append((f"{scenario}, pipeline {pipeline}", rows))
    if not panels:
        return "no hot-sku or flash-sale run to draw"
    try:
        fig, axes = plt.subplots(len(panels), 1, figsize=(12, 4.8 * len(panels)), squeeze=False)
        for ax, (title, rows) in zip(axes[:, 0], panels):
            names = [system_of(r) for r in rows]
            x = list(range(len(rows)))
            bars = ax.bar(x, [thr(r) for r in rows], color=[chart_color(n) for n in names],
                          edgecolor="black", linewidth=0.4)
            for bar, n in zip(bars, names):
                if n.endswith("-unpinned"):
                    bar.set_hatch("//")
                elif n.endswith("-rb"):
                    bar.set_hatch("..")
            ax.bar_label(bars, labels=[f"{thr(r) / 1000:,.0f}k" for r in rows], fontsize=7, padding=2)
            ax.set_title(title)
            ax.set_ylabel("throughput (req/s)")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.set_xticks(x)
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            ax.margins(y=0.12)
            p99 = [(i, (r.get("latency_us") or {}).get("p99")) for i, r in zip(x, rows)]
            p99 = [(i, v / 1000) for i, v in p99 if v]
            ax2 = ax.twinx()
            if p99:
                ax2.plot([i for i, _ in p99], [v for _, v in p99], "o", color="black", markersize=6)
                for i, v in p99:
                    ax2.annotate(f"{v:.3g}", (i, v), xytext=(5, 0), textcoords="offset points", va="center",
                                 fontsize=7)
                ax2.set_yscale("log")  # PostgreSQL's p99 is ~100× the others'
                ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax2.set_ylabel("p99 latency (ms, log scale)")
            ax.legend(handles=[Patch(facecolor="#bbbbbb", edgecolor="black", label="throughput (left)"),
                               Line2D([], [], marker="o", color="black", linestyle="", label="p99 (right)")],
                      loc="upper left", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    except Exception as e:  # a broken chart must not cost the report
        return f"drawing it failed ({type(e).__name__}: {e})"
    return None


def rb_comparison(runs, scenario, pipeline):
    """The lines comparing our client's Redis rows with redis-benchmark's on the same server
    (none when this group has no redis-benchmark row)."""
    pairs = [(s, runs.get(scenario, pipeline, s), runs.get(scenario, pipeline, f"{s}-rb")) for s in RB_OF]
    pairs = [(s, ours, rb) for s, ours, rb in pairs if rb]
    if not pairs:
        return []

    def cell(r, value, fmt):
        if r is None:
            return "—"
        if r.get("failed"):
            return "FAILED"
        v = value(r)
        return "—" if v is None else fmt(v)

    def p(q):
        return lambda r: (r.get("latency_us") or {}).get(q)

    def cpu(r):
        return r.get("server_cpu_us_per_op")

    out = [
        "Our client ÷ redis-benchmark on the same Redis server, same script, connections, pipeline depth "
        "and pinning (near 1.00×: `surge bench` does not distort Redis's numbers):",
        "",
        "| Redis | `surge bench` req/s | redis-benchmark req/s | `surge bench` ÷ redis-benchmark "
        "| p50 ms, ours / redis-benchmark | p99 ms, ours / redis-benchmark "
        "| server CPU µs/op, ours / redis-benchmark |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for s, ours, rb in pairs:
        out.append(
            f"| {PEER_SHORT[s]} | {cell(ours, thr, fmt_int)} | {cell(rb, thr, fmt_int)} | "
            f"{fmt_ratio(thr(ours), thr(rb))} | "
            f"{cell(ours, p('p50'), fmt_ms)} / {cell(rb, p('p50'), fmt_ms)} | "
            f"{cell(ours, p('p99'), fmt_ms)} / {cell(rb, p('p99'), fmt_ms)} | "
            f"{cell(ours, cpu, fmt_us)} / {cell(rb, cpu, fmt_us)} |"
        )
    out.append("")
    return out


def render(results, meta, notes, engine, results_path, chart):
    """The report's markdown. `chart`: (file name next to the report, None) or (None, why not)."""
    out = []
    w = out.append
    runs = Runs(results)
    pipelined = runs.hot
    conns = meta.get("connections") or next((r.get("connections") for r in results if r.get("connections")), "?")
    pinned = str(meta.get("pinned", ""))

    w("# Benchmarks: Surge vs Redis + Lua vs PostgreSQL")
    w("")
    w(
        f"_Generated by `benches/compare/report.py` from `{rel(results_path)}` "
        f"(run of {meta.get('date', '?')}). Do not edit by hand: rerun the benchmark or the report, "
        "and keep prose in `benches/compare/notes.md` (shown under Notes) and "
        "`benches/compare/engine.md` (the in-process engine section)._"
    )
    w("")

    # ---- acceptance
    w("## Acceptance (issue 13)")
    w("")
    w("Each measure has a must (the issue fails without it) and an aim. Ratios divide the two "
      "systems' throughputs from the same run; server CPU is the server process's user + system time "
      "over the run divided by its requests.")
    w("")
    out.extend(acceptance(runs, meta))
    w("")

    # ---- machine
    w("## Machine")
    w("")
    w(f"- CPU: {meta.get('cpu_model', '?')}, {meta.get('nproc', '?')} cores usable (`nproc`)"
      + (f", threads per core {meta['threads_per_core']}" if meta.get("threads_per_core") else "")
      + (f", virtualized ({meta['hypervisor']})" if meta.get("hypervisor") else ""))
    w(f"- Memory: {meta.get('mem_total_gib', '?')} GiB")
    w(f"- OS: {meta.get('os', '?')}, kernel {meta.get('kernel', '?')}")
    d = meta.get("disk") or {}
    if d:
        dev = d.get("device", "")
        w(f"- Disk (holding every data dir, under `{meta.get('bench_tmpdir', '/tmp')}`): {d.get('mount', '?')}"
          + (f"; device `{dev}` (NAME ROTA TYPE SIZE MODEL)" if dev else ""))
    fp = meta.get("fsync_probe") or {}
    if fp.get("ops_per_s"):
        w(f"- fsync probe on that disk (4 KiB append + fdatasync, {fp.get('seconds')} s): "
          f"{fmt_int(fp['ops_per_s'])} fsyncs/s, p50 {fmt_ms(fp.get('p50_us'))} ms, p99 {fmt_ms(fp.get('p99_us'))} ms")
    w(f"- Versions: {meta.get('redis_version') or 'Redis: not run'}; {meta.get('postgres_version') or 'PostgreSQL: not run'}; "
      f"{meta.get('surge_version') or 'surge'}"
      + (f"; {meta['redis_benchmark_version']}" if meta.get("redis_benchmark_version") else ""))
    commit = meta.get("git_commit") or "?"
    w(f"- Surge commit: `{commit}`" + (" (working tree had uncommitted changes)" if meta.get("git_dirty") else ""))
    w(f"- Date: {meta.get('date', '?')}")
    if pinned == "1":
        w(f"- Pinned (`taskset`): every server on CPU {meta.get('server_cpus', '?')}, every load generator on "
          f"CPU {meta.get('bench_cpus', '?')}, so the two never compete for a core; the `unpinned` rows "
          "(and the in-process row, one process that is both) let them share every core. All on 127.0.0.1.")
    else:
        w("- Load generator and servers share the machine's cores (all on 127.0.0.1, not pinned): the load "
          "generator's CPU time is not available to the server under test, for every system alike.")
    w("")

    # ---- setup
    w("## What was compared")
    w("")
    has_rb = any(system_of(r).endswith("-rb") for r in results)
    w(f"Same load shapes, same {conns} connections, same pipeline depth, one after another in one run "
      "(`surge bench` drives every target" + ("; `redis-benchmark` drives the Redis classic-script hot-sku rows "
                                              "once more" if has_rb else "") + "):")
    w("")
    w("- **hot-sku**: every request reserves one unit of the same SKU, for "
      f"{meta.get('duration', 'the duration')} (stock large enough not to run out).")
    w(f"- **flash-sale**: {fmt_int(_num(meta.get('flash_users')))} users race for "
      f"{fmt_int(_num(meta.get('flash_stock')))} units, one request each; verified afterwards: exactly the "
      "stock sold, none oversold. `sold_out` rejections are the expected outcome for everyone else.")
    w("- **Redis + Lua**: the classic stock-deduction script (GET, compare, DECRBY), loaded with SCRIPT LOAD "
      "and called with EVALSHA; one instance with no persistence, one with `appendonly yes` + "
      "`appendfsync always` (the durable peer).")
    w("- **Redis + full-order Lua** (`--redis-script full-order`), on the same `appendfsync always` instance: "
      "a script that does what Surge's `create_order` does (idempotency key, per-user count, the order as "
      "a hash, its deadline, the stock), so the work per order is alike on both sides.")
    if has_rb:
        w("- **Redis + Lua, redis-benchmark**: the classic-script hot-sku rows (no persistence, and "
          "`appendfsync always`) once more, right after our client's, driven by `redis-benchmark`, the tool "
          "Redis users measure with: same server, same script (its text taken from `surge bench`'s source "
          "and checked against the SHA1 `surge bench` loaded), SCRIPT LOAD, then `EVALSHA <sha> 1 <key> 1` "
          "on a key stocked as `surge bench` stocks its own; same connections, pipeline depth and pinning; "
          "as many requests as `surge bench` answered in the duration. redis-benchmark does not read the "
          "script's answers, so the stock checks the row: it must go down by exactly the requests sent. "
          "How the two clients differ: redis-benchmark pipelines in batches (a connection sends `-P` "
          "requests, waits for all their replies, then sends the next batch; `surge bench` keeps up to "
          "`pipeline` requests in flight), and it gives every request of a batch the batch's time to its "
          "first reply, with p50/p95/p99/max only (no p90, p99.9).")
    w("- **PostgreSQL**: `UPDATE … SET stock = stock - $1 WHERE id = $2 AND stock >= $1`, autocommit, "
      "`fsync=on`, `synchronous_commit=on` (durable).")
    w("- **Surge**: `surge serve`, fresh data dir per row, in each durability mode: `sync` (reply after "
      "fsync, group commit), `os` (after write, no fsync), `none` (memory only); over TCP (JSON lines) "
      "and over WebSocket (`ws://…/ws` on its HTTP port). `surge bench` asks for `\"reply\":\"minimal\"`: "
      "each order is answered with its id, status, version and total, not the whole order.")
    if meta.get("surge_live_orders_expected"):
        w(f"- `surge serve` starts with `SURGE_ENGINE_LIVE_ORDERS_EXPECTED="
          f"{meta['surge_live_orders_expected']}`, the operator's sizing knob: Surge faults in the heap "
          "for that many orders at start (about 1.5 s per 2 M), so the sale does not pay those page faults.")
    if pinned == "1":
        w(f"- Pinning: servers (redis-server, the PostgreSQL postmaster and its backends, `surge serve`) run "
          f"under `taskset -c {meta.get('server_cpus', '?')}`, every `surge bench`"
          + (" and `redis-benchmark`" if has_rb else "") + " under "
          f"`taskset -c {meta.get('bench_cpus', '?')}`. The `unpinned` rows repeat hot-sku at pipeline "
          f"{pipelined} for Redis `appendfsync always` and Surge `sync` TCP with both on every core.")
    w("- Throughput is requests answered per second (`ok/s`: those that succeeded); latencies are per "
      "request, from send to reply. **server CPU µs/op** is the server's user + system CPU time over the "
      "run (`/proc/PID/stat`; for PostgreSQL the postmaster and all its backends) divided by the requests.")
    w("")

    # ---- results
    w("## Results")
    w("")
    chart_file, no_chart = chart
    if chart_file:
        w(f"![throughput and p99 per system]({chart_file})")
    else:
        w(f"_No chart: {no_chart}._")
    w("")
    for scenario, pipeline in runs.groups:
        rows = runs.group_rows(scenario, pipeline)
        if not rows:
            continue
        extra = f", {meta.get('duration')}" if scenario == "hot-sku" and meta.get("duration") else ""
        w(f"### {scenario}, pipeline {pipeline} ({conns} connections{extra})")
        w("")
        w("| System | Durability | req/s | ok/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | server CPU µs/op "
          "| errors | verified |")
        w("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|")
        for r in rows:
            name, dur = SYSTEMS.get(system_of(r), (system_of(r), r.get("durability") or "?"))
            if r.get("failed"):
                w(f"| {esc(name)} | {esc(dur)} | FAILED (exit {r.get('exit_code')}) |" + " |" * 9)
                continue
            lat = r.get("latency_us") or {}
            errs = fmt_errors(r.get("errors"))
            if r.get("exit_code"):
                errs = f"exit {r['exit_code']}; {errs}"
            w(
                f"| {esc(name)} | {esc(dur)} | {fmt_int(r.get('throughput_rps'))} | {fmt_int(r.get('ok_rps'))} | "
                f"{fmt_ms(lat.get('p50'))} | {fmt_ms(lat.get('p90'))} | {fmt_ms(lat.get('p99'))} | "
                f"{fmt_ms(lat.get('p999'))} | {fmt_ms(lat.get('max'))} | {fmt_us(r.get('server_cpu_us_per_op'))} | "
                f"{esc(errs)} | {verified(r)} |"
            )
        w("")
        surge_rows = [(label, runs.get(scenario, pipeline, s)) for s, label in SURGE_SERVED
                      if runs.get(scenario, pipeline, s)]
        peer_rows = [(p, runs.get(scenario, pipeline, p)) for p in PEERS if runs.get(scenario, pipeline, p)]
        if surge_rows and peer_rows:
            w("Surge / peer, throughput (req/s):")
            w("")
            w("| Surge | " + " | ".join(f"vs {PEER_SHORT[p]}" for p, _ in peer_rows) + " |")
            w("|---|" + "--:|" * len(peer_rows))
            for label, sr in surge_rows:
                w(f"| {label} | " + " | ".join(fmt_ratio(thr(sr), thr(pr)) for _, pr in peer_rows) + " |")
            w("")
        su, ru = runs.get(scenario, pipeline, "surge-tcp-sync-unpinned"), runs.get(scenario, pipeline, "redis-always-unpinned")
        if su and ru:
            w(f"Unpinned, server and load generator on every core: Surge `sync` TCP ÷ Redis (always) = "
              f"{fmt_ratio(thr(su), thr(ru))} (pinned: "
              f"{fmt_ratio(thr(runs.get(scenario, pipeline, 'surge-tcp-sync')), thr(runs.get(scenario, pipeline, 'redis-always')))}).")
            w("")
        out.extend(rb_comparison(runs, scenario, pipeline))
        if scenario == "flash-sale":
            w("Verification (after the sale):")
            w("")
            w("| System | stock | orders ok | oversold | remaining | result |")
            w("|---|--:|--:|--:|--:|---|")
            for r in rows:
                name, dur = SYSTEMS.get(system_of(r), (system_of(r), ""))
                label = f"{name} ({dur.split(' (')[0]})" if dur else name
                v = r.get("verify")
                if r.get("failed"):
                    w(f"| {esc(label)} | | | | | run FAILED |")
                elif not v:
                    w(f"| {esc(label)} | | | | | not verified |")
                else:
                    w(
                        f"| {esc(label)} | {fmt_int(v.get('stock'))} | {fmt_int(v.get('orders_ok'))} | "
                        f"{fmt_int(v.get('oversold'))} | {fmt_int(v.get('remaining_stock'))} | {pass_fail(flash_ok(r))} |"
                    )
            w("")

    halves = [r for r in (runs.last(s) for s in HALF) if r]
    if halves:
        w("### Latency at half of saturation")
        w("")
        w(
            f"hot-sku, same connections and pipeline ({pipelined}), open loop at half the throughput each server "
            "reached above (latencies corrected for coordinated omission). Surge `sync` must keep p99 ≤ 5 ms "
            "(aim ≤ 2 ms):"
        )
        w("")
        w("| System | offered req/s | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms "
          "| server CPU µs/op | errors |")
        w("|---|--:|--:|--:|--:|--:|--:|--:|--:|---|")
        for h in halves:
            name = SYSTEMS[system_of(h)][0]
            if h.get("failed"):
                w(f"| {esc(name)} | {fmt_int(h.get('rate_rps'))} | FAILED (exit {h.get('exit_code')}) |" + " |" * 7)
                continue
            lat = h.get("latency_us") or {}
            w(
                f"| {esc(name)} | {fmt_int(h.get('rate_rps'))} | {fmt_int(h.get('throughput_rps'))} | "
                f"{fmt_ms(lat.get('p50'))} | {fmt_ms(lat.get('p90'))} | {fmt_ms(lat.get('p99'))} | "
                f"{fmt_ms(lat.get('p999'))} | {fmt_ms(lat.get('max'))} | {fmt_us(h.get('server_cpu_us_per_op'))} | "
                f"{esc(fmt_errors(h.get('errors')))} |"
            )
        w("")

    # ---- notes
    w("## Notes")
    w("")
    w("<!-- NOTES: kept in benches/compare/notes.md, copied here on every regeneration. -->")
    if notes and notes.strip():
        w(notes.strip())
    else:
        w("_No notes yet: write caveats and analysis in `benches/compare/notes.md`, then "
          "`python3 benches/compare/report.py`._")
    w("<!-- END NOTES -->")
    w("")

    # ---- in-process engine (hand-written, measured outside run.sh)
    if engine and engine.strip():
        w("<!-- ENGINE: kept in benches/compare/engine.md -->")
        w(engine.strip())
        w("<!-- END ENGINE -->")
        w("")

    # ---- how to rerun
    w("## How to rerun")
    w("")
    w("```sh")
    w("bash benches/compare/run.sh                 # installs what is missing (apt), builds, runs, writes this file")
    w("python3 benches/compare/report.py           # regenerate this file from the saved results")
    w("```")
    w("")
    w(
        "Knobs: `CONNECTIONS`, `DURATION`, `PIPELINES`, `FLASH_PIPELINES`, `FLASH_USERS`, `FLASH_STOCK`, "
        "`SYSTEMS`, `PIN`, `SERVER_CPUS`, `BENCH_CPUS`, `UNPINNED_ROWS`, `REDIS_BENCHMARK`, "
        "`SURGE_LIVE_ORDERS_EXPECTED`, "
        "`BENCH_TMPDIR`, … (see `benches/compare/README.md`). This run: "
        + ", ".join(
            f"`{k.upper()}={meta[k]}`"
            for k in ("connections", "duration", "pipelines", "flash_pipelines", "flash_users", "flash_stock",
                      "pin", "server_cpus", "bench_cpus", "unpinned_rows", "redis_benchmark",
                      "surge_live_orders_expected")
            if meta.get(k)
        )
        + (f"; the benchmark runs took {meta['bench_seconds']} s" if meta.get("bench_seconds") else "")
        + "."
    )
    w("")

    # ---- commands
    cmds = meta.get("commands") or [r.get("command") for r in results if r.get("command")]
    if cmds:
        w("## Exact commands")
        w("")
        w(
            "In order, as run (paths relative to the repo root; ports and temp dirs were picked for that run; "
            "`$SURGE_ADMIN_TOKEN` / `$SURGE_SERVICE_TOKEN` were random per run"
            + ("; `$REDIS_ALWAYS_PID` is the redis-always server's pid" if any("$REDIS_ALWAYS_PID" in c for c in cmds)
               else "")
            + "):"
        )
        w("")
        w("```sh")
        root = meta.get("repo_root")
        for c in cmds:
            if root:
                c = c.replace(root + "/", "")
            w(c)
        w("```")
        w("")
    return "\n".join(out)


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def rel(p):
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def read_optional(path):
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    return ""


def cmd_render(a):
    results = load_results(a.results)
    runs = Runs(results)
    meta = {}
    if a.meta and os.path.exists(a.meta):
        with open(a.meta, encoding="utf-8") as f:
            meta = json.load(f)
    else:
        print(f"no metadata file {a.meta}: the machine section will be empty", file=sys.stderr)
    engine = read_optional(a.engine)
    if not engine:
        print(f"no engine section file {a.engine}: the in-process engine section is left out", file=sys.stderr)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    chart_path = Path(a.out).parent / CHART_NAME
    no_chart = draw_chart(runs, chart_path)
    if no_chart:
        print(f"no chart: {no_chart}", file=sys.stderr)
    text = render(results, meta, read_optional(a.notes), engine, a.results,
                  (None, no_chart) if no_chart else (CHART_NAME, None))
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {a.out} ({len(results)} results)" + ("" if no_chart else f" and {chart_path}"), file=sys.stderr)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")

    r = sub.add_parser("render", help="write BENCHMARKS.md (the default)")
    r.add_argument("--results", default=str(DEFAULT_RESULTS))
    r.add_argument("--meta", default=str(DEFAULT_META))
    r.add_argument("--notes", default=str(DEFAULT_NOTES))
    r.add_argument("--engine", default=str(DEFAULT_ENGINE), help="in-process engine section, copied verbatim")
    r.add_argument("--out", default=str(DEFAULT_OUT))

    ap = sub.add_parser("append", help="append one bench result (stdin)")
    ap.add_argument("--results", required=True)
    ap.add_argument("--system", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--exit-code", type=int, default=0)
    ap.add_argument("--server-cpu-s", type=float, help="server CPU seconds (user + system) over the run")

    rb = sub.add_parser("append-rb", help="append one redis-benchmark --csv result (stdin)")
    rb.add_argument("--results", required=True)
    rb.add_argument("--system", required=True)
    rb.add_argument("--command", required=True)
    rb.add_argument("--exit-code", type=int, default=0)
    rb.add_argument("--server-cpu-s", type=float, help="server CPU seconds (user + system) over the run")
    rb.add_argument("--connections", type=int, required=True)
    rb.add_argument("--pipeline", type=int, required=True)
    rb.add_argument("--requests", type=int, required=True, help="redis-benchmark -n")
    rb.add_argument("--stock", type=int, required=True, help="the stock key's value before the run")
    rb.add_argument("--remaining-stock", type=int, help="its value after the run")
    rb.add_argument("--wall-s", type=float, help="seconds from the process's start to its exit")
    rb.add_argument("--stderr", help="redis-benchmark's stderr, kept in a failed row")

    g = sub.add_parser("get", help="print one field of a recorded run")
    g.add_argument("--results", required=True)
    g.add_argument("--system", required=True)
    g.add_argument("--scenario", required=True)
    g.add_argument("--pipeline", required=True)
    g.add_argument("--field", required=True)

    n = sub.add_parser("rb-requests", help="requests for a redis-benchmark row")
    n.add_argument("--results", required=True)
    n.add_argument("--system", required=True)
    n.add_argument("--pipeline", required=True)
    n.add_argument("--duration", required=True)

    sl = sub.add_parser("stock-lua", help="print surge bench's classic Redis script")
    sl.add_argument("--source", default=str(STOCK_LUA_SOURCE))

    m = sub.add_parser("meta", help="collect machine facts")
    m.add_argument("--out", required=True)
    m.add_argument("--base")
    m.add_argument("--fsync-dir")
    m.add_argument("--repo")
    m.add_argument("--commands")
    m.add_argument("--set", action="append", metavar="KEY=VALUE")

    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["render", *argv]
    a = p.parse_args(argv)
    return {"render": cmd_render, "append": cmd_append, "append-rb": cmd_append_rb, "get": cmd_get,
            "rb-requests": cmd_rb_requests, "stock-lua": cmd_stock_lua, "meta": cmd_meta}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
