//! Format 4 (`codec`): random events, canonical and not, encode and decode to exactly what they
//! were (decimals bit for bit, trailing zeros and the sign of zero included); an order the
//! engine just created takes the compact form; damaged bytes give `Corrupt`, never a panic.

mod common;

use std::sync::Arc;

use common::Rng;
use surge_engine::{
    smallvec, Decimal, Event, HistoryEntry, Initiator, LineItem, Order, OrderEvent, OrderEventKind, OrderId,
    OrderStatus, Payment, SaleRules, SkuEvent,
};
use surge_persistence::codec::{decode_record, encode_record, encode_records, FORMAT_VERSION, HEADER_BYTES};
use surge_persistence::PersistenceError;

/// Tag of a compact `order_created` (the grammar in `codec`'s docs).
const TAG_ORDER_CREATED: u8 = 10;
const TAG_ORDER_CREATED_FULL: u8 = 11;

/// A snowflake id of `ms` (Unix ms) with sequence `seq`, as the engine mints them.
fn snowflake(ms: i64, seq: u64) -> OrderId {
    OrderId((((ms - 1_704_067_200_000) as u64) << 22) | seq)
}

fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len())]
}

/// A decimal of any scale and sign, now and then with trailing zeros, zero, negative zero, or
/// the widest mantissa.
fn decimal(rng: &mut Rng) -> Decimal {
    match rng.below(8) {
        0 => Decimal::ZERO,
        1 => Decimal::deserialize([0, 0, rng.below(29) as u8, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        2 => Decimal::MAX,
        3 => Decimal::from_i128_with_scale(-(rng.next_u64() as i128) * 1_000_003, rng.below(29) as u32),
        _ => Decimal::new((rng.next_u64() % 100_000) as i64, rng.below(4) as u32),
    }
}

fn status(rng: &mut Rng) -> OrderStatus {
    OrderStatus::ALL[rng.below(OrderStatus::ALL.len())]
}

fn initiator(rng: &mut Rng) -> Initiator {
    [Initiator::User, Initiator::Admin, Initiator::Psp, Initiator::System][rng.below(4)]
}

fn time(rng: &mut Rng) -> i64 {
    match rng.below(6) {
        0 => i64::MIN,
        1 => i64::MAX,
        2 => -(rng.next_u64() as i64 >> 20),
        _ => 1_760_000_000_000 + rng.below(10_000_000) as i64,
    }
}

fn text(rng: &mut Rng) -> Option<Box<str>> {
    (rng.below(2) == 0).then(|| pick(rng, &["", "payment_deadline", "late", "caf\u{e9} \u{1F680}"]).into())
}

/// An order exactly as `build_order` makes one (subtotals and total by `rust_decimal`).
fn created_order(rng: &mut Rng) -> Order {
    let at = 1_760_000_000_000 + rng.below(1_000_000) as i64;
    let skus = ["A", "sku-hot", "bench-19a2b3c4d5e6f7a8b9c0-0", "\u{e9}t\u{e9}"];
    let mut total = Decimal::ZERO;
    let items: Vec<LineItem> = (0..1 + rng.below(4))
        .map(|i| {
            let unit_price = Decimal::new((rng.next_u64() % 1_000_000) as i64, rng.below(5) as u32);
            let qty = 1 + rng.below(1000) as u32;
            let subtotal = unit_price.checked_mul(Decimal::from(qty)).expect("fits");
            total = total.checked_add(subtotal).expect("fits");
            let sku = skus[(i + rng.below(2)) % skus.len()];
            LineItem { sku_id: sku.into(), name: format!("{sku} name").into(), qty, unit_price, subtotal }
        })
        .collect();
    let entry =
        HistoryEntry { from: None, to: OrderStatus::PendingPayment, at_ms: at, by: Initiator::User, reason: None };
    Order {
        order_id: snowflake(at + rng.below(3) as i64 - 1, rng.below(4096) as u64),
        user_id: format!("u{}", rng.next_u64() % 1_000_000).into(),
        items: items.into(),
        total,
        status: OrderStatus::PendingPayment,
        version: 1,
        created_at_ms: at,
        updated_at_ms: at,
        payment_deadline_ms: at + 900_000,
        payment: None,
        tracking_number: None,
        shipped: false,
        refund_return_to: None,
        history: smallvec![entry],
        idempotency_key: format!("k{}", rng.below(100)).into(),
    }
}

/// A created order with one thing changed, or anything at all.
fn any_order(rng: &mut Rng) -> Order {
    let mut o = created_order(rng);
    match rng.below(12) {
        0 => o.total = decimal(rng),
        1 => o.items[0].subtotal = decimal(rng),
        2 => o.items[0].unit_price = decimal(rng),
        3 => o.version = rng.next_u64() as u32,
        4 => o.updated_at_ms = time(rng),
        5 => o.history[0].reason = text(rng),
        6 => o.history[0].by = Initiator::System,
        7 => o.history.clear(),
        8 => o.items.clear(),
        9 => o.total = "0.00".parse().expect("decimal"),
        10 => o.order_id = OrderId(rng.next_u64()),
        _ => {
            o.status = status(rng);
            o.payment =
                Some(Box::new(Payment { payment_id: "psp-1".into(), amount: decimal(rng), paid_at_ms: time(rng) }));
            o.tracking_number = text(rng);
            o.shipped = rng.below(2) == 0;
            o.refund_return_to = (rng.below(2) == 0).then(|| status(rng));
            for _ in 0..rng.below(5) {
                let from = (rng.below(5) > 0).then(|| status(rng));
                o.history.push(HistoryEntry {
                    from,
                    to: status(rng),
                    at_ms: time(rng),
                    by: initiator(rng),
                    reason: text(rng),
                });
            }
            o.created_at_ms = time(rng);
            o.payment_deadline_ms = time(rng);
        }
    }
    o
}

fn rules(rng: &mut Rng) -> SaleRules {
    SaleRules {
        per_user_limit: (rng.below(2) == 0).then(|| rng.next_u64() as u32),
        sale_starts_at_ms: (rng.below(2) == 0).then(|| time(rng)),
        sale_ends_at_ms: (rng.below(2) == 0).then(|| time(rng)),
        paused: rng.below(2) == 0,
    }
}

fn sku_event(rng: &mut Rng) -> SkuEvent {
    let sku_id: Arc<str> = pick(rng, &["A", "sku-hot", "", "\u{e9}t\u{e9}"]).into();
    let order_id =
        if rng.below(4) == 0 { OrderId(rng.next_u64()) } else { snowflake(time(rng).max(1_704_067_200_000), 7) };
    let user_id: Arc<str> = pick(rng, &["alice", "u-19a2b3c4d5e6f7-123456", ""]).into();
    let qty = rng.next_u64() as u32;
    let (name, price): (Arc<str>, Decimal) = ("A name".into(), decimal(rng));
    match rng.below(10) {
        0 => SkuEvent::Created { sku_id, name, price, initial_stock: rng.next_u64(), rules: rules(rng) },
        1 => SkuEvent::Updated { sku_id, name, price, rules: rules(rng) },
        2 => SkuEvent::Adjusted { sku_id, delta: rng.next_u64() as i64, reason: "restock".into() },
        3 => SkuEvent::AdjustedOnce {
            sku_id,
            adjustment_id: "adj-1".into(),
            delta: -(rng.below(100) as i64),
            reason: "".into(),
        },
        4 => SkuEvent::Reserved { sku_id, order_id, user_id, qty },
        5 => SkuEvent::Remembered { sku_id, order_id, user_id, qty },
        6 => SkuEvent::Confirmed { sku_id, order_id },
        7 => SkuEvent::Released { sku_id, order_id },
        8 => SkuEvent::Restocked { sku_id, order_id },
        _ => SkuEvent::Forgotten { sku_id, order_id },
    }
}

fn transitioned(rng: &mut Rng) -> OrderEvent {
    OrderEvent::Transitioned {
        order_id: OrderId(rng.next_u64() >> rng.below(64)),
        event: OrderEventKind::ALL[rng.below(OrderEventKind::ALL.len())],
        from: status(rng),
        to: status(rng),
        at_ms: time(rng),
        by: initiator(rng),
        reason: text(rng),
        payment: (rng.below(3) == 0).then(|| Payment {
            payment_id: "psp-\u{e9}".into(),
            amount: decimal(rng),
            paid_at_ms: time(rng),
        }),
        tracking_number: text(rng),
    }
}

fn event(rng: &mut Rng) -> Event {
    match rng.below(8) {
        0 | 1 => Event::Sku(sku_event(rng)),
        2 => Event::Order(OrderEvent::Created(Arc::new(created_order(rng)))),
        3 => Event::Order(OrderEvent::Created(Arc::new(any_order(rng)))),
        4 => Event::Order(OrderEvent::Archived(Arc::new(any_order(rng)))),
        5 => Event::Order(OrderEvent::Restored(Arc::new(any_order(rng)))),
        _ => Event::Order(transitioned(rng)),
    }
}

/// Equal, and equal in every decimal's bits too (`Decimal`'s `==` ignores trailing zeros and the
/// sign of zero; its `Debug` shows both, except the sign of zero, which `serialize` shows).
fn assert_exactly_equal(got: &[Event], want: &[Event], what: &str) {
    assert_eq!(got, want, "{what}");
    assert_eq!(format!("{got:?}"), format!("{want:?}"), "{what}");
    let bits = |events: &[Event]| -> Vec<[u8; 16]> {
        let mut out = Vec::new();
        let order = |out: &mut Vec<[u8; 16]>, o: &Order| {
            out.push(o.total.serialize());
            out.extend(o.items.iter().flat_map(|i| [i.unit_price.serialize(), i.subtotal.serialize()]));
            out.extend(o.payment.iter().map(|p| p.amount.serialize()));
        };
        for e in events {
            match e {
                Event::Order(OrderEvent::Created(o) | OrderEvent::Archived(o) | OrderEvent::Restored(o)) => {
                    order(&mut out, o)
                }
                Event::Order(OrderEvent::Transitioned { payment: Some(p), .. }) => out.push(p.amount.serialize()),
                Event::Sku(SkuEvent::Created { price, .. } | SkuEvent::Updated { price, .. }) => {
                    out.push(price.serialize())
                }
                _ => {}
            }
        }
        out
    };
    assert_eq!(bits(got), bits(want), "{what}: decimal bits");
}

/// Random batches of every event type round-trip exactly, through one record and through the
/// writer's split into several.
#[test]
fn random_events_round_trip_exactly() {
    let mut rng = Rng::new(0x5EED_0004);
    for round in 0..400 {
        let events: Vec<Event> = (0..1 + rng.below(60)).map(|_| event(&mut rng)).collect();
        let bytes = encode_record(3, round, &events).unwrap();
        let (h, got) = decode_record(9, &bytes).unwrap();
        assert_eq!((h.version, h.shard, h.seq), (FORMAT_VERSION, 3, round));
        assert_exactly_equal(&got, &events, &format!("round {round}"));
    }
    // Many events: split into records, each decoding on its own (its dictionary and registers
    // start afresh).
    let events: Vec<Event> = (0..30_000).map(|_| event(&mut rng)).collect();
    let records = encode_records(1, 2, &events).unwrap();
    assert!(records.len() > 2, "{} records", records.len());
    let mut got = Vec::new();
    for (i, r) in records.iter().enumerate() {
        got.extend(decode_record(i as u64 + 1, r).unwrap().1);
    }
    assert_exactly_equal(&got, &events, "split batch");
}

/// An order in the creation shape is written compact, others in full; both decode to the same
/// order.
#[test]
fn created_orders_take_the_compact_form_and_others_the_full_one() {
    let mut rng = Rng::new(7);
    for _ in 0..2_000 {
        let o = created_order(&mut rng);
        let e = vec![Event::Order(OrderEvent::Created(Arc::new(o.clone())))];
        let bytes = encode_record(0, 1, &e).unwrap();
        assert_eq!(bytes[HEADER_BYTES + 8], TAG_ORDER_CREATED, "{o:?}");
        assert_exactly_equal(&decode_record(1, &bytes).unwrap().1, &e, "compact");
        let mut changed = o.clone();
        changed.items[0].subtotal = changed.items[0].subtotal.checked_add(Decimal::new(1, 28)).unwrap();
        changed.total = changed.total.checked_add(Decimal::new(1, 28)).unwrap();
        let e = vec![Event::Order(OrderEvent::Created(Arc::new(changed)))];
        let full = encode_record(0, 1, &e).unwrap();
        assert_eq!(full[HEADER_BYTES + 8], TAG_ORDER_CREATED_FULL);
        assert_exactly_equal(&decode_record(1, &full).unwrap().1, &e, "full");
    }
    // Trailing zeros differ in value-equal decimals: not the creation shape (the total would
    // decode as 10.0, not 10.00).
    let mut o = created_order(&mut rng);
    o.items.truncate(1);
    o.items[0].unit_price = "5.0".parse().unwrap();
    o.items[0].qty = 2;
    o.items[0].subtotal = "10.0".parse().unwrap();
    o.total = "10.00".parse().unwrap();
    let e = vec![Event::Order(OrderEvent::Created(Arc::new(o)))];
    let bytes = encode_record(0, 1, &e).unwrap();
    assert_eq!(bytes[HEADER_BYTES + 8], TAG_ORDER_CREATED_FULL);
    assert_exactly_equal(&decode_record(1, &bytes).unwrap().1, &e, "trailing zeros");
}

/// A single-item order of the hot-SKU bench (ids as long as its) costs well under 128 bytes:
/// `reserved` plus a compact `order_created`, the SKU's id and name once per record.
#[test]
fn a_single_item_order_is_small() {
    let mut rng = Rng::new(11);
    let sku: Arc<str> = "bench-19a2b3c4d5e6f7a8b9c0-0".into();
    let name: Arc<str> = "bench bench-19a2b3c4d5e6f7a8b9c0-0".into();
    let (mut reserved, mut created) = (Vec::new(), Vec::new());
    for i in 0..200u64 {
        let mut o = created_order(&mut rng);
        o.items.truncate(1);
        o.items[0].sku_id = sku.clone();
        o.items[0].name = name.clone();
        o.items[0].qty = 1;
        o.items[0].unit_price = "9.99".parse().unwrap();
        o.items[0].subtotal = o.items[0].unit_price;
        o.total = Decimal::ZERO.checked_add(o.items[0].subtotal).unwrap();
        o.user_id = format!("u19a2b3c4d5e6f7a8b9c0-{}", 100_000 + i).into();
        o.idempotency_key = format!("k{}", 100_000 + i).into();
        let (order_id, user_id) = (o.order_id, o.user_id.clone());
        reserved.push(Event::Sku(SkuEvent::Reserved { sku_id: sku.clone(), order_id, user_id, qty: 1 }));
        created.push(Event::Order(OrderEvent::Created(Arc::new(o))));
    }
    let bytes = encode_record(0, 1, &reserved).unwrap().len() + encode_record(1, 1, &created).unwrap().len();
    let per_order = bytes / 200;
    println!("{per_order} bytes per single-item order");
    assert!(per_order <= 110, "{per_order} bytes per order");
}

/// Any truncation and any single-byte change of valid records decodes or fails with `Corrupt`
/// naming the LSN: never a panic.
#[test]
fn damaged_records_are_corrupt_not_a_panic() {
    let mut rng = Rng::new(99);
    let events: Vec<Event> = (0..40).map(|_| event(&mut rng)).collect();
    let bytes = encode_record(0, 1, &events).unwrap();
    for cut in 0..bytes.len() {
        match decode_record(5, &bytes[..cut]) {
            Err(PersistenceError::Corrupt { lsn: 5, .. }) => {}
            other => panic!("cut at {cut}: {:?}", other.map(|(_, e)| e.len())),
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(decode_record(5, &longer), Err(PersistenceError::Corrupt { lsn: 5, .. })), "trailing byte");
    for i in HEADER_BYTES..bytes.len() {
        for x in [0x01u8, 0x80, 0xFF] {
            let mut bad = bytes.clone();
            bad[i] ^= x;
            match decode_record(5, &bad) {
                Ok(_) | Err(PersistenceError::Corrupt { lsn: 5, .. }) => {}
                Err(e) => panic!("byte {i} ^ {x:#x}: {e}"),
            }
        }
    }
}

/// Orders the engine itself creates (prices with trailing zeros, several items, quantities above
/// one) are in the creation shape: each `order_created` of a real log is written compact.
#[test]
fn orders_the_engine_creates_take_the_compact_form() {
    use surge_engine::{CreateOrder, EngineConfig, SkuSpec};
    use surge_persistence::{DurableEngine, PersistenceConfig, Storage};
    let dir = tempfile::tempdir().unwrap();
    let cfg = PersistenceConfig::new(dir.path());
    let db = DurableEngine::open(cfg, EngineConfig { shard_count: 2, ..EngineConfig::default() }).unwrap();
    let e = db.engine().clone();
    for (id, price) in [("tee", "19.90"), ("mug", "12.5"), ("pen", "0.10"), ("car", "25999.000")] {
        let spec = SkuSpec {
            sku_id: id.into(),
            name: format!("{id} name"),
            price: price.parse().unwrap(),
            initial_stock: 1_000,
            rules: SaleRules::default(),
        };
        e.create_sku(spec).wait().unwrap();
    }
    let carts: [&[(&str, u32)]; 4] =
        [&[("tee", 1)], &[("mug", 3), ("pen", 7)], &[("car", 2), ("tee", 5)], &[("pen", 1)]];
    for (i, cart) in carts.iter().cycle().take(40).enumerate() {
        e.create_order(CreateOrder::new(&format!("user-{i}"), cart, &format!("k{i}"))).wait().unwrap();
    }
    drop(e);
    db.close_without_snapshot();
    let store = common::open_store(dir.path());
    let mut created = 0;
    store
        .for_each_record(&mut |lsn, bytes| {
            for e in decode_record(lsn, bytes)?.1 {
                if let Event::Order(OrderEvent::Created(_)) = &e {
                    created += 1;
                    let alone = encode_record(0, 1, std::slice::from_ref(&e)).unwrap();
                    assert_eq!(alone[HEADER_BYTES + 8], TAG_ORDER_CREATED, "{e:?}");
                }
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(created, 40);
}

/// Snapshot envelope 3 stores orders in blocks of format 4's whole-order encoding: thousands of
/// random orders (several blocks) decode to exactly the state they came from, a flash sale's
/// order takes under 100 bytes, and a payload that is cut short or altered (with its checksum
/// made to match) is a `Snapshot` error naming the file, never a panic.
#[test]
fn snapshot_v3_round_trips_orders_in_blocks_and_refuses_damage() {
    use surge_persistence::codec::{decode_snapshot, encode_snapshot, SnapshotFile};
    let mut rng = Rng::new(2026);
    let mut state = surge_engine::EngineState::default();
    state.apply(&Event::Sku(SkuEvent::Created {
        sku_id: "sku-1".into(),
        name: "Phone".into(),
        price: "1999.00".parse().expect("decimal"),
        initial_stock: 100,
        rules: SaleRules::default(),
    }));
    while state.orders.len() < 10_000 {
        let o = any_order(&mut rng);
        state.orders.insert(o.order_id, Arc::new(o));
    }
    let file = SnapshotFile { lsn: 77, base: 5, cuts: vec![70, 71], state };
    let bytes = encode_snapshot(&file).unwrap();
    let back = decode_snapshot("s.bin", &bytes).unwrap_or_else(|e| panic!("seed 2026: {e}"));
    assert_eq!((back.lsn, back.base, &back.cuts), (77, 5, &vec![70, 71]));
    assert!(back.state == file.state, "seed 2026: the state changed in the round trip");
    for (id, o) in &file.state.orders {
        let got = &back.state.orders[id];
        assert_eq!(got.total.serialize(), o.total.serialize(), "order {id}: the total's bits");
    }

    let mut sale = surge_engine::EngineState::default();
    for i in 0..5_000u64 {
        let mut o = created_order(&mut Rng::new(i));
        o.order_id = snowflake(1_760_000_000_000 + i as i64, i % 7);
        sale.orders.insert(o.order_id, Arc::new(o));
    }
    let sale_bytes = encode_snapshot(&SnapshotFile { lsn: 1, base: 0, cuts: vec![], state: sale }).unwrap();
    let per_order = sale_bytes.len() / 5_000;
    assert!(per_order < 100, "{per_order} bytes per created order in a snapshot");

    // Damage, on a smaller file (every decode below reads it whole).
    let small: std::collections::BTreeMap<_, _> =
        file.state.orders.iter().take(300).map(|(k, v)| (*k, v.clone())).collect();
    let small_state = surge_engine::EngineState { skus: file.state.skus.clone(), orders: small, ..Default::default() };
    let bytes = encode_snapshot(&SnapshotFile { lsn: 77, base: 5, cuts: vec![70, 71], state: small_state }).unwrap();
    let resealed = |mut b: Vec<u8>| {
        let crc = crc32fast::hash(&b[14..]);
        b[10..14].copy_from_slice(&crc.to_le_bytes());
        b
    };
    for cut in (22..bytes.len()).step_by(7) {
        let mut short = bytes[..cut].to_vec();
        short[14..22].copy_from_slice(&((cut - 22) as u64).to_le_bytes());
        match decode_snapshot("s.bin", &resealed(short)) {
            Err(PersistenceError::Snapshot { path, .. }) => assert_eq!(path, "s.bin"),
            other => panic!("cut at {cut}: {:?}", other.map(|s| s.lsn)),
        }
    }
    for i in (22..bytes.len()).step_by(5) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x55;
        assert!(matches!(decode_snapshot("s.bin", &bad), Err(PersistenceError::Snapshot { .. })), "byte {i}");
        match decode_snapshot("s.bin", &resealed(bad)) {
            Ok(_) | Err(PersistenceError::Snapshot { .. }) => {}
            Err(e) => panic!("byte {i}: {e}"),
        }
    }
}
