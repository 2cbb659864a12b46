#!/usr/bin/env python3
"""Tests of report.py's redis-benchmark rows (python3 standard library only):

    python3 benches/compare/test_report.py      # or: python3 -m unittest discover benches/compare

They need no server: a redis-benchmark --csv output as Redis 7.0 prints it stands in for a run.
"""

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402

# `redis-benchmark -c 50 -P 16 -n 1000000 --csv EVALSHA <sha> 1 k 1` on Redis 7.0.15.
RB_CSV = (
    '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms",'
    '"max_latency_ms"\n'
    '"EVALSHA a818b47bd10338035e10038bb613c4aa1d0e336d 1 k 1","415110.03","1.856","0.144","1.799","2.303",'
    '"3.239","4.735"\n'
)


def surge_bench_row(system, pipeline, rps, p99_us=2000, cpu=3.0):
    """A `surge bench --json` record as run.sh stores it (only the fields the report reads)."""
    return {
        "system": system, "command": f"surge bench ... --label {system} --json", "scenario": "hot-sku",
        "target_kind": "redis", "connections": 50, "pipeline": pipeline, "requests": int(rps * 10),
        "throughput_rps": rps, "ok_rps": rps, "errors": {},
        "latency_us": {"p50": 1000, "p90": 1500, "p99": p99_us, "p999": 3000, "max": 4000},
        "verify": {"passed": True, "oversold": 0}, "server_cpu_s": cpu * rps * 10 / 1e6,
        "server_cpu_us_per_op": cpu,
    }


def run_main(argv, stdin=""):
    """report.main(argv) with stdin; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = report.main(argv)
    finally:
        sys.stdin = old_stdin
    return rc, out.getvalue(), err.getvalue()


class RedisBenchmarkRows(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.results = os.path.join(self.tmp.name, "results.jsonl")

    def tearDown(self):
        self.tmp.cleanup()

    def append_rb(self, stdin, system="redis-always-rb", requests=1_000_000, remaining=None, rc=0, cpu="2.5"):
        argv = ["append-rb", "--results", self.results, "--system", system, "--command", "redis-benchmark ...",
                "--exit-code", str(rc), "--connections", "50", "--pipeline", "16", "--requests", str(requests),
                "--stock", "1000000000000", "--wall-s", "2.6"]
        if cpu is not None:
            argv += ["--server-cpu-s", cpu]
        if remaining is not None:
            argv += ["--remaining-stock", str(remaining)]
        run_main(argv, stdin)
        return report.load_results(self.results)[-1]

    def test_parse_csv(self):
        d = report.parse_rb_csv(RB_CSV)
        self.assertEqual(d["rps"], "415110.03")
        self.assertEqual(d["p99_latency_ms"], "3.239")
        self.assertIsNone(report.parse_rb_csv(RB_CSV.splitlines()[0]))  # header only: the run failed
        self.assertIsNone(report.parse_rb_csv(""))
        # Lines around the result (a warning on stdout) do not matter.
        self.assertEqual(report.parse_rb_csv("WARNING: x\n" + RB_CSV + "\n")["max_latency_ms"], "4.735")

    def test_append_rb_row(self):
        r = self.append_rb(RB_CSV, remaining=1_000_000_000_000 - 1_000_000)
        self.assertEqual(r["system"], "redis-always-rb")
        self.assertEqual((r["scenario"], r["pipeline"], r["connections"]), ("hot-sku", 16, 50))
        self.assertAlmostEqual(r["throughput_rps"], 415110.03)
        self.assertAlmostEqual(r["ok_rps"], 415110.03)
        self.assertEqual(r["latency_us"], {"mean": 1856, "min": 144, "p50": 1799, "p95": 2303, "p99": 3239,
                                           "max": 4735})
        self.assertEqual(r["errors"], {})
        self.assertTrue(r["verify"]["passed"])
        self.assertEqual(r["server_cpu_us_per_op"], 2.5)  # 2.5 s over 1,000,000 requests
        self.assertEqual(report.verified(r), "yes")

    def test_stock_short_of_the_requests_fails_verification(self):
        r = self.append_rb(RB_CSV, remaining=1_000_000_000_000 - 999_000)
        self.assertEqual(r["errors"], {"not_deducted": 1000})
        self.assertFalse(r["verify"]["passed"])
        self.assertTrue(report.verified(r).startswith("**NO**"))

    def test_failed_run(self):
        r = self.append_rb(RB_CSV.splitlines()[0] + "\n", rc=1)
        self.assertTrue(r["failed"])
        self.assertEqual((r["scenario"], r["pipeline"]), ("hot-sku", 16))  # lands in its table

    def test_rb_requests(self):
        with open(self.results, "w", encoding="utf-8") as f:
            f.write(json.dumps(surge_bench_row("redis-none", 16, 123_456.7)) + "\n")
        rc, out, _ = run_main(["rb-requests", "--results", self.results, "--system", "redis-none",
                               "--pipeline", "16", "--duration", "10s"])
        self.assertEqual(rc, 0)
        self.assertEqual(int(out), 1_234_560)  # 1,234,567 rounded to a multiple of 16
        rc, out, _ = run_main(["rb-requests", "--results", self.results, "--system", "redis-always",
                               "--pipeline", "16", "--duration", "10s"])
        self.assertEqual((rc, out), (1, ""))

    def test_duration_seconds(self):
        for text, secs in (("10s", 10), ("500ms", 0.5), ("1m 30s", 90), ("2min", 120), ("1h", 3600)):
            self.assertAlmostEqual(report.duration_seconds(text), secs)
        for bad in ("10", "s", "10 parsecs"):
            with self.assertRaises(ValueError):
                report.duration_seconds(bad)

    def test_stock_lua_is_the_loadgen_script(self):
        text = report.stock_lua()
        self.assertIn("redis.call('DECRBY', KEYS[1], qty)", text)
        # What run.sh hands to SCRIPT LOAD; Redis names a script by the SHA1 of exactly this.
        self.assertEqual(len(hashlib.sha1(text.encode()).hexdigest()), 40)
        with tempfile.NamedTemporaryFile("w", suffix=".rs", delete=False) as f:
            f.write('pub const STOCK_LUA: &str = "return 1";\n')  # not a raw string: refuse it
        try:
            with self.assertRaises(SystemExit):
                report.stock_lua(f.name)
        finally:
            os.unlink(f.name)

    def test_render_shows_rows_and_ratio_and_keeps_acceptance_on_our_client(self):
        rows = [surge_bench_row("redis-none", 16, 200_000), surge_bench_row("redis-always", 16, 80_000),
                surge_bench_row("surge-tcp-sync", 16, 120_000)]
        with open(self.results, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        self.append_rb(RB_CSV.replace("415110.03", "250000"), system="redis-none-rb",
                       remaining=1_000_000_000_000 - 1_000_000)
        self.append_rb(RB_CSV.replace("415110.03", "100000"), system="redis-always-rb",
                       remaining=1_000_000_000_000 - 1_000_000)
        text = report.render(report.load_results(self.results), {"connections": "50"}, "", "", self.results,
                             (None, "test"))
        self.assertIn("| Redis + Lua, redis-benchmark | AOF, appendfsync always | 100,000 | 100,000 | 1.799 | — "
                      "| 3.239 | — | 4.735 | 2.50 | — | yes |", text)
        self.assertIn("| Redis (none) | 200,000 | 250,000 | 0.80× | 1.000 / 1.799 | 2.000 / 3.239 | 3.00 / 2.50 |", text)
        self.assertIn("| Redis (always) | 80,000 | 100,000 | 0.80× |", text)
        # The acceptance ratio divides by our client's redis-always row, not redis-benchmark's.
        self.assertIn("120,000 ÷ 80,000 req/s = 1.50×", text)


if __name__ == "__main__":
    unittest.main()
