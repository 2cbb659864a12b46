//! The direct parse of the hot request, `create_order` (issue 13): one typed pass from the
//! line to [`CreateOrderReq`], with no [`Value`] tree in between.
//!
//! The general path ([`super::parse_envelope`], then [`super::parse_op`]) builds a map of the
//! whole request first, to read `op` and to refuse duplicate keys; for a flash sale's
//! `create_order` that was a fifth of the gateway's CPU. Here a derived struct holds exactly
//! the envelope and `create_order`'s fields, so serde itself refuses what the general path
//! refuses: an unknown field (`deny_unknown_fields`), a key twice (serde's `duplicate field`),
//! a wrong type, and nesting beyond the fixed shape. Whatever this parse does not accept
//! (another op, any error at all) returns `None` and takes the general path, which gives the
//! typed error; so this parse changes how fast a request is read, never what it means.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::envelope::check_id;
use super::{CreateOrderReq, ItemReq};

/// `create_order` with its envelope, as one struct. The ids are borrowed from the line when
/// they have no escapes, and copied once, into the engine's shared strings: parsing them into
/// `String`s and then into `Arc<str>`s was two allocations and two copies each (issue 13).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOrderLine<'a> {
    #[serde(default)]
    id: Option<Value>,
    /// Borrowed: an `op` with escapes fails here and takes the general path.
    op: &'a str,
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    items: Vec<ItemLine<'a>>,
    idempotency_key: String,
}

/// [`ItemReq`], borrowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemLine<'a> {
    #[serde(borrow)]
    sku_id: Cow<'a, str>,
    qty: u32,
}

/// `text` as a `create_order` request and its `id`, or `None` for the general path (another
/// op, or anything the general path would refuse or must decide).
///
/// ```
/// use surge_gateway::protocol::parse_create_order;
/// let line = r#"{"id":7,"op":"create_order","user_id":"ann","items":[{"sku_id":"tea","qty":1}],"idempotency_key":"k1"}"#;
/// let (id, req) = parse_create_order(line).unwrap();
/// assert_eq!((id, &*req.user_id, req.items[0].qty), (serde_json::json!(7), "ann", 1));
/// assert!(parse_create_order(r#"{"op":"ping"}"#).is_none());
/// assert!(parse_create_order(&line.replace("\"qty\":1", "\"qty\":1,\"qty\":2")).is_none(), "a key twice");
/// ```
pub fn parse_create_order(text: &str) -> Option<(Value, CreateOrderReq)> {
    let line: CreateOrderLine<'_> = serde_json::from_str(text).ok()?;
    if line.op != "create_order" {
        return None;
    }
    let id = check_id(line.id).ok()?;
    let items = line.items.into_iter().map(|i| ItemReq { sku_id: Arc::from(&*i.sku_id), qty: i.qty }).collect();
    let user_id = Arc::from(&*line.user_id);
    Some((id, CreateOrderReq { user_id, items, idempotency_key: line.idempotency_key }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_envelope, parse_op, Op};

    /// Every line the direct parse takes, the general path takes the same way; every line the
    /// general path refuses, the direct parse leaves to it.
    #[test]
    fn the_direct_parse_agrees_with_the_general_path() {
        let good =
            r#"{"id":"a","op":"create_order","user_id":"u","items":[{"sku_id":"A","qty":2}],"idempotency_key":"k"}"#;
        let lines = [
            good.to_owned(),
            good.replace(r#""id":"a","#, ""),
            good.replace(r#""id":"a""#, r#""id":null"#),
            good.replace(r#""id":"a""#, r#""id":1.5"#),
            good.replace(r#""id":"a""#, r#""id":{"x":1}"#),
            good.replace(r#""id":"a""#, &format!(r#""id":"{}""#, "x".repeat(65))),
            good.replace(r#""op":"create_order""#, r#""op":"create_order","op":"create_order""#),
            good.replace(r#""user_id":"u""#, r#""user_id":"u","user_id":"v""#),
            good.replace(r#""qty":2"#, r#""qty":2,"qty":3"#),
            good.replace(r#""qty":2"#, r#""qty":-1"#),
            good.replace(r#""qty":2"#, r#""qty":"2""#),
            good.replace(r#""idempotency_key":"k""#, r#""idempotency_key":"k","extra":1"#),
            good.replace(r#","idempotency_key":"k""#, ""),
            good.replace(r#""op":"create_order""#, r#""op":"create\u005forder""#),
            good.replace(r#""op":"create_order""#, r#""op":"get_order""#),
            good.replace(r#"[{"sku_id":"A","qty":2}]"#, "[]"),
            format!("{good} trailing"),
            "[1,2]".to_owned(),
        ];
        for line in lines {
            let general = parse_envelope(&line).map_err(|(_, e)| e).and_then(|env| {
                let op = parse_op(&env.op, env.fields)?;
                Ok((env.id, op))
            });
            match (parse_create_order(&line), general) {
                (Some((id, fast)), Ok((gid, Op::CreateOrder(slow)))) => {
                    assert_eq!(id, gid, "{line}");
                    assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{line}");
                }
                (Some(_), other) => panic!("the direct parse took {line}, the general path gave {other:?}"),
                (None, _) => {}
            }
        }
        assert!(parse_create_order(good).is_some(), "the plain request takes the direct parse");
    }
}
