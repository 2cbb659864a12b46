//! Roles over real sockets (issue 10): `service` acts for any user and pays; a `user` (JWT,
//! HS256 or EdDSA) acts only as its `sub`, sees only its own orders and topics, and never pays;
//! every bad JWT is `unauthorized` and closes the connection; Bearer JWTs on the WebSocket
//! upgrade; the deprecated `client` token still works as `service`. Each case also checks the
//! connection's state afterwards (usable, or closed). Loopback only; ports chosen by the OS.

mod gateway_support;

use std::time::Duration;

use base64::Engine as _;
use gateway_support::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use surge::gateway::{FileConfig, Server, ServerHandle};

const AUDIENCE: &str = "surge-tests";
const ISSUER: &str = "shop-tests";
const ED_PRIVATE: &[u8] = include_bytes!("fixtures/jwt_ed25519_private.pem");

fn auth_config(dir: &std::path::Path) -> FileConfig {
    let mut cfg = config(dir);
    let pem = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt_ed25519_public.pem");
    cfg.auth.jwt_public_key_pem_file = pem.into();
    cfg.auth.jwt_public_key_algorithm = "EdDSA".into();
    cfg.auth.jwt_audience = AUDIENCE.into();
    cfg.auth.jwt_issuer = ISSUER.into();
    cfg.auth.jwt_leeway_ms = 0;
    cfg
}

async fn start_auth(dir: &std::path::Path) -> ServerHandle {
    Server::start(auth_config(dir)).await.expect("server starts")
}

fn now_s() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Valid claims for `sub` (an hour left).
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now_s() + 3_600, "aud": AUDIENCE, "iss": ISSUER})
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    let key = EncodingKey::from_secret(secret).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

fn user_jwt(sub: &str) -> String {
    hs256(&claims(sub), JWT_SECRET.as_bytes())
}

fn ed_jwt(claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(ED_PRIVATE).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &key).unwrap()
}

/// `alg: none`, no signature (RFC 7519 §6 "Unsecured JWTs").
fn unsecured(claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(claims))
}

async fn user_tcp(addr: std::net::SocketAddr, jwt: &str) -> Tcp {
    let mut c = Tcp::connect(addr).await;
    let r = c.call(json!({"op": "auth", "jwt": jwt})).await;
    assert_eq!(r["ok"], true, "auth: {r}");
    assert_eq!(r["result"]["role"], "user");
    c
}

async fn assert_usable(c: &mut Tcp) {
    assert_eq!(c.ok(json!({"op": "ping"})).await["pong"], true, "the connection stays usable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_acts_for_anyone_and_pays_a_user_acts_only_as_its_sub() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_auth(dir.path()).await;
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(sku("A", 100, None)).await;
    admin.ok(sku("L", 100, Some(1))).await;
    let mut service = Tcp::login(server.tcp_addr, SERVICE).await;
    let bob_order = service.ok(order("bob", "A", 1, "b1")).await;
    let bob_id = bob_order["order_id"].as_str().unwrap().to_owned();
    let paid = service
        .ok(json!({"op": "pay", "order_id": bob_id, "payment_id": "psp-b1", "amount": bob_order["total"]}))
        .await;
    assert_eq!(paid["status"], "paid", "service may pay");

    let mut alice = Tcp::connect(server.tcp_addr).await;
    let r = alice.ok(json!({"op": "auth", "jwt": user_jwt("alice")})).await;
    assert_eq!((r["role"].as_str(), r["user_id"].as_str()), (Some("user"), Some("alice")));
    // user_id omitted: the token's sub; the engine's per-user limit counts it.
    let mine =
        alice.ok(json!({"op": "create_order", "items": [{"sku_id": "L", "qty": 1}], "idempotency_key": "a1"})).await;
    assert_eq!(mine["user_id"], "alice");
    let again =
        alice.call(json!({"op": "create_order", "items": [{"sku_id": "L", "qty": 1}], "idempotency_key": "a2"})).await;
    assert_eq!(again["error"]["code"], "purchase_limit_exceeded", "{again}");
    let same = alice.ok(order("alice", "A", 1, "a3")).await;
    assert_eq!(same["user_id"], "alice", "user_id equal to sub is fine");
    let r = alice.call(order("bob", "A", 1, "a4")).await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    let r = alice.call(json!({"op": "list_orders", "user_id": "bob"})).await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    assert_usable(&mut alice).await;
    let listed = alice.ok(json!({"op": "list_orders"})).await;
    let orders = listed["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 2);
    assert!(orders.iter().all(|o| o["user_id"] == "alice"));

    // Another user's order: every order op answers as if it did not exist.
    let ghost = alice.call(json!({"op": "get_order", "order_id": "12345"})).await;
    assert_eq!(ghost["error"]["code"], "unknown_order");
    for op in ["get_order", "cancel_order", "complete", "request_refund", "open_dispute"] {
        let r = alice.call(json!({"op": op, "order_id": bob_id})).await;
        assert_eq!(r["error"]["code"], "unknown_order", "{op}: {r}");
        assert_eq!(r["error"]["order_id"], bob_id, "{op}: same shape as a missing order");
    }
    let bob_now = service.ok(json!({"op": "get_order", "order_id": bob_id})).await;
    assert_eq!(
        (bob_now["status"].clone(), bob_now["version"].clone()),
        (paid["status"].clone(), paid["version"].clone())
    );
    assert_eq!(alice.ok(json!({"op": "get_order", "order_id": mine["order_id"]})).await["user_id"], "alice");

    // No pay, no admin ops, for a user.
    for op in [
        json!({"op": "pay", "order_id": mine["order_id"], "payment_id": "invented", "amount": mine["total"]}),
        sku("X", 1, None),
        json!({"op": "ship", "order_id": mine["order_id"], "tracking_number": "T"}),
    ] {
        let r = alice.call(op.clone()).await;
        assert_eq!(r["error"]["code"], "forbidden", "{op}: {r}");
    }
    assert_usable(&mut alice).await;

    // Topics: its own user and orders, any SKU; not another user's.
    let r = alice.call(json!({"op": "subscribe", "topic": "user:bob"})).await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    let r = alice.call(json!({"op": "subscribe", "topic": format!("order:{bob_id}")})).await;
    assert_eq!(r["error"]["code"], "unknown_order", "{r}");
    assert_usable(&mut alice).await;
    for topic in ["user:alice".to_owned(), format!("order:{}", mine["order_id"].as_str().unwrap()), "sku:A".into()] {
        assert_eq!(alice.ok(json!({"op": "subscribe", "topic": topic})).await["subscribed"], true);
    }
    let pay = json!({"op": "pay", "order_id": mine["order_id"], "payment_id": "psp-a1", "amount": mine["total"]});
    service.ok(pay).await;
    let push = loop {
        let p = alice.push().await;
        if p["event"] == "order_status" {
            break p;
        }
    };
    assert_eq!((push["order_id"].clone(), push["status"].clone()), (mine["order_id"].clone(), json!("paid")));

    // The public-key algorithm (EdDSA): bob sees his order, not alice's.
    let mut bob = user_tcp(server.tcp_addr, &ed_jwt(&claims("bob"))).await;
    assert_eq!(bob.ok(json!({"op": "get_order", "order_id": bob_id})).await["status"], "paid");
    let r = bob.call(json!({"op": "get_order", "order_id": mine["order_id"]})).await;
    assert_eq!(r["error"]["code"], "unknown_order");
    assert_usable(&mut bob).await;
    drop((admin, service, alice, bob));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_jwt_is_unauthorized_and_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_auth(dir.path()).await;
    let public_pem =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt_ed25519_public.pem")).unwrap();
    let with = |patch: Value| {
        let mut c = claims("alice");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let secret = JWT_SECRET.as_bytes();
    let cases: Vec<(&str, String)> = vec![
        ("expired", hs256(&with(json!({"exp": now_s() - 10})), secret)),
        ("wrong signature", hs256(&claims("alice"), b"another-secret-another-secret-xx")),
        ("alg none", unsecured(&claims("alice"))),
        ("alg confusion: HS256 keyed with the public key", hs256(&claims("alice"), &public_pem)),
        ("wrong audience", hs256(&with(json!({"aud": "someone-else"})), secret)),
        ("missing audience", hs256(&with(json!({"aud": null})), secret)),
        ("wrong issuer", hs256(&with(json!({"iss": "evil"})), secret)),
        ("missing exp", hs256(&with(json!({"exp": null})), secret)),
        ("missing sub", hs256(&with(json!({"sub": null})), secret)),
        ("sub too long", hs256(&with(json!({"sub": "u".repeat(65)})), secret)),
        ("not yet valid", hs256(&with(json!({"nbf": now_s() + 3_600})), secret)),
        ("EdDSA with a wrong payload", {
            let good = ed_jwt(&claims("alice"));
            let mut parts: Vec<&str> = good.split('.').collect();
            let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims("bob").to_string());
            parts[1] = &forged;
            parts.join(".")
        }),
        ("garbage", "not.a.jwt".into()),
        ("empty", String::new()),
    ];
    for (what, jwt) in &cases {
        let mut c = Tcp::connect(server.tcp_addr).await;
        let r = c.call(json!({"op": "auth", "jwt": jwt})).await;
        assert_eq!(r["error"]["code"], "unauthorized", "{what}: {r}");
        assert!(c.closed().await, "{what}: the connection closes");
    }
    // Both credentials at once is not an auth message.
    let mut c = Tcp::connect(server.tcp_addr).await;
    let r = c.call(json!({"op": "auth", "jwt": user_jwt("alice"), "token": SERVICE})).await;
    assert_eq!(r["error"]["code"], "unauthorized");
    assert!(c.closed().await);
    // The server is unaffected: a good token still works.
    let mut ok = user_tcp(server.tcp_addr, &user_jwt("alice")).await;
    assert_usable(&mut ok).await;
    drop(ok);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_connection_closes_when_its_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_auth(dir.path()).await;
    let short =
        hs256(&json!({"sub": "alice", "exp": now_s() + 3, "aud": AUDIENCE, "iss": ISSUER}), JWT_SECRET.as_bytes());
    let mut c = user_tcp(server.tcp_addr, &short).await;
    assert_usable(&mut c).await;
    // Idle until after exp: the server closes it with a final `unauthorized` error.
    let last = tokio::time::timeout(Duration::from_secs(8), c.push()).await.expect("final error before the wait ends");
    assert_eq!((last["event"].as_str(), last["error"]["code"].as_str()), (Some("error"), Some("unauthorized")));
    assert!(c.closed().await, "closed after the token expired");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_users_authenticate_by_bearer_jwt_or_auth_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_auth(dir.path()).await;
    let mut service = Ws::connect(server.http_addr, Some(SERVICE)).await.unwrap();
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(sku("A", 10, None)).await;
    let bob_order = service.ok(order("bob", "A", 1, "b1")).await;
    let bob_id = bob_order["order_id"].clone();

    // Bearer JWT on the upgrade.
    let mut alice = Ws::connect(server.http_addr, Some(&user_jwt("alice"))).await.expect("bearer jwt accepted");
    let mine =
        alice.ok(json!({"op": "create_order", "items": [{"sku_id": "A", "qty": 1}], "idempotency_key": "a1"})).await;
    assert_eq!(mine["user_id"], "alice");
    let r = alice.call(json!({"op": "get_order", "order_id": bob_id})).await;
    assert_eq!(r["error"]["code"], "unknown_order", "{r}");
    let r = alice
        .call(json!({"op": "pay", "order_id": mine["order_id"], "payment_id": "x", "amount": mine["total"]}))
        .await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    let r = alice.call(json!({"op": "subscribe", "topic": "user:bob"})).await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    assert_eq!(alice.ok(json!({"op": "ping"})).await["pong"], true, "still usable");

    // A bad Bearer JWT is refused at the upgrade (HTTP 401), for each kind of bad.
    for bad in [
        unsecured(&claims("alice")),
        hs256(&json!({"sub": "alice", "exp": now_s() - 10, "aud": AUDIENCE, "iss": ISSUER}), JWT_SECRET.as_bytes()),
        "garbage".into(),
    ] {
        match Ws::connect(server.http_addr, Some(&bad)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
            other => panic!("expected 401, got {:?}", other.map(|_| "a connection")),
        }
    }

    // {"op":"auth","jwt":…} over WebSocket (EdDSA), and a bad one closes.
    let mut bob = Ws::connect(server.http_addr, None).await.unwrap();
    let r = bob.ok(json!({"op": "auth", "jwt": ed_jwt(&claims("bob"))})).await;
    assert_eq!(r["user_id"], "bob");
    assert_eq!(bob.ok(json!({"op": "get_order", "order_id": bob_id})).await["user_id"], "bob");
    let mut eve = Ws::connect(server.http_addr, None).await.unwrap();
    let r =
        eve.call(json!({"op": "auth", "jwt": hs256(&with_aud(&claims("eve"), "other"), JWT_SECRET.as_bytes())})).await;
    assert_eq!(r["error"]["code"], "unauthorized");
    assert!(eve.next().await.is_none(), "closed after a refused JWT");

    // The service pays over WebSocket.
    let pay = json!({"op": "pay", "order_id": bob_id, "payment_id": "psp-1", "amount": bob_order["total"]});
    assert_eq!(service.ok(pay).await["status"], "paid");
    drop((service, admin, alice, bob));
    server.shutdown().await.unwrap();
}

fn with_aud(claims: &Value, aud: &str) -> Value {
    let mut c = claims.clone();
    c["aud"] = json!(aud);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deprecated_client_token_still_works_as_service() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.auth.service_tokens.clear();
    cfg.auth.client_tokens = vec!["legacy-client-token".into()];
    let server = Server::start(cfg).await.unwrap();
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(sku("A", 10, None)).await;
    let mut legacy = Tcp::connect(server.tcp_addr).await;
    assert_eq!(legacy.ok(json!({"op": "auth", "token": "legacy-client-token"})).await["role"], "service");
    let o = legacy.ok(order("carol", "A", 1, "c1")).await;
    let paid =
        legacy.ok(json!({"op": "pay", "order_id": o["order_id"], "payment_id": "p", "amount": o["total"]})).await;
    assert_eq!(paid["status"], "paid");
    assert_usable(&mut legacy).await;
    drop((admin, legacy));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_rate_limit_keys_on_the_authenticated_user() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = auth_config(dir.path());
    cfg.limits.per_user_rps = 1;
    cfg.limits.per_user_burst = 2;
    let server = Server::start(cfg).await.unwrap();
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(sku("A", 100, None)).await;
    let mut alice = user_tcp(server.tcp_addr, &user_jwt("alice")).await;
    for key in ["a1", "a2"] {
        alice.ok(json!({"op": "create_order", "items": [{"sku_id": "A", "qty": 1}], "idempotency_key": key})).await;
    }
    let r = alice.call(json!({"op": "list_orders"})).await;
    assert_eq!(r["error"]["code"], "rate_limited", "alice's burst is spent: {r}");
    // The same bucket, whoever sends for alice; bob's is his own.
    let mut service = Tcp::login(server.tcp_addr, SERVICE).await;
    let r = service.call(order("alice", "A", 1, "s1")).await;
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    service.ok(order("bob", "A", 1, "b1")).await;
    assert_usable(&mut alice).await;
    drop((admin, alice, service));
    server.shutdown().await.unwrap();
}
