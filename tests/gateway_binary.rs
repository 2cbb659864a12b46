//! The real `surge serve` binary: starts on free ports with a temp data directory, serves a
//! client, stops on SIGTERM with exit code 0, and its data directory recovers.

mod gateway_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway_support::*;
use serde_json::json;
use surge::engine::{EngineConfig, OrderId, OrderStatus};
use surge::persistence::{DurableEngine, PersistenceConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surge_serve_runs_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args(["serve", "--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--shards", "2"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("SURGE_ADMIN_TOKEN", ADMIN)
        .env("SURGE_SERVICE_TOKEN", SERVICE)
        .env("SURGE_CONFIG", concat!(env!("CARGO_MANIFEST_DIR"), "/config/surge.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn surge serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut tcp_addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"tcp") {
            tcp_addr = words.get(1).and_then(|a| a.parse::<std::net::SocketAddr>().ok());
        }
        if line.contains("tokens") {
            assert!(!line.contains(ADMIN) && !line.contains(SERVICE), "configured tokens are not printed");
            break;
        }
    }
    let addr = tcp_addr.expect("surge serve prints its TCP address");

    let mut admin = Tcp::login(addr, ADMIN).await;
    admin.ok(sku("A", 4, None)).await;
    let mut c = Tcp::login(addr, SERVICE).await;
    let o1 = c.ok(order("u1", "A", 1, "k1")).await;
    let o2 = c.ok(order("u2", "A", 2, "k2")).await;
    c.ok(json!({"op": "pay", "order_id": o1["order_id"], "payment_id": "psp-1", "amount": o1["total"]})).await;

    // SIGTERM: graceful shutdown, exit 0 in bounded time.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("surge serve did not exit within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(c.closed().await, "connections are closed at shutdown");

    let db = DurableEngine::open(PersistenceConfig::new(dir.path()), EngineConfig::default()).unwrap();
    let e = db.engine();
    assert_eq!(e.get_order(OrderId(order_id(&o1))).unwrap().status, OrderStatus::Paid);
    assert_eq!(e.get_order(OrderId(order_id(&o2))).unwrap().status, OrderStatus::PendingPayment);
    let s = e.get_sku("A").unwrap();
    assert_eq!((s.available, s.reserved, s.sold), (1, 2, 1));
    assert!(dir.path().join("snapshots").read_dir().unwrap().next().is_some(), "a snapshot was written at shutdown");
    db.close().unwrap();
}
