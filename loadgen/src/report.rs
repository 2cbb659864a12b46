//! The result of a run: counts, throughput, latency percentiles (HdrHistogram), errors by code,
//! and the stock verification. Printed as a table, or as one JSON object (`--json`) whose field
//! names are stable (`benches/compare/report.py` reads them).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles of the acknowledged and rejected requests alike, in microseconds.
///
/// Closed loop: from send to reply. Open loop (`--rate`): from the request's due time to reply
/// (coordinated-omission corrected).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyUs {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl LatencyUs {
    /// Percentiles of a histogram of microseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> LatencyUs {
        if h.is_empty() {
            return LatencyUs::default();
        }
        LatencyUs {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// The stock check after the run: did the target hand out exactly what it had, and never more?
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verify {
    /// Units on sale at the start (all SKUs of the scenario).
    pub stock: u64,
    /// Acknowledged orders (Redis / PostgreSQL: acknowledged deductions).
    pub orders_ok: u64,
    /// Units those orders took.
    pub units_ok: u64,
    /// Units granted beyond the stock: must be 0.
    pub oversold: u64,
    /// `available` at the end, summed over the scenario's SKUs.
    pub remaining_stock: u64,
    /// `reserved + sold` at the end (Surge; Redis and PostgreSQL keep no such counter: 0).
    pub held: u64,
    /// Orders left unpaid on purpose (mixed) that were found canceled by their deadline.
    pub expired_seen: Option<u64>,
    /// In-process only: the engine's cross-actor audit passed.
    pub audit_passed: Option<bool>,
    /// Every check passed.
    pub passed: bool,
    /// What failed, if anything.
    pub detail: String,
}

/// WAL group commits of an in-process run with durability: how many, and how long each took
/// (append + archive + flush, and `fdatasync` in `sync`; the writer's own histogram).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WalCommits {
    /// Group commits (the SKU's setup included: one or two).
    pub commits: u64,
    /// Median commit time, µs.
    pub latency_us_p50: u64,
    /// 99th percentile, µs.
    pub latency_us_p99: u64,
    /// Longest, µs.
    pub latency_us_max: u64,
}

/// Everything a run measured. Field names are the `--json` schema.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `--label`, free text.
    pub label: Option<String>,
    /// `hot-sku`, `flash-sale` or `mixed`.
    pub scenario: String,
    /// The target as given.
    pub target: String,
    /// `in-process`, `surge-tcp`, `surge-ws`, `redis` or `postgres`.
    pub target_kind: String,
    /// In-process only: `sync`, `os` or `none`.
    pub durability: Option<String>,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Orders per batched submission (`Engine::create_orders`, in-process); 1 when sent one
    /// by one.
    pub batch: usize,
    /// In-process with durability `sync` or `os`: bytes of WAL records the run wrote
    /// (the SKU's setup included, a few hundred bytes); `null` otherwise.
    pub wal_bytes: Option<u64>,
    /// `wal_bytes` per created order (issue 12: at most 192, aim 128).
    pub wal_bytes_per_order: Option<f64>,
    /// In-process with durability: the WAL's group commits (issue 12: commit p99 ≤ 3 ms at
    /// half of saturation); `null` otherwise.
    pub wal_commits: Option<WalCommits>,
    /// Open-loop rate, requests per second; `null` for closed loop.
    pub rate_rps: Option<f64>,
    /// Seed of the mixed scenario's choices.
    pub seed: u64,
    /// Wall time of the load phase, seconds.
    pub elapsed_s: f64,
    /// CPU time (user + system, all threads) this process used during the load phase, seconds
    /// ([`crate::cpu::process_cpu_s`]): in-process, the engine and the load generator together;
    /// against a server, the load generator alone. `null` where the platform does not say.
    pub process_cpu_s: Option<f64>,
    /// `process_cpu_s` per answered request, µs (in-process: what an embedder pays per order,
    /// caller included; issue 12's 1 M orders/s on 2 cores needs at most 2).
    pub cpu_us_per_request: Option<f64>,
    /// Requests answered (acknowledged or rejected).
    pub requests: u64,
    /// Requests acknowledged.
    pub ok: u64,
    /// Rejections and failures by code (`sold_out`, `connection_lost`, …).
    pub errors: BTreeMap<String, u64>,
    /// `requests / elapsed_s`.
    pub throughput_rps: f64,
    /// `ok / elapsed_s`.
    pub ok_rps: f64,
    /// `sold_out` rejections per second (flash-sale's headline figure).
    pub rejections_rps: f64,
    /// Latency percentiles, µs.
    pub latency_us: LatencyUs,
    /// The p99 latency of each second of the run (by send time; due time in open loop), µs,
    /// to within 19% (a log-scale histogram per second); 0 for a second without requests.
    /// Stalls show here where the whole run's percentiles hide them.
    pub latency_us_p99_per_second: Vec<u64>,
    /// Stock verification (hot-sku, flash-sale, mixed).
    pub verify: Option<Verify>,
    /// The first connection failure, if any lane lost its connection.
    pub first_failure: Option<String>,
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    /// The human-readable table `surge bench` prints.
    pub fn to_table(&self) -> String {
        let mut t = String::new();
        let label = self.label.as_deref().map(|l| format!("  ({l})")).unwrap_or_default();
        let _ = writeln!(t, "scenario      {}{label}", self.scenario);
        let dur = self.durability.as_deref().map(|d| format!(", durability {d}")).unwrap_or_default();
        let _ = writeln!(t, "target        {} [{}{dur}]", self.target, self.target_kind);
        let shape = match self.rate_rps {
            Some(r) => format!("open loop at {} req/s (latency from due time)", thousands(r)),
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(
            t,
            "load          {} connections x pipeline {} x batch {}, {shape}",
            self.connections, self.pipeline, self.batch
        );
        let _ = writeln!(t, "elapsed       {:.2} s", self.elapsed_s);
        if let (Some(cpu), Some(per)) = (self.process_cpu_s, self.cpu_us_per_request) {
            let whose = if self.target_kind == "in-process" { "engine and generator" } else { "generator" };
            let _ = writeln!(t, "cpu           {cpu:.2} s ({whose}), {per:.2} µs per request");
        }
        if let (Some(b), Some(per)) = (self.wal_bytes, self.wal_bytes_per_order) {
            let _ = writeln!(t, "wal           {b} bytes of records, {per:.0} per order");
        }
        if let Some(c) = self.wal_commits {
            let _ = writeln!(
                t,
                "wal commits   {}   p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
                c.commits,
                c.latency_us_p50 as f64 / 1e3,
                c.latency_us_p99 as f64 / 1e3,
                c.latency_us_max as f64 / 1e3
            );
        }
        let _ = writeln!(
            t,
            "requests      {} ({} ok)   throughput {} req/s   ok {} /s",
            self.requests,
            self.ok,
            thousands(self.throughput_rps),
            thousands(self.ok_rps)
        );
        let l = &self.latency_us;
        let _ = writeln!(t, "latency       p50        p90        p99        p99.9      max        mean");
        let _ = writeln!(
            t,
            "              {:<10} {:<10} {:<10} {:<10} {:<10} {:.3} ms",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            l.mean / 1000.0
        );
        if !self.latency_us_p99_per_second.is_empty() {
            // The first minute, one figure per second, in ms.
            let per_s: Vec<String> = self
                .latency_us_p99_per_second
                .iter()
                .take(60)
                .map(|us| format!("{:.1}", *us as f64 / 1000.0))
                .collect();
            let _ = writeln!(t, "p99 per second (ms)  {}", per_s.join(" "));
        }
        if self.errors.is_empty() {
            let _ = writeln!(t, "errors        none");
        } else {
            let list: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(t, "errors        {}", list.join(", "));
        }
        if let Some(f) = &self.first_failure {
            let _ = writeln!(t, "failure       {f}");
        }
        if let Some(v) = &self.verify {
            let _ = writeln!(
                t,
                "verify        stock {}, orders ok {}, units {}, oversold {}, remaining {}, held {}{}{}: {}",
                v.stock,
                v.orders_ok,
                v.units_ok,
                v.oversold,
                v.remaining_stock,
                v.held,
                v.expired_seen.map(|e| format!(", expired seen {e}")).unwrap_or_default(),
                v.audit_passed.map(|a| format!(", audit {}", if a { "ok" } else { "FAILED" })).unwrap_or_default(),
                if v.passed { "passed".to_owned() } else { format!("FAILED ({})", v.detail) }
            );
        }
        t
    }
}
