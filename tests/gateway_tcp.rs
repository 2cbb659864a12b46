//! The TCP gateway end to end: a flash sale, auth and roles, every bad input, subscriptions,
//! limits, and recovery after a graceful shutdown. Loopback only; ports chosen by the OS.

mod gateway_support;

use std::collections::HashMap;

use gateway_support::*;
use serde_json::{json, Value};
use surge::engine::{EngineConfig, OrderId, OrderStatus};
use surge::persistence::{DurableEngine, PersistenceConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_over_tcp_with_pipelining_then_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    let created = admin.ok(sku("phone", 5, Some(1))).await;
    assert_eq!(created["available"], 5);
    assert_eq!(created["price"], "59.90", "money travels as a string");

    // 8 buyers, pipelined on one connection: all requests go out before any reply is read.
    let mut client = Tcp::login(server.tcp_addr, SERVICE).await;
    for i in 0..8 {
        let mut req = order(&format!("buyer-{i}"), "phone", 1, &format!("cart-{i}"));
        req["id"] = json!(format!("o{i}"));
        client.send(&req).await;
    }
    let mut replies = HashMap::new();
    for _ in 0..8 {
        let r = client.reply().await;
        replies.insert(r["id"].as_str().unwrap().to_string(), r);
    }
    let won: Vec<&Value> = replies.values().filter(|r| r["ok"] == true).collect();
    let lost: Vec<&Value> = replies.values().filter(|r| r["ok"] == false).collect();
    assert_eq!(won.len(), 5, "exactly the stock is sold: {replies:?}");
    assert!(lost.iter().all(|r| r["error"]["code"] == "sold_out"), "{lost:?}");

    // Pay every winner; a retry of the same payment is acknowledged once.
    let mut paid = Vec::new();
    for r in &won {
        let o = &r["result"];
        assert_eq!(o["status"], "pending_payment");
        assert_eq!(o["total"], "59.90");
        let pay = json!({"op": "pay", "order_id": o["order_id"], "payment_id": format!("psp-{}", o["order_id"]), "amount": o["total"]});
        let p = client.ok(pay.clone()).await;
        assert_eq!(p["status"], "paid");
        assert_eq!(client.ok(pay).await["version"], p["version"], "same payment twice: one effect");
        paid.push(order_id(o));
    }
    // Fulfilment is admin work.
    let ship = json!({"op": "ship", "order_id": paid[0].to_string(), "tracking_number": "TRK-1"});
    let r = client.call(ship.clone()).await;
    assert_eq!(r["error"]["code"], "forbidden");
    assert_eq!(admin.ok(ship).await["status"], "shipped");
    let s = client.ok(json!({"op": "get_sku", "sku_id": "phone"})).await;
    assert_eq!((s["available"].as_u64(), s["sold"].as_u64()), (Some(0), Some(5)));
    let listed = client.ok(json!({"op": "list_orders", "user_id": "buyer-0"})).await;
    assert!(listed["orders"].is_array());

    drop((admin, client));
    server.shutdown().await.expect("graceful shutdown");

    // Nothing lost: the data directory recovers every acknowledged change.
    let db = DurableEngine::open(PersistenceConfig::new(dir.path()), EngineConfig::default()).unwrap();
    let e = db.engine();
    for (i, id) in paid.iter().enumerate() {
        let o = e.get_order(OrderId(*id)).expect("order recovered");
        let want = if i == 0 { OrderStatus::Shipped } else { OrderStatus::Paid };
        assert_eq!(o.status, want);
    }
    let s = e.get_sku("phone").unwrap();
    assert_eq!((s.available, s.sold, s.reserved), (0, 5, 0));
    db.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_and_roles_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;

    // Wrong token: unauthorized, then the server closes.
    let mut c = Tcp::connect(server.tcp_addr).await;
    let r = c.call(json!({"id": 1, "op": "auth", "token": "wrong-token-xyz"})).await;
    assert_eq!(r["error"]["code"], "unauthorized");
    assert!(!r.to_string().contains("wrong-token-xyz"), "tokens are never echoed");
    assert!(c.closed().await, "closed after a failed auth");

    // Anything before auth: unauthorized and close.
    let mut c = Tcp::connect(server.tcp_addr).await;
    let r = c.call(json!({"id": 2, "op": "ping"})).await;
    assert_eq!(r["error"]["code"], "unauthorized");
    assert!(c.closed().await);

    // A client may not manage SKUs; an admin may.
    let mut client = Tcp::login(server.tcp_addr, SERVICE).await;
    for op in [
        sku("A", 1, None),
        json!({"op": "adjust_stock", "sku_id": "A", "adjustment_id": "adj-1", "delta": 1, "reason": "x"}),
        json!({"op": "deliver", "order_id": 1}),
        json!({"op": "confirm_refund", "order_id": 1}),
        json!({"op": "resolve_dispute", "order_id": 1, "resolution": "completed"}),
    ] {
        let r = client.call(op.clone()).await;
        assert_eq!(r["error"]["code"], "forbidden", "{op}");
    }
    assert_eq!(client.ok(json!({"op": "ping"})).await["pong"], true, "forbidden does not close");
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(sku("A", 1, None)).await;
    assert_eq!(admin.call(sku("A", 1, None)).await["error"]["code"], "sku_already_exists");
    let r = admin.call(json!({"op": "auth", "token": ADMIN})).await;
    assert_eq!(r["error"]["code"], "invalid_request", "auth twice");
    drop((client, admin));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_error_and_the_connection_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(sku("A", 10, None)).await;
    let mut c = Tcp::login(server.tcp_addr, SERVICE).await;
    let cases: Vec<(&[u8], &str, Value)> = vec![
        (b"{\"id\":1,\"op\":\"get_sku\"", "bad_json", Value::Null),
        (b"not json at all", "bad_json", Value::Null),
        (b"[1,2]", "invalid_request", Value::Null),
        (b"{\"id\":2,\"op\":\"launch_rockets\"}", "unknown_op", json!(2)),
        (b"{\"id\":3}", "invalid_request", json!(3)),
        (b"{\"id\":4,\"op\":7}", "invalid_request", json!(4)),
        (b"{\"id\":5,\"op\":\"get_sku\"}", "invalid_request", json!(5)),
        (b"{\"id\":6,\"op\":\"get_sku\",\"sku_id\":\"A\",\"x\":1}", "invalid_request", json!(6)),
        (b"{\"id\":7,\"op\":\"get_sku\",\"sku_id\":5}", "invalid_request", json!(7)),
        (b"{\"id\":8,\"op\":\"create_order\",\"user_id\":\"u\",\"idempotency_key\":\"k\",\"items\":[{\"sku_id\":\"A\",\"qty\":-1}]}", "invalid_request", json!(8)),
        (b"{\"id\":9,\"op\":\"create_order\",\"user_id\":\"u\",\"idempotency_key\":\"k\",\"items\":[{\"sku_id\":\"A\",\"qty\":1.5}]}", "invalid_request", json!(9)),
        (b"{\"id\":10,\"op\":\"pay\",\"order_id\":1,\"payment_id\":\"p\",\"amount\":59.9}", "invalid_request", json!(10)),
        (b"{\"id\":{\"a\":1},\"op\":\"ping\"}", "invalid_request", Value::Null),
        (b"{\"id\":\"ok-id\",\"op\":\"create_order\",\"user_id\":\"u\",\"idempotency_key\":\"k\",\"items\":[]}", "invalid_request", json!("ok-id")),
        (b"{\"id\":11,\"op\":\"create_order\",\"user_id\":\"u\",\"idempotency_key\":\"k\",\"items\":[{\"sku_id\":\"A\",\"qty\":0}]}", "invalid_request", json!(11)),
        (b"{\"id\":12,\"op\":\"get_order\",\"order_id\":-3}", "invalid_request", json!(12)),
        (b"{\"id\":13,\"op\":\"subscribe\",\"topic\":\"weather:today\"}", "invalid_request", json!(13)),
        (b"{\"id\":14,\"op\":\"get_order\",\"order_id\":12345}", "unknown_order", json!(14)),
        (b"{\"id\":15,\"op\":\"ping\"}\xff\xfe", "bad_utf8", Value::Null),
        (b"\xff\xfe{}", "bad_utf8", Value::Null),
    ];
    for (i, (line, code, id)) in cases.iter().enumerate() {
        let mut bytes = line.to_vec();
        bytes.push(b'\n');
        c.send_raw(&bytes).await;
        let r = c.reply().await;
        assert_eq!(r["ok"], false, "case {i}: {r}");
        assert_eq!(r["error"]["code"], *code, "case {i}: {}", String::from_utf8_lossy(line));
        assert_eq!(r["id"], *id, "case {i}: id echoed whenever readable");
        // … and the connection still serves a valid request.
        let p = c.ok(json!({"op": "ping"})).await;
        assert_eq!(p["pong"], true, "case {i}");
    }
    // Nothing invalid reached the engine: no order exists, no stock moved.
    assert_eq!(server.engine().order_count(), 0);
    assert_eq!(c.ok(json!({"op": "get_sku", "sku_id": "A"})).await["available"], 10);

    // An oversize line: frame_too_large, then close.
    let mut big = vec![b'x'; 70 * 1024];
    big.push(b'\n');
    c.send_raw(&big).await;
    let r = c.reply().await;
    assert_eq!(r["error"]["code"], "frame_too_large");
    assert!(c.closed().await, "closed after an oversize line");
    drop((admin, c));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_receives_paid_and_canceled_pushes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(sku("A", 10, None)).await;
    let mut sub = Tcp::login(server.tcp_addr, SERVICE).await;
    assert_eq!(sub.ok(json!({"op": "subscribe", "topic": "user:alice"})).await["subscribed"], true);
    assert_eq!(sub.ok(json!({"op": "subscribe", "topic": "sku:A"})).await["subscribed"], true);

    let mut c = Tcp::login(server.tcp_addr, SERVICE).await;
    let o1 = c.ok(order("alice", "A", 1, "k1")).await;
    let o2 = c.ok(order("alice", "A", 2, "k2")).await;
    c.ok(json!({"op": "pay", "order_id": o1["order_id"], "payment_id": "psp-1", "amount": o1["total"]})).await;
    c.ok(json!({"op": "cancel_order", "order_id": o2["order_id"]})).await;
    // Someone else's order is not pushed to alice's subscriber.
    c.ok(order("bob", "A", 1, "kb")).await;

    let mut statuses = Vec::new();
    let mut last_seq = 0;
    let mut stock = Vec::new();
    while statuses.len() < 4 {
        let p = sub.push().await;
        let seq = p["seq"].as_u64().expect("seq");
        assert_eq!(seq, last_seq + 1, "per-connection sequence without gaps: {p}");
        last_seq = seq;
        match p["event"].as_str() {
            Some("order_status") => {
                assert_eq!(p["user_id"], "alice");
                statuses.push((p["order_id"].clone(), p["status"].as_str().unwrap().to_string()));
            }
            Some("stock") => stock.push(p),
            other => panic!("unexpected push {other:?}"),
        }
    }
    assert_eq!(
        statuses,
        vec![
            (o1["order_id"].clone(), "pending_payment".to_string()),
            (o2["order_id"].clone(), "pending_payment".to_string()),
            (o1["order_id"].clone(), "paid".to_string()),
            (o2["order_id"].clone(), "canceled".to_string()),
        ]
    );
    // Stock pushes are coalesced but the last one shows the final level (10 - 1 paid - 1 bob).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        if stock.last().is_some_and(|p| p["available"] == 8) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "final stock level pushed: {stock:?}");
        let p = sub.push().await;
        if p["event"] == "stock" {
            assert_eq!(p["sku_id"], "A");
            stock.push(p);
        }
    }
    // Unsubscribe stops the pushes.
    sub.ok(json!({"op": "unsubscribe", "topic": "user:alice"})).await;
    sub.ok(json!({"op": "unsubscribe", "topic": "sku:A"})).await;
    c.ok(order("alice", "A", 1, "k3")).await;
    assert_eq!(sub.ok(json!({"op": "ping"})).await["pong"], true);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sub.ok(json!({"op": "ping"})).await;
    assert!(sub.pushes.iter().all(|p| p["event"] != "order_status"), "no push after unsubscribe: {:?}", sub.pushes);
    drop((admin, sub, c));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_rate_limited_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.limits.per_user_rps = 1;
    cfg.limits.per_user_burst = 2;
    let server = surge::gateway::Server::start(cfg).await.unwrap();
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(sku("A", 100, None)).await;
    let mut c = Tcp::login(server.tcp_addr, SERVICE).await;
    c.ok(order("greedy", "A", 1, "g1")).await;
    c.ok(order("greedy", "A", 1, "g2")).await;
    let r = c.call(order("greedy", "A", 1, "g3")).await;
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    assert!(r["error"]["retry_after_ms"].as_u64().unwrap() > 0);
    // Another user is not limited by greedy's budget; the connection stays usable.
    c.ok(order("patient", "A", 1, "p1")).await;
    assert_eq!(server.engine().order_count(), 3, "a rate-limited request never reaches the engine");
    drop((admin, c));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.limits.max_connections = 1;
    let server = surge::gateway::Server::start(cfg).await.unwrap();
    let mut first = Tcp::login(server.tcp_addr, SERVICE).await;
    let mut second = Tcp::connect(server.tcp_addr).await;
    let r = second.next().await.expect("an error line");
    assert_eq!(r["error"]["code"], "too_many_connections");
    assert!(second.closed().await);
    first.ok(json!({"op": "ping"})).await;
    drop(first);
    server.shutdown().await.unwrap();
}

/// `"reply":"minimal"` in `auth`: orders come back as id, status, version and total only, on
/// every op that answers an order; other connections keep the whole order; a shape that does
/// not exist is a refused `auth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_may_ask_for_minimal_order_replies() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(sku("mug", 10, None)).await;

    let mut lean = Tcp::connect(server.tcp_addr).await;
    let auth = lean.ok(json!({"op": "auth", "token": SERVICE, "reply": "minimal"})).await;
    assert_eq!(auth["reply"], "minimal", "{auth}");
    let created = lean.ok(order("ann", "mug", 2, "k1")).await;
    let keys: Vec<&str> = created.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["order_id", "status", "total", "version"], "{created}");
    assert_eq!((created["status"].as_str(), created["version"].as_u64()), (Some("pending_payment"), Some(1)));
    assert_eq!(created["total"], "119.80");
    let id = order_id(&created);
    let got = lean.ok(json!({"op": "get_order", "order_id": id.to_string()})).await;
    assert_eq!(got, created, "get_order answers in the same shape");
    let paid =
        lean.ok(json!({"op": "pay", "order_id": id.to_string(), "payment_id": "psp-1", "amount": "119.80"})).await;
    assert_eq!((paid["status"].as_str(), paid["version"].as_u64()), (Some("paid"), Some(2)));
    assert!(paid.get("items").is_none(), "{paid}");

    // The default stays the whole order.
    let full = admin.ok(json!({"op": "get_order", "order_id": id.to_string()})).await;
    assert_eq!(full["items"][0]["sku_id"], "mug", "{full}");
    assert_eq!(full["user_id"], "ann");

    let mut odd = Tcp::connect(server.tcp_addr).await;
    let r = odd.call(json!({"op": "auth", "token": SERVICE, "reply": "tiny"})).await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    assert!(odd.closed().await, "a refused auth closes the connection");
    server.shutdown().await.expect("graceful shutdown");
}
