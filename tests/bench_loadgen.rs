//! `surge bench` (the `surge-loadgen` crate) end to end, without external peers:
//!
//! * the in-process target: hot-sku (durability none and the default sync on a temporary
//!   data directory), flash-sale (exactly `stock` orders, the rest `sold_out`), and mixed
//!   with a short payment deadline (abandoned orders are seen canceled, the audit passes);
//! * the Surge TCP and WebSocket targets against a server started in the test, and a wrong
//!   token refused as a connection error;
//! * the open-loop coordinated-omission correction, against a scripted loopback peer that
//!   stalls once: the requests due during the stall are charged for it (and, as a contrast,
//!   a closed loop records the stall as a single slow sample);
//! * settings validation, and the `surge bench` command line (`--json` schema, exit codes).
//!
//! Loopback only; small request counts; no throughput assertions.

mod gateway_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use surge::gateway::{Server, ServerHandle};
use surge_loadgen::{BenchArgs, BenchDurability, LoadgenError, Report, Scenario, HOT_SKU_STOCK};

fn quiet(scenario: Scenario, target: &str) -> BenchArgs {
    let mut a = BenchArgs::new(scenario, target);
    a.quiet = true;
    a
}

/// The percentiles of a run are ordered and non-zero.
fn assert_latency_sane(r: &Report) {
    let l = r.latency_us;
    assert!(l.p50 > 0, "p50 > 0: {l:?}");
    assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, "ordered percentiles: {l:?}");
    assert!(l.mean > 0.0 && l.mean <= l.max as f64, "mean within range: {l:?}");
}

fn sold_out(r: &Report) -> u64 {
    r.errors.get("sold_out").copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// In-process target
// ---------------------------------------------------------------------------------------------

fn hot_sku_in_process(durability: BenchDurability, n: u64) {
    let mut args = quiet(Scenario::HotSku, "in-process");
    args.durability = durability;
    args.requests = Some(n);
    args.connections = 4;
    args.pipeline = 2;
    let r = surge_loadgen::run(&args).expect("hot-sku runs");
    assert_eq!(r.requests, n, "exactly the request budget is answered: {r:?}");
    assert_eq!(r.ok, n, "every hot-sku order succeeds: {r:?}");
    assert!(r.errors.is_empty(), "no errors: {:?}", r.errors);
    assert!(r.first_failure.is_none());
    let v = r.verify.as_ref().expect("hot-sku verifies");
    assert!(v.passed, "verify: {v:?}");
    assert_eq!(v.held, n, "the engine holds one unit per acknowledged order");
    assert_eq!(v.orders_ok, n);
    assert_eq!(v.units_ok, n);
    assert_eq!(v.oversold, 0);
    assert_eq!(v.stock, HOT_SKU_STOCK);
    assert_eq!(v.remaining_stock, HOT_SKU_STOCK - n);
    assert_eq!(v.audit_passed, Some(true));
    assert_eq!(v.expired_seen, None, "only mixed watches expiries");
    assert_eq!(r.target_kind, "in-process");
    assert_eq!(r.scenario, "hot-sku");
    assert_eq!(r.rate_rps, None, "closed loop");
    assert_eq!((r.connections, r.pipeline), (4, 2));
    assert!(r.elapsed_s > 0.0);
    assert_latency_sane(&r);
}

#[test]
fn hot_sku_in_process_without_durability_answers_exactly_the_budget() {
    hot_sku_in_process(BenchDurability::None, 600);
    // A second call in the same process opens a fresh engine.
    hot_sku_in_process(BenchDurability::None, 37);
}

#[test]
fn hot_sku_in_process_with_sync_durability_on_the_default_temp_dir() {
    let args = quiet(Scenario::HotSku, "in-process");
    assert_eq!(args.durability, BenchDurability::Sync, "sync is the default");
    assert!(args.data_dir.is_none(), "a temporary data directory is the default");
    hot_sku_in_process(BenchDurability::Sync, 200);
}

/// Batched submission (`--batch`): each lane sends its orders through one `create_orders`;
/// the budget is answered exactly, nothing oversold, the audit passes.
#[test]
fn hot_sku_in_process_with_batched_submission_answers_exactly_the_budget() {
    let mut args = quiet(Scenario::HotSku, "in-process");
    args.durability = BenchDurability::Sync;
    args.requests = Some(1_000);
    args.connections = 3;
    args.batch = 64;
    let r = surge_loadgen::run(&args).expect("batched hot-sku runs");
    assert_eq!((r.requests, r.ok, r.batch), (1_000, 1_000, 64), "{r:?}");
    let v = r.verify.as_ref().expect("verify");
    assert!(v.passed && v.held == 1_000 && v.audit_passed == Some(true), "verify: {v:?}");
    let per_order = r.wal_bytes_per_order.expect("sync durability measures WAL bytes");
    assert!(per_order > 16.0 && per_order < 4_096.0, "{per_order} WAL bytes per order");
    let c = r.wal_commits.expect("sync durability measures WAL commits");
    assert!(c.commits >= 1 && c.latency_us_p50 <= c.latency_us_p99 && c.latency_us_p99 <= c.latency_us_max, "{c:?}");
    assert_latency_sane(&r);
    let mut refused = quiet(Scenario::Mixed, "in-process");
    refused.batch = 8;
    assert!(matches!(surge_loadgen::run(&refused), Err(LoadgenError::InvalidSettings(_))));
}

#[test]
fn flash_sale_in_process_sells_exactly_the_stock() {
    const USERS: u64 = 2_000;
    const STOCK: u64 = 37;
    let mut args = quiet(Scenario::FlashSale, "in-process");
    args.durability = BenchDurability::None;
    args.users = Some(USERS);
    args.stock = STOCK;
    args.connections = 8;
    args.pipeline = 4;
    let r = surge_loadgen::run(&args).expect("flash-sale runs");
    assert_eq!(r.requests, USERS, "one request per buyer: {r:?}");
    assert_eq!(r.ok, STOCK, "exactly the stock is sold: {r:?}");
    assert_eq!(sold_out(&r), USERS - STOCK, "everyone else is told sold_out: {:?}", r.errors);
    assert_eq!(r.errors.len(), 1, "no other error codes: {:?}", r.errors);
    let v = r.verify.as_ref().expect("verify");
    assert_eq!(v.oversold, 0);
    assert_eq!(v.remaining_stock, 0);
    assert_eq!(v.held, STOCK);
    assert_eq!(v.stock, STOCK);
    assert_eq!(v.audit_passed, Some(true));
    assert!(v.passed, "verify: {v:?}");
    assert!(r.rejections_rps > 0.0, "the headline figure counts sold_out rejections");
    assert_latency_sane(&r);
}

#[test]
fn mixed_in_process_sees_abandoned_orders_expire() {
    let mut args = quiet(Scenario::Mixed, "in-process");
    args.durability = BenchDurability::None;
    args.payment_timeout_ms = 200;
    args.duration = Duration::from_millis(1_500);
    args.connections = 2;
    args.pipeline = 2;
    args.skus = 8;
    args.users = Some(500);
    let started = Instant::now();
    let r = surge_loadgen::run(&args).expect("mixed runs");
    eprintln!("{}", r.to_table());
    assert!(started.elapsed() < Duration::from_secs(15), "a duration-bounded run stops: {:?}", started.elapsed());
    assert!(r.elapsed_s >= 1.4, "runs for its duration: {}", r.elapsed_s);
    assert!(r.requests > 0 && r.ok > 0, "{r:?}");
    assert!(!r.errors.contains_key("connection_lost"), "no lane lost its engine: {:?}", r.errors);
    assert!(r.first_failure.is_none(), "{:?}", r.first_failure);
    let v = r.verify.as_ref().expect("verify");
    assert!(v.passed, "verify: {v:?}");
    assert_eq!(v.oversold, 0);
    assert_eq!(v.remaining_stock + v.held, v.stock, "every unit accounted for: {v:?}");
    assert!(
        v.expired_seen.expect("mixed reports expired_seen") > 0,
        "abandoned orders canceled by their deadline: {v:?}"
    );
    // The engine's audit is a cut across shards: it only holds once no payment deadline can
    // fire any more (orders created in the run's last `payment_timeout_ms` expire after it).
    assert_eq!(v.audit_passed, Some(true), "{v:?}");
    assert_latency_sane(&r);
}

// ---------------------------------------------------------------------------------------------
// Surge server targets (TCP, WebSocket)
// ---------------------------------------------------------------------------------------------

/// A server on loopback with limits high enough for a benchmark (the tests' defaults allow
/// 20 requests per second per user).
async fn bench_server(dir: &std::path::Path) -> ServerHandle {
    let mut cfg = gateway_support::config(dir);
    cfg.limits.per_user_rps = 1_000_000;
    cfg.limits.per_user_burst = 1_000_000;
    cfg.limits.per_connection_rps = 1_000_000;
    cfg.limits.per_connection_burst = 1_000_000;
    Server::start(cfg).await.expect("server starts")
}

/// `surge_loadgen::run` builds its own runtime: call it from a blocking thread.
async fn run_blocking(args: BenchArgs) -> Result<Report, LoadgenError> {
    tokio::task::spawn_blocking(move || surge_loadgen::run(&args)).await.expect("run does not panic")
}

fn flash_sale_against(target: String, users: u64, stock: u64) -> BenchArgs {
    let mut args = quiet(Scenario::FlashSale, &target);
    args.token = Some(gateway_support::ADMIN.into());
    args.users = Some(users);
    args.stock = stock;
    args.connections = 4;
    args.pipeline = 4;
    args
}

fn assert_flash_sale(r: &Report, users: u64, stock: u64) {
    assert_eq!(r.requests, users, "{r:?}");
    assert_eq!(r.ok, stock, "exactly the stock is sold: {r:?}");
    assert_eq!(sold_out(r), users - stock, "{:?}", r.errors);
    assert_eq!(r.errors.len(), 1, "only sold_out: {:?}", r.errors);
    let v = r.verify.as_ref().expect("verify");
    assert!(v.passed, "verify: {v:?}");
    assert_eq!((v.oversold, v.remaining_stock, v.held), (0, 0, stock), "{v:?}");
    assert_eq!(v.audit_passed, None, "a server's audit is not the load generator's");
    assert_eq!(r.durability, None, "durability is the server's own setting");
    assert_latency_sane(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_over_tcp_and_websocket_against_a_real_server() {
    const USERS: u64 = 400;
    const STOCK: u64 = 15;
    let dir = tempfile::tempdir().unwrap();
    let server = bench_server(dir.path()).await;

    let tcp = format!("tcp://{}", server.tcp_addr);
    let r = run_blocking(flash_sale_against(tcp.clone(), USERS, STOCK)).await.expect("flash-sale over TCP");
    assert_eq!(r.target_kind, "surge-tcp");
    assert_eq!(r.target, tcp);
    assert_flash_sale(&r, USERS, STOCK);
    // The server agrees, independently of the load generator's own check.
    let skus = server.engine().list_skus();
    assert_eq!(skus.len(), 1, "one SKU per run");
    assert!(skus[0].sku_id.to_string().starts_with("bench-"), "{:?}", skus[0].sku_id);
    assert_eq!((skus[0].available, skus[0].reserved + skus[0].sold), (0, STOCK));
    assert_eq!(server.engine().order_count() as u64, STOCK);

    let ws = format!("ws://{}/ws", server.http_addr);
    let r = run_blocking(flash_sale_against(ws.clone(), USERS, STOCK)).await.expect("flash-sale over WebSocket");
    assert_eq!(r.target_kind, "surge-ws");
    assert_flash_sale(&r, USERS, STOCK);
    let skus = server.engine().list_skus();
    assert_eq!(skus.len(), 2, "the second run made its own SKU (fresh run id)");
    assert!(skus.iter().all(|s| s.available == 0 && s.reserved + s.sold == STOCK), "{skus:?}");
    assert_eq!(server.engine().order_count() as u64, 2 * STOCK);

    // A wrong token, or none: refused at connect, over either transport.
    for target in [tcp.clone(), ws.clone()] {
        let mut bad = flash_sale_against(target.clone(), 10, 1);
        bad.token = Some("not-a-token".into());
        match run_blocking(bad).await {
            Err(LoadgenError::Connect { target: t, reason }) => {
                assert_eq!(t, target);
                assert!(reason.contains("auth refused"), "{reason}");
            }
            other => panic!("wrong token against {target}: expected Connect, got {other:?}"),
        }
        let mut none = flash_sale_against(target.clone(), 10, 1);
        none.token = None;
        assert!(
            matches!(run_blocking(none).await, Err(LoadgenError::Connect { .. })),
            "no token against {target} is a Connect error"
        );
    }
    assert_eq!(server.engine().list_skus().len(), 2, "refused runs created nothing");

    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_connect_error() {
    // A port that was just free: bind, read it, close.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut args = flash_sale_against(format!("tcp://127.0.0.1:{port}"), 10, 1);
    args.connections = 1;
    assert!(matches!(run_blocking(args).await, Err(LoadgenError::Connect { .. })));
}

// ---------------------------------------------------------------------------------------------
// Open loop: coordinated-omission correction against a scripted peer
// ---------------------------------------------------------------------------------------------

/// A loopback TCP peer speaking just enough of Surge's JSON-lines protocol, which stalls once
/// (before answering its `stall_at`-th `create_order`) for `stall`.
struct StallingPeer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    orders: Arc<AtomicU64>,
    acceptor: Option<JoinHandle<()>>,
}

impl StallingPeer {
    fn start(stall_at: u64, stall: Duration) -> StallingPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let orders = Arc::new(AtomicU64::new(0));
        let (stop2, orders2) = (stop.clone(), orders.clone());
        let acceptor = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for stream in listener.incoming() {
                if stop2.load(Ordering::Acquire) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let orders = orders2.clone();
                conns.push(std::thread::spawn(move || serve_scripted(stream, &orders, stall_at, stall)));
            }
            for c in conns {
                let _ = c.join();
            }
        });
        StallingPeer { addr, stop, orders, acceptor: Some(acceptor) }
    }
}

impl Drop for StallingPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the acceptor; it then joins the connection threads, which end at EOF (the load
        // generator's runtime is gone by now, so its sockets are closed).
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn serve_scripted(stream: TcpStream, orders: &AtomicU64, stall_at: u64, stall: Duration) {
    let _ = stream.set_nodelay(true);
    let mut wr = stream.try_clone().expect("clone socket");
    let rd = BufReader::new(stream);
    for line in rd.lines() {
        let Ok(line) = line else { return };
        let Ok(req) = serde_json::from_str::<Value>(&line) else { return };
        let id = req["id"].clone();
        let reply = match req["op"].as_str().unwrap_or("") {
            "auth" => json!({"id": id, "ok": true, "result": {"role": "admin"}}),
            "create_sku" => json!({"id": id, "ok": true, "result": {}}),
            "create_order" => {
                let n = orders.fetch_add(1, Ordering::AcqRel) + 1;
                if n == stall_at {
                    std::thread::sleep(stall);
                }
                json!({"id": id, "ok": true, "result": {"order_id": n.to_string(), "total": "1.00"}})
            }
            "get_sku" => {
                let n = orders.load(Ordering::Acquire);
                json!({"id": id, "ok": true, "result": {"available": HOT_SKU_STOCK - n, "reserved": n, "sold": 0}})
            }
            _ => json!({"id": id, "ok": false, "error": {"code": "unknown_op", "message": "scripted peer"}}),
        };
        let mut out = reply.to_string();
        out.push('\n');
        if wr.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

const STALL: Duration = Duration::from_millis(300);
const STALL_AT: u64 = 50;
const PACED_REQUESTS: u64 = 800;

fn stall_run(peer: &StallingPeer, rate: Option<f64>) -> Report {
    let mut args = quiet(Scenario::HotSku, &format!("tcp://{}", peer.addr));
    args.token = Some("scripted".into());
    args.rate = rate;
    args.connections = 1;
    args.pipeline = 1;
    args.requests = Some(PACED_REQUESTS);
    let r = surge_loadgen::run(&args).expect("run against the scripted peer");
    eprintln!("{}", r.to_table());
    assert_eq!(r.requests, PACED_REQUESTS, "{r:?}");
    assert_eq!(r.ok, PACED_REQUESTS, "{r:?}");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(peer.orders.load(Ordering::Acquire), PACED_REQUESTS, "the peer saw every order once");
    assert!(r.verify.as_ref().is_some_and(|v| v.passed), "the scripted peer keeps consistent counts: {:?}", r.verify);
    assert_latency_sane(&r);
    r
}

#[test]
fn open_loop_charges_the_stall_to_every_request_due_during_it() {
    // At 1000 req/s, request k is due at k ms. The peer holds order 50 (due at 49 ms) for
    // 300 ms, so the ~300 requests due from 50 ms to 350 ms are all late by up to 300 ms and
    // are sent only after the stall: measured from their due times, well over 10% of the 800
    // samples exceed 100 ms (about 200 of them, for a fast catch-up; more, for a slow one).
    // Measured from their send times (no correction) only one sample would be slow.
    let peer = StallingPeer::start(STALL_AT, STALL);
    let r = stall_run(&peer, Some(1_000.0));
    assert_eq!(r.rate_rps, Some(1_000.0));
    assert!(
        r.elapsed_s >= 0.75,
        "a paced run of {PACED_REQUESTS} requests at 1000/s takes at least 0.8 s: {}",
        r.elapsed_s
    );
    let l = r.latency_us;
    assert!(l.max >= 250_000, "the stall itself is measured: {l:?}");
    assert!(l.p90 >= 100_000, "requests due during the stall carry it (coordinated omission corrected): {l:?}");
    assert!(l.p99 >= 200_000, "{l:?}");
    // The per-second view puts the stall in the first second, where every request ran.
    let per_s = &r.latency_us_p99_per_second;
    assert!(!per_s.is_empty() && per_s[0] >= 200_000, "p99 per second: {per_s:?}");
}

#[test]
fn closed_loop_records_the_same_stall_as_one_slow_sample() {
    // The contrast that makes the open-loop test meaningful: the same stall, closed loop.
    let peer = StallingPeer::start(STALL_AT, STALL);
    let r = stall_run(&peer, None);
    assert_eq!(r.rate_rps, None);
    let l = r.latency_us;
    assert!(l.max >= 250_000, "the stalled request is measured: {l:?}");
    assert!(l.p90 < 100_000, "only the stalled request is slow when timing from the send: {l:?}");
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

fn assert_invalid(args: &BenchArgs, what: &str) {
    match surge_loadgen::run(args) {
        Err(LoadgenError::InvalidSettings(m)) => assert!(!m.is_empty(), "{what}: a reason is given"),
        Err(e) => panic!("{what}: expected InvalidSettings, got {e}"),
        Ok(r) => panic!("{what}: expected InvalidSettings, the run went ahead: {r:?}"),
    }
}

#[test]
fn invalid_settings_are_refused_before_anything_runs() {
    // Nothing listens on these addresses: a refusal must come from validation, not a connect.
    let mut a = quiet(Scenario::Mixed, "redis://127.0.0.1:1");
    a.durability = BenchDurability::None;
    assert_invalid(&a, "mixed against Redis");
    assert_invalid(&quiet(Scenario::Mixed, "postgres://postgres@127.0.0.1:1/postgres"), "mixed against PostgreSQL");

    for rate in [0.0, -5.0, f64::NAN, f64::INFINITY] {
        let mut a = quiet(Scenario::HotSku, "in-process");
        a.rate = Some(rate);
        assert_invalid(&a, &format!("rate {rate}"));
    }
    assert_invalid(&quiet(Scenario::HotSku, "http://x"), "target http://x");
    assert_invalid(&quiet(Scenario::HotSku, "127.0.0.1:7878"), "target without a scheme");

    let mut a = quiet(Scenario::HotSku, "in-process");
    a.connections = 0;
    assert_invalid(&a, "connections 0");
    let mut a = quiet(Scenario::HotSku, "in-process");
    a.pipeline = 0;
    assert_invalid(&a, "pipeline 0");
    let mut a = quiet(Scenario::HotSku, "in-process");
    a.connections = 1_000;
    a.pipeline = 1_000;
    assert_invalid(&a, "more lanes than LANES_MAX");
    let mut a = quiet(Scenario::FlashSale, "in-process");
    a.stock = 0;
    assert_invalid(&a, "stock 0");
    let mut a = quiet(Scenario::HotSku, "in-process");
    a.duration = Duration::ZERO;
    assert_invalid(&a, "zero duration without a request budget");
    let mut a = quiet(Scenario::HotSku, "in-process");
    a.threads = 0;
    assert_invalid(&a, "threads 0");
}

// ---------------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------------

/// Kills the child on drop (a panicking test leaves no process behind).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct CliOutput {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run `surge bench <args>` with a time limit.
fn surge_bench(args: &[&str]) -> CliOutput {
    let child = Command::new(env!("CARGO_BIN_EXE_surge"))
        .arg("bench")
        .args(args)
        .env_remove("SURGE_ADMIN_TOKEN")
        .env_remove("SURGE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn surge bench");
    let mut guard = ChildGuard(child);
    let mut out = guard.0.stdout.take().unwrap();
    let mut err = guard.0.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = guard.0.try_wait().expect("wait") {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "surge bench {args:?} did not finish in 30 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    CliOutput {
        success: status.success(),
        code: status.code(),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

#[test]
fn cli_prints_one_json_report_with_the_documented_fields() {
    let out = surge_bench(&[
        "--scenario",
        "flash-sale",
        "--durability",
        "none",
        "--users",
        "300",
        "--stock",
        "10",
        "--connections",
        "4",
        "--json",
        "--quiet",
        "--label",
        "cli test",
    ]);
    assert!(out.success, "exit {:?}; stderr: {}", out.code, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stdout is one JSON object: {:?}", out.stdout);
    let v: Value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    assert!(v.is_object());
    for field in [
        "label",
        "scenario",
        "target",
        "target_kind",
        "durability",
        "connections",
        "pipeline",
        "batch",
        "wal_bytes",
        "wal_bytes_per_order",
        "wal_commits",
        "rate_rps",
        "seed",
        "elapsed_s",
        "process_cpu_s",
        "cpu_us_per_request",
        "requests",
        "ok",
        "errors",
        "throughput_rps",
        "ok_rps",
        "rejections_rps",
        "latency_us",
        "latency_us_p99_per_second",
        "verify",
    ] {
        assert!(v.get(field).is_some(), "field {field} present: {v}");
    }
    for p in ["p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(v["latency_us"][p].is_number(), "latency_us.{p} is a number: {v}");
    }
    assert_eq!(v["label"], "cli test");
    assert_eq!(v["scenario"], "flash-sale");
    assert_eq!(v["target"], "in-process");
    assert_eq!(v["target_kind"], "in-process");
    assert_eq!(v["durability"], "none");
    assert_eq!(v["connections"], 4);
    assert_eq!(v["pipeline"], 1);
    assert_eq!(v["batch"], 1);
    assert!(v["rate_rps"].is_null(), "closed loop: {v}");
    assert_eq!(v["requests"], 300);
    assert_eq!(v["ok"], 10);
    assert_eq!(v["errors"]["sold_out"], 290);
    assert!(v["elapsed_s"].as_f64().unwrap() > 0.0);
    // The run's CPU: positive, and per request the quotient of the two.
    let cpu_s = v["process_cpu_s"].as_f64().expect("process_cpu_s on Linux");
    assert!(cpu_s > 0.0, "{v}");
    let per = v["cpu_us_per_request"].as_f64().expect("cpu_us_per_request");
    assert!((per - cpu_s * 1e6 / 300.0).abs() < 1e-6 * per.max(1.0), "{v}");
    assert!(v["rejections_rps"].as_f64().unwrap() > 0.0);
    assert_eq!(v["verify"]["passed"], true, "{v}");
    assert_eq!(v["verify"]["oversold"], 0);
    assert_eq!(v["verify"]["remaining_stock"], 0);
    assert_eq!(v["verify"]["audit_passed"], true);
    let (p50, max) = (v["latency_us"]["p50"].as_u64().unwrap(), v["latency_us"]["max"].as_u64().unwrap());
    assert!(p50 > 0 && p50 <= max, "{v}");
}

#[test]
fn cli_refuses_invalid_settings_with_a_message_and_a_failure_code() {
    let out = surge_bench(&["--target", "http://x", "--durability", "none", "--requests", "10", "--quiet"]);
    assert!(!out.success, "invalid target must fail; stdout: {}", out.stdout);
    assert!(out.stderr.contains("http://x"), "stderr names the bad target: {:?}", out.stderr);
    assert!(out.stderr.contains("invalid settings"), "{:?}", out.stderr);
    assert!(out.stdout.trim().is_empty(), "no report on stdout: {:?}", out.stdout);

    // A value clap itself rejects.
    let out = surge_bench(&["--scenario", "flash-mob", "--quiet"]);
    assert!(!out.success);
    assert!(out.stderr.contains("flash-mob"), "{:?}", out.stderr);
}
