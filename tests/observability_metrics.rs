//! Metrics: after real traffic over TCP and WebSocket, `/metrics` has the promised series with
//! the right values, HELP for every metric, histograms (not summaries), no order or user id as a
//! label, every series the Grafana dashboard queries, and it passes `promtool check metrics`.
//!
//! promtool: if it is on PATH the exposition is checked with it; `SURGE_REQUIRE_PROMTOOL=1`
//! (set by `scripts/promtool-check.sh`, which CI runs) makes its absence a failure.
//! `SURGE_METRICS_DUMP=<file>` writes the scraped exposition there.

mod gateway_support;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway_support::*;
use serde_json::{json, Value};

/// One sample: name, labels, value.
type Series = (String, Vec<(String, String)>, f64);

/// Parsed text exposition: series (name{labels}) → value, and the names with TYPE / HELP.
struct Exposition {
    text: String,
    series: Vec<Series>,
    types: HashMap<String, String>,
    helps: BTreeSet<String>,
}

fn parse(text: &str) -> Exposition {
    let mut e = Exposition { text: text.to_owned(), series: Vec::new(), types: HashMap::new(), helps: BTreeSet::new() };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            e.types.insert(w.next().unwrap().to_owned(), w.next().unwrap().to_owned());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            e.helps.insert(rest.split_whitespace().next().unwrap().to_owned());
        } else if !line.is_empty() && !line.starts_with('#') {
            let (head, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match head.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or(f64::NAN),
            };
            e.series.push((name.to_owned(), labels, value));
        }
    }
    e
}

impl Exposition {
    /// The value of the series `name` whose labels include every `(k, v)` of `want`.
    fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.series
            .iter()
            .find(|(n, labels, _)| {
                n == name && want.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
    }

    fn must(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.get(name, want).unwrap_or_else(|| panic!("no series {name}{want:?} in:\n{}", self.text))
    }
}

async fn scrape(addr: SocketAddr) -> Exposition {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "GET /metrics: {body}");
    parse(&body)
}

fn metrics_config(dir: &std::path::Path) -> surge::gateway::FileConfig {
    let mut cfg = config(dir);
    cfg.metrics.addr = "127.0.0.1:0".into();
    cfg.metrics.sample_interval_ms = 20;
    cfg.metrics.sku_label_max = 2;
    cfg.limits.per_user_rps = 1;
    cfg.limits.per_user_burst = 1;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_traffic_are_complete_correct_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let server = surge::gateway::Server::start(metrics_config(dir.path())).await.expect("server starts");
    let maddr = server.metrics_addr.expect("the exporter listens");
    assert!(maddr.ip().is_loopback());

    // Traffic: three SKUs (the third beyond sku_label_max = 2), a sale, a sell-out, a payment,
    // a cancel, a rate limit, an unknown op, a failed login, a WebSocket client.
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    for (id, stock) in [("A", 3), ("B", 5), ("C", 7)] {
        admin.ok(sku(id, stock, None)).await;
    }
    let mut c = Tcp::login(server.tcp_addr, SERVICE).await;
    let o1 = c.ok(order("user-one", "A", 1, "k1")).await;
    let o2 = c.ok(order("user-two", "A", 2, "k2")).await;
    let late = c.call(order("user-three", "A", 1, "k3")).await;
    assert_eq!(late["error"]["code"], "sold_out", "{late}");
    c.ok(json!({"op": "pay", "order_id": o1["order_id"], "payment_id": "psp-1", "amount": o1["total"]})).await;
    c.ok(json!({"op": "cancel_order", "order_id": o2["order_id"]})).await;
    let list = json!({"op": "list_orders", "user_id": "user-four", "limit": 10});
    c.ok(list.clone()).await;
    let limited = c.call(list).await;
    assert_eq!(limited["error"]["code"], "rate_limited", "{limited}");
    let unknown = c.call(json!({"op": "no_such_op"})).await;
    assert_eq!(unknown["error"]["code"], "unknown_op");
    let mut intruder = Tcp::connect(server.tcp_addr).await;
    let r = intruder.call(json!({"op": "auth", "token": "wrong-token-123"})).await;
    assert_eq!(r["error"]["code"], "unauthorized");
    let mut ws = Ws::connect(server.http_addr, Some(SERVICE)).await.expect("ws");
    ws.ok(json!({"op": "get_sku", "sku_id": "B"})).await;
    // create_order requests written at once reach the engine together, not one by one. SKU D
    // has no stock (so the other SKUs' figures stay as they are): every answer is sold_out.
    admin.ok(sku("D", 0, None)).await;
    let mut burst = String::new();
    for i in 0..24 {
        let mut req = order(&format!("burst-{i}"), "D", 1, "k");
        req["id"] = json!(i);
        burst.push_str(&req.to_string());
        burst.push('\n');
    }
    let mut pipelined = Tcp::login(server.tcp_addr, SERVICE).await;
    pipelined.send_raw(burst.as_bytes()).await;
    for _ in 0..24 {
        let r = pipelined.reply().await;
        assert_eq!(r["error"]["code"], "sold_out", "{r}");
    }

    // The sampler copies engine state every 20 ms: wait until the final stock shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape(maddr).await;
        let settled = m.get("surge_sku_stock_units", &[("sku", "A"), ("state", "available")]) == Some(2.0)
            && m.get("surge_sku_stock_units", &[("sku", "A"), ("state", "sold")]) == Some(1.0)
            && m.get("surge_order_transitions_total", &[("from", "pending_payment"), ("to", "canceled")]).is_some();
        if settled || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Ok(path) = std::env::var("SURGE_METRICS_DUMP") {
        std::fs::write(&path, &m.text).expect("write the dump");
    }

    // Requests by op and code, latency histograms with buckets.
    // Exact: the pipelined burst's answers are counted per run of alike answers, and a run
    // must count each of its requests once.
    assert_eq!(m.must("surge_requests_total", &[("op", "create_order"), ("code", "ok")]), 2.0);
    assert_eq!(m.must("surge_requests_total", &[("op", "create_order"), ("code", "sold_out")]), 25.0);
    assert!(m.must("surge_requests_total", &[("op", "list_orders"), ("code", "rate_limited")]) >= 1.0);
    assert!(m.must("surge_requests_total", &[("op", "unknown"), ("code", "unknown_op")]) >= 1.0);
    assert!(m.must("surge_requests_total", &[("op", "auth"), ("code", "unauthorized")]) >= 1.0);
    assert!(m.must("surge_requests_total", &[("op", "get_sku"), ("code", "ok")]) >= 1.0);
    assert!(m.get("surge_requests_total", &[("op", "no_such_op")]).is_none(), "client strings never become labels");
    assert_eq!(m.types["surge_request_duration_seconds"], "histogram");
    assert_eq!(m.must("surge_request_duration_seconds_count", &[("op", "create_order")]), 27.0);
    assert!(m.get("surge_request_duration_seconds_bucket", &[("op", "pay"), ("le", "0.005")]).is_some());
    assert!(!m.text.contains("quantile="), "histograms, not summaries");
    let (batched, batches) = (m.must("surge_create_batch_size_sum", &[]), m.must("surge_create_batch_size_count", &[]));
    assert!(batched >= 27.0, "every create_order is counted: {batched}");
    assert!(batched - batches >= 12.0, "pipelined creates are submitted together: {batched} in {batches} batches");
    assert!(m.get("surge_create_batch_size_bucket", &[("le", "16")]).is_some(), "batch-size buckets");

    // Orders: created, rejected by reason, transitions.
    assert!(m.must("surge_orders_created_total", &[]) >= 2.0);
    assert_eq!(m.must("surge_orders_rejected_total", &[("reason", "sold_out")]), 25.0);
    assert!(m.must("surge_order_transitions_total", &[("from", "pending_payment"), ("to", "paid")]) >= 1.0);
    assert!(m.must("surge_order_transitions_total", &[("from", "pending_payment"), ("to", "canceled")]) >= 1.0);

    // Stock per SKU, capped: A and B have their own label, C is summed under _other.
    assert_eq!(m.must("surge_sku_stock_units", &[("sku", "A"), ("state", "available")]), 2.0);
    assert_eq!(m.must("surge_sku_stock_units", &[("sku", "A"), ("state", "reserved")]), 0.0);
    assert_eq!(m.must("surge_sku_stock_units", &[("sku", "A"), ("state", "sold")]), 1.0);
    assert_eq!(m.must("surge_sku_stock_units", &[("sku", "B"), ("state", "available")]), 5.0);
    assert_eq!(m.must("surge_sku_stock_units", &[("sku", "_other"), ("state", "available")]), 7.0);
    assert!(m.get("surge_sku_stock_units", &[("sku", "C")]).is_none(), "beyond the cap: aggregated");

    // WAL, recovery, shards.
    assert!(m.must("surge_wal_batches_total", &[]) > 0.0);
    assert!(m.must("surge_wal_events_total", &[]) > 0.0);
    assert!(m.must("surge_wal_bytes_total", &[]) > 0.0);
    assert!(m.must("surge_wal_durable_lsn", &[]) > 0.0);
    assert!(m.must("surge_wal_flush_duration_seconds_count", &[]) > 0.0);
    assert!(m.must("surge_wal_batch_size_count", &[]) > 0.0);
    assert!(m.get("surge_wal_batch_size_bucket", &[("le", "1")]).is_some(), "batch size has its own buckets");
    assert!(m.must("surge_recovery_duration_seconds", &[]) >= 0.0);
    assert!(m.get("surge_recovery_events_replayed", &[]).is_some());
    for shard in ["0", "1"] {
        assert!(m.get("surge_shard_mailbox_depth", &[("shard", shard)]).is_some());
        assert!(m.get("surge_shard_messages_handled_total", &[("shard", shard)]).is_some());
    }
    let handled: f64 = m.series.iter().filter(|s| s.0 == "surge_shard_messages_handled_total").map(|s| s.2).sum();
    assert!(handled >= 8.0, "shards handled the traffic: {handled}");

    // Gateway.
    assert!(m.must("surge_gateway_connections", &[]) >= 3.0, "admin, client and ws are open");
    assert!(m.must("surge_gateway_connections_opened_total", &[("transport", "tcp")]) >= 3.0);
    assert!(m.must("surge_gateway_connections_opened_total", &[("transport", "ws")]) >= 1.0);
    assert!(m.must("surge_gateway_auth_failures_total", &[]) >= 1.0);
    assert!(m.must("surge_gateway_rate_limited_total", &[("scope", "user")]) >= 1.0);
    assert!(m.get("surge_gateway_overloaded_total", &[("cause", "mailbox")]).is_some());

    // Process metrics (Linux).
    if cfg!(target_os = "linux") {
        assert!(m.must("surge_process_resident_memory_bytes", &[]) > 0.0);
        assert!(m.get("surge_process_cpu_seconds_total", &[]).is_some());
    }

    // Conventions: every metric has HELP and TYPE, the surge_ prefix, _total on counters only.
    for (name, kind) in &m.types {
        assert!(m.helps.contains(name), "{name} has no HELP");
        assert!(name.starts_with("surge_"), "{name} lacks the surge_ prefix");
        assert_eq!(kind == "counter", name.ends_with("_total"), "{name} ({kind}): _total iff counter");
        assert_ne!(kind, "summary", "{name} is a summary");
        if kind == "histogram" {
            assert!(name.ends_with("_seconds") || name.ends_with("_size"), "{name}: histogram in base units");
        }
    }

    // Never an order id or user id as a label (name or value).
    for (name, labels, _) in &m.series {
        for (k, v) in labels {
            assert!(!["order_id", "user_id", "user", "order"].contains(&k.as_str()), "{name} has label {k}");
            assert!(!v.starts_with("user-"), "{name} has a user id as a label value: {v}");
        }
    }
    for o in [&o1, &o2] {
        let id = order_id(o).to_string();
        assert!(!m.text.contains(&id), "order id {id} appears in the exposition");
    }

    // The dashboard only queries series that exist.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana/surge-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is valid JSON");
    let mut queried = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')) {
                if word.starts_with("surge_") {
                    queried.insert(word.to_owned());
                }
            }
        }
    }
    assert!(queried.len() >= 20, "{queried:?}");
    for q in &queried {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| q.strip_suffix(s).filter(|b| m.types.get(*b).is_some_and(|t| t == "histogram")))
            .unwrap_or(q);
        assert!(m.types.contains_key(base), "the dashboard queries {q}, which is not exported");
    }

    promtool_check(&m.text);

    drop((admin, c, intruder, ws));
    server.shutdown().await.unwrap();
}

/// `promtool check metrics` on the exposition, if promtool is installed (required under
/// SURGE_REQUIRE_PROMTOOL=1).
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let required = std::env::var("SURGE_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(!required, "SURGE_REQUIRE_PROMTOOL=1 but promtool cannot run: {e}");
            eprintln!("promtool not found ({e}): skipping `promtool check metrics`");
            return;
        }
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}");
}

#[test]
fn the_dashboard_is_importable_grafana_json() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana/surge-dashboard.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    assert_eq!(dash["__inputs"][0]["pluginId"], "prometheus", "import asks for a Prometheus data source");
    let titles: Vec<&str> = dash["panels"].as_array().unwrap().iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Throughput by op",
        "Request latency p50 / p99 by op",
        "Stock available by SKU",
        "Order rejections by reason",
        "WAL flush latency p50 / p99",
        "WAL batch size",
        "Connections",
    ] {
        assert!(titles.contains(&want), "panel {want} missing: {titles:?}");
    }
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel ids are unique");
        if p["type"] != "row" {
            assert!(p["description"].as_str().is_some_and(|d| !d.is_empty()), "{} has a description", p["title"]);
            assert!(!p["targets"].as_array().unwrap().is_empty());
        }
    }
}
