//! Reply encoding: `{"id":…,"ok":true,"result":…}` and `{"id":…,"ok":false,"error":{…}}`, one
//! line of JSON each (no newline; the transport frames it).

use serde_json::{Map, Value};
use surge_engine::EngineError;

use super::WireError;

/// `{"id":…,"ok":true,"result":…}` as one line of JSON (no newline).
pub fn ok_reply<T: serde::Serialize + ?Sized>(id: &Value, result: &T) -> String {
    let mut out = Vec::new();
    write_ok_reply(&mut out, id, result);
    text_of(out)
}

/// [`ok_reply`], appended to `out` (a batch's replies are written into one buffer).
///
/// ```
/// let mut out = b"{\"id\":1,\"ok\":true,\"result\":null}\n".to_vec();
/// surge_gateway::protocol::write_ok_reply(&mut out, &serde_json::json!("b"), &7);
/// assert_eq!(out, b"{\"id\":1,\"ok\":true,\"result\":null}\n{\"id\":\"b\",\"ok\":true,\"result\":7}");
/// ```
pub fn write_ok_reply<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, id: &Value, result: &T) {
    #[derive(serde::Serialize)]
    struct OkReply<'a, T: ?Sized> {
        id: &'a Value,
        ok: bool,
        result: &'a T,
    }
    let start = out.len();
    if let Err(e) = serde_json::to_writer(&mut *out, &OkReply { id, ok: true, result }) {
        // Our own types always serialize; if one ever does not, the client still gets a reply.
        out.truncate(start);
        let e = WireError::new("internal", format!("reply not serializable: {e}"));
        out.extend_from_slice(err_reply(id, &e).as_bytes());
    }
}

/// Replies written by `serde_json` as text. They are UTF-8 by construction; were they ever
/// not, the reply would still go out, with the bad bytes replaced.
pub(crate) fn text_of(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
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
    let mut out = Vec::new();
    write_engine_err_reply(&mut out, id, e);
    text_of(out)
}

/// [`engine_err_reply`], appended to `out` (a batch's replies are written into one buffer).
///
/// ```
/// use surge_engine::EngineError;
/// let mut out = Vec::new();
/// surge_gateway::protocol::write_engine_err_reply(&mut out, &serde_json::json!(3), &EngineError::SoldOut { sku_id: "tea".into() });
/// let text = String::from_utf8(out).unwrap();
/// assert_eq!(text, r#"{"id":3,"ok":false,"error":{"code":"sold_out","message":"sku tea is sold out","sku_id":"tea"}}"#);
/// ```
pub fn write_engine_err_reply(out: &mut Vec<u8>, id: &Value, e: &EngineError) {
    let start = out.len();
    if write_plain_err_reply(out, id, e).is_none() {
        out.truncate(start);
        write_engine_err_reply_serde(out, id, e);
    }
}

/// The reply with serde: every shape, every string escaped as JSON needs.
fn write_engine_err_reply_serde(out: &mut Vec<u8>, id: &Value, e: &EngineError) {
    #[derive(serde::Serialize)]
    struct ErrReply<'a> {
        id: &'a Value,
        ok: bool,
        error: ErrBody<'a>,
    }
    let start = out.len();
    if let Err(err) = serde_json::to_writer(&mut *out, &ErrReply { id, ok: false, error: ErrBody::of(e) }) {
        // Plain strings and numbers always serialize; if this ever did not, answer anyway.
        out.truncate(start);
        out.extend_from_slice(err_reply(id, &WireError::new(e.code(), format!("{e} ({err})"))).as_bytes());
    }
}

/// The common reply, `{"code","message"}` and perhaps `"sku_id"` (every stock rejection: a
/// flash sale's `sold_out`), written byte by byte when none of its strings needs an escape;
/// `None` (with `out` partly written) otherwise. serde escapes each key and string a byte at a
/// time, and that, with the message formatted into a `String` first, was a tenth of the
/// server's CPU per `sold_out` (issue 13). A test holds it to the serde path's bytes.
fn write_plain_err_reply(out: &mut Vec<u8>, id: &Value, e: &EngineError) -> Option<()> {
    use std::io::Write as _;
    let body = ErrBody::of(e);
    if !body.only_code_message_sku() {
        return None;
    }
    out.extend_from_slice(b"{\"id\":");
    match id {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Number(n) => serde_json::to_writer(&mut *out, n).ok()?,
        Value::String(s) => push_plain_str(out, s)?,
        _ => return None,
    }
    out.extend_from_slice(b",\"ok\":false,\"error\":{\"code\":");
    push_plain_str(out, body.code)?;
    out.extend_from_slice(b",\"message\":\"");
    let message = out.len();
    write!(out, "{e}").ok()?;
    if !plain(&out[message..]) {
        return None;
    }
    out.push(b'"');
    if let Some(sku_id) = body.sku_id {
        out.extend_from_slice(b",\"sku_id\":");
        push_plain_str(out, sku_id)?;
    }
    out.extend_from_slice(b"}}");
    Some(())
}

/// `s` as a JSON string, if it needs no escape.
fn push_plain_str(out: &mut Vec<u8>, s: &str) -> Option<()> {
    if !plain(s.as_bytes()) {
        return None;
    }
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Some(())
}

/// Bytes a JSON string carries as they are (serde_json escapes control bytes, `"` and `\\`
/// only; UTF-8 passes through).
fn plain(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// The `error` object of an engine error: `code` and `message`, then what the error names.
#[derive(serde::Serialize)]
struct ErrBody<'a> {
    code: &'static str,
    /// The error's `Display`, written straight into the reply (`collect_str`): formatting it
    /// into a `String` first was an allocation and a copy per `sold_out` answer (issue 13).
    #[serde(serialize_with = "display")]
    message: &'a EngineError,
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

fn display<S: serde::Serializer>(e: &&EngineError, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(*e)
}

impl<'a> ErrBody<'a> {
    /// Nothing but `code`, `message` and perhaps `sku_id` (what [`write_plain_err_reply`]
    /// writes). Every field is named, so a new one cannot be missed here.
    fn only_code_message_sku(&self) -> bool {
        let ErrBody {
            code: _,
            message: _,
            sku_id: _,
            from,
            event,
            to,
            expected,
            actual,
            order_id,
            status,
            transitions_max,
            adjustment_id,
            available,
            asset,
            transfer_id,
            retry_after_ms,
        } = self;
        from.is_none()
            && event.is_none()
            && to.is_none()
            && expected.is_none()
            && actual.is_none()
            && order_id.is_none()
            && status.is_none()
            && transitions_max.is_none()
            && adjustment_id.is_none()
            && available.is_none()
            && asset.is_none()
            && transfer_id.is_none()
            && retry_after_ms.is_none()
    }

    fn of(e: &'a EngineError) -> Self {
        let mut b = ErrBody {
            code: e.code(),
            message: e,
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

    /// The byte-by-byte writer gives exactly serde's bytes, or leaves the reply to serde.
    #[test]
    fn the_plain_writer_writes_what_serde_writes() {
        let errors = [
            EngineError::SoldOut { sku_id: "tea".into() },
            EngineError::SoldOut { sku_id: "t\"e\\a\n".into() },
            EngineError::SoldOut { sku_id: "thé-☕".into() },
            EngineError::SaleEnded { sku_id: "A".into() },
            EngineError::PurchaseLimitExceeded { sku_id: "A".into(), limit: 2 },
            EngineError::InsufficientStock { sku_id: "A".into(), available: 1 },
            EngineError::UnknownOrder { order_id: OrderId(7) },
            EngineError::InvalidRequest { message: "bad \"quote\"\u{1}".into() },
            EngineError::Overloaded,
            EngineError::Unavailable { retry_after_ms: 5 },
        ];
        let ids =
            [Value::Null, Value::from(7), Value::from(-1.5), Value::from("r-1"), Value::from("a\"b"), Value::from("é")];
        let mut plain_taken = 0;
        for e in &errors {
            for id in &ids {
                let (mut fast, mut serde) = (b"x".to_vec(), b"x".to_vec());
                write_engine_err_reply(&mut fast, id, e);
                write_engine_err_reply_serde(&mut serde, id, e);
                assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&serde), "{e:?} {id}");
                plain_taken += usize::from(write_plain_err_reply(&mut Vec::new(), id, e).is_some());
            }
        }
        assert!(plain_taken >= 20, "the plain writer took only {plain_taken} of the replies");
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
