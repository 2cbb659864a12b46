//! Wallet events in format 4 (tags 15 to 21) and wallets in snapshots (envelope version 4),
//! issue 14: every variant round-trips inside records mixed with SKU and order events; damaged
//! bytes are `Corrupt`, never a panic; a snapshot keeps its wallets, and the older snapshot
//! versions decode with none.

mod common;
mod wallet_story;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use common::Rng;
use surge_engine::wallet::{TransferFailure, TransferParams, WalletEvent};
use surge_engine::{
    smallvec, Decimal, EngineState, Event, HistoryEntry, Initiator, LineItem, Order, OrderEvent, OrderEventKind,
    OrderId, OrderStatus, SaleRules, SkuEvent,
};
use surge_persistence::codec::{
    decode_record, decode_snapshot, encode_record, encode_records, encode_snapshot, event_type, SnapshotFile,
    HEADER_BYTES, SNAPSHOT_VERSION,
};
use surge_persistence::PersistenceError;
use wallet_story::{asset, every_failure, every_params, leg, wallet_book, wallet_records, T};

fn failure_name(f: &TransferFailure) -> &'static str {
    match f {
        TransferFailure::InsufficientFunds { .. } => "insufficient_funds",
        TransferFailure::AmountMismatch { .. } => "amount_mismatch",
        TransferFailure::OrderNotPayable { .. } => "order_not_payable",
        TransferFailure::AlreadyPaid { .. } => "already_paid",
        TransferFailure::VersionConflict { .. } => "version_conflict",
        TransferFailure::UnknownOrder { .. } => "unknown_order",
    }
}

fn params_name(p: &TransferParams) -> &'static str {
    match p {
        TransferParams::Credit { .. } => "credit",
        TransferParams::Debit { .. } => "debit",
        TransferParams::Pay { .. } => "pay",
    }
}

/// Every wallet event shape: the story's, an `Unfrozen` with and without each failure, and a
/// `Rejected` for every (params, failure) pair, with edge values of ids, amounts and times.
fn every_wallet_event() -> Vec<Event> {
    let mut events: Vec<Event> = wallet_records().into_iter().flat_map(|(_, _, e)| e).collect();
    let at = [i64::MIN, -1, 0, i64::MAX, T];
    let (user, transfer) = (|i: usize| Arc::from(format!("u{i}")), |i: usize| format!("t-{i}").into_boxed_str());
    for (i, f) in every_failure().into_iter().enumerate() {
        let failure = Some(f.clone());
        events.push(Event::Wallet(WalletEvent::Unfrozen {
            user_id: user(i),
            transfer_id: transfer(i),
            failure,
            at_ms: at[i % 5],
        }));
        for (j, params) in every_params().into_iter().enumerate() {
            let (user_id, transfer_id, failure) = (user(j), transfer(i * 10 + j), f.clone());
            let at_ms = at[(i + j) % 5];
            let (params, failure) = (Box::new(params), Box::new(failure));
            events.push(Event::Wallet(WalletEvent::Rejected { user_id, transfer_id, params, failure, at_ms }));
        }
    }
    let edge = |e| Event::Wallet(e);
    events.push(edge(WalletEvent::Unfrozen {
        user_id: "".into(),
        transfer_id: "".into(),
        failure: None,
        at_ms: i64::MIN,
    }));
    events.push(edge(WalletEvent::Credited {
        user_id: "u".into(),
        transfer_id: "x".repeat(64).into(),
        asset: asset("ABCDEFGHIJKL"),
        amount_minor: u64::MAX,
        at_ms: i64::MAX,
    }));
    events.push(edge(WalletEvent::Frozen {
        user_id: "u".into(),
        transfer_id: "e".into(),
        order_id: OrderId(u64::MAX),
        legs: vec![],
        at_ms: 0,
    }));
    events.push(edge(WalletEvent::Refunded {
        user_id: "u".into(),
        transfer_id: "e".into(),
        order_id: OrderId(0),
        at_ms: -7,
    }));
    events
}

/// SKU and order events to mix in: a SKU whose id is an asset code (they share the record's
/// dictionary), a reservation, an order in the creation shape (compact) and its payment.
fn sku_and_order_events() -> Vec<Event> {
    let at = T + 1_000;
    let order = Order {
        order_id: OrderId((((at - 1_704_067_200_000) as u64) << 22) | 5),
        user_id: "alice".into(),
        items: smallvec![LineItem {
            sku_id: "CNY".into(),
            name: "CNY".into(),
            qty: 2,
            unit_price: "49.90".parse().unwrap(),
            subtotal: "99.80".parse().unwrap(),
        }],
        total: "99.80".parse().unwrap(),
        status: OrderStatus::PendingPayment,
        version: 1,
        created_at_ms: at,
        updated_at_ms: at,
        payment_deadline_ms: at + 900_000,
        payment: None,
        tracking_number: None,
        shipped: false,
        refund_return_to: None,
        history: smallvec![HistoryEntry {
            from: None,
            to: OrderStatus::PendingPayment,
            at_ms: at,
            by: Initiator::User,
            reason: None
        }],
        idempotency_key: "k".into(),
    };
    let id = order.order_id;
    vec![
        Event::Sku(SkuEvent::Created {
            sku_id: "CNY".into(),
            name: "POINTS".into(),
            price: "49.90".parse().unwrap(),
            initial_stock: 10,
            rules: SaleRules::default(),
        }),
        Event::Sku(SkuEvent::Reserved { sku_id: "CNY".into(), order_id: id, user_id: "alice".into(), qty: 2 }),
        Event::Order(OrderEvent::Created(Arc::new(order))),
        Event::Order(OrderEvent::Transitioned {
            order_id: id,
            event: OrderEventKind::Pay,
            from: OrderStatus::PendingPayment,
            to: OrderStatus::Paid,
            at_ms: at + 5,
            by: Initiator::User,
            reason: Some("wallet".into()),
            payment: None,
            tracking_number: None,
        }),
        Event::Sku(SkuEvent::Confirmed { sku_id: "CNY".into(), order_id: id }),
    ]
}

fn shuffle(rng: &mut Rng, v: &mut [Event]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

#[test]
fn the_wallet_events_cover_every_variant() {
    let events = every_wallet_event();
    let types: BTreeSet<&str> = events.iter().map(event_type).collect();
    let want = [
        "wallet_credited",
        "wallet_debited",
        "wallet_frozen",
        "wallet_settled",
        "wallet_unfrozen",
        "wallet_refunded",
        "wallet_rejected",
    ];
    assert_eq!(types, want.into_iter().collect());
    let (mut failures, mut params) = (BTreeSet::new(), BTreeSet::new());
    for e in &events {
        match e {
            Event::Wallet(WalletEvent::Rejected { params: p, failure, .. }) => {
                params.insert(params_name(p));
                failures.insert(failure_name(failure));
            }
            Event::Wallet(WalletEvent::Unfrozen { failure: Some(f), .. }) => {
                failures.insert(failure_name(f));
            }
            _ => {}
        }
    }
    assert_eq!(failures.len(), 6, "{failures:?}");
    assert_eq!(params.len(), 3, "{params:?}");
}

/// Every wallet event, shuffled among SKU and order events, decodes to exactly itself: in one
/// record, and split into many by `encode_records`.
#[test]
fn every_wallet_event_round_trips_in_mixed_records() {
    let mut rng = Rng::new(14);
    for round in 0..50 {
        let mut events = every_wallet_event();
        for _ in 0..1 + round % 4 {
            events.extend(sku_and_order_events());
        }
        shuffle(&mut rng, &mut events);
        let bytes = encode_record(3, 77, &events).unwrap();
        let (header, back) = decode_record(9, &bytes).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!((header.shard, header.seq), (3, 77));
        assert_eq!(back, events, "round {round}");
    }
    let many: Vec<Event> =
        (0..400).flat_map(|_| every_wallet_event().into_iter().chain(sku_and_order_events())).collect();
    let records = encode_records(1, 5, &many).unwrap();
    assert!(records.len() > 1, "split by bytes");
    let mut back = Vec::new();
    for (i, r) in records.iter().enumerate() {
        back.extend(decode_record(i as u64 + 1, r).unwrap().1);
    }
    assert_eq!(back, many);
}

/// Wallet events are small: a top-up or a settle takes a few bytes more than its ids.
#[test]
fn wallet_events_are_compact() {
    let size = |events: &[Event]| encode_record(0, 1, events).unwrap().len() - HEADER_BYTES - 8;
    let credit = Event::Wallet(WalletEvent::Credited {
        user_id: "u1".into(),
        transfer_id: "t1".into(),
        asset: asset("CNY"),
        amount_minor: 4_010,
        at_ms: T,
    });
    // Tag 1, "u1" 3, "t1" 3, the record's first time 6 (42 bits), "CNY" 4, 4010 2.
    assert_eq!(size(std::slice::from_ref(&credit)), 19);
    let frozen = Event::Wallet(WalletEvent::Frozen {
        user_id: "u1".into(),
        transfer_id: "p1".into(),
        order_id: OrderId(1 << 40),
        legs: vec![leg("CNY", 4_010), leg("POINTS", 250)],
        at_ms: T,
    });
    let settled = Event::Wallet(WalletEvent::Settled { user_id: "u1".into(), transfer_id: "p1".into(), at_ms: T });
    // The settle: tag 1, "u1" 3, "p1" 3, the same time again 1.
    assert_eq!(size(&[frozen.clone(), settled]), size(&[frozen]) + 8, "a settle after its try");
}

/// A record of `event_bytes` as its only event.
fn one_event_record(event_bytes: &[u8]) -> Vec<u8> {
    let mut r = encode_record(0, 1, &[]).unwrap();
    r[HEADER_BYTES..HEADER_BYTES + 8].copy_from_slice(&1u64.to_le_bytes());
    r.extend_from_slice(event_bytes);
    r
}

fn corrupt(bytes: &[u8]) -> bool {
    matches!(decode_record(4, bytes), Err(PersistenceError::Corrupt { lsn: 4, .. }))
}

/// The grammar in `codec`'s docs, written by hand: the bytes decode to the event they describe.
#[test]
fn hand_written_wallet_bytes_follow_the_documented_grammar() {
    // 15 wallet_credited: txt "u", txt "t", time +2 (zigzag 4), sym "CNY" inline (len 3 << 1), uv 300.
    let credited = [15, 1, b'u', 1, b't', 4, 6, b'C', b'N', b'Y', 0xAC, 0x02];
    let want = WalletEvent::Credited {
        user_id: "u".into(),
        transfer_id: "t".into(),
        asset: asset("CNY"),
        amount_minor: 300,
        at_ms: 2,
    };
    assert_eq!(decode_record(1, &one_event_record(&credited)).unwrap().1, vec![Event::Wallet(want)]);
    // 21 wallet_rejected: params 2 pay (oid 3: +3 from 0, zigzag 6; one leg: sym "CNY", uv 1),
    // failure 3 order_not_payable (oid 2: -1 from 3, zigzag 1; status 6: canceled).
    let rejected = [21, 1, b'u', 1, b't', 0, 2, 6, 1, 6, b'C', b'N', b'Y', 1, 3, 1, 6];
    let want = WalletEvent::Rejected {
        user_id: "u".into(),
        transfer_id: "t".into(),
        params: Box::new(TransferParams::Pay { order_id: OrderId(3), legs: vec![leg("CNY", 1)] }),
        failure: Box::new(TransferFailure::OrderNotPayable { order_id: OrderId(2), status: OrderStatus::Canceled }),
        at_ms: 0,
    };
    assert_eq!(decode_record(1, &one_event_record(&rejected)).unwrap().1, vec![Event::Wallet(want)]);
    // 19 wallet_unfrozen with failure code 0: none.
    let none = [19, 1, b'u', 1, b't', 0, 0];
    assert!(matches!(
        &decode_record(1, &one_event_record(&none)).unwrap().1[0],
        Event::Wallet(WalletEvent::Unfrozen { failure: None, .. })
    ));
}

/// Codes out of their tables, a missing failure and an invalid asset code are damage.
#[test]
fn bad_wallet_codes_are_corrupt() {
    let head = [1, b'u', 1, b't', 0];
    let with = |tag: u8, rest: &[u8]| one_event_record(&[&[tag][..], &head, rest].concat());
    assert!(corrupt(&with(22, &[])), "tag 22 is unknown");
    assert!(corrupt(&with(19, &[7])), "failure code 7");
    assert!(corrupt(&with(21, &[0, 6, b'C', b'N', b'Y', 5, 0])), "a rejection with failure 0");
    assert!(corrupt(&with(21, &[3, 6, b'C', b'N', b'Y', 5, 4, 0])), "params code 3");
    assert!(corrupt(&with(15, &[6, b'c', b'n', b'y', 5])), "lowercase asset code");
    assert!(corrupt(&with(15, &[0, 5])), "empty asset code");
    assert!(corrupt(&with(15, &[3, 5])), "asset from an empty dictionary");
    assert!(corrupt(&with(19, &[3, 2, 10])), "status code 10");
    assert!(corrupt(&with(19, &[5, 0x80, 0x80, 0x80, 0x80, 0x10, 0])), "version past 32 bits");
    assert!(corrupt(&with(17, &[2, 9, 6, b'C', b'N', b'Y', 1])), "more legs than bytes");
}

/// Every truncation of every wallet event's record is `Corrupt`, and flipped bytes never
/// panic (each either decodes or is `Corrupt`).
#[test]
fn truncated_or_flipped_wallet_events_are_errors_not_panics() {
    let mut rng = Rng::new(41);
    for (i, e) in every_wallet_event().iter().enumerate() {
        let bytes = encode_record(0, 1, std::slice::from_ref(e)).unwrap();
        for len in 0..bytes.len() {
            assert!(decode_record(4, &bytes[..len]).is_err(), "event {i} cut to {len} of {} bytes", bytes.len());
            if len > HEADER_BYTES + 8 {
                assert!(corrupt(&bytes[..len]), "event {i} cut to {len} bytes");
            }
        }
        for pos in HEADER_BYTES + 8..bytes.len() {
            for mask in [0x01, 0x80, 0xFF, 1 << rng.below(8)] {
                let mut bad = bytes.clone();
                bad[pos] ^= mask;
                match decode_record(4, &bad) {
                    Ok(_) | Err(PersistenceError::Corrupt { lsn: 4, .. }) => {}
                    Err(other) => panic!("event {i}, byte {pos}: {other}"),
                }
            }
        }
    }
}

// ---- snapshots ------------------------------------------------------------------------------

/// A state with SKUs, an order and the story's wallets (open try, settled payment, entries).
fn state_with_wallets() -> EngineState {
    let mut s = EngineState::default();
    for e in sku_and_order_events() {
        s.apply(&e);
    }
    s.wallets = wallet_book(&wallet_records());
    s
}

#[test]
fn a_snapshot_keeps_its_wallets() {
    let state = state_with_wallets();
    let alice = &state.wallets.users["alice"];
    assert!(!alice.payments.is_empty() && !alice.entries.is_empty());
    assert!(!state.wallets.users["bob"].tries.is_empty(), "bob's try is open");
    let file = SnapshotFile { lsn: 40, base: 3, cuts: vec![10, 8, 18], state };
    let bytes = encode_snapshot(&file).unwrap();
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), SNAPSHOT_VERSION);
    assert_eq!(SNAPSHOT_VERSION, 4);
    let back = decode_snapshot("s.bin", &bytes).unwrap();
    assert_eq!((back.lsn, back.base, &back.cuts), (40, 3, &file.cuts));
    assert_eq!(back.state, file.state);
    assert_eq!(back.state.digest(), file.state.digest());
    // No wallets is a valid version-4 snapshot too.
    let empty = SnapshotFile { state: EngineState::default(), ..file };
    assert_eq!(decode_snapshot("e.bin", &encode_snapshot(&empty).unwrap()).unwrap().state, EngineState::default());
}

/// `bytes` with its length and checksum made right again, so the payload's own grammar is what
/// a damage meets.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let len = (bytes.len() - 22) as u64;
    bytes[14..22].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&bytes[14..]);
    bytes[10..14].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// A version-4 payload cut anywhere inside its wallets (or flipped there, checksum resealed)
/// is a `Snapshot` error, never a panic.
#[test]
fn a_damaged_wallet_section_is_an_error_not_a_panic() {
    let file = SnapshotFile { lsn: 1, base: 0, cuts: vec![], state: state_with_wallets() };
    let bytes = encode_snapshot(&file).unwrap();
    let no_wallets = encode_snapshot(&SnapshotFile {
        state: EngineState { wallets: Default::default(), ..file.state.clone() },
        ..file.clone()
    })
    .unwrap();
    let section = bytes.len() - no_wallets.len() + 1;
    for cut in 1..=section {
        let bad = reseal(bytes[..bytes.len() - cut].to_vec());
        assert!(matches!(decode_snapshot("s.bin", &bad), Err(PersistenceError::Snapshot { .. })), "cut {cut}");
    }
    let mut rng = Rng::new(7);
    for _ in 0..2_000 {
        let mut bad = bytes.clone();
        let pos = bytes.len() - 1 - rng.below(section);
        bad[pos] ^= 1 << rng.below(8);
        let _ = decode_snapshot("s.bin", &reseal(bad));
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

/// The committed snapshots of envelope versions 1 to 3 decode with no wallets; a version-3 file
/// relabeled 4 lacks the wallet section and is refused.
#[test]
fn older_snapshots_decode_with_no_wallets() {
    for version in 1..=3 {
        let snap = decode_snapshot("old.bin", &fixture(&format!("snapshot-v{version}.bin"))).unwrap();
        assert!(snap.state.wallets.users.is_empty(), "v{version}");
        assert!(!snap.state.orders.is_empty(), "v{version} still holds its orders");
    }
    let mut v3 = fixture("snapshot-v3.bin");
    v3[8..10].copy_from_slice(&4u16.to_le_bytes());
    assert!(matches!(decode_snapshot("s.bin", &v3), Err(PersistenceError::Snapshot { .. })));
}

#[test]
fn decimals_in_failures_keep_their_exact_bits() {
    let expected: Decimal = "-0.00".parse().unwrap();
    let got: Decimal = "12.3400".parse().unwrap();
    let e = Event::Wallet(WalletEvent::Unfrozen {
        user_id: "u".into(),
        transfer_id: "t".into(),
        failure: Some(TransferFailure::AmountMismatch { expected, got }),
        at_ms: 1,
    });
    let back = decode_record(1, &encode_record(0, 1, std::slice::from_ref(&e)).unwrap()).unwrap().1;
    let Event::Wallet(WalletEvent::Unfrozen {
        failure: Some(TransferFailure::AmountMismatch { expected: x, got: g }),
        ..
    }) = &back[0]
    else {
        panic!("{back:?}");
    };
    assert_eq!((x.to_string(), g.to_string()), (expected.to_string(), got.to_string()));
    assert_eq!((x.serialize(), g.serialize()), (expected.serialize(), got.serialize()));
}
