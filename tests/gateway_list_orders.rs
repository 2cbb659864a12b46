//! `list_orders` over a real TCP socket: cursor paging (issue 10, item 13). A reply carries
//! `next_cursor` (an opaque string, `null` on the last page); `page` is refused, naming `cursor`;
//! a malformed cursor is `invalid_request`. Loopback only.

mod gateway_support;

use gateway_support::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_orders_pages_by_cursor_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(sku("mug", 100, None)).await;
    let mut service = Tcp::login(server.tcp_addr, SERVICE).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let o = service.ok(order("pat", "mug", 1, &format!("k{i}"))).await;
        created.push(o["order_id"].clone());
    }
    created.reverse(); // newest first

    let mut listed: Vec<Value> = Vec::new();
    let mut req = json!({"op": "list_orders", "user_id": "pat", "limit": 2});
    let mut pages = 0;
    loop {
        let page = service.ok(req.clone()).await;
        pages += 1;
        let orders = page["orders"].as_array().expect("orders");
        assert!(orders.len() <= 2);
        listed.extend(orders.iter().map(|o| o["order_id"].clone()));
        match &page["next_cursor"] {
            Value::Null => break,
            Value::String(c) => req["cursor"] = json!(c),
            other => panic!("next_cursor must be a string or null: {other}"),
        }
    }
    assert_eq!(listed, created, "every order once, newest first");
    assert_eq!(pages, 3);
    // An explicit null cursor is the first page.
    let first = service.ok(json!({"op": "list_orders", "user_id": "pat", "limit": 5, "cursor": null})).await;
    assert_eq!(first["orders"].as_array().map(Vec::len), Some(5));
    assert_eq!(first["next_cursor"], Value::Null);

    for bad in [json!({"page": 1}), json!({"page": 0}), json!({"cursor": "garbage"}), json!({"cursor": 12})] {
        let mut req = json!({"op": "list_orders", "user_id": "pat"});
        for (k, v) in bad.as_object().unwrap() {
            req[k] = v.clone();
        }
        let r = service.call(req).await;
        assert_eq!(r["ok"], false, "{bad}");
        assert_eq!(r["error"]["code"], "invalid_request", "{bad}");
        assert!(r["error"]["message"].as_str().unwrap_or("").contains("cursor"), "{bad}: {r}");
    }
    // The connection stays usable.
    assert_eq!(
        service.ok(json!({"op": "list_orders", "user_id": "pat", "limit": 1})).await["orders"][0]["order_id"],
        created[0]
    );
    drop((admin, service));
    server.shutdown().await.expect("graceful shutdown");
}
