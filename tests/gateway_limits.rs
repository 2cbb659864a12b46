//! Connection limits over real sockets: idle timeout, in-flight back-pressure without loss, a
//! slow subscriber cut off without slowing anyone else, and (issue 10 item 12) the auth timeout,
//! and clients that pipeline and never read, closed at `max_pending_reply_bytes` or
//! `write_timeout_ms` while another client keeps working.

mod gateway_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway_support::{config, Tcp, Ws, ADMIN, SERVICE};
use serde_json::json;
use surge::gateway::{Server, ServerHandle};
use surge::persistence::Durability;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

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
    // Then silent: the connection's one idle timer, re-armed while it was busy, still fires,
    // and not before idle_timeout_ms of silence.
    let silent_since = std::time::Instant::now();
    let last = busy.next().await.expect("a final error before the close");
    assert_eq!(last["error"]["code"], "idle_timeout", "{last}");
    assert!(silent_since.elapsed() >= Duration::from_millis(290), "closed after {:?}", silent_since.elapsed());
    assert!(busy.closed().await, "the connection closes after idle_timeout");
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

/// A server for the item-12 tests: generous rate limits, and `tweak` applied.
async fn limits_server(dir: &std::path::Path, tweak: impl FnOnce(&mut surge::gateway::FileConfig)) -> ServerHandle {
    let mut cfg = config(dir);
    cfg.persistence.durability = Durability::None;
    cfg.limits.per_connection_rps = 1_000_000;
    cfg.limits.per_connection_burst = 1_000_000;
    cfg.limits.per_user_rps = 1_000_000;
    cfg.limits.per_user_burst = 1_000_000;
    tweak(&mut cfg);
    Server::start(cfg).await.expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_connection_is_closed_after_auth_timeout_whatever_it_sends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = limits_server(dir.path(), |c| c.limits.auth_timeout_ms = 700).await;
    // TCP: blank lines and a partial line keep coming; they must not extend the deadline.
    let mut tcp = Tcp::connect(server.tcp_addr).await;
    let t0 = std::time::Instant::now();
    let keepalive = async {
        tcp.send_raw(b"{\"op\":\"au").await;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if tcp.wr.write_all(b"   ").await.is_err() {
                break;
            }
        }
    };
    keepalive.await;
    let mut tcp2 = Tcp::connect(server.tcp_addr).await;
    for _ in 0..20 {
        if tcp2.wr.write_all(b"\n").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = tcp2.next().await.expect("a final error");
    assert_eq!(last["error"]["code"], "unauthorized", "{last}");
    assert!(tcp2.closed().await);
    assert!(tcp.closed().await, "a partial line does not keep a connection alive");
    assert!(t0.elapsed() >= Duration::from_millis(700));
    // WebSocket: pings every 50 ms do not keep it alive either.
    let mut ws = Ws::connect(server.http_addr, None).await.expect("upgrade");
    let mut closed = false;
    let mut saw_error = false;
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while !closed && std::time::Instant::now() < until {
        if ws.ws.send(Message::Ping(b"hi".to_vec().into())).await.is_err() {
            closed = true;
            break;
        }
        let wait = tokio::time::sleep(Duration::from_millis(50));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                m = ws.ws.next() => match m {
                    Some(Ok(Message::Text(t))) => {
                        let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
                        assert_eq!(v["error"]["code"], "unauthorized", "{v}");
                        saw_error = true;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        closed = true;
                        break;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    assert!(saw_error, "a final unauthorized error");
    assert!(closed, "an unauthenticated WebSocket is closed despite its pings");
    // An authenticated connection is not affected by the auth timeout.
    let mut ok = Tcp::login(server.tcp_addr, SERVICE).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(ok.ok(json!({"op": "ping"})).await["pong"], true);
    assert!(server.limit_stats().closed_auth_timeout.load(Ordering::Relaxed) >= 3);
    server.shutdown().await.expect("shutdown");
}

/// 100 orders for user `whale` (a `list_orders` reply of ~70 KB).
async fn whale(server: &ServerHandle) -> Tcp {
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(json!({"op": "create_sku", "sku_id": "A", "name": "A", "price": "1.00", "initial_stock": 1_000})).await;
    for i in 0..100 {
        admin
            .ok(json!({"op": "create_order", "user_id": "whale", "items": [{"sku_id": "A", "qty": 1}],
                        "idempotency_key": format!("w{i}")}))
            .await;
    }
    admin
}

fn list_orders_lines(n: usize) -> Vec<u8> {
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&json!({"id": i, "op": "list_orders", "user_id": "whale", "limit": 100}).to_string());
        batch.push('\n');
    }
    batch.into_bytes()
}

/// While the greedy client's connection is open, a healthy client keeps getting answers; returns
/// once the server holds only `others` connections.
async fn healthy_until_released(server: &ServerHandle, healthy: &mut Tcp, others: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while server.connections() > others {
        assert!(std::time::Instant::now() < deadline, "the greedy client was never closed");
        let r = healthy.ok(json!({"op": "get_sku", "sku_id": "A"})).await;
        assert_eq!(r["reserved"], 100, "the healthy client gets correct answers: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn greedy_client_is_closed(ws: bool, tweak: impl FnOnce(&mut surge::gateway::FileConfig)) -> ServerHandle {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = limits_server(dir.path(), tweak).await;
    let mut healthy = whale(&server).await; // the admin connection doubles as the healthy client
    let lines = list_orders_lines(5_000);
    // The greedy client writes 5,000 list_orders and never reads a byte.
    let greedy = if ws {
        let mut c = Ws::connect(server.http_addr, Some(SERVICE)).await.expect("upgrade");
        tokio::spawn(async move {
            for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let text = String::from_utf8(line.to_vec()).expect("utf8");
                if c.ws.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
            // Never read; keep the connection open until the test ends.
            std::future::pending::<()>().await;
            drop(c);
        })
    } else {
        let mut c = Tcp::login(server.tcp_addr, SERVICE).await;
        tokio::spawn(async move {
            let _ = c.wr.write_all(&lines).await;
            std::future::pending::<()>().await;
            drop(c);
        })
    };
    healthy_until_released(&server, &mut healthy, 1).await;
    assert_eq!(healthy.ok(json!({"op": "ping"})).await["pong"], true);
    greedy.abort();
    dir.close().ok();
    server
}

fn assert_bounded(server: &ServerHandle, bound: usize) {
    let peak = server.limit_stats().pending_reply_bytes_peak.load(Ordering::Relaxed);
    assert!(peak > 0 && peak <= bound, "pending reply bytes peaked at {peak}, bound {bound}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_client_that_never_reads_is_closed_at_max_pending_reply_bytes() {
    let bound = 256 * 1024;
    let server = greedy_client_is_closed(false, |c| c.limits.max_pending_reply_bytes = bound).await;
    assert_bounded(&server, bound);
    assert_eq!(server.limit_stats().closed_pending_replies.load(Ordering::Relaxed), 1);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_never_reads_is_closed_at_max_pending_reply_bytes() {
    let bound = 256 * 1024;
    let server = greedy_client_is_closed(true, |c| c.limits.max_pending_reply_bytes = bound).await;
    assert_bounded(&server, bound);
    assert_eq!(server.limit_stats().closed_pending_replies.load(Ordering::Relaxed), 1);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_accepts_nothing_is_closed_after_write_timeout() {
    for ws in [false, true] {
        // A bound too large to be reached by what fits in the queue: the write timeout acts.
        let server = greedy_client_is_closed(ws, |c| {
            c.limits.max_pending_reply_bytes = surge::gateway::config::LIMIT_COUNT_MAX as usize;
            c.limits.outbound_queue = 256;
            c.limits.write_timeout_ms = 500;
        })
        .await;
        assert!(server.limit_stats().closed_write_timeout.load(Ordering::Relaxed) >= 1, "ws={ws}");
        assert_eq!(server.limit_stats().closed_pending_replies.load(Ordering::Relaxed), 0);
        server.shutdown().await.expect("shutdown");
    }
}
