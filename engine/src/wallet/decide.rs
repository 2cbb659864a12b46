//! Deciding wallet commands against a user's wallet: pure functions that return the event to
//! journal or the answer to give, never changing state themselves ([`super::WalletBook::apply`]
//! does that).

use rust_decimal::Decimal;

use super::asset::{Assets, BALANCE_MINOR_MAX};
use super::book::{Outcome, UserWallet};
use super::event::{Leg, TransferFailure, TransferParams, WalletEvent};
use crate::domain::UserId;
use crate::error::EngineError;

/// What a wallet command comes to.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Journal this event (it changes the wallet); then answer from the new state.
    Apply(WalletEvent),
    /// A retry of a transfer already done: answer as it was answered.
    Again(Outcome),
    /// Refused. The event, if any, is the refusal to remember ([`WalletEvent::Rejected`]).
    Refused(Option<Box<WalletEvent>>, EngineError),
}

/// A credit or debit, as the engine hands it to the user's shard.
#[derive(Debug, Clone)]
pub(crate) struct Movement {
    pub user_id: UserId,
    pub transfer_id: Box<str>,
    pub params: TransferParams,
}

/// The answer an earlier transfer with this id gives a retry, if there was one: the same
/// parameters get the recorded outcome (its failure, if it failed); others `idempotency_conflict`.
pub(crate) fn earlier(wallet: Option<&UserWallet>, transfer_id: &str, params: &TransferParams) -> Option<Verdict> {
    let record = wallet?.transfers.get(transfer_id)?;
    if record.params != *params {
        let e = EngineError::TransferConflict { transfer_id: transfer_id.to_string() };
        return Some(Verdict::Refused(None, e));
    }
    Some(match &record.outcome {
        Outcome::Failed(f) => Verdict::Refused(None, f.to_error()),
        other => Verdict::Again(other.clone()),
    })
}

/// `wallet_credit` or `wallet_debit`.
pub(crate) fn decide_movement(wallet: Option<&UserWallet>, m: Movement, now_ms: i64) -> Verdict {
    if let Some(v) = earlier(wallet, &m.transfer_id, &m.params) {
        return v;
    }
    let account = |asset| wallet.and_then(|w| w.accounts.get(asset));
    match m.params {
        TransferParams::Credit { asset, amount_minor } => {
            let held = account(&asset).map_or(0, |a| a.balance_minor.saturating_add(a.frozen_minor));
            if held.saturating_add(amount_minor) > BALANCE_MINOR_MAX {
                let e = EngineError::invalid(format!("{asset} account would exceed {BALANCE_MINOR_MAX} minor units"));
                return Verdict::Refused(None, e);
            }
            Verdict::Apply(WalletEvent::Credited {
                user_id: m.user_id,
                transfer_id: m.transfer_id,
                asset,
                amount_minor,
                at_ms: now_ms,
            })
        }
        TransferParams::Debit { asset, amount_minor } => {
            let available_minor = account(&asset).map_or(0, |a| a.balance_minor);
            if available_minor < amount_minor {
                let failure = TransferFailure::InsufficientFunds {
                    asset: asset.clone(),
                    needed_minor: amount_minor,
                    available_minor,
                };
                return refuse(
                    m.user_id,
                    m.transfer_id,
                    TransferParams::Debit { asset, amount_minor },
                    failure,
                    now_ms,
                );
            }
            Verdict::Apply(WalletEvent::Debited {
                user_id: m.user_id,
                transfer_id: m.transfer_id,
                asset,
                amount_minor,
                at_ms: now_ms,
            })
        }
        TransferParams::Pay { .. } => Verdict::Refused(None, EngineError::invalid("a payment is not a movement")),
    }
}

/// The refusal of a well-formed transfer: remembered under its id, answered with its error.
pub(crate) fn refuse(
    user_id: UserId,
    transfer_id: Box<str>,
    params: TransferParams,
    failure: TransferFailure,
    now_ms: i64,
) -> Verdict {
    let e = failure.to_error();
    let (params, failure) = (Box::new(params), Box::new(failure));
    Verdict::Refused(Some(Box::new(WalletEvent::Rejected { user_id, transfer_id, params, failure, at_ms: now_ms })), e)
}

/// The wallet's half of a payment's try: the legs' value in the shop currency must equal the
/// order total exactly, and every account must hold each leg.
///
/// # Errors
/// `amount_mismatch` or `insufficient_funds`, as a failure the transfer keeps.
pub(crate) fn check_legs(
    assets: &Assets,
    wallet: Option<&UserWallet>,
    legs: &[Leg],
    total: Decimal,
) -> Result<(), TransferFailure> {
    let mut value = Decimal::ZERO;
    for leg in legs {
        // Assets and rates were checked at the handle; a missing rate counts as no value.
        let v = assets.get(leg.asset.as_str()).ok().and_then(|a| a.value(leg.amount_minor)).unwrap_or(Decimal::MAX);
        value = value.checked_add(v).unwrap_or(Decimal::MAX);
    }
    if value != total {
        return Err(TransferFailure::AmountMismatch { expected: total, got: value });
    }
    for leg in legs {
        let available_minor = wallet.and_then(|w| w.accounts.get(&leg.asset)).map_or(0, |a| a.balance_minor);
        if available_minor < leg.amount_minor {
            return Err(TransferFailure::InsufficientFunds {
                asset: leg.asset.clone(),
                needed_minor: leg.amount_minor,
                available_minor,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::wallet::asset::{AssetCode, AssetSpec};
    use crate::wallet::book::WalletBook;

    fn cny() -> AssetCode {
        AssetCode::parse("CNY").unwrap()
    }

    fn movement(id: &str, params: TransferParams) -> Movement {
        Movement { user_id: Arc::from("alice"), transfer_id: id.into(), params }
    }

    fn run(book: &mut WalletBook, m: Movement) -> Result<Outcome, EngineError> {
        let id = m.transfer_id.clone();
        match decide_movement(book.get("alice"), m, 1) {
            Verdict::Apply(e) => {
                book.apply(&e).unwrap();
                Ok(book.get("alice").unwrap().transfers[&id].outcome.clone())
            }
            Verdict::Again(o) => Ok(o),
            Verdict::Refused(event, e) => {
                if let Some(ev) = event {
                    book.apply(&ev).unwrap();
                }
                Err(e)
            }
        }
    }

    #[test]
    fn transfer_ids_are_idempotent_and_failures_sticky() {
        let mut book = WalletBook::default();
        let credit = TransferParams::Credit { asset: cny(), amount_minor: 1_000 };
        let first = run(&mut book, movement("t1", credit.clone())).unwrap();
        let again = run(&mut book, movement("t1", credit)).unwrap();
        assert_eq!(first, again, "a retry gets the original result");
        assert_eq!(book.get("alice").unwrap().accounts[&cny()].balance_minor, 1_000, "credited once");
        let other = TransferParams::Credit { asset: cny(), amount_minor: 999 };
        assert_eq!(run(&mut book, movement("t1", other)).unwrap_err().code(), "idempotency_conflict");

        let big = TransferParams::Debit { asset: cny(), amount_minor: 5_000 };
        assert_eq!(run(&mut book, movement("d1", big.clone())).unwrap_err().code(), "insufficient_funds");
        run(&mut book, movement("t2", TransferParams::Credit { asset: cny(), amount_minor: 10_000 })).unwrap();
        assert_eq!(run(&mut book, movement("d1", big)).unwrap_err().code(), "insufficient_funds", "sticky");
        assert_eq!(book.get("alice").unwrap().accounts[&cny()].balance_minor, 11_000, "nothing debited");
        book.check().unwrap();
    }

    #[test]
    fn legs_must_sum_to_the_total_and_be_covered() {
        let assets = Assets::new(&AssetSpec::defaults()).unwrap();
        let mut book = WalletBook::default();
        run(&mut book, movement("t1", TransferParams::Credit { asset: cny(), amount_minor: 1_000 })).unwrap();
        let points = AssetCode::parse("POINTS").unwrap();
        let legs = [Leg { asset: cny(), amount_minor: 750 }, Leg { asset: points.clone(), amount_minor: 250 }];
        let w = book.get("alice");
        let total: Decimal = "10.00".parse().unwrap();
        assert!(matches!(check_legs(&assets, w, &legs, total), Err(TransferFailure::InsufficientFunds { .. })));
        assert!(matches!(
            check_legs(&assets, w, &legs, "10.01".parse().unwrap()),
            Err(TransferFailure::AmountMismatch { .. })
        ));
        run(&mut book, movement("t2", TransferParams::Credit { asset: points, amount_minor: 250 })).unwrap();
        assert_eq!(check_legs(&assets, book.get("alice"), &legs, total), Ok(()));
    }
}
