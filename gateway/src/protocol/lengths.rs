//! String lengths of requests, checked in `parse_op` before any value is used as a key (rate
//! limiters, maps, metric labels): issue 10 item 13, "length limits are checked before anything
//! keyed by the value".

use surge_engine::{IDEMPOTENCY_KEY_BYTES_MAX, ID_BYTES_MAX, TEXT_BYTES_MAX};

use super::{Op, WireError};

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
    let asset = |a: &str| check_len("asset", a, 1, surge_engine::wallet::ASSET_CODE_BYTES_MAX);
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
        Op::WalletCredit(r) | Op::WalletDebit(r) => {
            id("user_id", &r.user_id)?;
            asset(&r.asset)?;
            id("transfer_id", &r.transfer_id)
        }
        Op::GetWallet(r) => id("user_id", &r.user_id),
        Op::ListWalletEntries(r) => {
            id("user_id", &r.user_id)?;
            r.asset.as_deref().map_or(Ok(()), asset)
        }
        Op::PayWithWallet(r) => {
            id("transfer_id", &r.transfer_id)?;
            if r.legs.is_empty() || r.legs.len() > surge_engine::wallet::LEGS_MAX {
                return Err(WireError::new(
                    "invalid_request",
                    format!("legs must hold 1..={} legs", surge_engine::wallet::LEGS_MAX),
                ));
            }
            r.legs.iter().try_for_each(|l| asset(&l.asset))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_envelope, parse_op};

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
}
