//! Wallet ops over a real TCP socket (issue 14): a `service` credits and debits; a `user` (JWT)
//! reads only its own wallet and pays only its own order from it; amounts are decimal strings;
//! refusals are typed and leave balances as they were. Loopback only.

mod gateway_support;

use gateway_support::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn user_jwt(sub: &str) -> String {
    let claims = json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 3_600});
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

async fn user(addr: std::net::SocketAddr, sub: &str) -> Tcp {
    let mut c = Tcp::connect(addr).await;
    let r = c.call(json!({"op": "auth", "jwt": user_jwt(sub)})).await;
    assert_eq!(r["ok"], true, "auth: {r}");
    c
}

fn cny(wallet: &Value) -> (Value, Value) {
    let a = wallet["accounts"].as_array().unwrap().iter().find(|a| a["asset"] == "CNY").unwrap().clone();
    (a["balance"].clone(), a["frozen"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallets_over_tcp_roles_and_payments() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(json!({"op": "create_sku", "sku_id": "mug", "name": "Mug", "price": "10.00", "initial_stock": 10})).await;
    let mut service = Tcp::login(server.tcp_addr, SERVICE).await;
    let credit =
        json!({"op": "wallet_credit", "user_id": "amy", "asset": "CNY", "amount": "25.50", "transfer_id": "top-1"});
    let r = service.ok(credit.clone()).await;
    assert_eq!(r["account"], json!({"asset": "CNY", "balance": "25.50", "frozen": "0.00", "version": 1}));
    assert_eq!(service.ok(credit).await, r, "a retry answers the same receipt");
    service
        .ok(json!({"op": "wallet_credit", "user_id": "amy", "asset": "POINTS", "amount": "300", "transfer_id": "top-2"}))
        .await;
    let number = service
        .call(json!({"op": "wallet_credit", "user_id": "amy", "asset": "CNY", "amount": 5, "transfer_id": "top-3"}))
        .await;
    assert_eq!(number["error"]["code"], "invalid_request", "money as a number is refused: {number}");

    let mut amy = user(server.tcp_addr, "amy").await;
    amy.ok(json!({"op": "subscribe", "topic": "wallet:amy"})).await;
    let w = amy.ok(json!({"op": "get_wallet"})).await;
    assert_eq!(w["user_id"], "amy");
    assert_eq!(cny(&w), (json!("25.50"), json!("0.00")));
    let forbidden = amy.call(json!({"op": "get_wallet", "user_id": "ben"})).await;
    assert_eq!(forbidden["error"]["code"], "forbidden");
    let credit_self = amy
        .call(json!({"op": "wallet_credit", "user_id": "amy", "asset": "CNY", "amount": "1", "transfer_id": "x"}))
        .await;
    assert_eq!(credit_self["error"]["code"], "forbidden", "users cannot mint money");

    let o =
        amy.ok(json!({"op": "create_order", "items": [{"sku_id": "mug", "qty": 1}], "idempotency_key": "k1"})).await;
    let pay = json!({"op": "pay_with_wallet", "order_id": o["order_id"], "transfer_id": "pay-1",
        "legs": [{"asset": "CNY", "amount": "8.00"}, {"asset": "POINTS", "amount": "200"}]});
    let mut ben = user(server.tcp_addr, "ben").await;
    let spy = ben.call(json!({"op": "subscribe", "topic": "wallet:amy"})).await;
    assert_eq!(spy["error"]["code"], "forbidden", "another user's wallet topic");
    let theirs = ben.call(pay.clone()).await;
    assert_eq!(theirs["error"]["code"], "unknown_order", "another user's order does not exist for ben");
    let short = amy
        .call(json!({"op": "pay_with_wallet", "order_id": o["order_id"], "transfer_id": "pay-0",
            "legs": [{"asset": "CNY", "amount": "9.99"}]}))
        .await;
    assert_eq!(short["error"]["code"], "amount_mismatch");
    let paid = amy.ok(pay).await;
    assert_eq!(paid["status"], "paid");
    let push = loop {
        let p = amy.push().await;
        if p["event"] == "wallet" {
            break p;
        }
    };
    assert_eq!(push["user_id"], "amy");
    let pushed_cny = push["accounts"].as_array().unwrap().iter().find(|a| a["asset"] == "CNY").unwrap().clone();
    assert_eq!((pushed_cny["balance"].clone(), pushed_cny["frozen"].clone()), (json!("17.50"), json!("0.00")));
    let w = amy.ok(json!({"op": "get_wallet"})).await;
    assert_eq!(cny(&w), (json!("17.50"), json!("0.00")));

    let page = amy.ok(json!({"op": "list_wallet_entries", "asset": "CNY", "limit": 2})).await;
    let kinds: Vec<&str> = page["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["settle", "freeze"]);
    assert_eq!(page["entries"][0]["amount"], "-8.00");
    assert_eq!(page["entries"][0]["order_id"], o["order_id"], "ids are strings, as everywhere");
    let rest =
        amy.ok(json!({"op": "list_wallet_entries", "asset": "CNY", "limit": 2, "cursor": page["next_cursor"]})).await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);

    let debit = service
        .call(json!({"op": "wallet_debit", "user_id": "amy", "asset": "CNY", "amount": "100", "transfer_id": "out-1"}))
        .await;
    assert_eq!(debit["error"]["code"], "insufficient_funds");
    let w = amy.ok(json!({"op": "get_wallet"})).await;
    assert_eq!(cny(&w), (json!("17.50"), json!("0.00")), "a refused debit moved nothing");
    server.shutdown().await.expect("graceful shutdown");
}
