//! Reply encoding: `{"id":…,"ok":true,"result":…}` and `{"id":…,"ok":false,"error":{…}}`, one
//! line of JSON each (no newline; the transport frames it).

use serde_json::{Map, Value};
use surge_engine::EngineError;

use super::WireError;

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
/// details when it has them), serialized in one pass: a flash sale answers `sold_out` far more
/// often than anything else, and building a map of it first was a sixth of the gateway's CPU
/// per rejection (issue 13).
pub fn engine_err_reply(id: &Value, e: &EngineError) -> String {
    #[derive(serde::Serialize)]
    struct ErrReply<'a> {
        id: &'a Value,
        ok: bool,
        error: ErrBody<'a>,
    }
    let reply = ErrReply { id, ok: false, error: ErrBody::of(e) };
    match serde_json::to_string(&reply) {
        Ok(s) => s,
        // Plain strings and numbers always serialize; if this ever did not, answer anyway.
        Err(err) => err_reply(id, &WireError::new(e.code(), format!("{e} ({err})"))),
    }
}

/// The `error` object of an engine error: `code` and `message`, then what the error names.
#[derive(serde::Serialize)]
struct ErrBody<'a> {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sku_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actual: Option<u32>,
    /// A string, like every id on the wire (JavaScript-safe; see `crate::wire`).
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<crate::wire::WireId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transitions_max: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    adjustment_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    available: Option<u64>,
    /// `insufficient_funds`, `unknown_asset`: the asset.
    #[serde(skip_serializing_if = "Option::is_none")]
    asset: Option<&'a str>,
    /// `idempotency_conflict` of a wallet transfer.
    #[serde(skip_serializing_if = "Option::is_none")]
    transfer_id: Option<&'a str>,
    /// `unavailable` (a cluster's partition moving): when to retry (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl<'a> ErrBody<'a> {
    fn of(e: &'a EngineError) -> Self {
        let mut b = ErrBody {
            code: e.code(),
            message: e.to_string(),
            sku_id: e.sku_id(),
            from: None,
            event: None,
            to: None,
            expected: None,
            actual: None,
            order_id: None,
            status: None,
            transitions_max: None,
            adjustment_id: None,
            available: None,
            asset: None,
            transfer_id: None,
            retry_after_ms: None,
        };
        let wire_id = |o: &surge_engine::OrderId| Some(crate::wire::WireId(o.0));
        match e {
            EngineError::InvalidTransition { from, event, to } => {
                (b.from, b.event, b.to) = (Some(from.as_str()), Some(event.as_str()), to.map(|t| t.as_str()));
            }
            EngineError::VersionConflict { expected, actual } => {
                (b.expected, b.actual) = (Some(*expected), Some(*actual))
            }
            EngineError::IdempotencyConflict { order_id }
            | EngineError::AlreadyPaid { order_id }
            | EngineError::UnknownOrder { order_id } => b.order_id = wire_id(order_id),
            EngineError::OrderNotPayable { order_id, status } => {
                (b.order_id, b.status) = (wire_id(order_id), Some(status.as_str()));
            }
            EngineError::OrderHistoryFull { order_id, transitions_max, .. } => {
                (b.order_id, b.transitions_max) = (wire_id(order_id), Some(*transitions_max));
            }
            EngineError::AdjustmentConflict { adjustment_id, .. } => b.adjustment_id = Some(adjustment_id),
            EngineError::InsufficientStock { available, .. } => b.available = Some(*available),
            EngineError::InsufficientFunds { asset, .. } | EngineError::UnknownAsset { asset } => b.asset = Some(asset),
            EngineError::TransferConflict { transfer_id } => b.transfer_id = Some(transfer_id),
            EngineError::Unavailable { retry_after_ms } => b.retry_after_ms = Some(*retry_after_ms),
            _ => {}
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_engine::OrderId;

    /// The JSON shape of error replies, pinned: clients match on these fields.
    #[test]
    fn error_replies_keep_their_shape() {
        let sold_out = EngineError::SoldOut { sku_id: "tea".into() };
        assert_eq!(
            engine_err_reply(&Value::from("r1"), &sold_out),
            r#"{"id":"r1","ok":false,"error":{"code":"sold_out","message":"sku tea is sold out","sku_id":"tea"}}"#
        );
        let conflict = EngineError::VersionConflict { expected: 2, actual: 3 };
        let v: Value = serde_json::from_str(&engine_err_reply(&Value::Null, &conflict)).unwrap();
        assert_eq!(v["id"], Value::Null);
        assert_eq!((v["error"]["expected"].as_u64(), v["error"]["actual"].as_u64()), (Some(2), Some(3)));
        assert_eq!(v["error"].as_object().map(|o| o.len()), Some(4), "{v}");
        let short = EngineError::InsufficientStock { sku_id: "tea".into(), available: 1 };
        let v: Value = serde_json::from_str(&engine_err_reply(&Value::from(9), &short)).unwrap();
        assert_eq!(
            (v["error"]["code"].as_str(), v["error"]["available"].as_u64()),
            (Some("insufficient_stock"), Some(1))
        );
    }

    #[test]
    fn order_history_full_names_the_order_as_a_string_and_the_bound() {
        let e = EngineError::OrderHistoryFull {
            order_id: OrderId(9_007_199_254_740_993),
            transitions: 11,
            transitions_max: 16,
        };
        let v: Value = serde_json::from_str(&engine_err_reply(&Value::from(4), &e)).unwrap();
        assert_eq!(v["error"]["code"], "order_history_full");
        assert_eq!(v["error"]["order_id"], "9007199254740993");
        assert_eq!(v["error"]["transitions_max"], 16);
    }
}
