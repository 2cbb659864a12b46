//! The WebSocket gateway (actix-ws at /ws) with a real client (tokio-tungstenite), and the
//! HTTP probes.

mod gateway_support;

use futures_util::SinkExt;
use gateway_support::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_over_websocket_with_bearer_and_first_message_auth() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    assert_eq!(http_get(server.http_addr, "/health").await.0, 200);
    let (status, body) = http_get(server.http_addr, "/ready").await;
    assert_eq!((status, body.contains("ready")), (200, true));

    let mut admin = Ws::connect(server.http_addr, Some(ADMIN)).await.expect("bearer accepted");
    admin.ok(sku("ticket", 3, Some(1))).await;
    // A client authenticating with its first message.
    let mut client = Ws::connect(server.http_addr, None).await.unwrap();
    assert_eq!(client.ok(json!({"op": "auth", "token": SERVICE})).await["role"], "service");
    let mut sub = Ws::connect(server.http_addr, Some(SERVICE)).await.unwrap();
    sub.ok(json!({"op": "subscribe", "topic": "sku:ticket"})).await;

    let mut won = Vec::new();
    for i in 0..5 {
        let r = client.call(order(&format!("fan-{i}"), "ticket", 1, "cart")).await;
        if r["ok"] == true {
            won.push(r["result"].clone());
        } else {
            assert_eq!(r["error"]["code"], "sold_out", "{r}");
        }
    }
    assert_eq!(won.len(), 3);
    for o in &won {
        let pay = json!({"op": "pay", "order_id": o["order_id"], "payment_id": format!("p{}", o["order_id"]), "amount": "59.90"});
        assert_eq!(client.ok(pay).await["status"], "paid");
    }
    let r = client.call(sku("x", 1, None)).await;
    assert_eq!(r["error"]["code"], "forbidden");
    // The stock subscriber sees the sell-out.
    let mut sold_out = false;
    while !sold_out {
        let p = sub.next().await.expect("push");
        assert_eq!(p["event"], "stock", "{p}");
        sold_out = p["sold_out"] == true;
    }
    let s = client.ok(json!({"op": "get_sku", "sku_id": "ticket"})).await;
    assert_eq!((s["sold"].as_u64(), s["available"].as_u64()), (Some(3), Some(0)));
    drop((admin, client, sub));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_auth_failures_close() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    // A wrong bearer token is refused before the upgrade.
    match Ws::connect(server.http_addr, Some("not-a-token")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        Err(e) => panic!("expected HTTP 401, got {e}"),
        Ok(_) => panic!("expected HTTP 401, got an upgrade"),
    }
    // A wrong token in the first message: unauthorized, then close.
    let mut c = Ws::connect(server.http_addr, None).await.unwrap();
    let r = c.call(json!({"id": "a", "op": "auth", "token": "nope-nope-nope"})).await;
    assert_eq!(r["error"]["code"], "unauthorized");
    assert!(c.next().await.is_none(), "closed after a failed auth");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_bad_input_gets_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut c = Ws::connect(server.http_addr, Some(SERVICE)).await.unwrap();
    let texts: Vec<(&str, &str, Value)> = vec![
        ("{oops", "bad_json", Value::Null),
        (r#"{"id":1,"op":"fly"}"#, "unknown_op", json!(1)),
        (r#"{"id":2,"op":"get_sku"}"#, "invalid_request", json!(2)),
        (r#"{"id":3,"op":"pay","order_id":1,"payment_id":"p","amount":1.5}"#, "invalid_request", json!(3)),
        (
            r#"{"id":4,"op":"create_order","user_id":"u","idempotency_key":"k","items":[{"sku_id":"A","qty":-2}]}"#,
            "invalid_request",
            json!(4),
        ),
        (r#"{"id":5,"op":"get_sku","sku_id":"A","color":"red"}"#, "invalid_request", json!(5)),
    ];
    for (text, code, id) in texts {
        c.send_text(text).await;
        let r = c.next().await.expect("reply");
        assert_eq!((r["error"]["code"].clone(), r["id"].clone()), (json!(code), id), "{text}");
        assert_eq!(c.ok(json!({"op": "ping"})).await["pong"], true, "usable after {text}");
    }
    // A binary frame.
    c.ws.send(Message::binary(b"{\"op\":\"ping\"}".to_vec())).await.unwrap();
    assert_eq!(c.next().await.unwrap()["error"]["code"], "binary_frame");
    c.ok(json!({"op": "ping"})).await;
    // Invalid UTF-8 in a text frame (a raw frame: the client library would refuse it).
    let frame = Frame::message(vec![0xff, 0xfe, b'{', b'}'], OpCode::Data(Data::Text), true);
    c.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(c.next().await.unwrap()["error"]["code"], "bad_utf8");
    c.ok(json!({"op": "ping"})).await;
    assert_eq!(server.engine().order_count(), 0, "nothing invalid reached the engine");
    // An oversize frame: frame_too_large, then close.
    let big = format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(70 * 1024));
    c.send_text(&big).await;
    assert_eq!(c.next().await.expect("error before close")["error"]["code"], "frame_too_large");
    assert!(c.next().await.is_none(), "closed after an oversize frame");
    server.shutdown().await.unwrap();
}
