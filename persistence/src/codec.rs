//! The one module that knows the record format: format 4's own compact event encoding
//! (`v4`, over the primitives of `wire`), and bincode 1.3.3 (pinned; DESIGN.md) for the older
//! versions, snapshots and the archive.
//!
//! # WAL record
//! ```text
//! offset  size  field
//! 0       2     format version (u16 LE) = FORMAT_VERSION
//! 2       2     origin shard (u16 LE)
//! 4       8     shard batch sequence (u64 LE): the shard's journal position
//! 12      8     event count (u64 LE)
//! 20      ..    the events (format 4: the grammar below), nothing after the last
//! ```
//! A record that does not decode stops recovery with its LSN.
//!
//! # Format 4 events
//! Written by hand field by field (no serde): the engine's types never define the bytes, and
//! every enum has an explicit code table. `uv` is an unsigned LEB128 varint, `sv` a zigzag one,
//! `txt` a length (`uv`) and UTF-8 bytes, `opt-txt` 0 for none or length + 1 and the bytes, `dec`
//! a decimal exactly (a head byte: sign in bit 7, scale 0..=28 in bits 0..=4; then the 96-bit
//! mantissa's magnitude as a varint: "59.90" is 3 bytes). Three registers run through a record
//! and restart at every record (so each record decodes alone):
//! * `sym`: a dictionary string (SKU ids, names, reasons): `uv` x, odd x = the (x >> 1)-th
//!   string of the record's dictionary, even x = a new string of x >> 1 bytes that follow,
//!   which joins the dictionary while it holds fewer than 64;
//! * `oid`: an order id as `sv` of its difference from the record's previous order id (0 at
//!   the start), wrapping;
//! * `time`: engine milliseconds as `sv` of the difference from the record's previous time
//!   (0 at the start), wrapping.
//!
//! ```text
//! tag  event                  fields after the tag byte
//! 0    sku_created            sym sku, sym name, dec price, uv initial_stock, rules
//! 1    sku_updated            sym sku, sym name, dec price, rules
//! 2    stock_adjusted         sym sku, sv delta, txt reason
//! 3    reserved               sym sku, oid, txt user, uv qty
//! 4    confirmed              sym sku, oid
//! 5    released               sym sku, oid
//! 6    restocked              sym sku, oid
//! 7    holding_forgotten      sym sku, oid
//! 8    stock_adjusted_once    sym sku, txt adjustment_id, sv delta, txt reason
//! 9    holding_remembered     sym sku, oid, txt user, uv qty
//! 10   order_created compact  oid, txt user, txt idempotency_key, sv created_at − the id's
//!                             millisecond (sets time), sv payment_deadline − created_at,
//!                             uv n, n × (sym sku, sym name, uv qty, dec unit_price)
//! 11   order_created full     order
//! 12   order_transitioned     oid, u8 kind, u8 from << 4 | to, u8 flags (by in bits 0-1,
//!                             reason 2, payment 3, tracking 4), time at,
//!                             [sym reason], [payment], [txt tracking]
//! 13   order_archived         order
//! 14   order_restored         order
//! 15   wallet_credited        wallet-head, sym asset, uv amount_minor
//! 16   wallet_debited         wallet-head, sym asset, uv amount_minor
//! 17   wallet_frozen          wallet-head, oid, legs
//! 18   wallet_settled         wallet-head
//! 19   wallet_unfrozen        wallet-head, u8 0 (no failure) | failure
//! 20   wallet_refunded        wallet-head, oid
//! 21   wallet_rejected        wallet-head, params, failure
//!
//! rules    u8 flags (limit 0, start 1, end 2, paused 3), [uv limit], [sv start], [sv end]
//! payment  txt payment_id, dec amount, time paid_at
//! order    oid, txt user, uv n, n × (sym sku, sym name, uv qty, dec unit_price, dec subtotal),
//!          dec total, u8 status, uv version, time created_at, time updated_at,
//!          time payment_deadline, u8 flags (payment 0, shipped 1, refund_return_to 2),
//!          [payment], opt-txt tracking, [u8 refund_return_to], uv h,
//!          h × (u8 from (0 none, else status + 1) | by << 4 | has reason << 6, u8 to, time at,
//!          [sym reason]), txt idempotency_key
//! wallet-head  txt user, txt transfer_id, time at
//! legs     uv n, n × (sym asset, uv amount_minor)
//! params   u8 code: 0 credit (sym asset, uv amount_minor), 1 debit (sym asset,
//!          uv amount_minor), 2 pay (oid, legs)
//! failure  u8 code: 1 insufficient_funds (sym asset, uv needed_minor, uv available_minor),
//!          2 amount_mismatch (dec expected, dec got), 3 order_not_payable (oid, u8 status),
//!          4 already_paid (oid), 5 version_conflict (uv expected, uv actual),
//!          6 unknown_order (oid)
//! ```
//! Status codes: pending_payment 0, paid 1, packing 2, shipped 3, delivered 4, completed 5,
//! canceled 6, refunding 7, refunded 8, disputed 9. Event kinds: pay 0, cancel 1,
//! payment_deadline 2, start_packing 3, ship 4, deliver 5, complete 6, auto_complete 7,
//! request_refund 8, confirm_refund 9, reject_refund 10, open_dispute 11, resolve_dispute 12.
//! Initiators: user 0, admin 1, psp 2, system 3. Wallet events (issue 14) keep users and
//! transfer ids inline (nearly unique per event, they would crowd SKU ids out of the
//! dictionary) and asset codes in the dictionary; a decoded asset code must be a valid one.
//! Code 0 of `failure` means "none" and is accepted only where a failure is optional
//! (`wallet_unfrozen`).
//!
//! **The compact `order_created`** holds only what cannot be derived. An order is written so
//! only if it is exactly in the shape the engine creates (status `pending_payment`, version 1,
//! `updated_at == created_at`, no payment, tracking number, shipping or refund status, one
//! history entry `None → pending_payment` by the user at `created_at` without reason), and its
//! subtotals and total are, bit for bit, what the codec derives: subtotal = unit price's
//! mantissa × qty at the unit price's scale; total = the subtotals summed from 0 (scale 0), each
//! sum at the larger scale, exactly (`None`, so the full form, past 96 bits). The encoder checks
//! all that against the order; any other order is written whole (tag 11): nothing is ever lost.
//! The derivation is the codec's own integer arithmetic, not `rust_decimal`'s, so what a compact
//! record decodes to is fixed by the format.
//!
//! A single-item order (`reserved` + compact `order_created`) takes about 40 bytes with short
//! ids (`examples/wal_bench.rs`), about 90 with the hot-SKU bench's 28-byte ids.
//!
//! # Versions
//! * 1: the first format.
//! * 2: event variants appended at the end of their enums (`SkuEvent::AdjustedOnce`,
//!   `SkuEvent::Remembered`, `OrderEvent::Restored`), so a v1
//!   record decodes with the v2 decoder unchanged; `SkuState` gained its adjustment ids, so a v1
//!   snapshot decodes through the engine's `EngineStateV1` and is converted. Snapshot files
//!   gained a checksummed envelope at the same version (below).
//! * 3: the same framing and the same event shapes, but each event's integers (lengths,
//!   enum indices, ids, times) are varints (bincode's `DefaultOptions`) instead of fixed 8 or 4
//!   bytes: a single-item order's two events take about 40% fewer bytes (issue 12: "WAL bytes
//!   per single-item order ≤ 192"). Versions 1 and 2 (fixed-width `bincode::serialize` of the
//!   whole `Vec<Event>`, whose length prefix is the same u64 count) still decode. Money
//!   (`Decimal`) is a string (rust_decimal's `serde-str`: bincode has no `deserialize_any`).
//! * 4: the same framing; the events in the codec's own encoding (above): a created order without
//!   its derivable fields, decimals as mantissa and scale, a per-record dictionary of SKU ids and
//!   names, order ids and times as differences. A single-item order takes about a third of v3's
//!   bytes. Nothing may follow the last event. Versions 1 to 3 still decode (each guarded by a
//!   committed fixture, `tests/format_fixture.rs`). Snapshots and archived orders keep
//!   fixed-width bincode (the archive's values are prefixed with the format version; `Order` is
//!   the same in every version).
//!
//!   Issue 14 appended the wallet events (tags 15 to 21) to format 4 without a new version: no
//!   earlier tag changed, so every record written before them decodes as it did, and a reader
//!   from before them refuses a record holding one (an unknown tag stops recovery at its LSN,
//!   never a silent skip). `tests/fixtures/wal-v4-wallets.records` guards their bytes.
//!
//! # Record size bound (every byte acknowledged is on disk)
//! sled 0.34.7 writes a page (a tree node, up to ~17 key/value pairs: leaves split above 16
//! entries, `node.rs` `should_split`) to its own file under `wal/blobs/` when the serialized page
//! plus a 32-byte message header exceeds `segment_size / 4 - 20` bytes (`logger.rs`
//! `reserve_inner`: `MAX_MSG_HEADER_LEN`, `MINIMUM_ITEMS_PER_SEGMENT`, `SEG_HEADER_LEN`), and it
//! never fsyncs those files. With our `segment_size` of 8 MiB that is 2,097,100 bytes per page,
//! so one value must stay well below 2 MiB / 17. [`encode_records`] packs a shard batch's events
//! into records of at most [`RECORD_BYTES_TARGET`] bytes and refuses a single event that alone
//! would exceed [`RECORD_BYTES_MAX`] (18 such values still fit a page). Measured here: pages of
//! 120 KiB values never spilled, 128 KiB values did.
//!
//! The engine's input limits bound one event: the largest is `order_created` (or
//! `order_archived`) of an order with `order_items_max` (at most 255) line items whose ids are
//! [`surge_engine::ID_BYTES_MAX`] and names [`surge_engine::TEXT_BYTES_MAX`] bytes, widest decimals
//! and every optional text at its limit: in format 4 92,318 bytes at 255 items, 7,952 at the
//! default 20 (format 3: 107,471 and 9,241; `tests/wal_blobs.rs` computes them). An archived
//! order also carries its payment and its history, at most about 270 bytes per transition; the
//! engine bounds transitions per order ([`surge_engine::ORDER_TRANSITIONS_MAX`], 16: refund and
//! dispute rounds past it are `order_history_full`), so the largest `order_archived` /
//! `order_restored` is 96,576 bytes (format 3: 112,170, the figure `ORDER_TRANSITIONS_MAX`'s
//! docs derive their bound from; format 4 only adds margin). Past the bound the writer
//! fail-stops rather than write a blob.
//!
//! # Snapshot file (envelope version [`SNAPSHOT_VERSION`] = 4)
//! ```text
//! offset  size  field
//! 0       8     magic b"SURGESNP"
//! 8       2     envelope version (u16 LE) = 4
//! 10      4     CRC-32 (crc32fast: CRC-32/ISO-HDLC, as zlib and PNG) of bytes 14.. (u32 LE)
//! 14      8     payload length in bytes (u64 LE)
//! 22      ..    payload: version 4, the compact layout of `codec/snapshot.rs` with the wallets
//!               (version 3: the same without wallets; version 2: bincode(SnapshotFile) of the
//!               state before wallets, fixed-width integers)
//! ```
//! The checksum covers the length and the payload, so a torn or bit-flipped file is caught before
//! the payload is decoded (PostgreSQL checksums its WAL and control file the same way). Version 3
//! and 2 files and version 1 files (`magic`, version 1, bincode payload of the v1 state, no
//! checksum) still decode, with no wallets (each guarded by a committed fixture).

mod snapshot;
mod v4;
mod wire;

pub use snapshot::{decode_snapshot, encode_snapshot, verify_snapshot_envelope};

use serde::{Deserialize, Serialize};
use surge_engine::{EngineState, Event};

use crate::error::{PersistenceError, PersistenceResult};

/// Current record format version (also the archive values' prefix). Bump it when the encoding
/// changes, and keep a decoder for every older version (the fixture tests guard versions 1 to
/// 4).
pub const FORMAT_VERSION: u16 = 4;
/// Oldest format version still decoded.
pub const FORMAT_VERSION_MIN: u16 = 1;
/// Bytes before the bincode payload of a WAL record.
pub const HEADER_BYTES: usize = 12;
/// [`encode_records`] starts a new record before one would grow past this many bytes (64 KiB:
/// large enough for group commit to stay cheap, DESIGN.md's measurements; small enough that a
/// sled page of such records stays inline; see the module docs).
pub const RECORD_BYTES_TARGET: usize = 64 * 1024;
/// Hard bound of one encoded record (and so of one event, and of one archived order value):
/// 112 KiB, below sled's blob threshold for a full page (module docs). Exceeding it is a broken
/// invariant of the engine's input limits.
pub const RECORD_BYTES_MAX: usize = 112 * 1024;
/// Envelope version written by [`encode_snapshot`] (4: version 3's payload and the wallets;
/// 3: the compact payload of `codec/snapshot.rs`; 2: with checksum and length, a bincode payload;
/// 1: neither; all still decoded, versions 1 to 3 with no wallets).
pub const SNAPSHOT_VERSION: u16 = 4;

/// The fixed part of a WAL record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Format version.
    pub version: u16,
    /// The shard that wrote it.
    pub shard: u16,
    /// The shard's batch sequence number (snapshot cuts compare against it).
    pub seq: u64,
}

/// Encode one record: the events in the current format ([`FORMAT_VERSION`]), all in one record
/// whatever its size (the writer uses [`encode_records`], which splits by bytes).
///
/// # Errors
/// None today (kept fallible so a future format may refuse a value rather than panic).
pub fn encode_record(shard: u16, seq: u64, events: &[Event]) -> PersistenceResult<Vec<u8>> {
    let mut out = record_start(shard, seq, HEADER_BYTES + 8 + 48 * events.len());
    let mut enc = v4::Encoder::new();
    for e in events {
        enc.event(&mut out, e);
    }
    Ok(record_finish(out, events.len() as u64))
}

/// A record's header and a zero event count, in a buffer of `capacity` bytes.
fn record_start(shard: u16, seq: u64, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&shard.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    // The event count (u64 LE), patched when the record is complete.
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

/// Patch the event count of a record begun by [`record_start`].
fn record_finish(mut out: Vec<u8>, count: u64) -> Vec<u8> {
    out[HEADER_BYTES..HEADER_BYTES + 8].copy_from_slice(&count.to_le_bytes());
    out
}

/// Encode one shard batch as records of at most [`RECORD_BYTES_TARGET`] bytes each (one event
/// alone may take up to [`RECORD_BYTES_MAX`]), all with the same `shard` and `seq`, in event
/// order. Each record is byte for byte what [`encode_record`] writes for its events. No events,
/// no records.
///
/// ```
/// use surge_persistence::codec::{decode_record, encode_records, RECORD_BYTES_TARGET};
/// use surge_engine::{Event, OrderId, SkuEvent};
/// let e = Event::Sku(SkuEvent::Released { sku_id: "x".repeat(64).into(), order_id: OrderId(1) });
/// let records = encode_records(0, 7, &vec![e; 50_000]).unwrap();
/// assert!(records.len() > 1 && records.iter().all(|r| r.len() <= RECORD_BYTES_TARGET));
/// assert_eq!(decode_record(1, &records[0]).unwrap().0.seq, 7);
/// ```
///
/// # Errors
/// [`PersistenceError::RecordTooLarge`] if one event alone encodes to more than
/// [`RECORD_BYTES_MAX`] bytes.
pub fn encode_records(shard: u16, seq: u64, events: &[Event]) -> PersistenceResult<Vec<Vec<u8>>> {
    let capacity = RECORD_BYTES_TARGET.min(HEADER_BYTES + 8 + 128 * events.len());
    let (mut records, mut out, mut count) = (Vec::new(), record_start(shard, seq, capacity), 0u64);
    let mut enc = v4::Encoder::new();
    for e in events {
        let mark = out.len();
        // Encoded straight into the record: the common case copies nothing.
        enc.event(&mut out, e);
        if count > 0 && out.len() > RECORD_BYTES_TARGET {
            // The event starts the next record, encoded again there: a record's dictionary and
            // registers start afresh.
            out.truncate(mark);
            records.push(record_finish(std::mem::replace(&mut out, record_start(shard, seq, capacity)), count));
            (enc, count) = (v4::Encoder::new(), 0);
            enc.event(&mut out, e);
        }
        // An event that is not first fits the target, far below the bound.
        let size_bytes = out.len() - HEADER_BYTES - 8;
        if count == 0 && HEADER_BYTES + 8 + size_bytes > RECORD_BYTES_MAX {
            return Err(PersistenceError::RecordTooLarge { size_bytes, limit_bytes: RECORD_BYTES_MAX });
        }
        count += 1;
    }
    if count > 0 {
        records.push(record_finish(out, count));
    }
    Ok(records)
}

/// The options of a v3 event: varint integers, little endian, no size limit.
fn event_options() -> impl bincode::Options {
    bincode::DefaultOptions::new()
}

/// Decode a record's header only.
///
/// # Errors
/// `Corrupt` if it is too short or of an unknown version.
pub fn decode_header(lsn: u64, bytes: &[u8]) -> PersistenceResult<RecordHeader> {
    let corrupt = |reason: String| PersistenceError::Corrupt { lsn, reason };
    if bytes.len() < HEADER_BYTES {
        return Err(corrupt(format!("{} bytes is shorter than the header", bytes.len())));
    }
    let version = u16::from_le_bytes([bytes[0], bytes[1]]);
    // v1 records hold only variants v2 still has at the same indices: one decoder for both.
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
        return Err(corrupt(format!("unknown format version {version}")));
    }
    let shard = u16::from_le_bytes([bytes[2], bytes[3]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[4..12]);
    Ok(RecordHeader { version, shard, seq: u64::from_le_bytes(seq) })
}

/// Decode a whole record.
///
/// # Errors
/// `Corrupt` naming `lsn`.
pub fn decode_record(lsn: u64, bytes: &[u8]) -> PersistenceResult<(RecordHeader, Vec<Event>)> {
    let mut events = Vec::new();
    let header = decode_record_into(lsn, bytes, &mut events)?;
    Ok((header, events))
}

/// Decode a whole record, appending its events to `events` in order (recovery gathers several
/// records in one buffer). On an error, `events` may hold some of the record's first events.
///
/// # Errors
/// `Corrupt` naming `lsn`.
pub fn decode_record_into(lsn: u64, bytes: &[u8], events: &mut Vec<Event>) -> PersistenceResult<RecordHeader> {
    let header = decode_header(lsn, bytes)?;
    let corrupt = |reason: String| PersistenceError::Corrupt { lsn, reason };
    let body = &bytes[HEADER_BYTES..];
    if header.version < 3 {
        let old: Vec<Event> = bincode::deserialize(body).map_err(|e| corrupt(e.to_string()))?;
        events.extend(old);
        return Ok(header);
    }
    let Some((count, body)) = body.split_first_chunk::<8>() else {
        return Err(corrupt("no event count".into()));
    };
    let count = u64::from_le_bytes(*count);
    // Every event takes at least one byte: a larger count is damage, not an allocation size.
    if count > body.len() as u64 {
        return Err(corrupt(format!("{count} events cannot fit in {} bytes", body.len())));
    }
    events.reserve(count as usize);
    if header.version == 3 {
        let mut de = bincode::Deserializer::from_slice(body, event_options());
        for _ in 0..count {
            events.push(Event::deserialize(&mut de).map_err(|e| corrupt(e.to_string()))?);
        }
        return Ok(header);
    }
    let (mut r, mut dec) = (wire::In::new(body), v4::Decoder::new());
    for _ in 0..count {
        events.push(dec.event(&mut r).map_err(|e| corrupt(e.to_string()))?);
    }
    if !r.at_end() {
        return Err(corrupt(format!("{} bytes after the last event", r.remaining())));
    }
    Ok(header)
}

/// What a snapshot file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// The last LSN written when the snapshot was taken (informational).
    pub lsn: u64,
    /// Every record with `seq <= base` is covered (it came from an earlier run).
    pub base: u64,
    /// Per shard of this run: records of that shard with `seq <= cuts[shard]` are covered.
    pub cuts: Vec<u64>,
    /// Every actor's state.
    pub state: EngineState,
}

impl SnapshotFile {
    /// True if the record with this header is already part of the snapshot.
    pub fn covers(&self, h: &RecordHeader) -> bool {
        h.seq <= self.base || self.cuts.get(usize::from(h.shard)).is_some_and(|c| h.seq <= *c)
    }
}

/// Encode an archived order (value of the `archive` tree): format version (u16 LE), then
/// bincode(Order).
///
/// # Errors
/// bincode refused a value.
pub fn encode_order(o: &surge_engine::Order) -> PersistenceResult<Vec<u8>> {
    let mut out = FORMAT_VERSION.to_le_bytes().to_vec();
    bincode::serialize_into(&mut out, o).map_err(|e| PersistenceError::Corrupt { lsn: 0, reason: e.to_string() })?;
    Ok(out)
}

/// Decode an archived order; `None` if it does not decode (reported by the caller).
pub fn decode_order(bytes: &[u8]) -> Option<surge_engine::Order> {
    // `Order` is the same in every version so far.
    if bytes.len() < 2 || !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&u16::from_le_bytes([bytes[0], bytes[1]])) {
        return None;
    }
    bincode::deserialize(&bytes[2..]).ok()
}

/// A short name for an event's type (for `surge wal inspect`).
pub fn event_type(e: &Event) -> &'static str {
    use surge_engine::{OrderEvent, SkuEvent};
    match e {
        Event::Sku(SkuEvent::Created { .. }) => "sku_created",
        Event::Sku(SkuEvent::Updated { .. }) => "sku_updated",
        Event::Sku(SkuEvent::Adjusted { .. }) => "stock_adjusted",
        Event::Sku(SkuEvent::Reserved { .. }) => "reserved",
        Event::Sku(SkuEvent::Confirmed { .. }) => "confirmed",
        Event::Sku(SkuEvent::Released { .. }) => "released",
        Event::Sku(SkuEvent::Restocked { .. }) => "restocked",
        Event::Sku(SkuEvent::Forgotten { .. }) => "holding_forgotten",
        Event::Sku(SkuEvent::AdjustedOnce { .. }) => "stock_adjusted_once",
        Event::Sku(SkuEvent::Remembered { .. }) => "holding_remembered",
        Event::Order(OrderEvent::Restored(_)) => "order_restored",
        Event::Order(OrderEvent::Created(_)) => "order_created",
        Event::Order(OrderEvent::Transitioned { .. }) => "order_transitioned",
        Event::Order(OrderEvent::Archived(_)) => "order_archived",
        Event::Wallet(w) => wallet_event_type(w),
        Event::Outbox(surge_engine::OutboxEvent::Order(_)) => "outbox_order",
        Event::Outbox(surge_engine::OutboxEvent::Stock(..)) => "outbox_stock",
        Event::Outbox(surge_engine::OutboxEvent::Wallet(_)) => "outbox_wallet",
    }
}

/// The name of a wallet event's type (`wallet_credited`, …).
fn wallet_event_type(e: &surge_engine::wallet::WalletEvent) -> &'static str {
    use surge_engine::wallet::WalletEvent as W;
    match e {
        W::Credited { .. } => "wallet_credited",
        W::Debited { .. } => "wallet_debited",
        W::Frozen { .. } => "wallet_frozen",
        W::Settled { .. } => "wallet_settled",
        W::Unfrozen { .. } => "wallet_unfrozen",
        W::Refunded { .. } => "wallet_refunded",
        W::Rejected { .. } => "wallet_rejected",
    }
}
