#!/usr/bin/env python3
"""Results and report for benches/compare/run.sh (python3 standard library only).

    report.py [render] [--results F] [--meta F] [--notes F] [--out F]
        Write docs/BENCHMARKS.md from docs/benchmarks-results.jsonl + docs/benchmarks-meta.json
        (regenerate any time: `python3 benches/compare/report.py`).
    report.py append --results F --system NAME --command CMD --exit-code N   (stdin: bench output)
        Append one `surge bench --json` result, tagged with the system and its exact command; a
        failed run is recorded as {"failed": true, ...} so the table shows it.
    report.py get --results F --system NAME --scenario S --pipeline P --field K
        Print one field of a recorded run (run.sh: the saturation throughput for the latency run).
    report.py meta --out F [--base F] [--fsync-dir D] [--repo D] [--commands F] [--set k=v ...]
        Collect machine facts (CPU, memory, kernel, disk, an fsync probe, git commit) into F.
"""

import argparse
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

# Display order, names and durability of every system run.sh knows.
SYSTEMS = {
    "redis-none": ("Redis + Lua", "none (no AOF, no RDB)"),
    "redis-always": ("Redis + Lua", "AOF, appendfsync always"),
    "postgres": ("PostgreSQL, conditional UPDATE", "fsync=on, synchronous_commit=on"),
    "surge-tcp-none": ("Surge, TCP", "none (memory only)"),
    "surge-tcp-os": ("Surge, TCP", "os (write, no fsync)"),
    "surge-tcp-sync": ("Surge, TCP", "sync (fsync before reply)"),
    "surge-inproc-sync": ("Surge, in-process (reference)", "sync (fsync before reply)"),
    "surge-tcp-sync-half": ("Surge, TCP, at half of saturation", "sync (fsync before reply)"),
}
PEERS = ["redis-none", "redis-always", "postgres"]
PEER_SHORT = {"redis-none": "Redis (none)", "redis-always": "Redis (always)", "postgres": "PostgreSQL"}
SURGE_TCP = ["surge-tcp-none", "surge-tcp-os", "surge-tcp-sync"]
TARGET_RATIO = 2.0  # surge sync TCP pipelined vs Redis+Lua appendfsync always
TARGET_P99_US = 1000  # p99 at half of saturation
TARGET_INPROC_RPS = 1_000_000  # in-process, durable


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


def cmd_append(a):
    text = sys.stdin.read()
    obj = parse_bench_output(text)
    if obj is None:
        rec = {
            "system": a.system,
            "command": a.command,
            "failed": True,
            "exit_code": a.exit_code,
            "output_tail": text.strip()[-500:],
        }
        # Keep what the command line says, so the row lands in the right table.
        for flag, key in (("--scenario", "scenario"), ("--pipeline", "pipeline"), ("--rate", "rate_rps")):
            m = re.search(re.escape(flag) + r"\s+(\S+)", a.command)
            if m:
                rec[key] = int(m.group(1)) if key == "pipeline" else (float(m.group(1)) if key == "rate_rps" else m.group(1))
        print(f"  {a.system}: FAILED (exit {a.exit_code})", file=sys.stderr)
    else:
        rec = {"system": a.system, "command": a.command, **obj}
        if a.exit_code != 0:  # it printed a result but exited non-zero (e.g. verification failed)
            rec["exit_code"] = a.exit_code
        lat = rec.get("latency_us") or {}
        print(
            f"  {a.system}: {fmt_int(rec.get('throughput_rps'))} req/s, ok {fmt_int(rec.get('ok_rps'))}/s, "
            f"p50 {fmt_ms(lat.get('p50'))} ms, p99 {fmt_ms(lat.get('p99'))} ms, errors {fmt_errors(rec.get('errors'))}",
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


def cmd_get(a):
    for r in reversed(load_results(a.results)):
        if (
            system_of(r) == a.system
            and r.get("scenario") == a.scenario
            and str(r.get("pipeline")) == str(a.pipeline)
            and not r.get("failed")
            and r.get(a.field) is not None
        ):
            print(r[a.field])
            return 0
    return 1


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


def render(results, meta, notes, results_path):
    out = []
    w = out.append
    bysys = {}
    for r in results:
        bysys.setdefault((r.get("scenario"), r.get("pipeline"), system_of(r)), r)  # first wins

    def row(scenario, pipeline, system):
        return bysys.get((scenario, pipeline, system))

    def thr(r):
        return None if not r or r.get("failed") else r.get("throughput_rps")

    order = list(SYSTEMS)
    groups = []  # (scenario, pipeline) in a stable order
    for r in results:
        if system_of(r) == "surge-tcp-sync-half":
            continue
        g = (r.get("scenario"), r.get("pipeline"))
        if g not in groups:
            groups.append(g)
    scen_rank = {"hot-sku": 0, "flash-sale": 1, "mixed": 2}
    groups.sort(key=lambda g: (scen_rank.get(g[0], 9), g[0] or "", g[1] if isinstance(g[1], int) else 0))
    hot_pipes = sorted(p for s, p in groups if s == "hot-sku" and isinstance(p, int))
    pipelined = 16 if 16 in hot_pipes else (max(hot_pipes) if hot_pipes else None)
    conns = meta.get("connections") or next((r.get("connections") for r in results if r.get("connections")), "?")

    w("# Benchmarks: Surge vs Redis + Lua vs PostgreSQL")
    w("")
    w(
        f"_Generated by `benches/compare/report.py` from `{rel(results_path)}` "
        f"(run of {meta.get('date', '?')}). Do not edit by hand: rerun the benchmark or the report, "
        "and keep prose in `benches/compare/notes.md` (shown under Notes)._"
    )
    w("")

    # ---- targets
    w("## Targets")
    w("")
    w("| Target | Measured | Result |")
    w("|---|---|---|")
    if pipelined is not None:
        s, rd = row("hot-sku", pipelined, "surge-tcp-sync"), row("hot-sku", pipelined, "redis-always")
        ts, tr = thr(s), thr(rd)
        if ts and tr:
            meas = f"{fmt_int(ts)} vs {fmt_int(tr)} req/s = {ts / tr:.2f}×"
            res = pass_fail(ts >= TARGET_RATIO * tr)
        else:
            meas, res = "a run is missing or failed", "**n/a**"
        w(
            f"| Surge `sync` over TCP, pipelined ({pipelined}), hot-sku, {conns} connections: "
            f"≥ {TARGET_RATIO:g}× Redis + Lua with `appendfsync always`, side by side | {meas} | {res} |"
        )
    half = [r for r in results if system_of(r) == "surge-tcp-sync-half"]
    if half:
        h = half[-1]
        p99 = None if h.get("failed") else (h.get("latency_us") or {}).get("p99")
        if p99 is not None:
            meas = (
                f"p99 {fmt_ms(p99)} ms at {fmt_int(h.get('rate_rps'))} req/s offered "
                f"({fmt_int(h.get('throughput_rps'))} achieved)"
            )
            res = pass_fail(p99 <= TARGET_P99_US)
        else:
            meas, res = "run failed", "**n/a**"
        w(f"| p99 ≤ {TARGET_P99_US / 1000:g} ms at half of saturation (Surge `sync`, TCP, hot-sku) | {meas} | {res} |")
    inproc = [r for r in results if system_of(r) == "surge-inproc-sync" and r.get("scenario") == "hot-sku"]
    if inproc:
        t = thr(inproc[-1])
        w(
            f"| In-process, durable (`sync`): ≥ 1 M orders/s (DESIGN.md; reference row) | "
            f"{fmt_int(t) + ' req/s' if t else 'run failed'} | {pass_fail(t >= TARGET_INPROC_RPS) if t else '**n/a**'} |"
        )
    flash = [r for r in results if r.get("scenario") == "flash-sale"]
    if flash:
        verdicts = [flash_ok(r) for r in flash if not r.get("failed")]
        bad = [system_of(r) for r in flash if r.get("failed") or flash_ok(r) is False]
        unver = [system_of(r) for r in flash if not r.get("failed") and flash_ok(r) is None]
        meas = f"{sum(1 for v in verdicts if v)} of {len(flash)} runs verified"
        if bad:
            meas += "; failed: " + ", ".join(bad)
        if unver:
            meas += "; not verified: " + ", ".join(unver)
        w(
            f"| Flash sale: exactly the stock sold, 0 oversold, on every target | {meas} | "
            f"{pass_fail(not bad and not unver)} |"
        )
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
      f"{meta.get('surge_version') or 'surge'}")
    commit = meta.get("git_commit") or "?"
    w(f"- Surge commit: `{commit}`" + (" (working tree had uncommitted changes)" if meta.get("git_dirty") else ""))
    w(f"- Date: {meta.get('date', '?')}")
    w(
        "- Load generator and servers share the machine (all on 127.0.0.1); the load generator's "
        "cores are not available to the server under test, for every system alike."
    )
    w("")

    # ---- setup
    w("## What was compared")
    w("")
    w(f"Same load shapes, same {conns} connections, same pipeline depth, one after another in one run "
      "(`surge bench` drives every target):")
    w("")
    w("- **hot-sku**: every request reserves one unit of the same SKU, for "
      f"{meta.get('duration', 'the duration')} (stock large enough not to run out).")
    w(f"- **flash-sale**: {fmt_int(_num(meta.get('flash_users')))} users race for "
      f"{fmt_int(_num(meta.get('flash_stock')))} units, one request each; verified afterwards: exactly the "
      "stock sold, none oversold. `sold_out` rejections are the expected outcome for everyone else.")
    w("- **Redis + Lua**: the classic stock-deduction script (GET, compare, DECRBY), loaded with SCRIPT LOAD "
      "and called with EVALSHA; one instance with no persistence, one with `appendonly yes` + "
      "`appendfsync always` (the durable peer).")
    w("- **PostgreSQL**: `UPDATE … SET stock = stock - $1 WHERE id = $2 AND stock >= $1`, autocommit, "
      "`fsync=on`, `synchronous_commit=on` (durable).")
    w("- **Surge**: `surge serve` over TCP (JSON lines), fresh data dir per row, in each durability mode: "
      "`sync` (reply after fsync, group commit), `os` (after write, no fsync), `none` (memory only).")
    w("- Throughput is requests answered per second (`ok/s`: those that succeeded); latencies are per "
      "request, from send to reply.")
    w("")

    # ---- results
    w("## Results")
    w("")
    for scenario, pipeline in groups:
        rows = [row(scenario, pipeline, s) for s in order if row(scenario, pipeline, s) and s != "surge-tcp-sync-half"]
        rows += [r for r in results if (r.get("scenario"), r.get("pipeline")) == (scenario, pipeline)
                 and system_of(r) not in SYSTEMS]
        if not rows:
            continue
        extra = f", {meta.get('duration')}" if scenario == "hot-sku" and meta.get("duration") else ""
        w(f"### {scenario}, pipeline {pipeline} ({conns} connections{extra})")
        w("")
        w("| System | Durability | req/s | ok/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | verified |")
        w("|---|---|--:|--:|--:|--:|--:|--:|--:|---|---|")
        for r in rows:
            name, dur = SYSTEMS.get(system_of(r), (system_of(r), r.get("durability") or "?"))
            if r.get("failed"):
                w(f"| {esc(name)} | {esc(dur)} | FAILED (exit {r.get('exit_code')}) | | | | | | | | |")
                continue
            lat = r.get("latency_us") or {}
            errs = fmt_errors(r.get("errors"))
            if r.get("exit_code"):
                errs = f"exit {r['exit_code']}; {errs}"
            w(
                f"| {esc(name)} | {esc(dur)} | {fmt_int(r.get('throughput_rps'))} | {fmt_int(r.get('ok_rps'))} | "
                f"{fmt_ms(lat.get('p50'))} | {fmt_ms(lat.get('p90'))} | {fmt_ms(lat.get('p99'))} | "
                f"{fmt_ms(lat.get('p999'))} | {fmt_ms(lat.get('max'))} | {esc(errs)} | {verified(r)} |"
            )
        w("")
        surge_rows = [(s, row(scenario, pipeline, s)) for s in SURGE_TCP if row(scenario, pipeline, s)]
        peer_rows = [(p, row(scenario, pipeline, p)) for p in PEERS if row(scenario, pipeline, p)]
        if surge_rows and peer_rows:
            w("Surge / peer, throughput (req/s):")
            w("")
            w("| Surge mode | " + " | ".join(f"vs {PEER_SHORT[p]}" for p, _ in peer_rows) + " |")
            w("|---|" + "--:|" * len(peer_rows))
            for s, sr in surge_rows:
                w(f"| `{s.rsplit('-', 1)[1]}` | " + " | ".join(fmt_ratio(thr(sr), thr(pr)) for _, pr in peer_rows) + " |")
            w("")
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

    if half:
        h = half[-1]
        w("### Latency at half of saturation")
        w("")
        w(
            "Surge `sync` over TCP, hot-sku, same connections and pipeline, open loop at half the throughput "
            "measured above (latencies corrected for coordinated omission):"
        )
        w("")
        w("| offered req/s | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | p99 ≤ 1 ms |")
        w("|--:|--:|--:|--:|--:|--:|--:|---|---|")
        if h.get("failed"):
            w(f"| {fmt_int(h.get('rate_rps'))} | FAILED (exit {h.get('exit_code')}) | | | | | | | **n/a** |")
        else:
            lat = h.get("latency_us") or {}
            p99 = lat.get("p99")
            w(
                f"| {fmt_int(h.get('rate_rps'))} | {fmt_int(h.get('throughput_rps'))} | {fmt_ms(lat.get('p50'))} | "
                f"{fmt_ms(lat.get('p90'))} | {fmt_ms(p99)} | {fmt_ms(lat.get('p999'))} | {fmt_ms(lat.get('max'))} | "
                f"{esc(fmt_errors(h.get('errors')))} | {pass_fail(p99 is not None and p99 <= TARGET_P99_US)} |"
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
        "`SYSTEMS`, `BENCH_TMPDIR`, … (see `benches/compare/README.md`). This run: "
        + ", ".join(
            f"`{k.upper()}={meta[k]}`"
            for k in ("connections", "duration", "pipelines", "flash_pipelines", "flash_users", "flash_stock")
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
            "`$SURGE_ADMIN_TOKEN` / `$SURGE_SERVICE_TOKEN` were random per run):"
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


def cmd_render(a):
    results = load_results(a.results)
    meta = {}
    if a.meta and os.path.exists(a.meta):
        with open(a.meta, encoding="utf-8") as f:
            meta = json.load(f)
    else:
        print(f"no metadata file {a.meta}: the machine section will be empty", file=sys.stderr)
    notes = ""
    if a.notes and os.path.exists(a.notes):
        with open(a.notes, encoding="utf-8") as f:
            notes = f.read()
    text = render(results, meta, notes, a.results)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {a.out} ({len(results)} results)", file=sys.stderr)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")

    r = sub.add_parser("render", help="write BENCHMARKS.md (the default)")
    r.add_argument("--results", default=str(DEFAULT_RESULTS))
    r.add_argument("--meta", default=str(DEFAULT_META))
    r.add_argument("--notes", default=str(DEFAULT_NOTES))
    r.add_argument("--out", default=str(DEFAULT_OUT))

    ap = sub.add_parser("append", help="append one bench result (stdin)")
    ap.add_argument("--results", required=True)
    ap.add_argument("--system", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--exit-code", type=int, default=0)

    g = sub.add_parser("get", help="print one field of a recorded run")
    g.add_argument("--results", required=True)
    g.add_argument("--system", required=True)
    g.add_argument("--scenario", required=True)
    g.add_argument("--pipeline", required=True)
    g.add_argument("--field", required=True)

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
    return {"render": cmd_render, "append": cmd_append, "get": cmd_get, "meta": cmd_meta}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
