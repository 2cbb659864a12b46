//! JavaScript-safe ids (issue 11): every id on the wire is a JSON string of decimal digits.
//! Pins the exact JSON shape of an order reply, an order push, and error replies that carry an
//! `order_id`, over a real TCP socket. Requests still accept a number (old clients).

mod gateway_support;

use gateway_support::*;
use serde_json::{json, Value};

/// Object keys, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> =
        v.as_object().unwrap_or_else(|| panic!("an object: {v}")).keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

/// A string of decimal digits above 2^53 (snowflakes are: a double cannot hold them exactly).
fn assert_id_string(v: &Value, what: &str) {
    let s = v.as_str().unwrap_or_else(|| panic!("{what}: order_id must be a JSON string, got {v}"));
    assert!(!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()), "{what}: digits only: {s}");
    assert!(s.parse::<u64>().unwrap() > 1 << 53, "{what}: a snowflake exceeds 2^53: {s}");
}

const ORDER_KEYS: [&str; 15] = [
    "created_at_ms",
    "history",
    "idempotency_key",
    "items",
    "order_id",
    "payment",
    "payment_deadline_ms",
    "refund_return_to",
    "shipped",
    "status",
    "total",
    "tracking_number",
    "updated_at_ms",
    "user_id",
    "version",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_replies_pushes_and_errors_carry_string_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(sku("A", 10, None)).await;
    let mut c = Tcp::login(server.tcp_addr, SERVICE).await;
    c.ok(json!({"op": "subscribe", "topic": "user:alice"})).await;

    // An order reply.
    let reply = c.call(order("alice", "A", 1, "k1")).await;
    assert_eq!(keys(&reply), ["id", "ok", "result"]);
    let o = &reply["result"];
    assert_eq!(keys(o), ORDER_KEYS);
    assert_id_string(&o["order_id"], "reply");
    let id = o["order_id"].as_str().unwrap().to_owned();

    // list_orders: every order in it.
    let listed = c.ok(json!({"op": "list_orders", "user_id": "alice"})).await;
    for o in listed["orders"].as_array().unwrap() {
        assert_id_string(&o["order_id"], "list_orders");
    }

    // A push: the top-level order_id and the embedded order's.
    let push = c.push().await;
    assert_eq!(keys(&push), ["event", "order", "order_id", "seq", "status", "user_id", "version"]);
    assert_eq!(push["order_id"], json!(id));
    assert_eq!(keys(&push["order"]), ORDER_KEYS);
    assert_id_string(&push["order"]["order_id"], "push.order");

    // Requests: a string, or (old clients) a number, name the same order.
    let by_number: u64 = id.parse().unwrap();
    let a = c.ok(json!({"op": "get_order", "order_id": id})).await;
    let b = c.ok(json!({"op": "get_order", "order_id": by_number})).await;
    assert_eq!(a, b);

    // Errors that name an order.
    let conflict = c.call(order("alice", "A", 2, "k1")).await;
    assert_eq!(keys(&conflict["error"]), ["code", "message", "order_id"]);
    assert_eq!(
        (conflict["error"]["code"].as_str(), &conflict["error"]["order_id"]),
        (Some("idempotency_conflict"), &json!(id))
    );
    let pay = json!({"op": "pay", "order_id": id, "payment_id": "p1", "amount": o["total"]});
    c.ok(pay).await;
    let twice = c.call(json!({"op": "pay", "order_id": id, "payment_id": "p2", "amount": o["total"]})).await;
    assert_eq!((twice["error"]["code"].as_str(), &twice["error"]["order_id"]), (Some("already_paid"), &json!(id)));
    let ghost = (by_number + (1 << 40)).to_string();
    let unknown = c.call(json!({"op": "get_order", "order_id": ghost})).await;
    assert_eq!(keys(&unknown["error"]), ["code", "message", "order_id"]);
    assert_eq!(
        (unknown["error"]["code"].as_str(), &unknown["error"]["order_id"]),
        (Some("unknown_order"), &json!(ghost))
    );
    drop((admin, c));
    server.shutdown().await.unwrap();
}
