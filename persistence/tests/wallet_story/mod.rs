//! A wallet story shared by the format and recovery tests (issue 14): records that use every
//! `WalletEvent` variant, every `TransferFailure` and every `TransferParams` variant, and that
//! apply cleanly in order (credits, a debit, a settled payment, a failed and a timed-out try, a
//! refunded payment, a try left open, refusals), plus the values the codec tests combine.

#![allow(dead_code)]

use std::sync::Arc;

use surge_engine::wallet::{AssetCode, Leg, TransferFailure, TransferParams, WalletBook, WalletEvent};
use surge_engine::{Decimal, Event, OrderId, OrderStatus};

/// Records as (shard, batch sequence, events).
pub type Records = Vec<(u16, u64, Vec<Event>)>;

/// 2025-01-01T00:00:00Z (the format fixture's time).
pub const T: i64 = 1_735_689_600_000;

pub fn asset(code: &str) -> AssetCode {
    AssetCode::parse(code).expect("valid asset code")
}

pub fn leg(code: &str, amount_minor: u64) -> Leg {
    Leg { asset: asset(code), amount_minor }
}

pub fn dec(s: &str) -> Decimal {
    s.parse().expect("decimal literal")
}

fn w(e: WalletEvent) -> Event {
    Event::Wallet(e)
}

fn credited(user: &str, transfer: &str, code: &str, amount_minor: u64, at_ms: i64) -> Event {
    w(WalletEvent::Credited {
        user_id: Arc::from(user),
        transfer_id: transfer.into(),
        asset: asset(code),
        amount_minor,
        at_ms,
    })
}

fn frozen(user: &str, transfer: &str, order: u64, legs: Vec<Leg>, at_ms: i64) -> Event {
    w(WalletEvent::Frozen {
        user_id: Arc::from(user),
        transfer_id: transfer.into(),
        order_id: OrderId(order),
        legs,
        at_ms,
    })
}

fn settled(user: &str, transfer: &str, at_ms: i64) -> Event {
    w(WalletEvent::Settled { user_id: Arc::from(user), transfer_id: transfer.into(), at_ms })
}

fn unfrozen(user: &str, transfer: &str, failure: Option<TransferFailure>, at_ms: i64) -> Event {
    w(WalletEvent::Unfrozen { user_id: Arc::from(user), transfer_id: transfer.into(), failure, at_ms })
}

fn rejected(user: &str, transfer: &str, params: TransferParams, failure: TransferFailure, at_ms: i64) -> Event {
    let (params, failure) = (Box::new(params), Box::new(failure));
    w(WalletEvent::Rejected { user_id: Arc::from(user), transfer_id: transfer.into(), params, failure, at_ms })
}

/// Alice's wallet on shard 2: credits, a debit, a settled payment (kept), a try unfrozen with a
/// failure, one canceled by the engine, and a payment settled then refunded.
fn alice() -> Records {
    let a = "alice";
    vec![
        (
            2,
            11,
            vec![
                credited(a, "topup-1", "CNY", 20_000, T + 10_000),
                credited(a, "grant-1", "POINTS", 5_000, T + 10_500),
            ],
        ),
        (
            2,
            12,
            vec![w(WalletEvent::Debited {
                user_id: Arc::from(a),
                transfer_id: "withdraw-1".into(),
                asset: asset("CNY"),
                amount_minor: 1_000,
                at_ms: T + 11_000,
            })],
        ),
        (
            2,
            13,
            vec![
                frozen(a, "pay-1", 101, vec![leg("CNY", 9_980), leg("POINTS", 1_250)], T + 12_000),
                settled(a, "pay-1", T + 12_000),
            ],
        ),
        (
            2,
            14,
            vec![
                frozen(a, "pay-2", 104, vec![leg("CNY", 5_990)], T + 13_000),
                unfrozen(
                    a,
                    "pay-2",
                    Some(TransferFailure::AmountMismatch { expected: dec("59.90"), got: dec("59.00") }),
                    T + 13_000,
                ),
            ],
        ),
        (2, 15, vec![frozen(a, "pay-3", 105, vec![leg("POINTS", 100)], T + 14_000)]),
        (2, 16, vec![unfrozen(a, "pay-3", None, T + 74_000)]),
        (2, 17, vec![frozen(a, "pay-4", 106, vec![leg("CNY", 2_000)], T + 15_000), settled(a, "pay-4", T + 15_000)]),
        (
            2,
            18,
            vec![w(WalletEvent::Refunded {
                user_id: Arc::from(a),
                transfer_id: "pay-4".into(),
                order_id: OrderId(106),
                at_ms: T + 16_000,
            })],
        ),
    ]
}

/// Bob's wallet on shard 1: a credit, a try left open, and a refusal of every kind.
fn bob() -> Records {
    let b = "bob";
    use TransferFailure as F;
    let pay = |order: u64, legs: Vec<Leg>| TransferParams::Pay { order_id: OrderId(order), legs };
    vec![
        (
            1,
            7,
            vec![
                credited(b, "b-top", "CNY", 3_000, T + 10_000),
                frozen(b, "b-pay", 107, vec![leg("CNY", 2_500)], T + 17_000),
            ],
        ),
        (
            1,
            8,
            vec![
                rejected(
                    b,
                    "b-out",
                    TransferParams::Debit { asset: asset("CNY"), amount_minor: 9_999 },
                    F::InsufficientFunds { asset: asset("CNY"), needed_minor: 9_999, available_minor: 500 },
                    T + 17_500,
                ),
                rejected(
                    b,
                    "b-pay-2",
                    pay(108, vec![leg("CNY", 100)]),
                    F::OrderNotPayable { order_id: OrderId(108), status: OrderStatus::Canceled },
                    T + 17_600,
                ),
                rejected(
                    b,
                    "b-pay-3",
                    pay(101, vec![leg("POINTS", 10)]),
                    F::AlreadyPaid { order_id: OrderId(101) },
                    T + 17_700,
                ),
                rejected(
                    b,
                    "b-pay-4",
                    pay(109, vec![leg("CNY", 1_000), leg("POINTS", 1)]),
                    F::AmountMismatch { expected: dec("10.00"), got: dec("10.01") },
                    T + 17_800,
                ),
                rejected(
                    b,
                    "b-pay-5",
                    pay(999, vec![leg("CNY", 1)]),
                    F::UnknownOrder { order_id: OrderId(999) },
                    T + 17_900,
                ),
                rejected(
                    b,
                    "b-top-2",
                    TransferParams::Credit { asset: asset("POINTS"), amount_minor: 10 },
                    F::VersionConflict { expected: 1, actual: 2 },
                    T + 18_000,
                ),
            ],
        ),
    ]
}

/// Wallets of shard 0: non-ASCII ids, the largest amount, and a time before the record's
/// previous one (a negative time difference).
fn others() -> Records {
    vec![(
        0,
        10,
        vec![
            credited("carol", "big", "CNY", 1_000_000_000_000_000, T + 20_000),
            credited("zo\u{eb}", "t-\u{1F680}", "POINTS", 1, T - 5_000),
        ],
    )]
}

/// The story: alice's, bob's and the others' records, in log order.
pub fn wallet_records() -> Records {
    let mut records = alice();
    records.extend(bob());
    records.extend(others());
    records
}

/// Every wallet event of `records`, in order.
pub fn wallet_events(records: &Records) -> Vec<WalletEvent> {
    records
        .iter()
        .flat_map(|(_, _, events)| events)
        .filter_map(|e| match e {
            Event::Wallet(w) => Some(w.clone()),
            _ => None,
        })
        .collect()
}

/// A fresh book with every wallet event of `records` applied (each must apply).
pub fn wallet_book(records: &Records) -> WalletBook {
    let mut book = WalletBook::default();
    for e in wallet_events(records) {
        book.apply(&e).unwrap_or_else(|err| panic!("{e:?}: {err}"));
    }
    book.check().expect("the story keeps every invariant");
    book
}

/// One of each `TransferFailure`, with edge values.
pub fn every_failure() -> Vec<TransferFailure> {
    use TransferFailure as F;
    vec![
        F::InsufficientFunds { asset: asset("A_1"), needed_minor: u64::MAX, available_minor: 0 },
        F::AmountMismatch { expected: Decimal::MAX, got: dec("-0.0000000000000000000000000001") },
        F::OrderNotPayable { order_id: OrderId(u64::MAX), status: OrderStatus::Disputed },
        F::AlreadyPaid { order_id: OrderId(0) },
        F::VersionConflict { expected: u32::MAX, actual: 0 },
        F::UnknownOrder { order_id: OrderId(1 << 63) },
    ]
}

/// One of each `TransferParams`, with edge values (no legs, four legs).
pub fn every_params() -> Vec<TransferParams> {
    vec![
        TransferParams::Credit { asset: asset("CNY"), amount_minor: 1 },
        TransferParams::Debit { asset: asset("POINTS"), amount_minor: u64::MAX },
        TransferParams::Pay { order_id: OrderId(7), legs: vec![] },
        TransferParams::Pay {
            order_id: OrderId(u64::MAX - 1),
            legs: vec![leg("CNY", 1), leg("POINTS", 2), leg("ABCDEFGHIJKL", 3), leg("CNY", u64::MAX)],
        },
    ]
}
