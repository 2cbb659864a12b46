//! The wire protocol: request parsing (typed, strict) and reply encoding. Shared by every
//! transport. See `docs/protocol.md`.
//!
//! Parsing never panics and lets nothing invalid through: a request is a JSON object with an
//! optional `id` (number, or string of at most 64 bytes), an `op`, and exactly the fields of
//! that op (`deny_unknown_fields`, typed: quantities are `u32`, money is a decimal *string*).
//!
//! One concern per file:
//! * this file: the ops table ([`OPS`]: who may send what), the typed [`Op`], [`parse_op`];
//! * `envelope.rs`: the strict envelope parser (issue 10 item 13): a key twice in one object (at
//!   any depth) is `invalid_request` (serde_json's own `Value` silently keeps the last, so a proxy
//!   and Surge could read different requests: RFC 8259 §4 leaves duplicates undefined), and
//!   nesting deeper than [`NESTING_DEPTH_MAX`] is `invalid_request` before serde_json's recursion
//!   limit is reached;
//! * `fast.rs`: the direct parse of `create_order` (no `Value` tree; anything it does not take
//!   goes the general way);
//! * `requests.rs`: the request structs, wire order ids and `list_orders` cursors;
//! * `lengths.rs`: string lengths, checked in [`parse_op`] before any value becomes a key of a
//!   rate limiter, map or label;
//! * `reply.rs`: `ok` / error reply encoding.

mod envelope;
mod fast;
mod lengths;
mod reply;
mod requests;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::auth::Role;

pub use envelope::{parse_envelope, Envelope, ID_STRING_BYTES_MAX, NESTING_DEPTH_MAX};
pub use fast::parse_create_order;
pub use lengths::check_lengths;
pub(crate) use reply::text_of;
pub use reply::{engine_err_reply, err_reply, ok_reply, write_engine_err_reply, write_ok_reply};
pub use requests::{
    decode_order_cursor, encode_entry_cursor, encode_order_cursor, AdjustStockReq, AuthReq, CreateOrderReq,
    CreateSkuReq, Credential, Empty, ItemReq, LegReq, ListOrdersReq, ListWalletEntriesReq, OrderRef, PayReq,
    PayWithWalletReq, ReplyShape, ResolveReq, ShipReq, SkuRef, TopicReq, TransitionReq, UpdateSkuReq, WalletMoveReq,
    WalletRef, WireOrderId,
};

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
    WalletCredit(WalletMoveReq),
    WalletDebit(WalletMoveReq),
    GetWallet(WalletRef),
    ListWalletEntries(ListWalletEntriesReq),
    PayWithWallet(PayWithWalletReq),
}

const ADMIN: &[Role] = &[Role::Admin];
const BACKEND: &[Role] = &[Role::Admin, Role::Service];
const EVERYONE: &[Role] = &[Role::Admin, Role::Service, Role::User];
/// The backend that pays for its users, or the user paying for its own order (issue 14).
const PAYER: &[Role] = &[Role::Service, Role::User];

/// Every op name and the roles that may send it: the one table of who may do what (`auth` is
/// separate). `user` connections are further scoped to their own `user_id`, orders and topics
/// (`auth::scope`); only `admin` and `service` may `pay` (a user would otherwise mark its own
/// order paid with an invented `payment_id`) or move money into or out of a wallet; a user may
/// pay its own order from its own wallet (`pay_with_wallet`), where the money is real.
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
    ("wallet_credit", BACKEND),
    ("wallet_debit", BACKEND),
    ("get_wallet", EVERYONE),
    ("list_wallet_entries", EVERYONE),
    ("pay_with_wallet", PAYER),
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

fn args<T: DeserializeOwned>(fields: Map<String, Value>) -> Result<T, WireError> {
    serde_json::from_value(Value::Object(fields)).map_err(|e| WireError::new("invalid_request", e.to_string()))
}

/// The credential of an `auth` message (exactly one of `token` and `jwt`) and the reply shape
/// it asks for (`"reply"`: `full`, the default, or `minimal`).
pub fn parse_auth(fields: Map<String, Value>) -> Result<(Credential, ReplyShape), WireError> {
    match args::<AuthReq>(fields)? {
        AuthReq { token: Some(t), jwt: None, reply } => Ok((Credential::Token(t), reply)),
        AuthReq { token: None, jwt: Some(j), reply } => Ok((Credential::Jwt(j), reply)),
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
    checked(parse_fields(op, fields)?)
}

/// `op` with every string's length checked ([`check_lengths`]).
///
/// # Errors
/// `invalid_request` for a string too long or empty.
pub fn checked(op: Op) -> Result<Op, WireError> {
    check_lengths(&op)?;
    Ok(op)
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
        "wallet_credit" => Op::WalletCredit(args(fields)?),
        "wallet_debit" => Op::WalletDebit(args(fields)?),
        "get_wallet" => Op::GetWallet(args(fields)?),
        "list_wallet_entries" => Op::ListWalletEntries(args(fields)?),
        "pay_with_wallet" => Op::PayWithWallet(args(fields)?),
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
}
