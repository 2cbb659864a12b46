//! `surge serve --log-format json`: every stderr line is one JSON object; requests log their
//! request id, op, code, order_id and sku_id as fields; no token and no payload ever appears.
//! The binary also prints and serves its metrics address.

mod gateway_support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gateway_support::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_ids_as_fields_and_never_a_token_or_payload() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_surge"))
        .args(["serve", "--log-format", "json", "--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0", "--shards", "2"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("SURGE_ADMIN_TOKEN", ADMIN)
        .env("SURGE_SERVICE_TOKEN", SERVICE)
        .env("SURGE_CONFIG", concat!(env!("CARGO_MANIFEST_DIR"), "/config/surge.toml"))
        .env("RUST_LOG", "info,surge_gateway=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn surge serve");
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut tcp_addr, mut metrics_url) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            Some(&"tcp") => tcp_addr = words.get(1).and_then(|a| a.parse::<std::net::SocketAddr>().ok()),
            Some(&"metrics") => metrics_url = words.get(1).map(|s| s.to_string()),
            _ => {}
        }
        if line.contains("tokens") {
            break;
        }
    }
    let addr = tcp_addr.expect("TCP address printed");
    let metrics_url = metrics_url.expect("metrics address printed");
    let metrics_addr: std::net::SocketAddr = metrics_url
        .strip_prefix("http://")
        .and_then(|s| s.strip_suffix("/metrics"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("metrics line: {metrics_url}"));

    let mut admin = Tcp::login(addr, ADMIN).await;
    admin.ok(sku("sku-logged", 5, None)).await;
    let mut c = Tcp::login(addr, SERVICE).await;
    let secret_key = "idempotency-key-not-for-logs";
    let o = c
        .ok(json!({"id": "req-42", "op": "create_order", "user_id": "u-logged",
        "items": [{"sku_id": "sku-logged", "qty": 1}], "idempotency_key": secret_key}))
        .await;
    let order_id = order_id(&o);
    let mut intruder = Tcp::connect(addr).await;
    let wrong = "wrong-token-must-not-be-logged";
    let r = intruder.call(json!({"op": "auth", "token": wrong})).await;
    assert_eq!(r["error"]["code"], "unauthorized");

    let (status, body) = http_get(metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("# HELP surge_requests_total"), "{body}");
    assert!(body.contains("surge_requests_total{op=\"create_order\",code=\"ok\"} 1"), "{body}");

    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("surge serve did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = err_reader.join().unwrap();

    let mut events = Vec::new();
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
        events.push(v);
    }
    // Only the final plain "surge serve: ..." lines of main() may be non-JSON.
    for line in log.lines().filter(|l| !l.starts_with('{')) {
        assert!(line.starts_with("surge serve:"), "non-JSON log line: {line}");
    }
    assert!(events.iter().any(|e| e["message"] == "surge gateway listening"), "{log}");
    let req = events
        .iter()
        .find(|e| e["message"] == "request" && e["op"] == "create_order")
        .unwrap_or_else(|| panic!("no create_order request line in:\n{log}"));
    assert_eq!(req["request_id"], "req-42");
    assert_eq!(req["code"], "ok");
    assert_eq!(req["order_id"], order_id);
    assert_eq!(req["sku_id"], "sku-logged");
    assert!(events.iter().any(|e| e["message"] == "authentication failed; closing"), "{log}");
    for secret in [ADMIN, SERVICE, wrong, secret_key] {
        assert!(!log.contains(secret), "{secret} appears in the log:\n{log}");
    }
}
