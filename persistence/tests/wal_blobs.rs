//! Every byte acknowledged is on disk (issue 10 item 5): sled 0.34.7 moves a page bigger than
//! `segment_size / 4` into `wal/blobs/` files it never fsyncs, so no WAL record and no archived
//! order may make a page that big. The writer splits records by bytes (`codec::encode_records`);
//! here real sled files are checked after a flood of the largest orders the input limits allow.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{assert_healthy, open_db, state_of};
use surge_engine::smallvec;
use surge_engine::{
    CreateOrder, Decimal, EngineConfig, Event, HistoryEntry, Initiator, LineItem, ManualClock, Order, OrderEvent,
    OrderId, OrderStatus, Payment, SaleRules, SkuSpec, TransitionOptions, IDEMPOTENCY_KEY_BYTES_MAX, ID_BYTES_MAX,
    ORDER_TRANSITIONS_MAX, TEXT_BYTES_MAX,
};
use surge_persistence::codec::{encode_record, encode_records, RECORD_BYTES_MAX, RECORD_BYTES_TARGET};
use surge_persistence::{DurableEngine, PersistenceConfig, PersistenceError};

/// A string of exactly `n` bytes, distinct per `tag`.
fn text(tag: &str, n: usize) -> String {
    let mut s = format!("{tag}-");
    while s.len() < n {
        s.push('x');
    }
    s.truncate(n);
    s
}

/// The largest decimal string: 29 digits, a point, a sign.
fn widest_decimal() -> Decimal {
    "-7.9228162514264337593543950335".parse().expect("decimal")
}

/// The largest `order_created` event the engine's input limits allow with `items` line items.
fn worst_order(items: usize) -> Order {
    let line = |i: usize| LineItem {
        sku_id: text(&format!("sku{i}"), ID_BYTES_MAX).into(),
        name: text(&format!("name{i}"), TEXT_BYTES_MAX).into(),
        qty: u32::MAX,
        unit_price: widest_decimal(),
        subtotal: widest_decimal(),
    };
    let entry = HistoryEntry {
        from: None,
        to: OrderStatus::PendingPayment,
        at_ms: i64::MAX,
        by: Initiator::User,
        reason: Some(text("reason", TEXT_BYTES_MAX).into()),
    };
    Order {
        order_id: OrderId(u64::MAX),
        user_id: text("user", ID_BYTES_MAX).into(),
        items: (0..items).map(line).collect(),
        total: widest_decimal(),
        status: OrderStatus::PendingPayment,
        version: u32::MAX,
        created_at_ms: i64::MAX,
        updated_at_ms: i64::MAX,
        payment_deadline_ms: i64::MAX,
        payment: None,
        tracking_number: Some(text("trk", TEXT_BYTES_MAX).into()),
        shipped: false,
        refund_return_to: None,
        history: smallvec![entry],
        idempotency_key: text("key", IDEMPOTENCY_KEY_BYTES_MAX).into(),
    }
}

fn encoded_size(e: &Event) -> usize {
    let records = encode_records(0, 1, std::slice::from_ref(e)).expect("encodes within the bound");
    assert_eq!(records.len(), 1);
    records[0].len()
}

/// The largest archived order the input limits allow: [`worst_order`] with a payment, a
/// pending refund's return status and a full history (`ORDER_TRANSITIONS_MAX` transitions after
/// the creation entry, every reason at its limit).
fn worst_archived_order(items: usize) -> Order {
    let mut o = worst_order(items);
    o.payment = Some(Box::new(Payment {
        payment_id: text("psp", ID_BYTES_MAX).into(),
        amount: widest_decimal(),
        paid_at_ms: i64::MAX,
    }));
    o.refund_return_to = Some(OrderStatus::PendingPayment);
    let entry = HistoryEntry { from: Some(OrderStatus::PendingPayment), ..o.history[0].clone() };
    o.history.resize(1 + ORDER_TRANSITIONS_MAX, entry);
    o
}

/// The worst case the module docs of `codec` and `ORDER_TRANSITIONS_MAX` state: one event of
/// the largest order fits, and so does the largest archived order with its full history.
#[test]
fn the_largest_order_event_fits_the_record_bound() {
    let max_items = worst_order(255);
    let created = encoded_size(&Event::Order(OrderEvent::Created(Arc::new(max_items.clone()))));
    let default_items = encoded_size(&Event::Order(OrderEvent::Created(Arc::new(worst_order(20)))));
    println!("worst order_created: {created} bytes at 255 items, {default_items} at 20 (bound {RECORD_BYTES_MAX})");
    assert!(created <= RECORD_BYTES_MAX, "{created} bytes");
    assert!(default_items <= RECORD_BYTES_TARGET, "{default_items} bytes");
    let archived = encoded_size(&Event::Order(OrderEvent::Archived(Arc::new(worst_archived_order(255)))));
    let restored = encoded_size(&Event::Order(OrderEvent::Restored(Arc::new(worst_archived_order(255)))));
    let archived_20 = encoded_size(&Event::Order(OrderEvent::Archived(Arc::new(worst_archived_order(20)))));
    println!(
        "worst order_archived: {archived} bytes at 255 items with {ORDER_TRANSITIONS_MAX} transitions, \
         {archived_20} at 20"
    );
    // The margin `ORDER_TRANSITIONS_MAX`'s docs promise: at least 2 KB under the bound.
    assert!(archived + 2_000 <= RECORD_BYTES_MAX, "{archived} bytes");
    assert_eq!(restored, archived);
    assert!(archived_20 <= RECORD_BYTES_TARGET, "{archived_20} bytes");
    // Beyond the bound (a history the engine no longer allows), the writer refuses: fail-stop.
    let mut huge = max_items;
    let entry = |i: usize| HistoryEntry {
        reason: Some(text(&format!("reason{i}"), TEXT_BYTES_MAX).into()),
        ..huge.history[0].clone()
    };
    huge.history = (0..200).map(entry).collect();
    match encode_records(0, 1, &[Event::Order(OrderEvent::Archived(Arc::new(huge)))]) {
        Err(PersistenceError::RecordTooLarge { size_bytes, limit_bytes }) => {
            assert!(size_bytes > limit_bytes);
            assert_eq!(limit_bytes, RECORD_BYTES_MAX);
        }
        other => panic!("an event above the bound encoded: {:?}", other.map(|r| r.len())),
    }
}

/// Many events are split into records of at most the target size, each a valid record.
#[test]
fn a_big_batch_is_split_by_bytes() {
    let e = Event::Order(OrderEvent::Created(Arc::new(worst_order(20))));
    let events = vec![e; 100];
    let records = encode_records(2, 9, &events).unwrap();
    assert!(records.len() > 1);
    let mut decoded = Vec::new();
    for (i, r) in records.iter().enumerate() {
        assert!(r.len() <= RECORD_BYTES_TARGET, "record {i}: {} bytes", r.len());
        let (h, ev) = surge_persistence::codec::decode_record(i as u64 + 1, r).unwrap();
        assert_eq!((h.shard, h.seq), (2, 9));
        decoded.extend(ev);
    }
    assert_eq!(decoded, events);
    // A batch under the target is one record, byte for byte the v1 encoder's.
    let small = &events[..3];
    assert_eq!(encode_records(2, 9, small).unwrap(), vec![encode_record(2, 9, small).unwrap()]);
    assert!(encode_records(2, 9, &[]).unwrap().is_empty());
}

fn blob_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("wal").join("blobs")).map(|d| d.count()).unwrap_or(0)
}

const SKU_COUNT: usize = 20;
const ORDERS: usize = 1_500;

fn sku_id(i: usize) -> String {
    text(&format!("sku{i}"), ID_BYTES_MAX)
}

/// 20-item carts of SKUs with 64-byte ids and 256-byte names, pipelined so shard batches are
/// large; half canceled and archived. `wal/blobs/` must stay empty, and a reopen sees it all.
#[test]
fn twenty_item_carts_with_long_names_never_reach_sled_blob_files() {
    const T0: i64 = 1_800_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let ecfg = EngineConfig { shard_count: 2, archive_after_ms: 60_000, ..EngineConfig::default() };
    let cfg = PersistenceConfig::new(dir.path());
    let db = DurableEngine::open_with(cfg.clone(), ecfg.clone(), clock.clone(), |s| Box::new(s)).unwrap();
    let e = db.engine().clone();
    for i in 0..SKU_COUNT {
        let spec = SkuSpec {
            sku_id: sku_id(i),
            name: text(&format!("name{i}"), TEXT_BYTES_MAX),
            price: "12345678.99".parse().unwrap(),
            initial_stock: 1_000_000,
            rules: SaleRules::default(),
        };
        e.create_sku(spec).wait().expect("sku");
    }
    let ids: Vec<String> = (0..SKU_COUNT).map(sku_id).collect();
    let cart: Vec<(&str, u32)> = ids.iter().map(|s| (s.as_str(), 1)).collect();
    // Pipelined: all requests in flight at once, so each shard batch holds many carts.
    let pending: Vec<_> = (0..ORDERS)
        .map(|i| {
            let user = text(&format!("user{}", i % 97), ID_BYTES_MAX);
            let key = text(&format!("key{i}"), IDEMPOTENCY_KEY_BYTES_MAX);
            e.create_order(CreateOrder::new(&user, &cart, &key))
        })
        .collect();
    let orders: Vec<_> = pending.into_iter().map(|p| p.wait().expect("create")).collect();
    let cancels: Vec<_> = orders
        .iter()
        .step_by(2)
        .map(|o| e.cancel_order(o.order_id, Initiator::User, TransitionOptions::default()))
        .collect();
    for c in cancels {
        assert_eq!(c.wait().expect("cancel").status, OrderStatus::Canceled);
    }
    clock.advance_ms(60_001);
    e.settle();
    assert_eq!(e.order_count(), ORDERS / 2, "the canceled half was archived");
    assert!(db.archived_order_count() >= ORDERS / 2);
    let before = state_of(&e);
    let blobs = blob_files(dir.path());
    drop(e);
    drop(db);
    assert_eq!(blobs, 0, "sled wrote {blobs} unsynced blob files while running");
    assert_eq!(blob_files(dir.path()), 0, "sled wrote blob files at shutdown");

    let db = open_db(&cfg, &ecfg, Some(clock)).expect("reopen");
    assert!(state_of(db.engine()) == before, "state after reopen differs");
    assert_eq!(db.engine().get_order(orders[0].order_id).unwrap().status, OrderStatus::Canceled);
    assert_healthy(db.engine());
    db.close().unwrap();
    assert_eq!(blob_files(dir.path()), 0, "sled wrote blob files during recovery or the snapshot");
}
