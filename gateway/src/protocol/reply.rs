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
        EngineError::OrderHistoryFull { order_id, transitions_max, .. } => {
            err.insert("order_id".into(), Value::String(order_id.0.to_string()));
            err.insert("transitions_max".into(), Value::from(*transitions_max));
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
    use surge_engine::OrderId;

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
