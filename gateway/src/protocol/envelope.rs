//! The strict envelope parser: a request is one JSON object; a key twice in one object (at any
//! depth) and nesting deeper than [`NESTING_DEPTH_MAX`] are `invalid_request` (issue 10 item 13;
//! RFC 8259 §4 leaves duplicate keys undefined, and serde_json's `Value` keeps the last).

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::{Map, Value};

use super::WireError;

/// Longest string `id`, in bytes.
pub const ID_STRING_BYTES_MAX: usize = 64;

/// Deepest nesting of arrays and objects in a request (the envelope object is level 1; the
/// deepest real request, `create_order`'s items, is 3). Deeper is `invalid_request`, long before
/// serde_json's recursion limit of 128.
pub const NESTING_DEPTH_MAX: usize = 8;

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
    let id = check_id(fields.remove("id")).map_err(|e| (Value::Null, e))?;
    let op = match fields.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => return Err((id, WireError::new("invalid_request", "op must be a string"))),
        None => return Err((id, WireError::new("invalid_request", "missing field `op`"))),
    };
    Ok(Envelope { id, op, fields })
}

/// A request's `id` as the reply echoes it: absent or `null`, a number, or a string of at most
/// [`ID_STRING_BYTES_MAX`] bytes.
///
/// # Errors
/// `invalid_request` for any other value.
pub(crate) fn check_id(id: Option<Value>) -> Result<Value, WireError> {
    match id {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::Number(n)) => Ok(Value::Number(n)),
        Some(Value::String(s)) if s.len() <= ID_STRING_BYTES_MAX => Ok(Value::String(s)),
        Some(Value::String(_)) => Err(WireError::new("invalid_request", "id: a string id is at most 64 bytes")),
        Some(_) => Err(WireError::new("invalid_request", "id must be a number or a string")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_op;

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
