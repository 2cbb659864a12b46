//! The bad-input suite (issue 10): a table of malformed, hostile or out-of-range inputs, each
//! sent over real sockets on both transports (TCP JSON lines and WebSocket text frames) where it
//! applies, to one server per test run. For every case:
//!
//! * a typed error (the case's stable code) arrives;
//! * the connection still answers a `ping` afterwards, unless the protocol says it closes
//!   (`frame_too_large`, and `unauthorized` before authentication), in which case it closes;
//! * a second, healthy client on each transport keeps getting correct answers throughout (its
//!   requests are interleaved with every case: between sending the bad input and reading its
//!   error, and after).
//!
//! The table is data: to add a case, append a `case(..)` line to [`cases`] (or [`role_cases`]
//! for JWTs and roles), adding a [`Login`] variant if it needs a new way to authenticate. User
//! JWTs are HS256, made in the test with the server's secret; the server requires
//! `aud = surge-bad-input` (`[auth] jwt_audience`) so the wrong-audience case is real.
//!
//! Cases:
//! `malformed_json`, `truncated_after_colon`, `trailing_garbage`, `single_quotes`, `trailing_comma`,
//! `not_json_at_all`, `lone_surrogate_escape`, `json_array`, `json_string`, `json_number`,
//! `json_null`, `invalid_utf8`, `over_long_line`, `binary_frame`, `missing_op`, `op_not_a_string`,
//! `op_null`, `unknown_op`, `op_wrong_case`, `id_object`, `id_array`, `id_bool`,
//! `over_long_request_id`, `request_id_forging_log_lines`, `duplicate_op`, `duplicate_id`,
//! `duplicate_field_differing`, `duplicate_key_in_item`, `duplicate_key_nested`,
//! `deep_array_nesting_30000`, `deep_object_nesting_10000`, `nesting_past_serde_limit_129`,
//! `unknown_field`, `ping_with_field`, `missing_field`, `missing_items`, `sku_id_number`,
//! `sku_id_null`, `user_id_number`, `items_not_array`, `items_empty`, `too_many_items`,
//! `duplicate_sku_in_items`, `empty_sku_id`, `empty_user_id`, `empty_idempotency_key`,
//! `empty_payment_id`, `over_long_sku_id`, `over_long_sku_id_in_item`, `over_long_user_id`,
//! `over_long_user_id_list_orders`, `over_long_idempotency_key`, `over_long_payment_id`,
//! `over_long_reason`, `over_long_topic`, `qty_1e400`, `qty_2_pow_64`, `qty_negative`,
//! `qty_fractional`, `qty_zero`, `qty_u32_overflow`, `qty_string`, `qty_exponent`,
//! `order_id_negative`, `order_id_2_pow_64`, `order_id_fractional`, `order_id_not_digits`,
//! `order_id_unknown`, `expected_version_negative`, `list_limit_zero`, `list_limit_huge`,
//! `list_status_unknown`, `money_as_number`, `money_as_integer`, `money_not_decimal`,
//! `money_overflow`, `pay_amount_mismatch`, `pay_negative_amount`, `topic_unknown_kind`,
//! `topic_number`, `topic_empty_id`, `topic_order_not_digits`, `admin_op_as_service`, `auth_twice`,
//! `price_as_number`, `initial_stock_negative`, `delta_past_i64`, `adjustment_id_missing`,
//! `adjustment_id_empty`, `over_long_adjustment_id`, `resolution_unknown`,
//! `empty_sku_name`, `request_before_auth`, `bad_token`, `empty_token`, `token_not_a_string`,
//! `auth_with_unknown_field`, `auth_duplicate_token_key`, `malformed_json_before_auth`,
//! `invalid_utf8_before_auth`, `binary_before_auth`, `auth_timeout_silent`,
//! `auth_timeout_keepalives`, `auth_timeout_partial_message`; JWTs and roles: `jwt_expired`,
//! `jwt_wrong_signature`, `jwt_alg_none`, `jwt_wrong_audience`, `jwt_missing_exp`,
//! `jwt_and_token_both`, `user_auth_twice`, `user_gets_another_users_order`,
//! `user_cancels_another_users_order`, `user_subscribes_another_users_topic`,
//! `user_subscribes_another_users_order_topic`, `user_pays`, `admin_op_as_user`,
//! `admin_transition_as_user`, `admin_transition_as_service`, `user_id_mismatch_create_order`,
//! `user_id_mismatch_list_orders`, `bearer_user_pays`, `bearer_user_gets_another_users_order`.

mod gateway_support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway_support::{config, Tcp, Ws, ADMIN, JWT_SECRET, SERVICE, WAIT};
use serde_json::{json, Value};
use surge::gateway::{Server, ServerHandle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// How the bad client authenticates before sending the case's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Login {
    /// Not at all: the payload is the first thing it sends.
    None,
    /// `{"op":"auth","token":SERVICE}`.
    Service,
    /// `{"op":"auth","token":ADMIN}`.
    Admin,
    /// `{"op":"auth","jwt":…}` with a valid HS256 JWT for this `sub` (role `user`).
    User(&'static str),
    /// A valid HS256 JWT for this `sub` as `Authorization: Bearer` on the WebSocket upgrade
    /// (WebSocket only).
    UserBearer(&'static str),
}

/// What the bad client sends.
#[derive(Debug, Clone, Copy)]
enum Payload {
    /// A message: one line on TCP, one text frame on WebSocket. `{ORDER}` is replaced by the
    /// fixture order's id.
    Text(&'static str),
    /// A message built at run time (long or deep).
    Built(fn() -> String),
    /// Raw bytes (not UTF-8): one line on TCP, a text frame carrying them on WebSocket.
    Bytes(&'static [u8]),
    /// A binary WebSocket frame.
    Binary(&'static [u8]),
    /// Nothing: wait for the auth timeout.
    Silence,
    /// Only keep-alives (blank lines on TCP, pings on WebSocket) until the auth timeout.
    KeepAlives,
    /// The start of a message that never ends (no newline; a non-final text frame).
    Partial(&'static str),
}

/// What the protocol says happens to the connection after the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// It still answers a `ping`.
    Usable,
    /// It closes.
    Closes,
}

/// Which transports a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Both,
    Ws,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    login: Login,
    send: Payload,
    code: &'static str,
    after: After,
    on: On,
}

const fn case(name: &'static str, login: Login, send: Payload, code: &'static str, after: After, on: On) -> Case {
    Case { name, login, send, code, after, on }
}

fn over_long_line() -> String {
    format!(r#"{{"op":"ping","x":"{}"}}"#, "x".repeat(70_000))
}
fn over_long_request_id() -> String {
    format!(r#"{{"id":"{}","op":"ping"}}"#, "i".repeat(65))
}
fn deep_array_nesting_30000() -> String {
    format!(r#"{{"op":"ping","x":{}{}}}"#, "[".repeat(30_000), "]".repeat(30_000))
}
fn deep_object_nesting_10000() -> String {
    format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000))
}
fn nesting_past_serde_limit_129() -> String {
    format!(r#"{{"op":"get_sku","sku_id":{}"A"{}}}"#, "[".repeat(129), "]".repeat(129))
}
fn too_many_items() -> String {
    let items: Vec<String> = (0..21).map(|i| format!(r#"{{"sku_id":"S{i}","qty":1}}"#)).collect();
    format!(r#"{{"op":"create_order","user_id":"m","idempotency_key":"m9","items":[{}]}}"#, items.join(","))
}
fn order_with(user: &str, key: &str, sku: &str) -> String {
    format!(
        r#"{{"op":"create_order","user_id":"{user}","idempotency_key":"{key}","items":[{{"sku_id":"{sku}","qty":1}}]}}"#
    )
}
fn over_long_sku_id() -> String {
    format!(r#"{{"op":"get_sku","sku_id":"{}"}}"#, "s".repeat(65))
}
fn over_long_sku_id_in_item() -> String {
    order_with("l", "l1", &"s".repeat(65))
}
fn over_long_user_id() -> String {
    order_with(&"u".repeat(65), "l2", "A")
}
fn over_long_user_id_list_orders() -> String {
    format!(r#"{{"op":"list_orders","user_id":"{}"}}"#, "u".repeat(10_000))
}
fn over_long_idempotency_key() -> String {
    order_with("l", &"k".repeat(129), "A")
}
fn over_long_payment_id() -> String {
    format!(r#"{{"op":"pay","order_id":"{{ORDER}}","payment_id":"{}","amount":"59.90"}}"#, "p".repeat(65))
}
fn over_long_reason() -> String {
    format!(r#"{{"op":"cancel_order","order_id":"{{ORDER}}","reason":"{}"}}"#, "r".repeat(257))
}
fn over_long_adjustment_id() -> String {
    format!(r#"{{"op":"adjust_stock","sku_id":"A","adjustment_id":"{}","delta":1,"reason":"x"}}"#, "a".repeat(65))
}
fn over_long_topic() -> String {
    format!(r#"{{"op":"subscribe","topic":"user:{}"}}"#, "u".repeat(65))
}

// ---- JWTs (HS256, made here with the server's secret unless a case forges one) ----------------

/// The `aud` the suite's server requires (`[auth] jwt_audience`).
const AUDIENCE: &str = "surge-bad-input";

/// Claims for `sub` that the server accepts (an hour left, the right audience).
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 3_600, "aud": AUDIENCE})
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret).expect("an HMAC key");
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), claims, &key)
        .expect("encode a JWT")
}

fn user_jwt(sub: &str) -> String {
    hs256(&claims(sub), JWT_SECRET.as_bytes())
}

fn auth_jwt(jwt: &str) -> String {
    json!({"op": "auth", "jwt": jwt}).to_string()
}

fn jwt_expired() -> String {
    let mut c = claims("alice");
    c["exp"] = json!(jsonwebtoken::get_current_timestamp() - 120);
    auth_jwt(&hs256(&c, JWT_SECRET.as_bytes()))
}
fn jwt_wrong_signature() -> String {
    auth_jwt(&hs256(&claims("alice"), b"not-the-servers-secret-32-bytes!"))
}
/// `alg: none`, no signature (RFC 7519 §6, "Unsecured JWTs"): must never be accepted.
fn jwt_alg_none() -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    auth_jwt(&format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims("alice"))))
}
fn jwt_wrong_audience() -> String {
    let mut c = claims("alice");
    c["aud"] = json!("another-service");
    auth_jwt(&hs256(&c, JWT_SECRET.as_bytes()))
}
fn jwt_missing_exp() -> String {
    let mut c = claims("alice");
    c.as_object_mut().expect("claims are an object").remove("exp");
    auth_jwt(&hs256(&c, JWT_SECRET.as_bytes()))
}
fn jwt_and_token_both() -> String {
    json!({"op": "auth", "jwt": user_jwt("alice"), "token": SERVICE}).to_string()
}
fn user_auth_twice() -> String {
    auth_jwt(&user_jwt("mallory"))
}

/// The table.
fn cases() -> Vec<Case> {
    vec![
        case("malformed_json", Login::Service, Payload::Text(r#"{"op":"ping""#), "bad_json", After::Usable, On::Both),
        case(
            "truncated_after_colon",
            Login::Service,
            Payload::Text(r#"{"id":1,"op":"#),
            "bad_json",
            After::Usable,
            On::Both,
        ),
        case(
            "trailing_garbage",
            Login::Service,
            Payload::Text(r#"{"op":"ping"} x"#),
            "bad_json",
            After::Usable,
            On::Both,
        ),
        case("single_quotes", Login::Service, Payload::Text(r#"{'op':'ping'}"#), "bad_json", After::Usable, On::Both),
        case("trailing_comma", Login::Service, Payload::Text(r#"{"op":"ping",}"#), "bad_json", After::Usable, On::Both),
        case("not_json_at_all", Login::Service, Payload::Text(r#"hello"#), "bad_json", After::Usable, On::Both),
        case(
            "lone_surrogate_escape",
            Login::Service,
            Payload::Text(r#"{"op":"ping","x":"\ud800"}"#),
            "bad_json",
            After::Usable,
            On::Both,
        ),
        case(
            "json_array",
            Login::Service,
            Payload::Text(r#"[{"op":"ping"}]"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case("json_string", Login::Service, Payload::Text(r#""ping""#), "invalid_request", After::Usable, On::Both),
        case("json_number", Login::Service, Payload::Text(r#"42"#), "invalid_request", After::Usable, On::Both),
        case("json_null", Login::Service, Payload::Text(r#"null"#), "invalid_request", After::Usable, On::Both),
        case(
            "invalid_utf8",
            Login::Service,
            Payload::Bytes(b"{\"op\":\"ping\",\"x\":\"\xff\xfe\"}"),
            "bad_utf8",
            After::Usable,
            On::Both,
        ),
        case(
            "over_long_line",
            Login::Service,
            Payload::Built(over_long_line),
            "frame_too_large",
            After::Closes,
            On::Both,
        ),
        case(
            "binary_frame",
            Login::Service,
            Payload::Binary(b"{\"op\":\"ping\"}"),
            "binary_frame",
            After::Usable,
            On::Ws,
        ),
        case("missing_op", Login::Service, Payload::Text(r#"{"id":1}"#), "invalid_request", After::Usable, On::Both),
        case(
            "op_not_a_string",
            Login::Service,
            Payload::Text(r#"{"op":7}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case("op_null", Login::Service, Payload::Text(r#"{"op":null}"#), "invalid_request", After::Usable, On::Both),
        case(
            "unknown_op",
            Login::Service,
            Payload::Text(r#"{"op":"drop_tables"}"#),
            "unknown_op",
            After::Usable,
            On::Both,
        ),
        case("op_wrong_case", Login::Service, Payload::Text(r#"{"op":"PING"}"#), "unknown_op", After::Usable, On::Both),
        case(
            "id_object",
            Login::Service,
            Payload::Text(r#"{"id":{},"op":"ping"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "id_array",
            Login::Service,
            Payload::Text(r#"{"id":[1],"op":"ping"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "id_bool",
            Login::Service,
            Payload::Text(r#"{"id":true,"op":"ping"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "over_long_request_id",
            Login::Service,
            Payload::Built(over_long_request_id),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "request_id_forging_log_lines",
            Login::Service,
            Payload::Text(r#"{"id":"x\n{\"level\":\"INFO\",\"msg\":\"forged\"}","op":"nope"}"#),
            "unknown_op",
            After::Usable,
            On::Both,
        ),
        case(
            "duplicate_op",
            Login::Service,
            Payload::Text(r#"{"op":"ping","op":"ping"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "duplicate_id",
            Login::Service,
            Payload::Text(r#"{"id":1,"id":2,"op":"ping"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "duplicate_field_differing",
            Login::Service,
            Payload::Text(r#"{"op":"get_sku","sku_id":"A","sku_id":"B"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "duplicate_key_in_item",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"dup","idempotency_key":"d1","items":[{"sku_id":"A","qty":1,"qty":900}]}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "duplicate_key_nested",
            Login::Service,
            Payload::Text(r#"{"op":"ping","x":{"a":1,"a":2}}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "deep_array_nesting_30000",
            Login::Service,
            Payload::Built(deep_array_nesting_30000),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "deep_object_nesting_10000",
            Login::Service,
            Payload::Built(deep_object_nesting_10000),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "nesting_past_serde_limit_129",
            Login::Service,
            Payload::Built(nesting_past_serde_limit_129),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "unknown_field",
            Login::Service,
            Payload::Text(r#"{"op":"get_sku","sku_id":"A","color":"red"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "ping_with_field",
            Login::Service,
            Payload::Text(r#"{"op":"ping","x":1}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "missing_field",
            Login::Service,
            Payload::Text(r#"{"op":"get_sku"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "missing_items",
            Login::Service,
            Payload::Text(r#"{"op":"create_order","user_id":"m","idempotency_key":"m1"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "sku_id_number",
            Login::Service,
            Payload::Text(r#"{"op":"get_sku","sku_id":5}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "sku_id_null",
            Login::Service,
            Payload::Text(r#"{"op":"get_sku","sku_id":null}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "user_id_number",
            Login::Service,
            Payload::Text(r#"{"op":"list_orders","user_id":42}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "items_not_array",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"m","idempotency_key":"m2","items":{"sku_id":"A","qty":1}}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "items_empty",
            Login::Service,
            Payload::Text(r#"{"op":"create_order","user_id":"m","idempotency_key":"m3","items":[]}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "too_many_items",
            Login::Service,
            Payload::Built(too_many_items),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "duplicate_sku_in_items",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"m","idempotency_key":"m4","items":[{"sku_id":"A","qty":1},{"sku_id":"A","qty":1}]}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "empty_sku_id",
            Login::Service,
            Payload::Text(r#"{"op":"get_sku","sku_id":""}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "empty_user_id",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"","idempotency_key":"e1","items":[{"sku_id":"A","qty":1}]}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "empty_idempotency_key",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"e","idempotency_key":"","items":[{"sku_id":"A","qty":1}]}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "empty_payment_id",
            Login::Service,
            Payload::Text(r#"{"op":"pay","order_id":"{ORDER}","payment_id":"","amount":"59.90"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "over_long_sku_id",
            Login::Service,
            Payload::Built(over_long_sku_id),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "over_long_sku_id_in_item",
            Login::Service,
            Payload::Built(over_long_sku_id_in_item),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "over_long_user_id",
            Login::Service,
            Payload::Built(over_long_user_id),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "over_long_user_id_list_orders",
            Login::Service,
            Payload::Built(over_long_user_id_list_orders),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "over_long_idempotency_key",
            Login::Service,
            Payload::Built(over_long_idempotency_key),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "over_long_payment_id",
            Login::Service,
            Payload::Built(over_long_payment_id),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "over_long_reason",
            Login::Service,
            Payload::Built(over_long_reason),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "over_long_topic",
            Login::Service,
            Payload::Built(over_long_topic),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "qty_1e400",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"n","idempotency_key":"n1","items":[{"sku_id":"A","qty":1e400}]}"#,
            ),
            "bad_json",
            After::Usable,
            On::Both,
        ),
        case(
            "qty_2_pow_64",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"n","idempotency_key":"n2","items":[{"sku_id":"A","qty":18446744073709551616}]}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "qty_negative",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"n","idempotency_key":"n3","items":[{"sku_id":"A","qty":-1}]}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "qty_fractional",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"n","idempotency_key":"n4","items":[{"sku_id":"A","qty":1.5}]}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "qty_zero",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"n","idempotency_key":"n5","items":[{"sku_id":"A","qty":0}]}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "qty_u32_overflow",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"n","idempotency_key":"n6","items":[{"sku_id":"A","qty":4294967296}]}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "qty_string",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"n","idempotency_key":"n7","items":[{"sku_id":"A","qty":"1"}]}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "qty_exponent",
            Login::Service,
            Payload::Text(
                r#"{"op":"create_order","user_id":"n","idempotency_key":"n8","items":[{"sku_id":"A","qty":1e2}]}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "order_id_negative",
            Login::Service,
            Payload::Text(r#"{"op":"get_order","order_id":-1}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "order_id_2_pow_64",
            Login::Service,
            Payload::Text(r#"{"op":"get_order","order_id":18446744073709551616}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "order_id_fractional",
            Login::Service,
            Payload::Text(r#"{"op":"get_order","order_id":1.5}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "order_id_not_digits",
            Login::Service,
            Payload::Text(r#"{"op":"get_order","order_id":"12ab"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "order_id_unknown",
            Login::Service,
            Payload::Text(r#"{"op":"get_order","order_id":1}"#),
            "unknown_order",
            After::Usable,
            On::Both,
        ),
        case(
            "expected_version_negative",
            Login::Service,
            Payload::Text(r#"{"op":"cancel_order","order_id":"{ORDER}","expected_version":-1}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "list_limit_zero",
            Login::Service,
            Payload::Text(r#"{"op":"list_orders","user_id":"alice","limit":0}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "list_limit_huge",
            Login::Service,
            Payload::Text(r#"{"op":"list_orders","user_id":"alice","limit":1000000000}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "list_status_unknown",
            Login::Service,
            Payload::Text(r#"{"op":"list_orders","user_id":"alice","status":"lost"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "money_as_number",
            Login::Service,
            Payload::Text(r#"{"op":"pay","order_id":"{ORDER}","payment_id":"p-num","amount":59.9}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "money_as_integer",
            Login::Service,
            Payload::Text(r#"{"op":"pay","order_id":"{ORDER}","payment_id":"p-int","amount":60}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "money_not_decimal",
            Login::Service,
            Payload::Text(r#"{"op":"pay","order_id":"{ORDER}","payment_id":"p-abc","amount":"abc"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "money_overflow",
            Login::Service,
            Payload::Text(
                r#"{"op":"pay","order_id":"{ORDER}","payment_id":"p-big","amount":"99999999999999999999999999999999999"}"#,
            ),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "pay_amount_mismatch",
            Login::Service,
            Payload::Text(r#"{"op":"pay","order_id":"{ORDER}","payment_id":"p-low","amount":"1.00"}"#),
            "amount_mismatch",
            After::Usable,
            On::Both,
        ),
        case(
            "pay_negative_amount",
            Login::Service,
            Payload::Text(r#"{"op":"pay","order_id":"{ORDER}","payment_id":"p-neg","amount":"-59.90"}"#),
            "amount_mismatch",
            After::Usable,
            On::Both,
        ),
        case(
            "topic_unknown_kind",
            Login::Service,
            Payload::Text(r#"{"op":"subscribe","topic":"weather:today"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "topic_number",
            Login::Service,
            Payload::Text(r#"{"op":"subscribe","topic":5}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "topic_empty_id",
            Login::Service,
            Payload::Text(r#"{"op":"subscribe","topic":"sku:"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "topic_order_not_digits",
            Login::Service,
            Payload::Text(r#"{"op":"subscribe","topic":"order:abc"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "admin_op_as_service",
            Login::Service,
            Payload::Text(r#"{"op":"create_sku","sku_id":"Z","name":"Z","price":"1.00","initial_stock":1}"#),
            "forbidden",
            After::Usable,
            On::Both,
        ),
        case(
            "auth_twice",
            Login::Service,
            Payload::Text(r#"{"op":"auth","token":"service-token-for-tests"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "price_as_number",
            Login::Admin,
            Payload::Text(r#"{"op":"create_sku","sku_id":"P","name":"P","price":1.5,"initial_stock":1}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "initial_stock_negative",
            Login::Admin,
            Payload::Text(r#"{"op":"create_sku","sku_id":"P","name":"P","price":"1.50","initial_stock":-5}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "delta_past_i64",
            Login::Admin,
            Payload::Text(r#"{"op":"adjust_stock","sku_id":"A","adjustment_id":"big","delta":9223372036854775808,"reason":"x"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        // An adjustment that slipped through would show in the healthy clients' stock check.
        case(
            "adjustment_id_missing",
            Login::Admin,
            Payload::Text(r#"{"op":"adjust_stock","sku_id":"A","delta":1,"reason":"x"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "adjustment_id_empty",
            Login::Admin,
            Payload::Text(r#"{"op":"adjust_stock","sku_id":"A","adjustment_id":"","delta":1,"reason":"x"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "over_long_adjustment_id",
            Login::Admin,
            Payload::Built(over_long_adjustment_id),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "resolution_unknown",
            Login::Admin,
            Payload::Text(r#"{"op":"resolve_dispute","order_id":"{ORDER}","resolution":"maybe"}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "empty_sku_name",
            Login::Admin,
            Payload::Text(r#"{"op":"create_sku","sku_id":"P","name":"","price":"1.50","initial_stock":1}"#),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        case(
            "request_before_auth",
            Login::None,
            Payload::Text(r#"{"op":"ping"}"#),
            "unauthorized",
            After::Closes,
            On::Both,
        ),
        case(
            "bad_token",
            Login::None,
            Payload::Text(r#"{"op":"auth","token":"wrong-token-123"}"#),
            "unauthorized",
            After::Closes,
            On::Both,
        ),
        case(
            "empty_token",
            Login::None,
            Payload::Text(r#"{"op":"auth","token":""}"#),
            "unauthorized",
            After::Closes,
            On::Both,
        ),
        case(
            "token_not_a_string",
            Login::None,
            Payload::Text(r#"{"op":"auth","token":123}"#),
            "unauthorized",
            After::Closes,
            On::Both,
        ),
        case(
            "auth_with_unknown_field",
            Login::None,
            Payload::Text(r#"{"op":"auth","token":"service-token-for-tests","role":"admin"}"#),
            "unauthorized",
            After::Closes,
            On::Both,
        ),
        case(
            "auth_duplicate_token_key",
            Login::None,
            Payload::Text(r#"{"op":"auth","token":"wrong-token-123","token":"service-token-for-tests"}"#),
            "unauthorized",
            After::Closes,
            On::Both,
        ),
        case(
            "malformed_json_before_auth",
            Login::None,
            Payload::Text(r#"{"op":"auth""#),
            "unauthorized",
            After::Closes,
            On::Both,
        ),
        case(
            "invalid_utf8_before_auth",
            Login::None,
            Payload::Bytes(b"\xff\xfe"),
            "unauthorized",
            After::Closes,
            On::Both,
        ),
        case(
            "binary_before_auth",
            Login::None,
            Payload::Binary(b"{\"op\":\"auth\"}"),
            "unauthorized",
            After::Closes,
            On::Ws,
        ),
        case("auth_timeout_silent", Login::None, Payload::Silence, "unauthorized", After::Closes, On::Both),
        case("auth_timeout_keepalives", Login::None, Payload::KeepAlives, "unauthorized", After::Closes, On::Both),
        case(
            "auth_timeout_partial_message",
            Login::None,
            Payload::Partial(r#"{"op":"auth","tok"#),
            "unauthorized",
            After::Closes,
            On::Both,
        ),
    ]
    .into_iter()
    .chain(role_cases())
    .collect()
}

/// JWTs and roles (issue 10 item 10): bad JWTs close the connection; a `user` acts only as its
/// `sub` (the fixture order belongs to `alice`), never pays and never does admin ops.
fn role_cases() -> Vec<Case> {
    let closes = |name, send| case(name, Login::None, Payload::Built(send), "unauthorized", After::Closes, On::Both);
    let user = |name, sub, send, code| case(name, Login::User(sub), Payload::Text(send), code, After::Usable, On::Both);
    vec![
        closes("jwt_expired", jwt_expired),
        closes("jwt_wrong_signature", jwt_wrong_signature),
        closes("jwt_alg_none", jwt_alg_none),
        closes("jwt_wrong_audience", jwt_wrong_audience),
        closes("jwt_missing_exp", jwt_missing_exp),
        closes("jwt_and_token_both", jwt_and_token_both),
        case(
            "user_auth_twice",
            Login::User("mallory"),
            Payload::Built(user_auth_twice),
            "invalid_request",
            After::Usable,
            On::Both,
        ),
        user("user_gets_another_users_order", "mallory", r#"{"op":"get_order","order_id":"{ORDER}"}"#, "unknown_order"),
        user(
            "user_cancels_another_users_order",
            "mallory",
            r#"{"op":"cancel_order","order_id":"{ORDER}"}"#,
            "unknown_order",
        ),
        user(
            "user_subscribes_another_users_topic",
            "mallory",
            r#"{"op":"subscribe","topic":"user:alice"}"#,
            "forbidden",
        ),
        user(
            "user_subscribes_another_users_order_topic",
            "mallory",
            r#"{"op":"subscribe","topic":"order:{ORDER}"}"#,
            "unknown_order",
        ),
        user(
            "user_pays",
            "alice",
            r#"{"op":"pay","order_id":"{ORDER}","payment_id":"invented-by-user","amount":"59.90"}"#,
            "forbidden",
        ),
        user(
            "admin_op_as_user",
            "alice",
            r#"{"op":"create_sku","sku_id":"U","name":"U","price":"1.00","initial_stock":1}"#,
            "forbidden",
        ),
        user("admin_transition_as_user", "alice", r#"{"op":"start_packing","order_id":"{ORDER}"}"#, "forbidden"),
        case(
            "admin_transition_as_service",
            Login::Service,
            Payload::Text(r#"{"op":"ship","order_id":"{ORDER}","tracking_number":"T1"}"#),
            "forbidden",
            After::Usable,
            On::Both,
        ),
        user(
            "user_id_mismatch_create_order",
            "mallory",
            r#"{"op":"create_order","user_id":"alice","idempotency_key":"mal1","items":[{"sku_id":"A","qty":1}]}"#,
            "forbidden",
        ),
        user("user_id_mismatch_list_orders", "mallory", r#"{"op":"list_orders","user_id":"alice"}"#, "forbidden"),
        case(
            "bearer_user_pays",
            Login::UserBearer("alice"),
            Payload::Text(r#"{"op":"pay","order_id":"{ORDER}","payment_id":"invented-by-bearer","amount":"59.90"}"#),
            "forbidden",
            After::Usable,
            On::Ws,
        ),
        case(
            "bearer_user_gets_another_users_order",
            Login::UserBearer("mallory"),
            Payload::Text(r#"{"op":"get_order","order_id":"{ORDER}"}"#),
            "unknown_order",
            After::Usable,
            On::Ws,
        ),
    ]
}

// ---- clients ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Ws,
}

/// What reading from the bad client gave.
#[derive(Debug)]
enum Got {
    Msg(Value),
    Closed,
    Nothing,
}

/// A raw client of either transport (cancel-safe reads, raw writes). The size difference
/// between the variants does not matter: a test holds one or two.
#[allow(clippy::large_enum_variant)]
enum Raw {
    Tcp(Lines<BufReader<OwnedReadHalf>>, OwnedWriteHalf),
    Ws(gateway_support::WsStream),
}

impl Raw {
    /// Connect; a [`Login::UserBearer`] authenticates on the WebSocket upgrade.
    async fn open(t: Transport, server: &ServerHandle, login: Login) -> Raw {
        match t {
            Transport::Tcp => {
                assert!(!matches!(login, Login::UserBearer(_)), "Bearer JWTs exist only on the WebSocket upgrade");
                let (rd, wr) = TcpStream::connect(server.tcp_addr).await.expect("connect").into_split();
                Raw::Tcp(BufReader::new(rd).lines(), wr)
            }
            Transport::Ws => {
                let bearer = match login {
                    Login::UserBearer(sub) => Some(user_jwt(sub)),
                    _ => None,
                };
                Raw::Ws(Ws::connect(server.http_addr, bearer.as_deref()).await.expect("upgrade").ws)
            }
        }
    }

    /// Send one message; `false` if the connection is already gone.
    async fn send(&mut self, p: Payload, order: &str) -> bool {
        match (self, p) {
            (Raw::Tcp(_, wr), Payload::Partial(s)) => wr.write_all(s.as_bytes()).await.is_ok(),
            (Raw::Tcp(_, wr), Payload::Bytes(b)) => wr.write_all(&[b, b"\n"].concat()).await.is_ok(),
            (Raw::Tcp(_, wr), Payload::KeepAlives) => wr.write_all(b"\n").await.is_ok(),
            (Raw::Tcp(_, wr), p) => {
                let line = format!("{}\n", text(p, order));
                wr.write_all(line.as_bytes()).await.is_ok()
            }
            (Raw::Ws(ws), p) => {
                let msg = match p {
                    Payload::Bytes(b) => Message::Frame(Frame::message(b.to_vec(), OpCode::Data(Data::Text), true)),
                    Payload::Binary(b) => Message::binary(b.to_vec()),
                    Payload::KeepAlives => Message::Ping(b"keep-alive".to_vec().into()),
                    Payload::Partial(s) => {
                        Message::Frame(Frame::message(s.as_bytes().to_vec(), OpCode::Data(Data::Text), false))
                    }
                    p => Message::text(text(p, order)),
                };
                ws.send(msg).await.is_ok()
            }
        }
    }

    /// The next message, waiting at most `wait`.
    async fn recv(&mut self, wait: Duration) -> Got {
        let got = tokio::time::timeout(wait, async {
            match self {
                Raw::Tcp(lines, _) => match lines.next_line().await {
                    Ok(Some(l)) => Got::Msg(serde_json::from_str(&l).expect("the server sends JSON lines")),
                    Ok(None) | Err(_) => Got::Closed,
                },
                Raw::Ws(ws) => loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            break Got::Msg(serde_json::from_str(t.as_str()).expect("the server sends JSON"))
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Binary(_))) => panic!("the server never sends binary frames"),
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break Got::Closed,
                    }
                },
            }
        })
        .await;
        got.unwrap_or(Got::Nothing)
    }

    /// The next reply (not a push), or `Closed` / `Nothing`.
    async fn reply(&mut self, wait: Duration) -> Got {
        loop {
            match self.recv(wait).await {
                Got::Msg(v) if v.get("event").is_some() => continue,
                got => return got,
            }
        }
    }

    async fn login(&mut self, login: Login) {
        let auth = match login {
            Login::None | Login::UserBearer(_) => return,
            Login::Service => json!({"id": "login", "op": "auth", "token": SERVICE}),
            Login::Admin => json!({"id": "login", "op": "auth", "token": ADMIN}),
            Login::User(sub) => json!({"id": "login", "op": "auth", "jwt": user_jwt(sub)}),
        }
        .to_string();
        assert!(self.send(Payload::Text(Box::leak(auth.into_boxed_str())), "").await);
        match self.reply(WAIT).await {
            Got::Msg(v) => assert_eq!(v["ok"], true, "login: {v}"),
            other => panic!("login: {other:?}"),
        }
    }
}

fn text(p: Payload, order: &str) -> String {
    match p {
        Payload::Text(s) => s.replace("{ORDER}", order),
        Payload::Built(f) => f().replace("{ORDER}", order),
        other => panic!("not a text payload: {other:?}"),
    }
}

// ---- the healthy clients ---------------------------------------------------------------------

/// A TCP and a WebSocket client that must keep getting correct answers.
struct Healthy {
    tcp: Tcp,
    ws: Ws,
    order: String,
    checks: u64,
    /// The case being run, named when a check fails (a bad client changed what it must not).
    during: &'static str,
}

impl Healthy {
    async fn check(&mut self) {
        self.checks += 1;
        let during = self.during;
        let sku = self.tcp.ok(json!({"op": "get_sku", "sku_id": "A"})).await;
        let counts = (sku["available"].as_u64(), sku["reserved"].as_u64());
        assert_eq!(counts, (Some(999), Some(1)), "during {during}: {sku}");
        let order = self.ws.ok(json!({"op": "get_order", "order_id": self.order})).await;
        assert_eq!(order["status"], "pending_payment", "during {during}: {order}");
        assert_eq!(order["total"], "59.90", "during {during}: {order}");
        assert_eq!(self.ws.ok(json!({"op": "ping"})).await["pong"], true);
    }
}

async fn setup() -> (tempfile::TempDir, ServerHandle, Healthy) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.limits.auth_timeout_ms = 1_000;
    cfg.limits.per_user_rps = 100_000;
    cfg.limits.per_user_burst = 100_000;
    cfg.auth.jwt_audience = AUDIENCE.into();
    cfg.auth.jwt_leeway_ms = 0;
    let server = Server::start(cfg).await.expect("start");
    let mut admin = Tcp::login(server.tcp_addr, ADMIN).await;
    admin.ok(json!({"op": "create_sku", "sku_id": "A", "name": "A", "price": "59.90", "initial_stock": 1_000})).await;
    let order = admin
        .ok(json!({"op": "create_order", "user_id": "alice", "items": [{"sku_id": "A", "qty": 1}],
                    "idempotency_key": "fixture"}))
        .await;
    let order = match &order["order_id"] {
        Value::String(s) => s.clone(),
        n => n.to_string(),
    };
    let tcp = Tcp::login(server.tcp_addr, SERVICE).await;
    let mut ws = Ws::connect(server.http_addr, None).await.expect("upgrade");
    ws.ok(json!({"op": "auth", "token": SERVICE})).await;
    (dir, server, Healthy { tcp, ws, order, checks: 0, during: "setup" })
}

// ---- the runner ------------------------------------------------------------------------------

/// Run one case on one transport; `Err` says what went wrong. The healthy clients check
/// after every case, passed or not, so damage done by a failed case is named by that case.
async fn run(case: &Case, t: Transport, server: &ServerHandle, healthy: &mut Healthy) -> Result<(), String> {
    let verdict = run_case(case, t, server, healthy).await;
    healthy.check().await;
    verdict
}

async fn run_case(case: &Case, t: Transport, server: &ServerHandle, healthy: &mut Healthy) -> Result<(), String> {
    let mut c = Raw::open(t, server, case.login).await;
    c.login(case.login).await;
    let first = match case.send {
        Payload::Silence | Payload::KeepAlives => {
            healthy.check().await; // interleaved with the silent client's wait
            Got::Nothing
        }
        p => {
            c.send(p, &healthy.order).await;
            healthy.check().await; // interleaved with the bad input
            c.reply(WAIT).await
        }
    };
    let first = match (first, case.send) {
        (Got::Nothing, Payload::Silence) => c.reply(WAIT).await,
        (Got::Nothing, Payload::KeepAlives) => keep_alive_until_answer(&mut c).await,
        (got, _) => got,
    };
    let Got::Msg(v) = first else { return Err(format!("no error reply: {first:?}")) };
    if v["ok"] != false || v["error"]["code"] != case.code {
        return Err(format!("expected error {}, got {v}", case.code));
    }
    match case.after {
        After::Usable => {
            let ping = json!({"id": "after", "op": "ping"}).to_string();
            c.send(Payload::Text(Box::leak(ping.into_boxed_str())), "").await;
            match c.reply(WAIT).await {
                Got::Msg(p) if p["id"] == "after" && p["result"]["pong"] == true => {}
                other => return Err(format!("not usable afterwards: {other:?}")),
            }
        }
        After::Closes => match c.reply(WAIT).await {
            Got::Closed => {}
            other => return Err(format!("must close, got {other:?}")),
        },
    }
    Ok(())
}

/// Send keep-alives every 100 ms until something arrives (at most WAIT).
async fn keep_alive_until_answer(c: &mut Raw) -> Got {
    let until = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < until {
        if !c.send(Payload::KeepAlives, "").await {
            return Got::Closed;
        }
        match c.recv(Duration::from_millis(100)).await {
            Got::Nothing => continue,
            got => return got,
        }
    }
    Got::Nothing
}

async fn run_all(transport: Transport) {
    let (_dir, server, mut healthy) = setup().await;
    healthy.check().await;
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in cases() {
        if case.on == On::Ws && transport != Transport::Ws {
            continue;
        }
        ran += 1;
        healthy.during = case.name;
        if let Err(e) = run(&case, transport, &server, &mut healthy).await {
            failures.push(format!("{} ({transport:?}): {e}", case.name));
        }
    }
    assert!(failures.is_empty(), "{} of {ran} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert!(healthy.checks >= 2 * ran as u64);
    // Every bad client is gone; the healthy ones (and the admin) remain.
    server.shutdown().await.expect("shutdown");
}

#[test]
fn the_table_has_at_least_60_cases_with_unique_names() {
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_over_tcp() {
    run_all(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_over_websocket() {
    run_all(Transport::Ws).await;
}
