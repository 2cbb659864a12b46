//! Wire types: the engine's values as the protocol shows them, separate from the engine's own
//! serde (which is also what the WAL stores through bincode, and must not change).
//!
//! **Every id is a JSON string of decimal digits** (issue 11). Snowflake order ids exceed 2^53,
//! the largest integer a JavaScript number (an IEEE-754 double) holds exactly, so `JSON.parse`
//! in a browser or Node silently rounds them and the client then reads, pays or cancels the
//! wrong order. Twitter hit this with its snowflake tweet ids in 2010 and added `id_str` next
//! to `id`; Stripe's API has sent every id as a string from the start. We send only strings
//! (no numeric twin to pick by mistake); requests still accept a number for old clients
//! ([`crate::protocol::WireOrderId`]).

mod events;
mod wallet;

use std::sync::Arc;

pub use events::EventWire;
use serde::{Serialize, Serializer};
use surge_engine::{HistoryEntry, LineItem, Order, OrderStatus, Payment};
pub use wallet::{WireAccount, WireEntry, WireEntryPage, WireReceipt, WireWallet};

/// A 64-bit id that serializes as a JSON string of decimal digits (`"7159284311830069248"`).
///
/// ```
/// use surge_gateway::wire::WireId;
/// assert_eq!(serde_json::to_string(&WireId(u64::MAX)).unwrap(), "\"18446744073709551615\"");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireId(pub u64);

impl Serialize for WireId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// An order as the protocol shows it: the engine's [`Order`] field for field, with `order_id`
/// a string.
///
/// ```
/// # use std::sync::Arc;
/// use surge_engine::{Order, OrderId, OrderStatus};
/// use surge_gateway::wire::WireOrder;
/// let order = Order {
///     order_id: OrderId(9_007_199_254_740_993), // 2^53 + 1: a double cannot hold it
///     user_id: "alice".into(),
///     items: Default::default(),
///     total: Default::default(),
///     status: OrderStatus::PendingPayment,
///     version: 1,
///     created_at_ms: 0,
///     updated_at_ms: 0,
///     payment_deadline_ms: 0,
///     payment: None,
///     tracking_number: None,
///     shipped: false,
///     refund_return_to: None,
///     history: Default::default(),
///     idempotency_key: "k".into(),
/// };
/// let v = serde_json::to_value(WireOrder(&order)).unwrap();
/// assert_eq!(v["order_id"], "9007199254740993");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct WireOrder<'a>(pub &'a Order);

#[derive(Serialize)]
struct OrderOut<'a> {
    order_id: WireId,
    user_id: &'a str,
    items: &'a [LineItem],
    total: &'a rust_decimal::Decimal,
    status: OrderStatus,
    version: u32,
    created_at_ms: i64,
    updated_at_ms: i64,
    payment_deadline_ms: i64,
    payment: Option<&'a Payment>,
    tracking_number: Option<&'a str>,
    shipped: bool,
    refund_return_to: Option<OrderStatus>,
    history: &'a [HistoryEntry],
    idempotency_key: &'a str,
}

impl Serialize for WireOrder<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Destructured without `..`: a new field on the engine's Order fails to compile here
        // until the wire shape decides what to do with it.
        let Order {
            order_id,
            user_id,
            items,
            total,
            status,
            version,
            created_at_ms,
            updated_at_ms,
            payment_deadline_ms,
            payment,
            tracking_number,
            shipped,
            refund_return_to,
            history,
            idempotency_key,
        } = self.0;
        OrderOut {
            order_id: WireId(order_id.0),
            user_id,
            items,
            total,
            status: *status,
            version: *version,
            created_at_ms: *created_at_ms,
            updated_at_ms: *updated_at_ms,
            payment_deadline_ms: *payment_deadline_ms,
            payment: payment.as_deref(),
            tracking_number: tracking_number.as_deref(),
            shipped: *shipped,
            refund_return_to: *refund_return_to,
            history,
            idempotency_key,
        }
        .serialize(s)
    }
}

/// An order as a `"reply":"minimal"` connection is answered (issue 13): `order_id`,
/// `status`, `version` and `total` only. A client that pipelines thousands of orders needs the
/// id to pay or cancel, the version for optimistic concurrency, and the total to charge; the
/// rest it sent itself or can `get_order`.
///
/// ```
/// use surge_engine::{Order, OrderId, OrderStatus};
/// use surge_gateway::wire::WireOrderMinimal;
/// # let order = Order {
/// #     order_id: OrderId(7), user_id: "alice".into(), items: Default::default(),
/// #     total: "59.90".parse().unwrap(), status: OrderStatus::PendingPayment, version: 1,
/// #     created_at_ms: 0, updated_at_ms: 0, payment_deadline_ms: 0, payment: None,
/// #     tracking_number: None, shipped: false, refund_return_to: None,
/// #     history: Default::default(), idempotency_key: "k".into(),
/// # };
/// let json = serde_json::to_string(&WireOrderMinimal(&order)).unwrap();
/// assert_eq!(json, r#"{"order_id":"7","status":"pending_payment","version":1,"total":"59.90"}"#);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct WireOrderMinimal<'a>(pub &'a Order);

impl Serialize for WireOrderMinimal<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct MinimalOut<'a> {
            order_id: WireId,
            status: OrderStatus,
            version: u32,
            total: &'a rust_decimal::Decimal,
        }
        let o = self.0;
        MinimalOut { order_id: WireId(o.order_id.0), status: o.status, version: o.version, total: &o.total }
            .serialize(s)
    }
}

/// `#[serde(serialize_with = "wire::order_minimal")]` for an `Arc<Order>` field.
pub fn order_minimal<S: Serializer>(o: &Arc<Order>, s: S) -> Result<S::Ok, S::Error> {
    WireOrderMinimal(o).serialize(s)
}

/// `#[serde(serialize_with = "wire::order")]` for an `Arc<Order>` field.
pub fn order<S: Serializer>(o: &Arc<Order>, s: S) -> Result<S::Ok, S::Error> {
    WireOrder(o).serialize(s)
}

/// `#[serde(serialize_with = "wire::orders")]` for a list of orders.
pub fn orders<S: Serializer>(v: &[Arc<Order>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|o| WireOrder(o)))
}

/// An order as a JSON value (for pushes, which are built as maps).
pub fn order_value(o: &Order) -> serde_json::Value {
    serde_json::to_value(WireOrder(o)).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_engine::OrderId;

    #[test]
    fn wire_order_has_the_engine_keys_and_a_string_id() {
        let order = Order {
            order_id: OrderId(u64::MAX),
            user_id: "u".into(),
            items: Default::default(),
            total: rust_decimal::Decimal::new(5990, 2),
            status: OrderStatus::Paid,
            version: 2,
            created_at_ms: 1,
            updated_at_ms: 2,
            payment_deadline_ms: 3,
            payment: None,
            tracking_number: None,
            shipped: false,
            refund_return_to: None,
            history: Default::default(),
            idempotency_key: "k".into(),
        };
        let engine = serde_json::to_value(&order).unwrap();
        let wire = order_value(&order);
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&engine), keys(&wire), "same keys as the engine's serde");
        assert_eq!(wire["order_id"], "18446744073709551615");
        assert_eq!(engine["order_id"], u64::MAX, "the engine's (WAL) serde is unchanged");
        assert_eq!(wire["total"], "59.90");
        let mut e = engine.clone();
        e["order_id"] = wire["order_id"].clone();
        assert_eq!(e, wire, "only order_id differs");
    }
}
