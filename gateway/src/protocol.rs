//! The wire protocol: request parsing (typed, strict) and reply encoding. Shared by every
//! transport. See `docs/protocol.md`.
//!
//! Parsing never panics and lets nothing invalid through: a request is a JSON object with an
//! optional `id` (number, or string of at most 64 bytes), an `op`, and exactly the fields of
//! that op (`deny_unknown_fields`, typed: quantities are `u32`, money is a decimal *string*).
//!
//! The envelope parser is strict and cheap (issue 10 item 13): a key twice in one object (at any
//! depth) is `invalid_request` (serde_json's own `Value` silently keeps the last, so a proxy and
//! Surge could read different requests: RFC 8259 §4 leaves duplicates undefined), nesting deeper
//! than [`NESTING_DEPTH_MAX`] is `invalid_request` before serde_json's recursion limit is reached,
//! and string lengths are checked in [`parse_op`], before any value becomes a key of a rate
//! limiter, map or label.

use rust_decimal::Decimal;
use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use surge_engine::{
    DisputeResolution, EngineError, OrderId, OrderStatus, IDEMPOTENCY_KEY_BYTES_MAX, ID_BYTES_MAX, TEXT_BYTES_MAX,
};

use crate::auth::Role;

/// Longest string `id`, in bytes.
pub const ID_STRING_BYTES_MAX: usize = 64;

/// Deepest nesting of arrays and objects in a request (the envelope object is level 1; the
/// deepest real request, `create_order`'s items, is 3). Deeper is `invalid_request`, long before
/// serde_json's recursion limit of 128.
pub const NESTING_DEPTH_MAX: usize = 8;

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
    /// The caller's id for this adjustment (required, 1..=64 bytes): a retry with it has no
    /// second effect (the engine's `adjust_stock`).
    pub adjustment_id: String,
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

/// `list_orders`: one page of a user's orders, newest first, paged by an opaque cursor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListOrdersReq {
    pub user_id: String,
    #[serde(default)]
    pub status: Option<OrderStatus>,
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// The previous reply's `next_cursor`; absent or `null` for the first page.
    #[serde(default, deserialize_with = "order_cursor")]
    pub cursor: Option<OrderId>,
    /// Offset paging was removed (it cost O(all of a user's orders)): a `page` field is refused
    /// with a message that names `cursor`.
    #[serde(default, deserialize_with = "page_removed")]
    pub page: Option<()>,
}

/// What an order cursor starts with: a format version, so the format can change without
/// misreading old cursors.
const ORDER_CURSOR_PREFIX: &str = "v1.";
/// Longest cursor accepted, in bytes (the prefix and 20 digits).
const ORDER_CURSOR_BYTES_MAX: usize = 23;

/// The opaque `next_cursor` of a `list_orders` reply: the page continues below `before`.
/// Clients pass it back unchanged; its content is not part of the API.
pub fn encode_order_cursor(before: OrderId) -> String {
    format!("{ORDER_CURSOR_PREFIX}{}", before.0)
}

/// Read a cursor made by [`encode_order_cursor`].
///
/// # Errors
/// A message for `invalid_request` if `cursor` is not one.
pub fn decode_order_cursor(cursor: &str) -> Result<OrderId, String> {
    let malformed = || "cursor is malformed: pass a next_cursor from an earlier list_orders reply".to_owned();
    if cursor.len() > ORDER_CURSOR_BYTES_MAX {
        return Err(malformed());
    }
    let digits = cursor.strip_prefix(ORDER_CURSOR_PREFIX).ok_or_else(malformed)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    digits.parse::<u64>().map(OrderId).map_err(|_| malformed())
}

fn order_cursor<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OrderId>, D::Error> {
    match Option::<String>::deserialize(d)
        .map_err(|_| serde::de::Error::custom("cursor must be a string (a next_cursor) or null"))?
    {
        None => Ok(None),
        Some(c) => decode_order_cursor(&c).map(Some).map_err(serde::de::Error::custom),
    }
}

fn page_removed<'de, D: Deserializer<'de>>(_d: D) -> Result<Option<()>, D::Error> {
    Err(serde::de::Error::custom(
        "page is no longer supported: list_orders pages by cursor (pass the previous reply's next_cursor as cursor)",
    ))
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
///
/// # Errors
/// `bad_json`: not JSON (including numbers beyond `f64`'s range, such as `1e400`, which
/// serde_json classifies as a syntax error). `invalid_request`: a key twice in one object,
/// nesting deeper than [`NESTING_DEPTH_MAX`], not an object, a bad `id` or `op`.
///
/// # Example
/// ```
/// use surge_gateway::protocol::parse_envelope;
/// let env = parse_envelope(r#"{"id":7,"op":"ping"}"#).ok().unwrap();
/// assert_eq!(env.op, "ping");
/// let (_, e) = parse_envelope(r#"{"op":"ping","op":"pay"}"#).err().unwrap();
/// assert_eq!(e.code, "invalid_request");
/// ```
pub fn parse_envelope(text: &str) -> Result<Envelope, (Value, WireError)> {
    let value = parse_strict(text).map_err(|e| {
        let err = if e.classify() == serde_json::error::Category::Data {
            WireError::new("invalid_request", e.to_string()) // a duplicate key or deep nesting
        } else {
            WireError::new("bad_json", bad_json(&e))
        };
        (Value::Null, err)
    })?;
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

/// Parse `text` into a [`Value`], refusing duplicate keys and deep nesting. Errors raised here
/// (not by the JSON syntax) have serde_json's category `Data`.
fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue { depth: 0 }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// A [`Value`] builder like serde_json's own, but a key seen twice in one object is an error
/// (the check is one lookup in the map being built) and so is nesting deeper than
/// [`NESTING_DEPTH_MAX`].
#[derive(Clone, Copy)]
struct StrictValue {
    depth: usize,
}

impl StrictValue {
    fn enter<E: serde::de::Error>(self) -> Result<StrictValue, E> {
        if self.depth >= NESTING_DEPTH_MAX {
            return Err(E::custom(format!("nested deeper than {NESTING_DEPTH_MAX} levels")));
        }
        Ok(StrictValue { depth: self.depth + 1 })
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json never yields a non-finite float (1e400 is a syntax error), so this is exact.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(inner)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut m = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if m.contains_key(&key) {
                // Name the key only when it is short (messages never echo a payload).
                let msg = if key.len() <= 64 { format!("duplicate key `{key}`") } else { "duplicate key".into() };
                return Err(serde::de::Error::custom(msg));
            }
            let v = map.next_value_seed(inner)?;
            m.insert(key, v);
        }
        Ok(Value::Object(m))
    }
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

/// Turn an envelope's fields into a typed [`Op`], with every string's length checked (see
/// [`check_lengths`]).
///
/// # Errors
/// `unknown_op`; `invalid_request` for a missing, unknown, mistyped or over-long field.
pub fn parse_op(op: &str, fields: Map<String, Value>) -> Result<Op, WireError> {
    let op = parse_fields(op, fields)?;
    check_lengths(&op)?;
    Ok(op)
}

/// Check `len` is within `1..=max` bytes (`min_bytes` 0 allows empty).
fn check_len(field: &str, value: &str, min_bytes: usize, max_bytes: usize) -> Result<(), WireError> {
    if value.len() < min_bytes || value.len() > max_bytes {
        return Err(WireError::new("invalid_request", format!("{field} must be {min_bytes}..={max_bytes} bytes")));
    }
    Ok(())
}

/// The engine's length limits (`ID_BYTES_MAX` for ids, `IDEMPOTENCY_KEY_BYTES_MAX`,
/// `TEXT_BYTES_MAX` for names, reasons and tracking numbers), applied at the gateway so that a
/// value is bounded before the session uses it as a key (the per-user rate limiter keys on
/// `user_id`). A field added to a request with a string goes here too.
///
/// # Errors
/// `invalid_request` naming the field.
pub fn check_lengths(op: &Op) -> Result<(), WireError> {
    let id = |f: &str, v: &str| check_len(f, v, 1, ID_BYTES_MAX);
    let reason = |r: &Option<String>| r.as_deref().map_or(Ok(()), |r| check_len("reason", r, 0, TEXT_BYTES_MAX));
    match op {
        Op::CreateSku(r) => {
            id("sku_id", &r.sku_id)?;
            check_len("name", &r.name, 1, TEXT_BYTES_MAX)
        }
        Op::UpdateSku(r) => {
            id("sku_id", &r.sku_id)?;
            r.name.as_deref().map_or(Ok(()), |n| check_len("name", n, 1, TEXT_BYTES_MAX))
        }
        Op::AdjustStock(r) => {
            id("sku_id", &r.sku_id)?;
            id("adjustment_id", &r.adjustment_id)?;
            check_len("reason", &r.reason, 1, TEXT_BYTES_MAX)
        }
        Op::GetSku(r) => id("sku_id", &r.sku_id),
        Op::CreateOrder(r) => {
            id("user_id", &r.user_id)?;
            check_len("idempotency_key", &r.idempotency_key, 1, IDEMPOTENCY_KEY_BYTES_MAX)?;
            r.items.iter().try_for_each(|i| id("sku_id", &i.sku_id))
        }
        Op::ListOrders(r) => id("user_id", &r.user_id),
        Op::Pay(r) => id("payment_id", &r.payment_id),
        Op::Transition(_, r) => reason(&r.reason),
        Op::Ship(r) => {
            check_len("tracking_number", &r.tracking_number, 1, TEXT_BYTES_MAX)?;
            reason(&r.reason)
        }
        Op::ResolveDispute(r) => reason(&r.reason),
        Op::GetOrder(_) | Op::Ping | Op::Subscribe(_) | Op::Unsubscribe(_) => Ok(()),
    }
}

fn parse_fields(op: &str, fields: Map<String, Value>) -> Result<Op, WireError> {
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
        EngineError::AdjustmentConflict { adjustment_id, .. } => {
            err.insert("adjustment_id".into(), Value::String(adjustment_id.clone()));
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

    fn envelope_code(text: &str) -> &'static str {
        match parse_envelope(text) {
            Ok(_) => "ok",
            Err((_, e)) => e.code,
        }
    }

    #[test]
    fn duplicate_keys_at_any_depth_are_refused() {
        assert_eq!(envelope_code(r#"{"op":"ping","op":"ping"}"#), "invalid_request");
        assert_eq!(envelope_code(r#"{"id":1,"id":2,"op":"ping"}"#), "invalid_request");
        let item =
            r#"{"op":"create_order","user_id":"u","idempotency_key":"k","items":[{"sku_id":"A","qty":1,"qty":2}]}"#;
        assert_eq!(envelope_code(item), "invalid_request");
        let (_, e) = parse_envelope(r#"{"op":"get_sku","sku_id":"A","sku_id":"B"}"#).err().unwrap();
        assert!(e.message.contains("duplicate key `sku_id`"), "{}", e.message);
        // The same key in sibling objects is fine.
        let ok = r#"{"op":"create_order","user_id":"u","idempotency_key":"k","items":[{"sku_id":"A","qty":1},{"sku_id":"B","qty":1}]}"#;
        assert_eq!(envelope_code(ok), "ok");
    }

    #[test]
    fn deep_nesting_is_a_typed_error_at_any_depth() {
        for depth in [NESTING_DEPTH_MAX + 1, 127, 128, 129, 10_000, 100_000] {
            let text = format!(r#"{{"op":"ping","x":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
            assert_eq!(envelope_code(&text), "invalid_request", "depth {depth}");
            let text = format!("{}{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
            assert_eq!(envelope_code(&text), "invalid_request", "object depth {depth}");
        }
        let ok = format!(
            r#"{{"op":"ping","x":{}{}}}"#,
            "[".repeat(NESTING_DEPTH_MAX - 1),
            "]".repeat(NESTING_DEPTH_MAX - 1)
        );
        assert_eq!(envelope_code(&ok), "ok");
        // Unbalanced garbage is still malformed JSON.
        assert_eq!(envelope_code(r#"{"op":"ping","x":[[[}"#), "bad_json");
    }

    #[test]
    fn huge_numbers_are_typed_errors() {
        assert_eq!(envelope_code(r#"{"op":"ping","x":1e400}"#), "bad_json");
        for q in ["18446744073709551616", "1e30", "-1e30", "4294967296", "1e400x"] {
            let text = format!(
                r#"{{"op":"create_order","user_id":"u","idempotency_key":"k","items":[{{"sku_id":"A","qty":{q}}}]}}"#
            );
            let code = match parse_envelope(&text) {
                Ok(env) => parse_op(&env.op, env.fields).err().map_or("ok", |e| e.code),
                Err((_, e)) => e.code,
            };
            assert!(code == "invalid_request" || code == "bad_json", "{q}: {code}");
        }
    }

    #[test]
    fn over_long_and_empty_strings_are_refused_by_the_parser() {
        let long = "u".repeat(ID_BYTES_MAX + 1);
        let cases = [
            format!(
                r#"{{"op":"create_order","user_id":"{long}","idempotency_key":"k","items":[{{"sku_id":"A","qty":1}}]}}"#
            ),
            format!(r#"{{"op":"list_orders","user_id":"{long}"}}"#),
            r#"{"op":"list_orders","user_id":""}"#.to_string(),
            format!(r#"{{"op":"get_sku","sku_id":"{long}"}}"#),
            format!(r#"{{"op":"pay","order_id":1,"payment_id":"{long}","amount":"1.00"}}"#),
            format!(
                r#"{{"op":"create_order","user_id":"u","idempotency_key":"{}","items":[{{"sku_id":"A","qty":1}}]}}"#,
                "k".repeat(IDEMPOTENCY_KEY_BYTES_MAX + 1)
            ),
            format!(r#"{{"op":"cancel_order","order_id":1,"reason":"{}"}}"#, "r".repeat(TEXT_BYTES_MAX + 1)),
            format!(r#"{{"op":"adjust_stock","sku_id":"A","adjustment_id":"{long}","delta":1,"reason":"r"}}"#),
            r#"{"op":"adjust_stock","sku_id":"A","adjustment_id":"","delta":1,"reason":"r"}"#.to_string(),
        ];
        for text in cases {
            let env = parse_envelope(&text).ok().unwrap();
            let e = parse_op(&env.op, env.fields).unwrap_err();
            assert_eq!(e.code, "invalid_request", "{text}");
            assert!(e.message.contains("bytes"), "{}", e.message);
        }
        let max = "u".repeat(ID_BYTES_MAX);
        let env = parse_envelope(&format!(r#"{{"op":"list_orders","user_id":"{max}"}}"#)).ok().unwrap();
        assert!(parse_op(&env.op, env.fields).is_ok());
        let adjust = format!(r#"{{"op":"adjust_stock","sku_id":"A","adjustment_id":"{max}","delta":1,"reason":"r"}}"#);
        let env = parse_envelope(&adjust).ok().unwrap();
        assert!(parse_op(&env.op, env.fields).is_ok(), "a 64-byte adjustment_id is fine");
    }

    fn list_orders(fields: &str) -> Result<Op, WireError> {
        let env = parse_envelope(&format!(r#"{{"id":1,"op":"list_orders","user_id":"u"{fields}}}"#)).unwrap();
        parse_op(&env.op, env.fields)
    }

    #[test]
    fn list_orders_pages_by_opaque_cursor() {
        let cursor = encode_order_cursor(OrderId(1_234_567_890_123_456_789));
        assert_eq!(decode_order_cursor(&cursor), Ok(OrderId(1_234_567_890_123_456_789)));
        let Ok(Op::ListOrders(r)) = list_orders(&format!(r#","cursor":"{cursor}","limit":5"#)) else {
            panic!("a cursor from a reply is accepted");
        };
        assert_eq!((r.cursor, r.limit), (Some(OrderId(1_234_567_890_123_456_789)), 5));
        let Ok(Op::ListOrders(r)) = list_orders(r#","cursor":null"#) else { panic!("null is the first page") };
        assert_eq!(r.cursor, None);
        for bad in [
            r#","cursor":"""#,
            r#","cursor":"v1.""#,
            r#","cursor":"v1.-5""#,
            r#","cursor":"v1.18446744073709551616""#,
            r#","cursor":"v2.5""#,
            r#","cursor":"5""#,
            r#","cursor":"v1.5 ""#,
            r#","cursor":5"#,
            r#","cursor":"v1.000000000000000000000000000005""#,
        ] {
            let e = list_orders(bad).expect_err(bad);
            assert_eq!(e.code, "invalid_request", "{bad}");
            assert!(e.message.contains("cursor"), "{bad}: {}", e.message);
        }
        for page in [r#","page":0"#, r#","page":2"#, r#","page":null"#] {
            let e = list_orders(page).expect_err(page);
            assert_eq!(e.code, "invalid_request");
            assert!(e.message.contains("use") || e.message.contains("cursor"), "{}", e.message);
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
