//! What a `user` connection may touch (issue 10): it acts only as its JWT `sub`.
//!
//! * `user_id` fields: if sent, must equal `sub` (else `forbidden`); if omitted, `sub` is used.
//! * Orders: another user's order answers `unknown_order`, exactly like an order that does not
//!   exist, so a user cannot probe which ids exist (the same stance as GitHub's 404 for private
//!   repositories).
//! * Topics: `user:<sub>`, its own `order:<id>` (another's, or none: `unknown_order`), and any
//!   `sku:<id>`, and `wallet:<sub>`; another `user:` or `wallet:` topic is `forbidden`.

use serde_json::{Map, Value};
use surge_engine::{Engine, EngineError, OrderId};

use crate::hub::Topic;
use crate::protocol::{self, Op, WireError};

/// Ops whose request has a `user_id` field (optional for `user` connections only).
const USER_ID_OPS: &[&str] = &["create_order", "list_orders", "get_wallet", "list_wallet_entries"];

/// Why a `user` connection's request is refused before it reaches the engine.
#[derive(Debug)]
pub(crate) enum Refused {
    /// A gateway error (`forbidden`).
    Wire(WireError),
    /// An engine-shaped error (`unknown_order`), encoded exactly as the engine's own.
    Engine(EngineError),
}

impl Refused {
    /// The reply line.
    pub fn reply(&self, id: &Value) -> String {
        match self {
            Refused::Wire(e) => protocol::err_reply(id, e),
            Refused::Engine(e) => protocol::engine_err_reply(id, e),
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Refused::Wire(e) => e.code,
            Refused::Engine(e) => e.code(),
        }
    }
}

/// Fill in or check the `user_id` of `op`'s fields for a connection acting as `sub`. Runs
/// before parsing, so the typed requests keep `user_id` required for `service` and `admin`.
pub(crate) fn user_id_field(sub: &str, op: &str, fields: &mut Map<String, Value>) -> Result<(), WireError> {
    match fields.get("user_id") {
        Some(Value::String(u)) if u != sub => {
            Err(WireError::new("forbidden", "a user connection acts only as its own user_id (the token's sub)"))
        }
        // Not a string: the parser answers `invalid_request` as for anyone else.
        Some(_) => Ok(()),
        None => {
            if USER_ID_OPS.contains(&op) {
                fields.insert("user_id".into(), Value::String(sub.to_owned()));
            }
            Ok(())
        }
    }
}

/// The order a request names, if any.
pub(crate) fn order_of(op: &Op) -> Option<OrderId> {
    match op {
        Op::GetOrder(r) => Some(r.order_id.0),
        Op::Pay(r) => Some(r.order_id.0),
        Op::Transition(_, r) => Some(r.order_id.0),
        Op::Ship(r) => Some(r.order_id.0),
        Op::ResolveDispute(r) => Some(r.order_id.0),
        Op::PayWithWallet(r) => Some(r.order_id.0),
        _ => None,
    }
}

/// `Ok` if `order_id` belongs to `sub`; `unknown_order` if it belongs to someone else or does
/// not exist. A user id never changes, so checking before the engine call cannot race.
pub(crate) fn own_order(engine: &Engine, sub: &str, order_id: OrderId) -> Result<(), EngineError> {
    match engine.get_order(order_id) {
        Ok(o) if &*o.user_id == sub => Ok(()),
        Ok(_) | Err(EngineError::UnknownOrder { .. }) => Err(EngineError::UnknownOrder { order_id }),
        Err(e) => Err(e),
    }
}

/// May a connection acting as `sub` subscribe to `topic`?
pub(crate) fn topic(engine: &Engine, sub: &str, topic: &Topic) -> Result<(), Refused> {
    match topic {
        Topic::Sku(_) => Ok(()),
        Topic::User(u) if &**u == sub => Ok(()),
        Topic::User(_) => {
            Err(Refused::Wire(WireError::new("forbidden", "a user connection may subscribe only to user:<its own id>")))
        }
        Topic::Wallet(u) if &**u == sub => Ok(()),
        Topic::Wallet(_) => Err(Refused::Wire(WireError::new(
            "forbidden",
            "a user connection may subscribe only to wallet:<its own id>",
        ))),
        Topic::Order(id) => own_order(engine, sub, OrderId(*id)).map_err(Refused::Engine),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_is_filled_in_or_checked() {
        let mut f = Map::new();
        user_id_field("alice", "create_order", &mut f).unwrap();
        assert_eq!(f["user_id"], "alice");
        let mut f = Map::new();
        user_id_field("alice", "get_order", &mut f).unwrap();
        assert!(f.is_empty(), "ops without user_id get none");
        let mut f = Map::new();
        f.insert("user_id".into(), "bob".into());
        assert_eq!(user_id_field("alice", "list_orders", &mut f).unwrap_err().code, "forbidden");
    }
}
