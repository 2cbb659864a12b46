//! The run: connect, set the scenario up, drive `connections × pipeline` lanes, verify.
//!
//! # Lanes
//! A lane is a task that has at most one request in flight; `pipeline` lanes share each
//! connection, so a connection has up to `pipeline` requests outstanding. Closed loop: a lane
//! sends its next request when the previous one is answered. Open loop (`--rate R`): lane `j`
//! of `L` sends the run's requests `k ≡ j (mod L)`, request `k` being due at `start + k / R`;
//! latency is measured from the due time, so when the target stalls, the requests that should
//! have been sent during the stall are charged for it (coordinated omission, as in wrk2).
//!
//! # Bounds
//! Every lane stops at the request budget (`--requests`) or the deadline (`--duration`);
//! a lane whose connection fails stops and the failure is counted as `connection_lost`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::lines::LineClient;
use crate::client::pg::PgClient;
use crate::client::redis_lua::RedisClient;
use crate::client::{Client, Reply};
use crate::config::{BenchArgs, Scenario, Target};
use crate::error::{LoadgenError, LoadgenResult};
use crate::report::{LatencyUs, Report, Verify};
use crate::timeline::Timeline;

mod lanes;
mod pace;
mod pipelined;
mod progress;

use lanes::{batch_lane_loop, lane_loop};
use progress::progress_bar;

/// Stock of the hot-sku SKU: more than any run can take, so every order succeeds.
pub const HOT_SKU_STOCK: u64 = 1_000_000_000_000;
/// Highest latency the histograms hold (larger samples are clamped): 60 s in µs.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Mixed scenario: unpaid orders a lane holds before it abandons the oldest to its deadline.
const MIXED_PENDING_MAX: usize = 4;
/// Mixed scenario: abandoned orders a lane remembers, to check later that they expired.
const MIXED_WATCH_MAX: usize = 64;
/// Mixed scenario: units per SKU.
const MIXED_STOCK_PER_SKU: u64 = 1_000_000;

/// Names of this run's SKUs, users and keys carry a run id, so that runs against the same
/// server never collide with an earlier run's idempotency keys or stock.
struct Names {
    run_id: String,
}

impl Names {
    fn sku(&self, i: usize) -> String {
        format!("bench-{}-{i}", self.run_id)
    }
    // `itoa`, not `format!`: formatting took about a tenth of an in-process sold-out run.
    fn user(&self, i: u64) -> String {
        let mut s = String::new();
        self.user_into(i, &mut s);
        s
    }
    /// [`Names::user`] written into `out` (cleared first): a lane reuses one buffer instead of
    /// allocating a name per request that the request then copies.
    fn user_into(&self, i: u64, out: &mut String) {
        let mut digits = itoa::Buffer::new();
        let n = digits.format(i);
        out.clear();
        out.reserve(2 + self.run_id.len() + n.len());
        out.push('u');
        out.push_str(&self.run_id);
        out.push('-');
        out.push_str(n);
    }
    fn key(&self, i: u64) -> String {
        let mut digits = itoa::Buffer::new();
        let n = digits.format(i);
        let mut s = String::with_capacity(1 + n.len());
        s.push('k');
        s.push_str(n);
        s
    }
}

/// What every lane shares.
struct Shared {
    scenario: Scenario,
    names: Names,
    skus: Vec<String>,
    users: u64,
    budget: Option<u64>,
    deadline: Instant,
    start: Instant,
    rate: Option<f64>,
    lanes: u64,
    issued: AtomicU64,
    done: AtomicU64,
    stop: AtomicBool,
    seed: u64,
    /// Orders per `create_orders` call (in-process batched lanes), 1 otherwise.
    batch: u64,
    /// Open loop: pace sends finer than tokio's millisecond timer ([`pace`]); false in-process,
    /// where the generator shares its cores with the engine and must not spin.
    precise_pacing: bool,
}

/// What a lane measured.
struct LaneResult {
    hist: Histogram<u64>,
    ok: u64,
    orders: u64,
    units_ok: u64,
    /// Error code → count; a handful of codes, so a vector searched in order (hashing the code
    /// per rejection cost more than the flash-sale's whole engine answer; issue 12).
    errors: Vec<(Cow<'static, str>, u64)>,
    failure: Option<String>,
    watch: Vec<u64>,
    timeline: Timeline,
}

impl LaneResult {
    /// Nothing measured yet.
    fn empty() -> LoadgenResult<Self> {
        Ok(LaneResult {
            hist: histogram()?,
            ok: 0,
            orders: 0,
            units_ok: 0,
            errors: Vec::new(),
            failure: None,
            watch: Vec::new(),
            timeline: Timeline::default(),
        })
    }

    /// Count `n` answers with error `code`.
    fn count_error(&mut self, code: Cow<'static, str>, n: u64) {
        match self.errors.iter_mut().find(|(c, _)| *c == code) {
            Some((_, count)) => *count += n,
            None => self.errors.push((code, n)),
        }
    }

    /// One answer's latency, for a request sent (or due) at `sent` in a run started at `start`.
    fn record(&mut self, start: Instant, sent: Instant, latency_us: u64) {
        self.hist.saturating_record(latency_us.max(1));
        self.timeline.record(sent.saturating_duration_since(start).as_secs(), latency_us);
    }
}

fn histogram() -> LoadgenResult<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).map_err(|e| LoadgenError::InvalidSettings(e.to_string()))
}

/// Run a benchmark to the end and return its report. Builds its own tokio runtime (call it
/// from a plain thread, not from inside a runtime).
///
/// # Errors
/// [`LoadgenError`] when the settings are invalid, the target cannot be reached or set up.
/// Failures during the load phase are counted in the report instead (`connection_lost`).
///
/// # Example
/// ```
/// use surge_loadgen::{BenchArgs, BenchDurability, Scenario};
/// let mut args = BenchArgs::new(Scenario::FlashSale, "in-process");
/// args.durability = BenchDurability::None;
/// args.users = Some(500);
/// args.stock = 20;
/// args.connections = 4;
/// args.quiet = true;
/// let report = surge_loadgen::run(&args).unwrap();
/// assert_eq!(report.ok, 20);
/// assert!(report.verify.unwrap().passed);
/// ```
pub fn run(args: &BenchArgs) -> LoadgenResult<Report> {
    let target = args.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads(args.threads))
        .enable_all()
        .build()
        .map_err(|e| LoadgenError::InvalidSettings(format!("runtime: {e}")))?;
    let engine = match target {
        Target::InProcess => Some(crate::in_process::InProcess::open(args)?),
        _ => None,
    };
    let result = rt.block_on(run_async(args, &target, engine.as_ref()));
    let closed = engine.map_or(Ok(()), |e| e.close());
    let report = result?;
    closed?;
    Ok(report)
}

/// `--threads`, but no more than the cores this process may run on (`taskset`): pinned to one
/// core, two workers only take turns, and in an open-loop run each waits out the other's
/// scheduler slice while it paces ([`pace`]): the p99 at 100 k requests/s was 33 ms with two
/// and 16–18 ms with one (issue 13). Closed-loop throughput was the same with one or two.
fn worker_threads(asked: usize) -> usize {
    std::thread::available_parallelism().map_or(asked, |cores| asked.min(cores.get())).max(1)
}

async fn connect(
    target: &Target,
    args: &BenchArgs,
    engine: Option<&crate::in_process::InProcess>,
    first: bool,
) -> LoadgenResult<Client> {
    let token = args.token.as_deref();
    let minimal = args.reply == crate::config::ReplyArg::Minimal;
    Ok(match target {
        Target::InProcess => match engine {
            Some(e) => Client::InProcess(e.engine().clone()),
            None => return Err(LoadgenError::Engine("in-process engine not open".into())),
        },
        Target::SurgeTcp(addr) => Client::Lines(LineClient::connect_tcp(addr, token, minimal).await?),
        Target::SurgeWs(url) => Client::Lines(LineClient::connect_ws(url, token, minimal).await?),
        Target::Redis(url) => Client::Redis(RedisClient::connect(url, args.redis_script).await?),
        Target::Postgres(url) => Client::Postgres(Arc::new(PgClient::connect(url, first).await?)),
    })
}

async fn run_async(
    args: &BenchArgs,
    target: &Target,
    engine: Option<&crate::in_process::InProcess>,
) -> LoadgenResult<Report> {
    // Orders to a Surge server (TCP or WebSocket; closed or open loop) go through the pipelined
    // driver (one task per connection, `pipelined.rs`); one general client stays for setup and
    // the check.
    let order_loop = matches!(args.scenario, Scenario::HotSku | Scenario::FlashSale);
    let pipelined = match target {
        Target::SurgeTcp(addr) if order_loop => Some(pipelined::Endpoint::Tcp(addr.clone())),
        Target::SurgeWs(url) if order_loop => Some(pipelined::Endpoint::Ws(url.clone())),
        _ => None,
    };
    let general = if pipelined.is_some() { 1 } else { args.connections };
    let mut clients = Vec::with_capacity(general);
    for i in 0..general {
        clients.push(connect(target, args, engine, i == 0).await?);
    }
    let run_id =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    // Milliseconds, pid and a random suffix: two runs started in the same millisecond (even from
    // two processes) against one server must not share SKUs or idempotency keys.
    let names = Names { run_id: format!("{run_id:x}{:x}{:04x}", std::process::id(), rand::random::<u16>()) };
    let (sku_count, stock_per_sku, per_user_limit) = match args.scenario {
        Scenario::HotSku => (1, HOT_SKU_STOCK, None),
        Scenario::FlashSale => (1, args.stock, Some(1)),
        Scenario::Mixed => (args.skus, MIXED_STOCK_PER_SKU, None),
    };
    let skus: Vec<String> = (0..sku_count).map(|i| names.sku(i)).collect();
    for sku in &skus {
        clients[0].create_sku(sku, stock_per_sku, per_user_limit).await?;
    }

    let lanes = (args.connections * args.pipeline) as u64;
    // Each lane's histogram (17,408 counters: 136 KiB, zeroed) is made before the clock
    // starts: 800 of them made by the lanes themselves were a sixth of a short in-process
    // run's CPU.
    let mut fresh = if pipelined.is_none() {
        (0..lanes).map(|_| LaneResult::empty()).collect::<LoadgenResult<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let start = Instant::now();
    let cpu_start = crate::cpu::process_cpu_s();
    let budget = args.request_budget();
    let shared = Arc::new(Shared {
        scenario: args.scenario,
        names,
        skus,
        users: args.users(),
        budget,
        deadline: if budget.is_some() { start + Duration::from_secs(24 * 3600) } else { start + args.duration },
        start,
        rate: args.rate,
        lanes,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        seed: args.seed,
        batch: args.batch as u64,
        precise_pacing: !matches!(target, Target::InProcess),
    });

    let progress = progress_bar(args, budget, shared.clone());
    let mut handles = Vec::with_capacity(lanes as usize);
    if let Some(endpoint) = &pipelined {
        let token = args.token.clone().unwrap_or_default();
        let minimal = args.reply == crate::config::ReplyArg::Minimal;
        let slots = args.connections as u64;
        for slot in 0..slots {
            let shape = (args.pipeline, slot, slots);
            let lane = pipelined::pipelined_lane(endpoint.clone(), token.clone(), minimal, shape, shared.clone());
            handles.push(tokio::spawn(lane));
        }
    }
    for (c, client) in clients.iter().enumerate().filter(|_| pipelined.is_none()) {
        for p in 0..args.pipeline {
            let lane = (c * args.pipeline + p) as u64;
            let r = match fresh.pop() {
                Some(r) => r,
                None => LaneResult::empty()?,
            };
            match client {
                Client::InProcess(engine) if shared.batch > 1 => {
                    handles.push(tokio::spawn(batch_lane_loop(engine.clone(), shared.clone(), r)));
                }
                _ => handles.push(tokio::spawn(lane_loop(lane, client.clone(), shared.clone(), r))),
            }
        }
    }
    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(r) => results.push(r?),
            Err(e) => return Err(LoadgenError::Protocol(format!("lane task failed: {e}"))),
        }
    }
    let elapsed = start.elapsed();
    let process_cpu_s = crate::cpu::process_cpu_s().zip(cpu_start).map(|(end, start)| (end - start).max(0.0));
    shared.stop.store(true, Ordering::Release);
    if let Some((bar, ticker)) = progress {
        let _ = ticker.await;
        bar.finish_and_clear();
    }

    let mut hist = histogram()?;
    let (mut ok, mut orders, mut units_ok) = (0u64, 0u64, 0u64);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut failure = None;
    let mut watch = Vec::new();
    let mut timeline = Timeline::default();
    for r in results {
        hist.add(&r.hist).map_err(|e| LoadgenError::Protocol(e.to_string()))?;
        timeline.merge(&r.timeline);
        ok += r.ok;
        orders += r.orders;
        units_ok += r.units_ok;
        for (k, v) in r.errors {
            *errors.entry(k.into_owned()).or_default() += v;
        }
        failure = failure.or(r.failure);
        watch.extend(r.watch);
    }
    let requests = hist.len();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let sold_out = errors.get("sold_out").copied().unwrap_or(0);
    // Read before verify: the WAL's bytes of the load phase only (setup is one SKU).
    let wal_bytes = engine.and_then(crate::in_process::InProcess::wal_bytes);
    let wal_commits = engine.and_then(crate::in_process::InProcess::wal_commits);
    let verify = verify(args, &clients[0], &shared, stock_per_sku, orders, units_ok, &watch, engine).await?;
    Ok(Report {
        wal_bytes,
        wal_bytes_per_order: wal_bytes.filter(|_| orders > 0).map(|b| b as f64 / orders as f64),
        wal_commits,
        label: args.label.clone(),
        scenario: args.scenario.to_string(),
        target: args.target.clone(),
        target_kind: target.kind().to_owned(),
        durability: matches!(target, Target::InProcess).then(|| format!("{:?}", args.durability).to_lowercase()),
        connections: args.connections,
        pipeline: args.pipeline,
        batch: args.batch,
        rate_rps: args.rate,
        seed: args.seed,
        elapsed_s: secs,
        process_cpu_s,
        cpu_us_per_request: process_cpu_s.filter(|_| requests > 0).map(|c| c * 1e6 / requests as f64),
        requests,
        ok,
        errors,
        throughput_rps: requests as f64 / secs,
        ok_rps: ok as f64 / secs,
        rejections_rps: sold_out as f64 / secs,
        latency_us: LatencyUs::from_histogram(&hist),
        latency_us_p99_per_second: timeline.p99_per_second_us(),
        verify: Some(verify),
        first_failure: failure,
    })
}

/// Check the stock after the run: no unit granted beyond the stock, every unit accounted for,
/// and for flash-sale exactly `min(stock, users)` orders.
#[allow(clippy::too_many_arguments)]
async fn verify(
    args: &BenchArgs,
    client: &Client,
    shared: &Shared,
    stock_per_sku: u64,
    orders_ok: u64,
    units_ok: u64,
    watch: &[u64],
    engine: Option<&crate::in_process::InProcess>,
) -> LoadgenResult<Verify> {
    if args.scenario == Scenario::Mixed && engine.is_some() {
        // Orders created in the last payment_timeout_ms are still expiring; an audit taken
        // while a deadline is releasing would see a half-applied saga. Let them all land.
        tokio::time::sleep(Duration::from_millis(args.payment_timeout_ms.saturating_add(300))).await;
    }
    let stock = stock_per_sku * shared.skus.len() as u64;
    let (mut remaining, mut held) = (0u64, 0u64);
    let mut problems = Vec::new();
    for sku in &shared.skus {
        match client.stock(sku).await? {
            Reply::Ok(v) => {
                remaining += v.available;
                held += v.reserved + v.sold;
                if v.available + v.reserved + v.sold > stock_per_sku {
                    problems.push(format!("{sku}: available+reserved+sold exceeds its stock"));
                }
            }
            Reply::Rejected(c) => problems.push(format!("{sku}: {c}")),
        }
    }
    let surge = matches!(client, Client::InProcess(_) | Client::Lines(_));
    let granted = if surge { held } else { stock.saturating_sub(remaining) };
    let oversold = granted.saturating_sub(stock) + units_ok.saturating_sub(stock);
    if oversold > 0 {
        problems.push(format!("oversold by {oversold}"));
    }
    match args.scenario {
        Scenario::HotSku | Scenario::FlashSale => {
            if granted != units_ok {
                problems.push(format!(
                    "the target holds {granted} units as taken but acknowledged {units_ok} (a payment deadline shorter than the run also releases units)"
                ));
            }
            if surge && remaining + held != stock {
                problems.push(format!("available {remaining} + held {held} != stock {stock}"));
            }
        }
        Scenario::Mixed => {
            if remaining + held != stock {
                problems.push(format!("available {remaining} + reserved/sold {held} != stock {stock}"));
            }
        }
    }
    if args.scenario == Scenario::FlashSale {
        // Surge enforces one unit per buyer, so repeated buyers (a budget above --users) are
        // refused; the peers' scripts know no buyers, so only the stock and the budget bound them.
        let requests = shared.budget.unwrap_or(u64::MAX);
        let expected = if surge { stock.min(shared.users).min(requests) } else { stock.min(requests) };
        if orders_ok != expected {
            problems.push(format!("{orders_ok} orders succeeded, expected exactly {expected}"));
        }
    }
    let mut expired_seen = None;
    if args.scenario == Scenario::Mixed {
        let mut seen = 0;
        for id in watch {
            if let Reply::Ok(status) = client.order_status(*id).await? {
                if status == "canceled" {
                    seen += 1;
                }
            }
        }
        expired_seen = Some(seen);
    }
    let audit_passed = engine.map(|e| e.audit());
    if audit_passed == Some(false) {
        problems.push("engine audit failed".into());
    }
    Ok(Verify {
        stock,
        orders_ok,
        units_ok,
        oversold,
        remaining_stock: remaining,
        held,
        expired_seen,
        audit_passed,
        passed: problems.is_empty(),
        detail: problems.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_run_id_and_the_number() {
        let names = Names { run_id: "1f2e".into() };
        assert_eq!(names.user(0), "u1f2e-0");
        assert_eq!(names.user(u64::MAX), format!("u1f2e-{}", u64::MAX));
        assert_eq!(names.key(42), "k42");
        let mut reused = String::from("something longer than a name");
        names.user_into(7, &mut reused);
        assert_eq!(reused, names.user(7));
        assert_eq!(names.sku(3), "bench-1f2e-3");
    }

    #[test]
    fn workers_never_outnumber_the_cores_the_process_may_use() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(worker_threads(cores + 3), cores);
        assert_eq!(worker_threads(1), 1);
        assert_eq!(worker_threads(0), 1);
    }

    #[test]
    fn error_counts_are_kept_per_code() {
        let mut r = LaneResult::empty().expect("histogram");
        r.count_error(Cow::Borrowed("sold_out"), 1);
        r.count_error(Cow::Owned("limit_exceeded".into()), 2);
        r.count_error(Cow::Owned("sold_out".into()), 3);
        assert_eq!(r.errors, vec![(Cow::Borrowed("sold_out"), 4), (Cow::Borrowed("limit_exceeded"), 2)]);
    }
}
