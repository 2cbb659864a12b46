//! The request structs (one per op, `deny_unknown_fields`), order ids as the wire sends them,
//! and the opaque `list_orders` cursor.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use surge_engine::{DisputeResolution, OrderId, OrderStatus};

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

/// One line item of `create_order`. The SKU id is already the engine's shared string
/// (`SkuId`), so handing the item to the engine copies nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemReq {
    pub sku_id: std::sync::Arc<str>,
    pub qty: u32,
}

/// `create_order`. `user_id` is already the engine's shared string (`UserId`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderReq {
    pub user_id: std::sync::Arc<str>,
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

/// `wallet_credit` / `wallet_debit` (issue 14): amounts are decimal strings in the asset's
/// scale.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletMoveReq {
    pub user_id: String,
    pub asset: String,
    pub amount: Decimal,
    pub transfer_id: String,
}

/// `get_wallet`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletRef {
    pub user_id: String,
}

/// `list_wallet_entries`: newest first, paged by an opaque cursor (the previous reply's
/// `next_cursor`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListWalletEntriesReq {
    pub user_id: String,
    #[serde(default)]
    pub asset: Option<String>,
    #[serde(default, deserialize_with = "entry_cursor")]
    pub cursor: Option<u64>,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

/// One leg of `pay_with_wallet`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegReq {
    pub asset: String,
    pub amount: Decimal,
}

/// `pay_with_wallet` (issue 14): the order paid from its user's wallet by TCC.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayWithWalletReq {
    pub order_id: WireOrderId,
    pub legs: Vec<LegReq>,
    pub transfer_id: String,
    #[serde(default)]
    pub expected_version: Option<u32>,
}

/// What a wallet-entry cursor starts with (see [`ORDER_CURSOR_PREFIX`]).
const ENTRY_CURSOR_PREFIX: &str = "w1.";

/// The opaque `next_cursor` of a `list_wallet_entries` reply.
pub fn encode_entry_cursor(before_seq: u64) -> String {
    format!("{ENTRY_CURSOR_PREFIX}{before_seq}")
}

fn entry_cursor<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let malformed = || serde::de::Error::custom("cursor is malformed: pass a next_cursor from an earlier reply");
    match Option::<String>::deserialize(d).map_err(|_| malformed())? {
        None => Ok(None),
        Some(c) => {
            let digits = c.strip_prefix(ENTRY_CURSOR_PREFIX).filter(|d| d.len() <= 20).ok_or_else(malformed)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            digits.parse::<u64>().map(Some).map_err(|_| malformed())
        }
    }
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
    /// How orders are answered on this connection (default `full`).
    #[serde(default)]
    pub reply: ReplyShape,
}

/// How a connection's replies show an order (`"reply"` in `auth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyShape {
    /// The whole order ([`crate::wire::WireOrder`]).
    #[default]
    Full,
    /// `order_id`, `status`, `version` and `total` ([`crate::wire::WireOrderMinimal`]).
    Minimal,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_envelope, parse_op, Op, WireError};

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
}
