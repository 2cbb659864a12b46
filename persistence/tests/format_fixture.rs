//! Format stability: committed files written by format versions 1 to 4 must keep decoding to
//! exactly the values they were made from, and anything that does not decode must stop recovery
//! with its LSN (or the snapshot's path) rather than be skipped.
//!
//! # Fixtures
//! * `tests/fixtures/wal-v1.records`: the records of [`fixture_records`]`(1)`, each as
//!   `[u32 LE length][record bytes from codec::encode_record]`, in order (LSN = position + 1).
//! * `tests/fixtures/wal-v2.records`: the same for `fixture_records(2)`: v1's records, then a
//!   story using every variant v2 appended (an order archived, restored for a dispute with its
//!   SKUs' `holding_remembered`, and an idempotent `stock_adjusted_once`).
//! * `tests/fixtures/wal-v3.records`: `fixture_records(3)` (v2's story; no new variants) in
//!   format 3: the same framing with varint integers inside each event.
//! * `tests/fixtures/wal-v4.records`: `fixture_records(4)` (the same story) in format 4: the same
//!   framing, each event in the codec's own compact encoding (orders in the creation shape
//!   without their derivable fields, decimals as mantissa and scale, a per-record dictionary).
//! * `tests/fixtures/snapshot-v1.bin`: `codec::encode_snapshot` of [`fixture_snapshot`]`(1)` as
//!   format version 1 wrote it (no checksum).
//! * `tests/fixtures/snapshot-v2.bin`: [`fixture_snapshot`]`(2)` (the v2 story's state, SKU
//!   adjustment ids included) in envelope version 2 (CRC-32 and length, a bincode payload).
//! * `tests/fixtures/snapshot-v3.bin`: [`fixture_snapshot`]`(3)` (the same state) in envelope
//!   version 3: the same envelope around the compact payload (SKUs
//!   in varint bincode, orders in blocks of format 4's whole-order encoding).
//! * `tests/fixtures/wal-v4-wallets.records`: the wallet story of `wallet_story/mod.rs` (issue
//!   14: every `WalletEvent`, `TransferFailure` and `TransferParams` variant, in records that
//!   apply in order) in format 4, whose tags 15 to 21 were appended for it; the records follow
//!   `wal-v4.records` in a log.
//! * `tests/fixtures/wal-v4-outbox.records`: [`outbox_records`] (issue 15: one of each
//!   `OutboxEvent`: an order after a transition, a SKU's counters, a wallet account) in format 4,
//!   whose tags 22 to 24 were appended for them; replay ignores them.
//! * `tests/fixtures/snapshot-v4.bin`: [`fixture_snapshot`]`(4)` (the v2 story's state and the
//!   wallet story's wallets: an open try, a settled payment, ledger entries) in envelope
//!   version 4 (`codec::SNAPSHOT_VERSION`): version 3's payload and the wallets.
//!
//! Regenerate (only when adding a fixture for a *new* format version; the files of released
//! versions must never change) with
//! `cargo test -p surge-persistence --test format_fixture -- --ignored regenerate_fixtures`,
//! which writes the files of the current `FORMAT_VERSION` (WAL) and `SNAPSHOT_VERSION` (snapshot),
//! and the wallet story's and the outbox's WAL files while `FORMAT_VERSION` is 4.

mod common;
mod wallet_story;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{assert_healthy, open_db, open_store, state_of};
use surge_engine::smallvec;
use surge_engine::wallet::WalletEvent;
use surge_engine::{
    Decimal, EngineConfig, EngineState, Event, HistoryEntry, Initiator, LineItem, Order, OrderEvent, OrderEventKind,
    OrderId, OrderStatus, OutboxEvent, OutboxWallet, Payment, SaleRules, SkuEvent, SkuView,
};
use surge_persistence::codec::{
    decode_header, decode_record, decode_snapshot, encode_record, encode_snapshot, event_type, RecordHeader,
    SnapshotFile, FORMAT_VERSION, HEADER_BYTES, SNAPSHOT_VERSION,
};
use surge_persistence::recovery::recover;
use surge_persistence::{DurableEngine, LogStore, PersistenceConfig, PersistenceError};
use wallet_story::{wallet_book, wallet_records};

// ---- the fixture values -------------------------------------------------------------------------

/// 2025-01-01T00:00:00Z.
const T: i64 = 1_735_689_600_000;
const ORDER_A: OrderId = OrderId(101);
const ORDER_B: OrderId = OrderId(102);
const ORDER_C: OrderId = OrderId(103);
const ORDER_D: OrderId = OrderId(104);
/// An order no `Created` event introduces (the catalogue record's transitions apply to nothing).
const ORDER_Z: OrderId = OrderId(999);

fn dec(s: &str) -> Decimal {
    s.parse().expect("decimal literal")
}

fn id(s: &str) -> Arc<str> {
    Arc::from(s)
}

fn line(sku: &str, name: &str, qty: u32, unit: &str, subtotal: &str) -> LineItem {
    LineItem { sku_id: id(sku), name: id(name), qty, unit_price: dec(unit), subtotal: dec(subtotal) }
}

fn entry(from: Option<OrderStatus>, to: OrderStatus, at_ms: i64, by: Initiator, reason: Option<&str>) -> HistoryEntry {
    HistoryEntry { from, to, at_ms, by, reason: reason.map(Box::from) }
}

fn created_order(order_id: OrderId, user: &str, items: Vec<LineItem>, total: &str, at: i64, key: &str) -> Order {
    Order {
        order_id,
        user_id: id(user),
        items: items.into(),
        total: dec(total),
        status: OrderStatus::PendingPayment,
        version: 1,
        created_at_ms: at,
        updated_at_ms: at,
        payment_deadline_ms: at + 900_000,
        payment: None,
        tracking_number: None,
        shipped: false,
        refund_return_to: None,
        history: smallvec![entry(None, OrderStatus::PendingPayment, at, Initiator::User, None)],
        idempotency_key: Box::from(key),
    }
}

/// An order with every optional field set: payment, tracking number, refund return status, and
/// a history of several entries with and without reasons.
fn full_order() -> Order {
    use OrderStatus::*;
    Order {
        order_id: ORDER_D,
        user_id: id("dave"),
        items: smallvec![line("tee", "T-shirt \u{2728} 2025", 1, "59.90", "59.90")],
        total: dec("59.90"),
        status: Refunding,
        version: 4,
        created_at_ms: T + 10_000,
        updated_at_ms: T + 40_000,
        payment_deadline_ms: T + 910_000,
        payment: Some(Box::new(Payment {
            payment_id: "psp-dave-\u{e9}".into(),
            amount: dec("59.90"),
            paid_at_ms: T + 20_000,
        })),
        tracking_number: Some("1Z999AA10123456784".into()),
        shipped: true,
        refund_return_to: Some(Shipped),
        history: smallvec![
            entry(None, PendingPayment, T + 10_000, Initiator::User, None),
            entry(Some(PendingPayment), Paid, T + 20_000, Initiator::Psp, None),
            entry(Some(Paid), Shipped, T + 30_000, Initiator::Admin, Some("express")),
            entry(Some(Shipped), Refunding, T + 40_000, Initiator::User, Some("arrived torn")),
        ],
        idempotency_key: Box::from("checkout-\u{1F680}-d"),
    }
}

#[allow(clippy::too_many_arguments)]
fn moved(
    order_id: OrderId,
    event: OrderEventKind,
    from: OrderStatus,
    to: OrderStatus,
    at_ms: i64,
    by: Initiator,
    reason: Option<&str>,
    payment: Option<Payment>,
    tracking_number: Option<&str>,
) -> Event {
    Event::Order(OrderEvent::Transitioned {
        order_id,
        event,
        from,
        to,
        at_ms,
        by,
        reason: reason.map(Box::from),
        payment,
        tracking_number: tracking_number.map(Box::from),
    })
}

fn sku(e: SkuEvent) -> Event {
    Event::Sku(e)
}

fn reserved(sku_id: &str, order_id: OrderId, user: &str, qty: u32) -> Event {
    sku(SkuEvent::Reserved { sku_id: id(sku_id), order_id, user_id: id(user), qty })
}

fn confirmed(sku_id: &str, order_id: OrderId) -> Event {
    sku(SkuEvent::Confirmed { sku_id: id(sku_id), order_id })
}

fn tee_rules() -> SaleRules {
    SaleRules {
        per_user_limit: Some(2),
        sale_starts_at_ms: Some(T),
        sale_ends_at_ms: Some(T + 86_400_000),
        paused: false,
    }
}

/// The records of `wal-v{version}.records`: (shard, batch sequence, events). Together they cover
/// every `Event` variant of that version, every `OrderEventKind`, `OrderStatus` and `Initiator`,
/// and money with trailing zeros, and they tell a consistent story (`fixture_state` applies
/// them). Version 2 is version 1's records followed by [`v2_records`].
/// Records as (shard, batch sequence, events).
type FixtureRecords = Vec<(u16, u64, Vec<Event>)>;

fn fixture_records(version: u16) -> FixtureRecords {
    let mut records = v1_records();
    if version >= 2 {
        records.extend(v2_records());
    }
    records
}

/// The payment of order A.
fn pay_a() -> Payment {
    Payment { payment_id: "psp-a-1".into(), amount: dec("112.30"), paid_at_ms: T + 2_000 }
}

fn v1_records() -> Vec<(u16, u64, Vec<Event>)> {
    use OrderEventKind as K;
    use OrderStatus::*;
    let order_a = created_order(
        ORDER_A,
        "alice",
        vec![line("tee", "T-shirt \u{2728} 2025", 2, "49.90", "99.80"), line("mug", "Mug", 1, "12.5", "12.5")],
        "112.30",
        T + 1_000,
        "checkout-a",
    );
    let order_b = created_order(ORDER_B, "bob", vec![line("tee", "T-shirt", 1, "59.90", "59.90")], "59.90", T, "b");
    let order_c = created_order(ORDER_C, "carol", vec![line("mug", "Mug", 1, "12.5", "12.5")], "12.5", T, "c");
    let pay_a = pay_a();
    let pay_c = Payment { payment_id: "psp-c-1".into(), amount: dec("12.5"), paid_at_ms: T + 3_000 };
    let (user, admin, psp, system) = (Initiator::User, Initiator::Admin, Initiator::Psp, Initiator::System);
    vec![
        (
            0,
            1,
            vec![sku(SkuEvent::Created {
                sku_id: id("tee"),
                name: id("T-shirt"),
                price: dec("59.90"),
                initial_stock: 10,
                rules: tee_rules(),
            })],
        ),
        (
            1,
            1,
            vec![sku(SkuEvent::Created {
                sku_id: id("mug"),
                name: id("Mug"),
                price: dec("12.5"),
                initial_stock: 3,
                rules: SaleRules::default(),
            })],
        ),
        (0, 2, vec![reserved("tee", ORDER_B, "bob", 1)]),
        (2, 1, vec![Event::Order(OrderEvent::Created(Arc::new(order_b)))]),
        (
            2,
            2,
            vec![moved(
                ORDER_B,
                K::Cancel,
                PendingPayment,
                Canceled,
                T + 500,
                user,
                Some("changed my mind"),
                None,
                None,
            )],
        ),
        (0, 3, vec![sku(SkuEvent::Released { sku_id: id("tee"), order_id: ORDER_B })]),
        (
            0,
            4,
            vec![
                sku(SkuEvent::Updated {
                    sku_id: id("tee"),
                    name: id("T-shirt \u{2728} 2025"),
                    price: dec("49.90"),
                    rules: SaleRules { paused: true, per_user_limit: None, ..tee_rules() },
                }),
                sku(SkuEvent::Adjusted { sku_id: id("tee"), delta: 5, reason: "restock".into() }),
                sku(SkuEvent::Adjusted { sku_id: id("tee"), delta: -2, reason: "damaged in transit".into() }),
            ],
        ),
        (0, 5, vec![reserved("tee", ORDER_A, "alice", 2)]),
        (1, 2, vec![reserved("mug", ORDER_A, "alice", 1), reserved("mug", ORDER_C, "carol", 1)]),
        (
            2,
            3,
            vec![
                Event::Order(OrderEvent::Created(Arc::new(order_a))),
                Event::Order(OrderEvent::Created(Arc::new(order_c))),
                moved(ORDER_A, K::Pay, PendingPayment, Paid, T + 2_000, psp, None, Some(pay_a), None),
                moved(ORDER_C, K::Pay, PendingPayment, Paid, T + 3_000, psp, None, Some(pay_c), None),
            ],
        ),
        (0, 6, vec![confirmed("tee", ORDER_A)]),
        (1, 3, vec![confirmed("mug", ORDER_A), confirmed("mug", ORDER_C)]),
        (
            2,
            4,
            vec![
                moved(ORDER_C, K::RequestRefund, Paid, Refunding, T + 4_000, user, Some("not needed"), None, None),
                moved(ORDER_C, K::ConfirmRefund, Refunding, Refunded, T + 5_000, admin, None, None, None),
            ],
        ),
        (1, 4, vec![sku(SkuEvent::Restocked { sku_id: id("mug"), order_id: ORDER_C })]),
        (0, 7, vec![reserved("tee", ORDER_D, "dave", 1), confirmed("tee", ORDER_D)]),
        (2, 5, vec![Event::Order(OrderEvent::Created(Arc::new(full_order())))]),
        // Catalogue: every event kind, status and initiator, on an order that does not exist.
        (
            2,
            6,
            vec![
                moved(ORDER_Z, K::Pay, PendingPayment, Paid, T, psp, None, None, None),
                moved(ORDER_Z, K::Cancel, PendingPayment, Canceled, T, user, None, None, None),
                moved(
                    ORDER_Z,
                    K::PaymentDeadline,
                    PendingPayment,
                    Canceled,
                    T,
                    system,
                    Some("payment_deadline"),
                    None,
                    None,
                ),
                moved(ORDER_Z, K::StartPacking, Paid, Packing, T, admin, None, None, None),
                moved(ORDER_Z, K::Ship, Packing, Shipped, T, admin, None, None, Some("TRK-1")),
                moved(ORDER_Z, K::Deliver, Shipped, Delivered, T, admin, None, None, None),
                moved(ORDER_Z, K::Complete, Delivered, Completed, T, user, None, None, None),
                moved(ORDER_Z, K::AutoComplete, Delivered, Completed, T, system, Some("auto_complete"), None, None),
                moved(ORDER_Z, K::RequestRefund, Delivered, Refunding, T, user, None, None, None),
                moved(ORDER_Z, K::ConfirmRefund, Refunding, Refunded, T, admin, None, None, None),
                moved(ORDER_Z, K::RejectRefund, Refunding, Delivered, T, admin, None, None, None),
                moved(ORDER_Z, K::OpenDispute, Completed, Disputed, T, user, None, None, None),
                moved(ORDER_Z, K::ResolveDispute, Disputed, Refunding, T, admin, Some("arbiter"), None, None),
            ],
        ),
        // Archiving: the canceled order B leaves memory; an (absent) sold holding is forgotten.
        (
            2,
            7,
            vec![
                Event::Order(OrderEvent::Archived(Arc::new(archived_b()))),
                sku(SkuEvent::Forgotten { sku_id: id("mug"), order_id: ORDER_C }),
            ],
        ),
    ]
}

/// What format version 2 appended: order A ships, is delivered and completes; it is archived
/// (its SKUs forget the sold holdings), then restored by a dispute (`order_restored`, then the
/// SKUs' `holding_remembered`); and `tee` gets an idempotent adjustment (`stock_adjusted_once`).
fn v2_records() -> Vec<(u16, u64, Vec<Event>)> {
    use OrderEventKind as K;
    use OrderStatus::*;
    let (user, admin) = (Initiator::User, Initiator::Admin);
    let a = Arc::new(completed_a());
    let remembered = |sku_id: &str, qty| {
        sku(SkuEvent::Remembered { sku_id: id(sku_id), order_id: ORDER_A, user_id: id("alice"), qty })
    };
    vec![
        (
            2,
            8,
            vec![
                moved(ORDER_A, K::Ship, Paid, Shipped, T + 6_000, admin, None, None, Some("TRK-A")),
                moved(ORDER_A, K::Deliver, Shipped, Delivered, T + 7_000, admin, None, None, None),
                moved(ORDER_A, K::Complete, Delivered, Completed, T + 8_000, user, Some("all good"), None, None),
            ],
        ),
        (2, 9, vec![Event::Order(OrderEvent::Archived(a.clone()))]),
        (0, 8, vec![sku(SkuEvent::Forgotten { sku_id: id("tee"), order_id: ORDER_A })]),
        (1, 5, vec![sku(SkuEvent::Forgotten { sku_id: id("mug"), order_id: ORDER_A })]),
        (
            2,
            10,
            vec![
                Event::Order(OrderEvent::Restored(a)),
                moved(
                    ORDER_A,
                    K::OpenDispute,
                    Completed,
                    Disputed,
                    T + 9_000,
                    user,
                    Some("one mug cracked"),
                    None,
                    None,
                ),
            ],
        ),
        (
            0,
            9,
            vec![
                remembered("tee", 2),
                sku(SkuEvent::AdjustedOnce {
                    sku_id: id("tee"),
                    adjustment_id: "count-2025-01-\u{e9}".into(),
                    delta: 4,
                    reason: "inventory count".into(),
                }),
            ],
        ),
        (1, 6, vec![remembered("mug", 1)]),
    ]
}

/// Order A as it stands when archived (completed), built field by field (not by `apply`), so
/// the fixture checks the engine's `apply` too.
fn completed_a() -> Order {
    use OrderStatus::*;
    let items = vec![line("tee", "T-shirt \u{2728} 2025", 2, "49.90", "99.80"), line("mug", "Mug", 1, "12.5", "12.5")];
    let mut o = created_order(ORDER_A, "alice", items, "112.30", T + 1_000, "checkout-a");
    o.status = Completed;
    o.version = 5;
    o.updated_at_ms = T + 8_000;
    o.payment = Some(Box::new(pay_a()));
    o.tracking_number = Some("TRK-A".into());
    o.shipped = true;
    o.history.extend([
        entry(Some(PendingPayment), Paid, T + 2_000, Initiator::Psp, None),
        entry(Some(Paid), Shipped, T + 6_000, Initiator::Admin, None),
        entry(Some(Shipped), Delivered, T + 7_000, Initiator::Admin, None),
        entry(Some(Delivered), Completed, T + 8_000, Initiator::User, Some("all good")),
    ]);
    o
}

/// Order B as it stands when archived (canceled).
fn archived_b() -> Order {
    let mut o = created_order(ORDER_B, "bob", vec![line("tee", "T-shirt", 1, "59.90", "59.90")], "59.90", T, "b");
    o.status = OrderStatus::Canceled;
    o.version = 2;
    o.updated_at_ms = T + 500;
    o.history.push(entry(
        Some(OrderStatus::PendingPayment),
        OrderStatus::Canceled,
        T + 500,
        Initiator::User,
        Some("changed my mind"),
    ));
    o
}

/// Every fixture event of `version` applied in order.
fn fixture_state(version: u16) -> EngineState {
    let mut s = EngineState::default();
    for (_, _, events) in fixture_records(version) {
        for e in &events {
            s.apply(e);
        }
    }
    s
}

/// The state of `snapshot-v{version}.bin`: the story's, and from version 4 on the wallet story's
/// wallets too.
fn fixture_snapshot(version: u16) -> SnapshotFile {
    let (lsn, cuts) = if version == 1 { (17, vec![7, 4, 6]) } else { (24, vec![9, 6, 10]) };
    let mut state = fixture_state(version);
    if version >= 4 {
        state.wallets = wallet_book(&wallet_records());
    }
    SnapshotFile { lsn, base: 3, cuts, state }
}

// ---- the fixture files --------------------------------------------------------------------------

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

fn wal_fixture(version: u16) -> PathBuf {
    fixtures_dir().join(format!("wal-v{version}.records"))
}

fn snapshot_fixture(version: u16) -> PathBuf {
    fixtures_dir().join(format!("snapshot-v{version}.bin"))
}

fn encode_container(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&u32::try_from(r.len()).expect("record fits u32").to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

fn decode_container(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "truncated length prefix");
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        assert!(rest.len() >= 4 + n, "truncated record");
        out.push(rest[4..4 + n].to_vec());
        rest = &rest[4 + n..];
    }
    out
}

fn wallet_wal_fixture() -> PathBuf {
    fixtures_dir().join("wal-v4-wallets.records")
}

fn encoded_wallet_records() -> Vec<Vec<u8>> {
    wallet_records().iter().map(|(shard, seq, events)| encode_record(*shard, *seq, events).unwrap()).collect()
}

fn encoded_records(version: u16) -> Vec<Vec<u8>> {
    fixture_records(version).iter().map(|(shard, seq, events)| encode_record(*shard, *seq, events).unwrap()).collect()
}

fn committed_wal_v1() -> Vec<Vec<u8>> {
    committed_wal(1)
}

fn committed_wal(version: u16) -> Vec<Vec<u8>> {
    let path = wal_fixture(version);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (see the module docs)", path.display()));
    decode_container(&bytes)
}

/// Write `bytes` to `path` unless it already holds the same fixture (`same`). A committed fixture
/// that differs is never overwritten: the format changed, which needs a new `FORMAT_VERSION`
/// (and new files), or, if replacing it is really intended, deleting the file first.
fn write_fixture(path: &Path, bytes: &[u8], same: impl Fn(&[u8]) -> bool) {
    if let Ok(old) = std::fs::read(path) {
        assert!(
            same(&old),
            "{} exists and differs from what this code writes: the format changed. Bump FORMAT_VERSION, or \
             delete the file to replace it on purpose",
            path.display()
        );
        return;
    }
    std::fs::write(path, bytes).unwrap();
}

/// Writes the fixtures of the current `FORMAT_VERSION` if they are missing (a no-op when the
/// committed ones match; refuses to replace ones that differ).
#[test]
#[ignore = "writes tests/fixtures; run on purpose only (see the module docs)"]
fn regenerate_fixtures() {
    std::fs::create_dir_all(fixtures_dir()).unwrap();
    let wal = encode_container(&encoded_records(FORMAT_VERSION));
    write_fixture(&wal_fixture(FORMAT_VERSION), &wal, |old| old == wal.as_slice());
    let want = fixture_snapshot(SNAPSHOT_VERSION);
    let snap = encode_snapshot(&want).unwrap();
    write_fixture(&snapshot_fixture(SNAPSHOT_VERSION), &snap, |old| {
        decode_snapshot("old", old)
            .is_ok_and(|s| (s.lsn, s.base, &s.cuts) == (want.lsn, want.base, &want.cuts) && s.state == want.state)
    });
    if FORMAT_VERSION == 4 {
        let wallets = encode_container(&encoded_wallet_records());
        write_fixture(&wallet_wal_fixture(), &wallets, |old| old == wallets.as_slice());
        let outbox = encode_container(&encoded_outbox_records());
        write_fixture(&outbox_wal_fixture(), &outbox, |old| old == outbox.as_slice());
    }
}

// ---- decoding the committed files ---------------------------------------------------------------

#[test]
fn wal_v1_fixture_decodes_to_the_known_events() {
    wal_fixture_decodes_to_the_known_events(1);
}

/// The v2 log holds the variants v2 appended (`stock_adjusted_once`, `holding_remembered`,
/// `order_restored`) and decodes to exactly the events it was made from.
#[test]
fn wal_v2_fixture_decodes_to_the_known_events() {
    wal_fixture_decodes_to_the_known_events(2);
    // The story is consistent: the archived (and restored) order A is what the log's earlier
    // events made of it.
    let mut state = EngineState::default();
    for (_, _, events) in fixture_records(2) {
        for e in &events {
            if let Event::Order(OrderEvent::Archived(o) | OrderEvent::Restored(o)) = e {
                if let Some(live) = state.orders.get(&o.order_id) {
                    assert_eq!(live, o, "archived order {} differs from its replayed state", o.order_id);
                }
            }
            state.apply(e);
        }
    }
}

fn wal_fixture_decodes_to_the_known_events(version: u16) {
    let committed = committed_wal(version);
    let expected = fixture_records(version);
    assert_eq!(committed.len(), expected.len(), "record count");
    for (i, (bytes, (shard, seq, events))) in committed.iter().zip(&expected).enumerate() {
        let lsn = i as u64 + 1;
        let want = RecordHeader { version, shard: *shard, seq: *seq };
        assert_eq!(decode_header(lsn, bytes).unwrap(), want, "header of record {lsn}");
        let (header, decoded) = decode_record(lsn, bytes).unwrap_or_else(|e| panic!("record {lsn}: {e}"));
        assert_eq!(header, want);
        assert_eq!(&decoded, events, "events of record {lsn}");
    }
}

#[test]
fn wal_v3_fixture_decodes_to_the_known_events() {
    wal_fixture_decodes_to_the_known_events(3);
}

#[test]
fn wal_v4_fixture_decodes_to_the_known_events() {
    wal_fixture_decodes_to_the_known_events(4);
}

/// Today's encoder writes byte for byte the committed v4 records (records have no maps, so
/// their encoding is deterministic), and none is larger than the same record in v3.
#[test]
fn encoder_still_writes_the_v4_bytes() {
    let committed = committed_wal(4);
    let now = encoded_records(4);
    assert_eq!(committed.len(), now.len());
    for (i, (old, new)) in committed.iter().zip(&now).enumerate() {
        assert_eq!(old, new, "record {} encodes differently than in wal-v4.records", i + 1);
    }
    let v3 = committed_wal(3);
    let (mut bytes_v3, mut bytes_v4) = (0, 0);
    for (i, (v3, v4)) in v3.iter().zip(&now).enumerate() {
        assert!(v4.len() <= v3.len(), "record {}: v4 {} bytes, v3 {}", i + 1, v4.len(), v3.len());
        (bytes_v3, bytes_v4) = (bytes_v3 + v3.len(), bytes_v4 + v4.len());
    }
    // The story is mostly whole orders (archived, restored, not in the creation shape): about a
    // third smaller.
    assert!(bytes_v4 * 10 < bytes_v3 * 7, "v4 {bytes_v4} bytes, v3 {bytes_v3}");
}

/// The wallet story's records decode to exactly their events, and today's encoder still writes
/// their committed bytes.
#[test]
fn wal_v4_wallet_fixture_decodes_to_the_known_events() {
    appended_fixture_decodes(&wallet_wal_fixture(), &wallet_records());
}

/// A fixture of records appended to format 4 (`path`) decodes to exactly `expected`, and today's
/// encoder still writes its committed bytes.
fn appended_fixture_decodes(path: &Path, expected: &FixtureRecords) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (see the module docs)", path.display()));
    let committed = decode_container(&bytes);
    assert_eq!(committed.len(), expected.len(), "record count");
    for (i, (bytes, (shard, seq, events))) in committed.iter().zip(expected).enumerate() {
        let (header, decoded) = decode_record(i as u64 + 1, bytes).unwrap_or_else(|e| panic!("record {}: {e}", i + 1));
        assert_eq!(header, RecordHeader { version: 4, shard: *shard, seq: *seq });
        assert_eq!(&decoded, events, "events of record {}", i + 1);
    }
    let encoded: Vec<Vec<u8>> =
        expected.iter().map(|(shard, seq, events)| encode_record(*shard, *seq, events).unwrap()).collect();
    assert_eq!(committed, encoded, "the encoder writes other bytes than {}", path.display());
}

/// `wal-v4.records` followed by `wal-v4-wallets.records` replays to the story's state and the
/// wallet story's wallets (recovery's own repairs, if any, applied to both).
#[test]
fn v4_log_with_wallets_replays() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path());
    let wallets = decode_container(&std::fs::read(wallet_wal_fixture()).unwrap());
    let all: Vec<Vec<u8>> = committed_wal(4).into_iter().chain(wallets).collect();
    let records: Vec<(u64, Vec<u8>)> = all.into_iter().enumerate().map(|(i, r)| (i as u64 + 1, r)).collect();
    store.append(&records).unwrap();
    store.flush(true).unwrap();
    let r = recover(&store).unwrap();
    assert_eq!(r.stats.records_replayed, records.len() as u64);
    let mut want = fixture_snapshot(4).state;
    for f in &r.fixes {
        want.apply(f);
    }
    assert!(r.state.wallets == want.wallets, "replayed wallets differ from the wallet story's");
    assert!(r.state == want, "replayed state differs from the events' state");
}

/// Event types of format version 1.
const V1_TYPES: [&str; 11] = [
    "sku_created",
    "sku_updated",
    "stock_adjusted",
    "reserved",
    "confirmed",
    "released",
    "restocked",
    "order_created",
    "order_transitioned",
    "order_archived",
    "holding_forgotten",
];

/// Event types format version 2 appended.
const V2_TYPES: [&str; 3] = ["stock_adjusted_once", "holding_remembered", "order_restored"];

/// Event types appended to format version 4 (issue 14: wallets).
const V4_WALLET_TYPES: [&str; 7] = [
    "wallet_credited",
    "wallet_debited",
    "wallet_frozen",
    "wallet_settled",
    "wallet_unfrozen",
    "wallet_refunded",
    "wallet_rejected",
];

/// Event types appended to format version 4 (issue 15: the outbox).
const V4_OUTBOX_TYPES: [&str; 3] = ["outbox_order", "outbox_stock", "outbox_wallet"];

/// One of each outbox event (`wal-v4-outbox.records`), as the shards journal them beside a
/// change: order A after its payment, the tee's counters, alice's CNY account.
fn outbox_records() -> FixtureRecords {
    let sku = SkuView {
        sku_id: id("tee"),
        name: id("T-shirt, size M"),
        price: dec("19.90"),
        available: 7,
        reserved: 2,
        sold: 1,
        stocked_total: 10,
        rules: tee_rules(),
    };
    let account = surge_engine::wallet::AccountView {
        asset: wallet_story::asset("CNY"),
        balance: dec("40.10"),
        frozen: dec("0.00"),
        version: 3,
    };
    let wallet = OutboxWallet { user_id: id("alice"), account, at_ms: T + 5 };
    vec![
        (0, 90, vec![Event::Outbox(OutboxEvent::Order(Arc::new(full_order())))]),
        (
            1,
            91,
            vec![
                Event::Outbox(OutboxEvent::Stock(Box::new(sku), T + 4)),
                Event::Outbox(OutboxEvent::Wallet(Box::new(wallet))),
            ],
        ),
    ]
}

fn outbox_wal_fixture() -> PathBuf {
    fixtures_dir().join("wal-v4-outbox.records")
}

fn encoded_outbox_records() -> Vec<Vec<u8>> {
    outbox_records().iter().map(|(shard, seq, events)| encode_record(*shard, *seq, events).unwrap()).collect()
}

/// The outbox's records decode to exactly their events, and today's encoder still writes their
/// committed bytes.
#[test]
fn wal_v4_outbox_fixture_decodes_to_the_known_events() {
    appended_fixture_decodes(&outbox_wal_fixture(), &outbox_records());
}

/// The format version that introduced `e`'s variant. No wildcard: a new variant does not compile
/// until it is placed here (and then `fixture_covers_every_variant` wants it in a fixture).
fn introduced_in(e: &Event) -> u16 {
    match e {
        Event::Sku(
            SkuEvent::Created { .. }
            | SkuEvent::Updated { .. }
            | SkuEvent::Adjusted { .. }
            | SkuEvent::Reserved { .. }
            | SkuEvent::Confirmed { .. }
            | SkuEvent::Released { .. }
            | SkuEvent::Restocked { .. }
            | SkuEvent::Forgotten { .. },
        )
        | Event::Order(OrderEvent::Created(_) | OrderEvent::Transitioned { .. } | OrderEvent::Archived(_)) => 1,
        Event::Sku(SkuEvent::AdjustedOnce { .. } | SkuEvent::Remembered { .. })
        | Event::Order(OrderEvent::Restored(_)) => 2,
        // Appended to format 4 (tags 15 to 21), covered by `wal-v4-wallets.records`.
        Event::Wallet(
            WalletEvent::Credited { .. }
            | WalletEvent::Debited { .. }
            | WalletEvent::Frozen { .. }
            | WalletEvent::Settled { .. }
            | WalletEvent::Unfrozen { .. }
            | WalletEvent::Refunded { .. }
            | WalletEvent::Rejected { .. },
        ) => 4,
        // Appended to format 4 (tags 22 to 24), covered by `wal-v4-outbox.records`.
        Event::Outbox(OutboxEvent::Order(_) | OutboxEvent::Stock(..) | OutboxEvent::Wallet(_)) => 4,
    }
}

/// Each version's fixture covers every variant that version knows: its event types, and every
/// event kind, status and initiator (decoded by their bincode variant index, so a reordering of
/// any of these enums breaks `wal_v{1,2}_fixture_decodes_to_the_known_events`).
#[test]
fn fixture_covers_every_variant() {
    for version in 1..=FORMAT_VERSION {
        let mut records = fixture_records(version);
        if version >= 4 {
            records.extend(wallet_records());
            records.extend(outbox_records());
        }
        let events: Vec<&Event> = records.iter().flat_map(|(_, _, e)| e).collect();
        let types: BTreeSet<&str> = events.iter().map(|e| event_type(e)).collect();
        let mut want: BTreeSet<&str> = V1_TYPES.into_iter().collect();
        if version >= 2 {
            want.extend(V2_TYPES);
        }
        if version >= 4 {
            want.extend(V4_WALLET_TYPES);
            want.extend(V4_OUTBOX_TYPES);
        }
        assert_eq!(types, want, "event types of v{version}");
        let (mut kinds, mut statuses, mut bys) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for e in &events {
            match e {
                Event::Order(OrderEvent::Transitioned { event, from, to, by, .. }) => {
                    kinds.insert(event.as_str());
                    statuses.insert(from.as_str());
                    statuses.insert(to.as_str());
                    bys.insert(format!("{by:?}"));
                }
                Event::Order(OrderEvent::Created(o) | OrderEvent::Archived(o) | OrderEvent::Restored(o)) => {
                    for h in &o.history {
                        statuses.insert(h.to.as_str());
                        bys.insert(format!("{:?}", h.by));
                    }
                }
                Event::Sku(_) | Event::Wallet(_) | Event::Outbox(_) => {}
            }
        }
        assert_eq!(kinds.len(), OrderEventKind::ALL.len(), "v{version} event kinds: {kinds:?}");
        assert_eq!(statuses.len(), OrderStatus::ALL.len(), "v{version} statuses: {statuses:?}");
        assert_eq!(bys.len(), 4, "v{version} initiators: {bys:?}");
    }
    let all: Vec<(u16, FixtureRecords)> = (1..=FORMAT_VERSION).map(|v| (v, fixture_records(v))).collect();
    for (version, records) in &all {
        for e in records.iter().flat_map(|(_, _, e)| e) {
            assert!(introduced_in(e) <= *version, "v{version} fixture holds a later variant: {}", event_type(e));
        }
    }
}

#[test]
fn snapshot_v1_fixture_decodes_to_the_known_state() {
    snapshot_fixture_decodes_to_the_known_state(1);
}

/// Envelope version 2 (checksum and length) decodes to the v2 story's state (with adjustment
/// ids and a restored order).
#[test]
fn snapshot_v2_fixture_decodes_to_the_known_state() {
    snapshot_fixture_decodes_to_the_known_state(2);
    // Today's encoder writes a file that decodes to the same values (the bincode payload of a
    // state holding maps need not be byte-identical, so the values are compared).
    let now = decode_snapshot("now", &encode_snapshot(&fixture_snapshot(2)).unwrap()).unwrap();
    assert!(now.state == fixture_state(2));
}

/// Envelope version 3 (the compact payload) decodes to the same state, and so does what
/// today's encoder writes (a SKU's holdings are a hash map: their bytes may come in another
/// order, so values are compared).
#[test]
fn snapshot_v3_fixture_decodes_to_the_known_state() {
    snapshot_fixture_decodes_to_the_known_state(3);
    let now = decode_snapshot("now", &encode_snapshot(&fixture_snapshot(3)).unwrap()).unwrap();
    assert!(now.state == fixture_state(3));
    assert_eq!((now.lsn, now.base, now.cuts), (24, 3, vec![9, 6, 10]));
}

/// Envelope version 4 (wallets) decodes to the same state and the wallet story's wallets (an
/// open try, a settled payment, ledger entries), and so does what today's encoder writes.
#[test]
fn snapshot_v4_fixture_decodes_to_the_known_state() {
    snapshot_fixture_decodes_to_the_known_state(4);
    let snap = decode_snapshot("v4", &std::fs::read(snapshot_fixture(4)).unwrap()).unwrap();
    let (alice, bob) = (&snap.state.wallets.users["alice"], &snap.state.wallets.users["bob"]);
    assert_eq!(alice.payments.get(&ORDER_A).map(|t| &**t), Some("pay-1"), "a settled payment");
    assert!(bob.tries.contains_key("b-pay"), "an open try");
    assert_eq!(alice.entries.len(), 14, "alice's ledger");
    assert_eq!(alice.accounts[&wallet_story::asset("CNY")].balance_minor, 9_020);
    assert_eq!(bob.accounts[&wallet_story::asset("CNY")].frozen_minor, 2_500);
    snap.state.wallets.check().unwrap();
    let now = decode_snapshot("now", &encode_snapshot(&fixture_snapshot(4)).unwrap()).unwrap();
    assert!(now.state == fixture_snapshot(4).state);
}

fn snapshot_fixture_decodes_to_the_known_state(version: u16) {
    let path = snapshot_fixture(version);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (see the module docs)", path.display()));
    assert_eq!(&bytes[..8], b"SURGESNP");
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), version);
    let snap = decode_snapshot(&format!("snapshot-v{version}.bin"), &bytes).unwrap();
    let want = fixture_snapshot(version);
    assert_eq!((snap.lsn, snap.base, &snap.cuts), (want.lsn, want.base, &want.cuts));
    assert_eq!(snap.state, want.state);
    assert_eq!(snap.state.digest(), want.state.digest());
    // The state is the story the events tell.
    // v2: tee's `stock_adjusted_once` adds 4; order A went through archiving and back, its units
    // sold all along.
    let tee = snap.state.skus["tee"].view();
    let tee_want = if version == 1 { (10, 0, 3, 13) } else { (14, 0, 3, 17) };
    assert_eq!((tee.available, tee.reserved, tee.sold, tee.stocked_total), tee_want);
    assert_eq!(tee.price, dec("49.90"));
    assert_eq!(tee.price.to_string(), "49.90", "trailing zeros survive");
    let mug = snap.state.skus["mug"].view();
    assert_eq!((mug.available, mug.reserved, mug.sold, mug.stocked_total), (2, 0, 1, 3));
    let statuses: Vec<OrderStatus> = snap.state.orders.values().map(|o| o.status).collect();
    use OrderStatus::*;
    let a_status = if version == 1 { Paid } else { Disputed };
    assert_eq!(statuses, vec![a_status, Refunded, Refunding], "order B (canceled) was archived");
    let mut holdings: Vec<_> = snap.state.skus["tee"].holdings().map(|(o, _, q, sold)| (o, q, sold)).collect();
    holdings.sort();
    assert_eq!(holdings, vec![(ORDER_A, 2, true), (ORDER_D, 1, true)], "tee's holdings");
    assert_eq!(*snap.state.orders[&ORDER_D], full_order());
    assert_eq!(snap.state.orders[&ORDER_A].total.to_string(), "112.30");
    assert_eq!(snap.state.wallets.users.is_empty(), version < 4, "wallets from version 4 on");
}

#[test]
fn format_version_is_checked() {
    assert_eq!(FORMAT_VERSION, 4, "a new version needs new fixtures, and the older ones kept");
    assert_eq!(HEADER_BYTES, 12);
    let committed = committed_wal_v1();
    for r in &committed {
        assert_eq!(u16::from_le_bytes([r[0], r[1]]), 1);
    }
    let mut v5 = committed[0].clone();
    v5[..2].copy_from_slice(&5u16.to_le_bytes());
    match decode_record(7, &v5) {
        Err(PersistenceError::Corrupt { lsn: 7, reason }) => assert!(reason.contains("version 5"), "{reason}"),
        other => panic!("a version-5 record decoded: {:?}", other.map(|(h, _)| h)),
    }
    // A v3 or v4 record whose event count cannot fit its bytes is damage, not an allocation size.
    for version in [3, 4] {
        let mut huge = committed_wal(version)[0].clone();
        huge[HEADER_BYTES..HEADER_BYTES + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode_record(7, &huge), Err(PersistenceError::Corrupt { lsn: 7, .. })), "v{version}");
    }
    let mut v0 = committed[0].clone();
    v0[..2].copy_from_slice(&0u16.to_le_bytes());
    assert!(decode_record(7, &v0).is_err(), "version 0 is no version");
    assert_eq!(SNAPSHOT_VERSION, 4, "a new snapshot version needs a new fixture, and the old ones kept");
    let mut snap = std::fs::read(snapshot_fixture(4)).unwrap();
    snap[8..10].copy_from_slice(&5u16.to_le_bytes());
    match decode_snapshot("s.bin", &snap) {
        Err(PersistenceError::Snapshot { path, reason }) => {
            assert_eq!(path, "s.bin");
            assert!(reason.contains("version 5"), "{reason}");
        }
        other => panic!("a version-5 snapshot decoded: {:?}", other.map(|s| s.lsn)),
    }
    // A v3 file relabeled as v4 passes its checksum but has no wallet section.
    let mut relabeled = std::fs::read(snapshot_fixture(3)).unwrap();
    relabeled[8..10].copy_from_slice(&4u16.to_le_bytes());
    assert!(matches!(decode_snapshot("s.bin", &relabeled), Err(PersistenceError::Snapshot { .. })));
    // A v2 file relabeled as v3 passes its checksum but not the v3 payload's grammar.
    let mut relabeled = std::fs::read(snapshot_fixture(2)).unwrap();
    relabeled[8..10].copy_from_slice(&3u16.to_le_bytes());
    assert!(matches!(decode_snapshot("s.bin", &relabeled), Err(PersistenceError::Snapshot { .. })));
    // A v1 file relabeled as v2 fails its (missing) checksum instead of decoding as garbage.
    let mut relabeled = std::fs::read(snapshot_fixture(1)).unwrap();
    relabeled[8..10].copy_from_slice(&2u16.to_le_bytes());
    assert!(matches!(decode_snapshot("s.bin", &relabeled), Err(PersistenceError::Snapshot { .. })));
    let mut bad_magic = std::fs::read(snapshot_fixture(1)).unwrap();
    bad_magic[0] = b'X';
    assert!(matches!(decode_snapshot("s.bin", &bad_magic), Err(PersistenceError::Snapshot { .. })));
}

/// A data directory holding the v1 log opens: every record replays, nothing needs repair, and
/// the engine serves the recovered state.
#[test]
fn v1_log_opens_and_replays() {
    log_opens_and_replays(1);
}

/// The same for the v2 log: its restored order and remembered holdings need no repair.
#[test]
fn v2_log_opens_and_replays() {
    log_opens_and_replays(2);
}

/// The same for the v3 log (varint bincode).
#[test]
fn v3_log_opens_and_replays() {
    log_opens_and_replays(3);
}

/// The same for the v4 log (the codec's compact encoding).
#[test]
fn v4_log_opens_and_replays() {
    log_opens_and_replays(4);
}

fn log_opens_and_replays(version: u16) {
    let dir = tempfile::tempdir().unwrap();
    let want = fixture_state(version);
    {
        let mut store = open_store(dir.path());
        let records: Vec<(u64, Vec<u8>)> =
            committed_wal(version).into_iter().enumerate().map(|(i, r)| (i as u64 + 1, r)).collect();
        store.append(&records).unwrap();
        store.flush(true).unwrap();
        // Replay alone rebuilds exactly the state the events describe, with nothing to repair.
        match recover(&store) {
            Ok(r) => {
                assert!(r.state == want, "v{version}: replayed state differs from the events' state");
                assert!(r.fixes.is_empty(), "v{version} repairs: {:?}", r.fixes);
                assert_eq!(r.stats.records_replayed, fixture_records(version).len() as u64);
            }
            Err(e) => panic!("the v{version} log does not replay: {e}"),
        }
    }
    let cfg = PersistenceConfig::new(dir.path());
    let db = open_db(&cfg, &EngineConfig { shard_count: 2, ..Default::default() }, None).unwrap();
    let r = db.recovery();
    assert_eq!(r.records_replayed, fixture_records(version).len() as u64);
    assert_eq!(r.snapshot_lsn, None);
    assert_eq!(r.fixes, 0);
    // The engine serves it (it may move on from there, e.g. by its timers, so compare the parts
    // that no timer touches).
    let e = db.engine();
    assert_eq!(*e.get_order(ORDER_A).unwrap(), *want.orders[&ORDER_A]);
    assert_eq!(*e.get_order(ORDER_D).unwrap(), full_order());
    for sku in ["tee", "mug"] {
        assert_eq!(e.get_sku(sku).unwrap(), want.skus[sku].view(), "sku {sku}");
    }
    assert_healthy(e);
    db.close().unwrap();
}

/// A data directory holding only the v1 snapshot opens to its state.
#[test]
fn v1_snapshot_opens() {
    snapshot_opens(1);
}

/// A data directory holding only the v2 snapshot opens to its state.
#[test]
fn v2_snapshot_opens() {
    snapshot_opens(2);
}

fn snapshot_opens(version: u16) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("snapshots")).unwrap();
    let lsn = fixture_snapshot(version).lsn;
    let file = dir.path().join("snapshots").join(format!("snapshot-{lsn:020}.bin"));
    std::fs::copy(snapshot_fixture(version), file).unwrap();
    let cfg = PersistenceConfig::new(dir.path());
    // The fixture's orders are from 2025: keep the terminal ones from being archived at once.
    let engine_cfg =
        EngineConfig { shard_count: 3, archive_after_ms: surge_engine::config::DURATION_MS_MAX, ..Default::default() };
    let db = open_db(&cfg, &engine_cfg, None).unwrap();
    assert_eq!(db.recovery().snapshot_lsn, Some(lsn));
    assert_eq!(db.recovery().records_replayed, 0);
    assert!(state_of(db.engine()) == fixture_state(version));
    assert_healthy(db.engine());
    db.close().unwrap();
}

// ---- corruption stops recovery ------------------------------------------------------------------

/// Valid records at LSN 1..=3 and 5, `bad` at LSN 4: recovery must fail naming LSN 4, both
/// through `recovery::recover` and `DurableEngine::open`.
fn assert_stops_at_lsn_4(what: &str, bad: Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let good = committed_wal_v1();
    {
        let mut store = open_store(dir.path());
        let records =
            vec![(1, good[0].clone()), (2, good[1].clone()), (3, good[2].clone()), (4, bad), (5, good[3].clone())];
        store.append(&records).unwrap();
        store.flush(true).unwrap();
        match recover(&store) {
            Err(PersistenceError::Corrupt { lsn, .. }) => assert_eq!(lsn, 4, "{what}"),
            Err(e) => panic!("{what}: wrong error {e}"),
            Ok(r) => panic!("{what}: recovery accepted it ({:?})", r.stats),
        }
    }
    let cfg = PersistenceConfig::new(dir.path());
    match open_db(&cfg, &EngineConfig { shard_count: 2, ..Default::default() }, None) {
        Err(PersistenceError::Corrupt { lsn, reason }) => {
            assert_eq!(lsn, 4, "{what}: {reason}");
            let msg = PersistenceError::Corrupt { lsn, reason }.to_string();
            assert!(msg.contains("LSN 4"), "{msg}");
        }
        Err(e) => panic!("{what}: wrong error {e}"),
        Ok(db) => {
            let r = db.recovery().clone();
            db.close().unwrap();
            panic!("{what}: open accepted it ({r:?})");
        }
    }
}

#[test]
fn wrong_version_stops_recovery_at_its_lsn() {
    let mut bad = committed_wal_v1()[3].clone();
    bad[..2].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert_stops_at_lsn_4("unknown version", bad);
}

#[test]
fn bad_enum_tag_stops_recovery_at_its_lsn() {
    let mut bad = committed_wal_v1()[3].clone();
    // After the header: the event count (u64), then the first event's variant index (u32).
    bad[HEADER_BYTES + 8..HEADER_BYTES + 12].copy_from_slice(&77u32.to_le_bytes());
    assert_stops_at_lsn_4("invalid variant index", bad);
}

/// In format 4 an unknown event tag, a dictionary reference to nothing and bytes after the last
/// event are damage too.
#[test]
fn bad_v4_bytes_stop_recovery_at_their_lsn() {
    let good = committed_wal(4)[3].clone();
    let mut bad_tag = good.clone();
    bad_tag[HEADER_BYTES + 8] = 77;
    assert_stops_at_lsn_4("unknown v4 event tag", bad_tag);
    let mut longer = good.clone();
    longer.push(0);
    assert_stops_at_lsn_4("a byte after the last v4 event", longer);
    assert_stops_at_lsn_4("truncated v4 record", good[..good.len() - 1].to_vec());
}

#[test]
fn flipped_payload_bytes_stop_recovery_at_their_lsn() {
    let mut bad = committed_wal_v1()[3].clone();
    for b in &mut bad[HEADER_BYTES..] {
        *b ^= 0xFF;
    }
    assert_stops_at_lsn_4("every payload byte flipped", bad);
}

#[test]
fn truncated_record_stops_recovery_at_its_lsn() {
    let good = committed_wal_v1()[3].clone();
    assert_stops_at_lsn_4("truncated payload", good[..good.len() - 3].to_vec());
    assert_stops_at_lsn_4("shorter than the header", good[..5].to_vec());
}

/// A truncated snapshot, in a directory whose log was trimmed and whose previous snapshot is
/// damaged too, stops recovery naming the newest file (`snapshot_checks.rs` covers the fallbacks).
#[test]
fn corrupt_snapshot_stops_recovery_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PersistenceConfig::new(dir.path());
    let db = DurableEngine::open(cfg.clone(), EngineConfig { shard_count: 2, ..Default::default() }).unwrap();
    db.engine().create_sku(common::spec("A", 100, 3, None)).wait().unwrap();
    db.snapshot_now().unwrap();
    db.engine().create_sku(common::spec("B", 100, 3, None)).wait().unwrap();
    db.snapshot_now().unwrap(); // trims what the first covers
    db.close().unwrap();
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir.path().join("snapshots")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 2, "two generations are kept: {files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        std::fs::write(f, &bytes[..bytes.len() / 2]).unwrap();
    }
    let file = files.last().unwrap();
    match open_db(&cfg, &EngineConfig { shard_count: 2, ..Default::default() }, None) {
        Err(PersistenceError::Snapshot { path, reason }) => {
            assert!(path.ends_with(file.file_name().unwrap().to_str().unwrap()), "{path}");
            assert!(reason.contains("cannot recover"), "{reason}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(db) => {
            db.close().unwrap();
            panic!("a truncated snapshot was accepted");
        }
    }
}
