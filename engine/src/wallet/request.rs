//! Checking wallet requests before they reach a shard: ids, assets and amounts in minor units.
//! The `Engine` methods check here, and so does the simulator, which hands its requests to the
//! shards directly (one set of rules for both).

use std::sync::Arc;

use rust_decimal::Decimal;

use super::asset::{AssetCode, Assets};
use super::decide::Movement;
use super::event::{Leg, TransferParams, LEGS_MAX, TRANSFER_ID_BYTES_MAX};
use super::view::WalletPayment;
use crate::engine::ID_BYTES_MAX;
use crate::error::{EngineError, EngineResult};
use crate::shard::WalletPay;

/// `value` is 1..=`max` bytes (the engine's rule for ids).
fn check_text(what: &str, value: &str, max: usize) -> EngineResult<()> {
    if value.is_empty() || value.len() > max {
        return Err(EngineError::invalid(format!("{what} must be 1..={max} bytes")));
    }
    Ok(())
}

/// A `wallet_credit` (`credit`) or `wallet_debit`, as the user's shard takes it.
///
/// # Errors
/// `invalid_request` (empty or long ids, an amount that is not positive, has more decimal
/// places than the asset's scale or is too large) and `unknown_asset`.
pub(crate) fn check_movement(
    assets: &Assets,
    user_id: &str,
    asset: &str,
    amount: Decimal,
    transfer_id: &str,
    credit: bool,
) -> EngineResult<Movement> {
    check_text("user_id", user_id, ID_BYTES_MAX)?;
    check_text("transfer_id", transfer_id, TRANSFER_ID_BYTES_MAX)?;
    let a = assets.get(asset)?;
    let amount_minor = a.to_minor(amount)?;
    let asset = a.code.clone();
    let params = if credit {
        TransferParams::Credit { asset, amount_minor }
    } else {
        TransferParams::Debit { asset, amount_minor }
    };
    Ok(Movement { user_id: Arc::from(user_id), transfer_id: transfer_id.into(), params })
}

/// A `pay_with_wallet`, as the order's shard takes it.
///
/// # Errors
/// `invalid_request` (ids, no legs or more than [`LEGS_MAX`], an asset twice, a bad amount)
/// and `unknown_asset` (not listed, or without a rate).
pub(crate) fn check_payment(assets: &Assets, p: &WalletPayment) -> EngineResult<WalletPay> {
    check_text("transfer_id", &p.transfer_id, TRANSFER_ID_BYTES_MAX)?;
    if let Some(owner) = &p.owner {
        check_text("user_id", owner, ID_BYTES_MAX)?;
    }
    if p.legs.is_empty() || p.legs.len() > LEGS_MAX {
        return Err(EngineError::invalid(format!("a wallet payment has 1..={LEGS_MAX} legs")));
    }
    let mut legs: Vec<Leg> = Vec::with_capacity(p.legs.len());
    for (asset, amount) in &p.legs {
        let a = assets.get(asset)?;
        if a.rate.is_none() {
            return Err(EngineError::UnknownAsset { asset: format!("{asset} (cannot pay orders: no rate)") });
        }
        if legs.iter().any(|l: &Leg| l.asset == a.code) {
            return Err(EngineError::invalid(format!("asset {asset} appears twice")));
        }
        let code: AssetCode = a.code.clone();
        legs.push(Leg { asset: code, amount_minor: a.to_minor(*amount)? });
    }
    Ok(WalletPay {
        transfer_id: p.transfer_id.as_str().into(),
        legs,
        expected_version: p.expected_version,
        owner: p.owner.as_deref().map(Into::into),
    })
}
