//! The wallet book's TCC lifecycle and invariants.

use std::sync::Arc;

use super::*;
use crate::domain::OrderId;

fn code(c: &str) -> AssetCode {
    AssetCode::parse(c).unwrap()
}

fn credit(book: &mut WalletBook, id: &str, asset: &str, amount_minor: u64) {
    let e = WalletEvent::Credited {
        user_id: Arc::from("alice"),
        transfer_id: id.into(),
        asset: code(asset),
        amount_minor,
        at_ms: 0,
    };
    book.apply(&e).unwrap();
}

fn legs() -> Vec<Leg> {
    vec![Leg { asset: code("CNY"), amount_minor: 750 }, Leg { asset: code("POINTS"), amount_minor: 250 }]
}

fn frozen(id: &str, order: u64) -> WalletEvent {
    WalletEvent::Frozen {
        user_id: Arc::from("alice"),
        transfer_id: id.into(),
        order_id: OrderId(order),
        legs: legs(),
        at_ms: 5,
    }
}

fn account(book: &WalletBook, asset: &str) -> Account {
    book.get("alice").unwrap().accounts[&code(asset)].clone()
}

#[test]
fn try_confirm_refund_moves_money_once() {
    let mut book = WalletBook::default();
    credit(&mut book, "t1", "CNY", 1_000);
    credit(&mut book, "t2", "POINTS", 300);
    book.apply(&frozen("pay-1", 7)).unwrap();
    let cny = account(&book, "CNY");
    assert_eq!((cny.balance_minor, cny.frozen_minor), (250, 750), "the try freezes");
    book.check().unwrap();
    book.apply(&WalletEvent::Settled { user_id: Arc::from("alice"), transfer_id: "pay-1".into(), at_ms: 6 }).unwrap();
    let cny = account(&book, "CNY");
    assert_eq!((cny.balance_minor, cny.frozen_minor, cny.settled_minor), (250, 0, 750), "the confirm settles");
    assert_eq!(book.get("alice").unwrap().payments.get(&OrderId(7)).map(|s| &**s), Some("pay-1"));
    book.check().unwrap();
    let refund = WalletEvent::Refunded {
        user_id: Arc::from("alice"),
        transfer_id: "pay-1".into(),
        order_id: OrderId(7),
        at_ms: 9,
    };
    book.apply(&refund).unwrap();
    assert_eq!(account(&book, "CNY").balance_minor, 1_000);
    assert_eq!(account(&book, "POINTS").balance_minor, 300);
    assert!(book.apply(&refund).is_err(), "a second refund of the same payment does not apply");
    book.check().unwrap();
    let kinds: Vec<EntryKind> = book.get("alice").unwrap().entries.iter().map(|e| e.kind).collect();
    use EntryKind::*;
    assert_eq!(kinds, [Credit, Credit, Freeze, Freeze, Settle, Settle, Refund, Refund]);
}

#[test]
fn cancel_returns_the_frozen_legs_and_keeps_the_failure() {
    let mut book = WalletBook::default();
    credit(&mut book, "t1", "CNY", 1_000);
    credit(&mut book, "t2", "POINTS", 300);
    book.apply(&frozen("pay-1", 7)).unwrap();
    let failure =
        TransferFailure::OrderNotPayable { order_id: OrderId(7), status: crate::domain::OrderStatus::Canceled };
    let cancel = WalletEvent::Unfrozen {
        user_id: Arc::from("alice"),
        transfer_id: "pay-1".into(),
        failure: Some(failure.clone()),
        at_ms: 6,
    };
    book.apply(&cancel).unwrap();
    assert_eq!((account(&book, "CNY").balance_minor, account(&book, "CNY").frozen_minor), (1_000, 0));
    assert_eq!(book.get("alice").unwrap().transfers["pay-1"].outcome, Outcome::Failed(failure));
    assert!(book.apply(&cancel).is_err(), "a try closes once");
    let settle = WalletEvent::Settled { user_id: Arc::from("alice"), transfer_id: "pay-1".into(), at_ms: 7 };
    assert!(book.apply(&settle).is_err(), "a canceled try cannot settle");
    book.check().unwrap();
}

#[test]
fn amounts_never_go_negative_and_check_sees_a_broken_account() {
    let mut book = WalletBook::default();
    credit(&mut book, "t1", "CNY", 100);
    assert!(book.apply(&frozen("pay-1", 7)).is_err(), "cannot freeze more than the balance");
    let mut broken = book.clone();
    broken.users.get_mut("alice").unwrap().accounts.get_mut(&code("CNY")).unwrap().frozen_minor = 1;
    assert!(broken.check().is_err(), "frozen without a try, and totals off");
}

#[test]
fn ledger_keeps_the_newest_entries() {
    let mut book = WalletBook::default();
    for i in 0..(ENTRIES_KEPT_MAX + 5) {
        credit(&mut book, &format!("t{i}"), "CNY", 1);
    }
    let w = book.get("alice").unwrap();
    assert_eq!(w.entries.len(), ENTRIES_KEPT_MAX);
    assert_eq!(w.entries.back().unwrap().seq, (ENTRIES_KEPT_MAX + 5) as u64);
    assert_eq!(w.entries.front().unwrap().seq, 6);
}

/// Random credits, debits, tries, settles, cancels and refunds: the invariants hold after
/// every event that applies, and an event that does not apply changes nothing.
#[test]
fn random_histories_keep_the_invariants() {
    let seed = std::env::var("SURGE_WALLET_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    let mut rng = crate::sim::prng::SplitMix64::new(seed);
    let mut book = WalletBook::default();
    let mut open: Vec<(Box<str>, u64)> = Vec::new();
    let mut settled: Vec<(Box<str>, u64)> = Vec::new();
    for step in 0..5_000u64 {
        let id: Box<str> = format!("x{step}").into();
        let amount = rng.below(500) + 1;
        let e = match rng.below(6) {
            0 | 1 => WalletEvent::Credited {
                user_id: Arc::from("alice"),
                transfer_id: id,
                asset: code("CNY"),
                amount_minor: amount,
                at_ms: 0,
            },
            2 => WalletEvent::Debited {
                user_id: Arc::from("alice"),
                transfer_id: id,
                asset: code("CNY"),
                amount_minor: amount,
                at_ms: 0,
            },
            3 => {
                open.push((id.clone(), step));
                WalletEvent::Frozen {
                    user_id: Arc::from("alice"),
                    transfer_id: id,
                    order_id: OrderId(step),
                    legs: vec![Leg { asset: code("CNY"), amount_minor: amount }],
                    at_ms: 0,
                }
            }
            4 if !open.is_empty() => {
                let (t, order) = open.swap_remove(rng.below(open.len() as u64) as usize);
                if rng.below(2) == 0 {
                    settled.push((t.clone(), order));
                    WalletEvent::Settled { user_id: Arc::from("alice"), transfer_id: t, at_ms: 0 }
                } else {
                    WalletEvent::Unfrozen { user_id: Arc::from("alice"), transfer_id: t, failure: None, at_ms: 0 }
                }
            }
            _ if !settled.is_empty() => {
                let (t, order) = settled.swap_remove(rng.below(settled.len() as u64) as usize);
                WalletEvent::Refunded {
                    user_id: Arc::from("alice"),
                    transfer_id: t,
                    order_id: OrderId(order),
                    at_ms: 0,
                }
            }
            _ => continue,
        };
        let before = book.clone();
        if book.apply(&e).is_err() {
            // A freeze or debit past the balance: the event is refused as a whole. (The shard
            // never journals such an event: `decide` refuses it first.)
            if let WalletEvent::Frozen { transfer_id, .. } = &e {
                open.retain(|(t, _)| t != transfer_id);
            }
            book = before;
        }
        if let Err(err) = book.check() {
            panic!("seed {seed} (SURGE_WALLET_SEED), step {step}: {err}");
        }
    }
}
