//! Connection limits over real sockets: idle timeout, in-flight back-pressure without loss, and
//! a slow subscriber cut off without slowing anyone else.

mod gateway_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use gateway_support::{config, Tcp, ADMIN, SERVICE};
use serde_json::json;
use surge::gateway::Server;
use surge::persistence::Durability;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_with_a_final_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.limits.idle_timeout_ms = 300;
    let server = Server::start(cfg).await.expect("start");
    let mut c = Tcp::login(server.tcp_addr, SERVICE).await;
    assert_eq!(c.ok(json!({"op": "ping"})).await["pong"], true);
    // Say nothing for longer than the idle timeout.
    let last = c.next().await.expect("a final error before the close");
    assert_eq!(last["error"]["code"], "idle_timeout", "{last}");
    assert!(c.closed().await, "the connection closes after idle_timeout");
    // An active connection is not closed.
    let mut busy = Tcp::login(server.tcp_addr, SERVICE).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(busy.ok(json!({"op": "ping"})).await["pong"], true);
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_past_the_in_flight_limit_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.limits.max_in_flight = 2;
    cfg.limits.per_connection_rps = 100_000;
    cfg.limits.per_connection_burst = 100_000;
    cfg.limits.per_user_rps = 100_000;
    cfg.limits.per_user_burst = 100_000;
    let server = Server::start(cfg).await.expect("start");
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(json!({"op": "create_sku", "sku_id": "A", "name": "A", "price": "1.00", "initial_stock": 1000})).await;
    let mut c = Tcp::login(server.tcp_addr, SERVICE).await;
    // 200 requests written at once: the server reads at most 2 ahead (back-pressure), but every
    // request is answered exactly once.
    let mut batch = String::new();
    for i in 0..200 {
        let req = json!({"id": i, "op": "create_order", "user_id": format!("u{i}"),
                         "items": [{"sku_id": "A", "qty": 1}], "idempotency_key": "k"});
        batch.push_str(&req.to_string());
        batch.push('\n');
    }
    c.send_raw(batch.as_bytes()).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let r = c.reply().await;
        assert_eq!(r["ok"], true, "{r}");
        assert!(seen.insert(r["id"].as_u64().expect("numeric id")), "answered twice: {r}");
    }
    assert_eq!(seen.len(), 200);
    let sku = admin.ok(json!({"op": "get_sku", "sku_id": "A"})).await;
    assert_eq!(sku["reserved"], 200);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_cut_off_and_others_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.persistence.durability = Durability::None;
    cfg.limits.outbound_queue = 8;
    cfg.limits.per_connection_rps = 1_000_000;
    cfg.limits.per_connection_burst = 1_000_000;
    cfg.limits.per_user_rps = 1_000_000;
    cfg.limits.per_user_burst = 1_000_000;
    cfg.limits.max_in_flight = 4;
    let server = Server::start(cfg).await.expect("start");
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin
        .ok(json!({"op": "create_sku", "sku_id": "A", "name": "A", "price": "1.00", "initial_stock": 1_000_000}))
        .await;
    // The slow subscriber watches user u and never reads again.
    let mut slow = Tcp::login(server.tcp_addr, SERVICE).await;
    assert_eq!(slow.call(json!({"op": "subscribe", "topic": "user:u"})).await["ok"], true);
    // A buyer creates orders for u until the slow subscriber's socket buffer and queue fill.
    let mut buyer = Tcp::login(server.tcp_addr, SERVICE).await;
    let mut cut_off = false;
    for round in 0..200 {
        let mut batch = String::new();
        for i in 0..100 {
            let req = json!({"id": i, "op": "create_order", "user_id": "u",
                             "items": [{"sku_id": "A", "qty": 1}],
                             "idempotency_key": format!("k{round}-{i}")});
            batch.push_str(&req.to_string());
            batch.push('\n');
        }
        buyer.send_raw(batch.as_bytes()).await;
        for _ in 0..100 {
            let r = buyer.reply().await;
            assert_eq!(r["ok"], true, "the buyer is never slowed or refused: {r}");
        }
        if server.hub_stats().slow_consumers.load(Ordering::Relaxed) > 0 {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "a subscriber that never reads must be disconnected");
    // Its connection ends with the final slow_consumer error after what was already queued.
    let mut last = None;
    while let Some(v) = slow.next().await {
        last = Some(v);
    }
    let last = last.expect("something was delivered");
    assert_eq!(last["error"]["code"], "slow_consumer", "{last}");
    // The buyer still works.
    assert_eq!(buyer.ok(json!({"op": "ping"})).await["pong"], true);
    server.shutdown().await.expect("shutdown");
}
