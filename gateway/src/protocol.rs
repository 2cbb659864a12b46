//! The wire protocol: request parsing (typed, strict) and reply encoding. Shared by every
//! transport. See `docs/protocol.md`.
//!
//! Parsing never panics and lets nothing invalid through: a request is a JSON object with an
//! optional `id` (number, or string of at most 64 bytes), an `op`, and exactly the fields of
//! that op (`deny_unknown_fields`, typed: quantities are `u32`, money is a decimal *string*).

use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use surge_engine::{DisputeResolution, EngineError, OrderId, OrderStatus};

use crate::auth::Role;

/// Longest string `id`, in bytes.
pub const ID_STRING_BYTES_MAX: usize = 64;

/// A gateway-level error reply (never reached the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// Stable `snake_case` code.
    pub code: &'static str,
    /// Human-readable message (never contains a token or the whole payload).
    pub message: String,
    /// For `rate_limited`: when to retry.
    pub retry_after_ms: Option<u64>,
}

impl WireError {
    /// A new error.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_ms: None }
    }
}

/// An order id on the wire: a JSON number, or a decimal string (for clients whose numbers are
/// doubles, such as JavaScript: snowflakes exceed 2^53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireOrderId(pub OrderId);

impl<'de> Deserialize<'de> for WireOrderId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("order_id must be a u64 or a decimal string"))? {
            Raw::N(n) => Ok(Self(OrderId(n))),
            Raw::S(s) => s
                .parse::<u64>()
                .map(|n| Self(OrderId(n)))
                .map_err(|_| serde::de::Error::custom("order_id must be a u64 or a decimal string")),
        }
    }
}

fn double_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `create_sku`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSkuReq {
    pub sku_id: String,
    pub name: String,
    pub price: Decimal,
    pub initial_stock: u64,
    #[serde(default)]
    pub per_user_limit: Option<u32>,
    #[serde(default)]
    pub sale_starts_at_ms: Option<i64>,
    #[serde(default)]
    pub sale_ends_at_ms: Option<i64>,
    #[serde(default)]
    pub paused: bool,
}

/// `update_sku`: absent fields are unchanged; `null` clears an optional rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSkuReq {
    pub sku_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub price: Option<Decimal>,
    #[serde(default, deserialize_with = "double_option")]
    pub per_user_limit: Option<Option<u32>>,
    #[serde(default, deserialize_with = "double_option")]
    pub sale_starts_at_ms: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    pub sale_ends_at_ms: Option<Option<i64>>,
    #[serde(default)]
    pub paused: Option<bool>,
}

/// `adjust_stock`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustStockReq {
    pub sku_id: String,
    pub delta: i64,
    pub reason: String,
}

/// `get_sku`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuRef {
    pub sku_id: String,
}

/// One line item of `create_order`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemReq {
    pub sku_id: String,
    pub qty: u32,
}

/// `create_order`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderReq {
    pub user_id: String,
    pub items: Vec<ItemReq>,
    pub idempotency_key: String,
}

/// `get_order`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRef {
    pub order_id: WireOrderId,
}

/// `list_orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListOrdersReq {
    pub user_id: String,
    #[serde(default)]
    pub status: Option<OrderStatus>,
    #[serde(default)]
    pub page: usize,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    20
}

/// `pay` (the PSP's callback).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayReq {
    pub order_id: WireOrderId,
    pub payment_id: String,
    pub amount: Decimal,
    #[serde(default)]
    pub expected_version: Option<u32>,
}

/// Transitions without parameters (`cancel_order`, `start_packing`, `deliver`, `complete`,
/// `request_refund`, `confirm_refund`, `reject_refund`, `open_dispute`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionReq {
    pub order_id: WireOrderId,
    #[serde(default)]
    pub expected_version: Option<u32>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `ship`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipReq {
    pub order_id: WireOrderId,
    pub tracking_number: String,
    #[serde(default)]
    pub expected_version: Option<u32>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `resolve_dispute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveReq {
    pub order_id: WireOrderId,
    pub resolution: DisputeResolution,
    #[serde(default)]
    pub expected_version: Option<u32>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `subscribe` / `unsubscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicReq {
    pub topic: String,
}

/// `auth`: exactly one of `token` (role `admin` or `service`) and `jwt` (role `user`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthReq {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub jwt: Option<String>,
}

/// What an `auth` message carries.
pub enum Credential {
    /// A static token (`{"op":"auth","token":…}`).
    Token(String),
    /// A user JWT (`{"op":"auth","jwt":…}`).
    Jwt(String),
}

/// `ping`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A parsed, typed request.
#[derive(Debug)]
#[allow(missing_docs)]
pub enum Op {
    CreateSku(CreateSkuReq),
    UpdateSku(UpdateSkuReq),
    AdjustStock(AdjustStockReq),
    GetSku(SkuRef),
    CreateOrder(CreateOrderReq),
    GetOrder(OrderRef),
    ListOrders(ListOrdersReq),
    Pay(PayReq),
    /// A parameterless transition, by op name.
    Transition(&'static str, TransitionReq),
    Ship(ShipReq),
    ResolveDispute(ResolveReq),
    Ping,
    Subscribe(TopicReq),
    Unsubscribe(TopicReq),
}

const ADMIN: &[Role] = &[Role::Admin];
const BACKEND: &[Role] = &[Role::Admin, Role::Service];
const EVERYONE: &[Role] = &[Role::Admin, Role::Service, Role::User];

/// Every op name and the roles that may send it: the one table of who may do what (`auth` is
/// separate). `user` connections are further scoped to their own `user_id`, orders and topics
/// (`auth::scope`); only `admin` and `service` may `pay` (a user would otherwise mark its own
/// order paid with an invented `payment_id`).
pub const OPS: &[(&str, &[Role])] = &[
    ("create_sku", ADMIN),
    ("update_sku", ADMIN),
    ("adjust_stock", ADMIN),
    ("get_sku", EVERYONE),
    ("create_order", EVERYONE),
    ("get_order", EVERYONE),
    ("list_orders", EVERYONE),
    ("pay", BACKEND),
    ("cancel_order", EVERYONE),
    ("start_packing", ADMIN),
    ("ship", ADMIN),
    ("deliver", ADMIN),
    ("complete", EVERYONE),
    ("request_refund", EVERYONE),
    ("confirm_refund", ADMIN),
    ("reject_refund", ADMIN),
    ("open_dispute", EVERYONE),
    ("resolve_dispute", ADMIN),
    ("ping", EVERYONE),
    ("subscribe", EVERYONE),
    ("unsubscribe", EVERYONE),
];

/// Whether `role` may send `op` (per [`OPS`]).
///
/// ```
/// use surge_gateway::{protocol::allowed, Role};
/// assert!(allowed(Role::Service, "pay"));
/// assert!(!allowed(Role::User, "pay"));
/// assert!(allowed(Role::Admin, "ship") && !allowed(Role::Service, "ship"));
/// ```
pub fn allowed(role: Role, op: &str) -> bool {
    OPS.iter().any(|(o, roles)| *o == op && roles.contains(&role))
}

/// The roles that may send `op`, for the `forbidden` message (e.g. `"admin or service"`).
pub fn roles_of(op: &str) -> String {
    let roles = OPS.iter().find(|(o, _)| *o == op).map_or(&[][..], |(_, r)| *r);
    roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or ")
}

/// A request envelope: the id (already validated), the op name, and the remaining fields.
pub struct Envelope {
    /// Echoed in the reply (`null` if absent).
    pub id: Value,
    /// The op name, as sent.
    pub op: String,
    /// The other fields.
    pub fields: Map<String, Value>,
}

/// Parse one message. On error, the id is returned whenever it could be read.
pub fn parse_envelope(text: &str) -> Result<Envelope, (Value, WireError)> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| (Value::Null, WireError::new("bad_json", bad_json(&e))))?;
    let Value::Object(mut fields) = value else {
        return Err((Value::Null, WireError::new("invalid_request", "a request must be a JSON object")));
    };
    let id = match fields.remove("id") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Number(n)) => Value::Number(n),
        Some(Value::String(s)) if s.len() <= ID_STRING_BYTES_MAX => Value::String(s),
        Some(Value::String(_)) => {
            return Err((Value::Null, WireError::new("invalid_request", "id: a string id is at most 64 bytes")))
        }
        Some(_) => return Err((Value::Null, WireError::new("invalid_request", "id must be a number or a string"))),
    };
    let op = match fields.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => return Err((id, WireError::new("invalid_request", "op must be a string"))),
        None => return Err((id, WireError::new("invalid_request", "missing field `op`"))),
    };
    Ok(Envelope { id, op, fields })
}

fn bad_json(e: &serde_json::Error) -> String {
    // serde_json's messages name a line and column, never the payload.
    format!("malformed JSON: {e}")
}

fn args<T: DeserializeOwned>(fields: Map<String, Value>) -> Result<T, WireError> {
    serde_json::from_value(Value::Object(fields)).map_err(|e| WireError::new("invalid_request", e.to_string()))
}

/// The credential of an `auth` message: exactly one of `token` and `jwt`.
pub fn parse_auth(fields: Map<String, Value>) -> Result<Credential, WireError> {
    match args::<AuthReq>(fields)? {
        AuthReq { token: Some(t), jwt: None } => Ok(Credential::Token(t)),
        AuthReq { token: None, jwt: Some(j) } => Ok(Credential::Jwt(j)),
        _ => Err(WireError::new("invalid_request", "auth takes exactly one of token and jwt")),
    }
}

/// Whether `op` names an operation (or `auth`).
pub fn known_op(op: &str) -> bool {
    op == "auth" || OPS.iter().any(|(o, _)| *o == op)
}

/// Turn an envelope's fields into a typed [`Op`].
pub fn parse_op(op: &str, fields: Map<String, Value>) -> Result<Op, WireError> {
    Ok(match op {
        "create_sku" => Op::CreateSku(args(fields)?),
        "update_sku" => Op::UpdateSku(args(fields)?),
        "adjust_stock" => Op::AdjustStock(args(fields)?),
        "get_sku" => Op::GetSku(args(fields)?),
        "create_order" => Op::CreateOrder(args(fields)?),
        "get_order" => Op::GetOrder(args(fields)?),
        "list_orders" => Op::ListOrders(args(fields)?),
        "pay" => Op::Pay(args(fields)?),
        "ship" => Op::Ship(args(fields)?),
        "resolve_dispute" => Op::ResolveDispute(args(fields)?),
        "ping" => {
            let Empty {} = args(fields)?;
            Op::Ping
        }
        "subscribe" => Op::Subscribe(args(fields)?),
        "unsubscribe" => Op::Unsubscribe(args(fields)?),
        other => {
            let name = match other {
                "cancel_order" => "cancel_order",
                "start_packing" => "start_packing",
                "deliver" => "deliver",
                "complete" => "complete",
                "request_refund" => "request_refund",
                "confirm_refund" => "confirm_refund",
                "reject_refund" => "reject_refund",
                "open_dispute" => "open_dispute",
                _ => return Err(WireError::new("unknown_op", "unknown op")),
            };
            Op::Transition(name, args(fields)?)
        }
    })
}

/// `{"id":…,"ok":true,"result":…}` as one line of JSON (no newline).
pub fn ok_reply<T: serde::Serialize + ?Sized>(id: &Value, result: &T) -> String {
    #[derive(serde::Serialize)]
    struct OkReply<'a, T: ?Sized> {
        id: &'a Value,
        ok: bool,
        result: &'a T,
    }
    match serde_json::to_string(&OkReply { id, ok: true, result }) {
        Ok(s) => s,
        // Our own types always serialize; if one ever does not, the client still gets a reply.
        Err(e) => err_reply(id, &WireError::new("internal", format!("reply not serializable: {e}"))),
    }
}
/// `{"id":…,"ok":false,"error":{"code":…,"message":…}}`.
pub fn err_reply(id: &Value, e: &WireError) -> String {
    let mut err = Map::with_capacity(3);
    err.insert("code".into(), Value::String(e.code.into()));
    err.insert("message".into(), Value::String(e.message.clone()));
    if let Some(ms) = e.retry_after_ms {
        err.insert("retry_after_ms".into(), Value::from(ms));
    }
    let mut m = Map::with_capacity(3);
    m.insert("id".into(), id.clone());
    m.insert("ok".into(), Value::Bool(false));
    m.insert("error".into(), Value::Object(err));
    Value::Object(m).to_string()
}

/// An engine error as a wire error reply (its stable code, its message, and its sku_id /
/// details when it has them).
pub fn engine_err_reply(id: &Value, e: &EngineError) -> String {
    let mut err = Map::with_capacity(4);
    err.insert("code".into(), Value::String(e.code().into()));
    err.insert("message".into(), Value::String(e.to_string()));
    if let Some(sku) = e.sku_id() {
        err.insert("sku_id".into(), Value::String(sku.into()));
    }
    match e {
        EngineError::InvalidTransition { from, event, to } => {
            err.insert("from".into(), Value::String(from.as_str().into()));
            err.insert("event".into(), Value::String(event.as_str().into()));
            if let Some(to) = to {
                err.insert("to".into(), Value::String(to.as_str().into()));
            }
        }
        EngineError::VersionConflict { expected, actual } => {
            err.insert("expected".into(), Value::from(*expected));
            err.insert("actual".into(), Value::from(*actual));
        }
        EngineError::IdempotencyConflict { order_id }
        | EngineError::AlreadyPaid { order_id }
        | EngineError::UnknownOrder { order_id } => {
            // A string, like every id on the wire (JavaScript-safe; see crate::wire).
            err.insert("order_id".into(), Value::String(order_id.0.to_string()));
        }
        EngineError::OrderNotPayable { order_id, status } => {
            err.insert("order_id".into(), Value::String(order_id.0.to_string()));
            err.insert("status".into(), Value::String(status.as_str().into()));
        }
        EngineError::InsufficientStock { available, .. } => {
            err.insert("available".into(), Value::from(*available));
        }
        _ => {}
    }
    let mut m = Map::with_capacity(3);
    m.insert("id".into(), id.clone());
    m.insert("ok".into(), Value::Bool(false));
    m.insert("error".into(), Value::Object(err));
    Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_as_number_is_refused() {
        let env = parse_envelope(r#"{"id":1,"op":"pay","order_id":1,"payment_id":"p","amount":59.9}"#).unwrap();
        let e = parse_op(&env.op, env.fields).unwrap_err();
        assert_eq!(e.code, "invalid_request");
        let env = parse_envelope(r#"{"id":1,"op":"pay","order_id":1,"payment_id":"p","amount":"59.90"}"#).unwrap();
        assert!(parse_op(&env.op, env.fields).is_ok());
    }

    #[test]
    fn qty_must_be_a_natural_number() {
        for q in ["-1", "1.5", "\"1\"", "4294967296"] {
            let text = format!(
                r#"{{"id":"a","op":"create_order","user_id":"u","idempotency_key":"k","items":[{{"sku_id":"A","qty":{q}}}]}}"#
            );
            let env = parse_envelope(&text).unwrap();
            assert_eq!(env.id, Value::String("a".into()));
            assert_eq!(parse_op(&env.op, env.fields).unwrap_err().code, "invalid_request", "{q}");
        }
    }

    #[test]
    fn envelope_errors() {
        assert_eq!(parse_envelope("{").err().unwrap().1.code, "bad_json");
        assert_eq!(parse_envelope("[1]").err().unwrap().1.code, "invalid_request");
        assert_eq!(parse_envelope(r#"{"id":{},"op":"ping"}"#).err().unwrap().1.code, "invalid_request");
        let long = "x".repeat(65);
        assert_eq!(
            parse_envelope(&format!(r#"{{"id":"{long}","op":"ping"}}"#)).err().unwrap().1.code,
            "invalid_request"
        );
        let env = parse_envelope(r#"{"id":3,"op":"nope"}"#).unwrap();
        assert_eq!(parse_op(&env.op, env.fields).unwrap_err().code, "unknown_op");
        let env = parse_envelope(r#"{"id":3,"op":"get_sku","sku_id":"A","extra":1}"#).unwrap();
        assert_eq!(parse_op(&env.op, env.fields).unwrap_err().code, "invalid_request");
    }
}
