//! The one module that knows the record format (bincode 1.3.3, pinned; DESIGN.md).
//!
//! # WAL record
//! ```text
//! offset  size  field
//! 0       2     format version (u16 LE) = FORMAT_VERSION
//! 2       2     origin shard (u16 LE)
//! 4       8     shard batch sequence (u64 LE): the shard's journal position
//! 12      8     event count (u64 LE)
//! 20      ..    the events, each bincode with varint integers (`bincode::DefaultOptions`)
//! ```
//! Money (`Decimal`) travels as a string (rust_decimal's `serde-str`), because bincode has no
//! `deserialize_any`. A record that does not decode stops recovery with its LSN.
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
//!   whole `Vec<Event>`, whose length prefix is the same u64 count) still decode. Snapshots keep
//!   fixed-width bincode.
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
//! and every optional text at its limit: 107,471 bytes at 255 items, 9,241 at the default 20
//! (`tests/wal_blobs.rs` computes both). An archived order also carries its payment and its
//! history, at most 286 bytes per transition; the engine bounds transitions per order
//! ([`surge_engine::ORDER_TRANSITIONS_MAX`], 16: refund and dispute rounds past it are
//! `order_history_full`), so the largest `order_archived` / `order_restored` is 112,170 bytes.
//! Past the bound the writer fail-stops rather than write a blob.
//!
//! # Snapshot file (envelope version [`SNAPSHOT_VERSION`] = 2)
//! ```text
//! offset  size  field
//! 0       8     magic b"SURGESNP"
//! 8       2     envelope version (u16 LE) = 2
//! 10      4     CRC-32 (crc32fast: CRC-32/ISO-HDLC, as zlib and PNG) of bytes 14.. (u32 LE)
//! 14      8     payload length in bytes (u64 LE)
//! 22      ..    payload: bincode(SnapshotFile)
//! ```
//! The checksum covers the length and the payload, so a torn or bit-flipped file is caught before
//! bincode sees it (PostgreSQL checksums its WAL and control file the same way). Version 1 files
//! (`magic`, version 1, bincode payload of the v1 state, no checksum) still decode.

use serde::{Deserialize, Serialize};
use surge_engine::{EngineState, Event};

use crate::error::{PersistenceError, PersistenceResult};

/// Current record and snapshot format version. Bump it when the encoding changes, and keep a
/// decoder for every older version (the fixture tests guard versions 1 and 2).
pub const FORMAT_VERSION: u16 = 3;
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
const SNAPSHOT_MAGIC: &[u8; 8] = b"SURGESNP";
/// Envelope version written by [`encode_snapshot`] (2: with checksum and length; 1: neither,
/// still decoded).
pub const SNAPSHOT_VERSION: u16 = 2;
/// Bytes before the payload of a version-2 snapshot.
const SNAPSHOT_HEADER_BYTES: usize = 22;

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

/// Encode one record.
///
/// # Errors
/// bincode refused a value (cannot happen for engine events; reported rather than unwrapped).
pub fn encode_record(shard: u16, seq: u64, events: &[Event]) -> PersistenceResult<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_BYTES + 8 + 64 * events.len());
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&shard.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(events.len() as u64).to_le_bytes());
    for e in events {
        encode_event(&mut out, e)?;
    }
    Ok(out)
}

/// The options of a v3 event: varint integers, little endian, no size limit (the record's
/// bound is checked by [`encode_records`]).
fn event_options() -> impl bincode::Options {
    bincode::DefaultOptions::new()
}

fn encode_event(out: &mut Vec<u8>, e: &Event) -> PersistenceResult<()> {
    use bincode::Options;
    event_options().serialize_into(out, e).map_err(|e| PersistenceError::Corrupt { lsn: 0, reason: e.to_string() })
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
/// let records = encode_records(0, 7, &vec![e; 5_000]).unwrap();
/// assert!(records.len() > 1 && records.iter().all(|r| r.len() <= RECORD_BYTES_TARGET));
/// assert_eq!(decode_record(1, &records[0]).unwrap().0.seq, 7);
/// ```
///
/// # Errors
/// [`PersistenceError::RecordTooLarge`] if one event alone encodes to more than
/// [`RECORD_BYTES_MAX`] bytes; bincode refused a value.
pub fn encode_records(shard: u16, seq: u64, events: &[Event]) -> PersistenceResult<Vec<Vec<u8>>> {
    let start = || {
        let mut out = Vec::with_capacity(RECORD_BYTES_TARGET.min(HEADER_BYTES + 8 + 512 * events.len()));
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&shard.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        // The event count (u64 LE), patched when the record is complete.
        out.extend_from_slice(&0u64.to_le_bytes());
        out
    };
    let finish = |mut out: Vec<u8>, count: u64| {
        out[HEADER_BYTES..HEADER_BYTES + 8].copy_from_slice(&count.to_le_bytes());
        out
    };
    let (mut records, mut out, mut count) = (Vec::new(), start(), 0u64);
    for e in events {
        let mark = out.len();
        // Serialized straight into the record: the common case copies nothing.
        encode_event(&mut out, e)?;
        let size_bytes = out.len() - mark;
        if HEADER_BYTES + 8 + size_bytes > RECORD_BYTES_MAX {
            return Err(PersistenceError::RecordTooLarge { size_bytes, limit_bytes: RECORD_BYTES_MAX });
        }
        if count > 0 && out.len() > RECORD_BYTES_TARGET {
            let tail = out.split_off(mark);
            records.push(finish(std::mem::replace(&mut out, start()), count));
            out.extend_from_slice(&tail);
            count = 0;
        }
        count += 1;
    }
    if count > 0 {
        records.push(finish(out, count));
    }
    Ok(records)
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
    let header = decode_header(lsn, bytes)?;
    let corrupt = |reason: String| PersistenceError::Corrupt { lsn, reason };
    let body = &bytes[HEADER_BYTES..];
    if header.version < 3 {
        let events = bincode::deserialize(body).map_err(|e| corrupt(e.to_string()))?;
        return Ok((header, events));
    }
    if body.len() < 8 {
        return Err(corrupt("no event count".into()));
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&body[..8]);
    let count = u64::from_le_bytes(count);
    // Every event takes at least one byte: a larger count is damage, not an allocation size.
    if count > (body.len() - 8) as u64 {
        return Err(corrupt(format!("{count} events cannot fit in {} bytes", body.len() - 8)));
    }
    let mut de = bincode::Deserializer::from_slice(&body[8..], event_options());
    let mut events = Vec::with_capacity(count as usize);
    for _ in 0..count {
        events.push(Event::deserialize(&mut de).map_err(|e| corrupt(e.to_string()))?);
    }
    Ok((header, events))
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

/// A snapshot file as format version 1 stored it (SKU states without adjustment ids).
#[derive(Deserialize)]
struct SnapshotFileV1 {
    lsn: u64,
    base: u64,
    cuts: Vec<u64>,
    state: surge_engine::EngineStateV1,
}

/// Encode a snapshot file (envelope version [`SNAPSHOT_VERSION`]; layout in the module docs).
///
/// # Errors
/// bincode refused a value.
pub fn encode_snapshot(s: &SnapshotFile) -> PersistenceResult<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0u8; 12]); // checksum and length, filled in below
    bincode::serialize_into(&mut out, s)
        .map_err(|e| PersistenceError::Snapshot { path: String::new(), reason: e.to_string() })?;
    let payload_bytes = (out.len() - SNAPSHOT_HEADER_BYTES) as u64;
    out[14..22].copy_from_slice(&payload_bytes.to_le_bytes());
    let crc = crc32fast::hash(&out[14..]);
    out[10..14].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decode a snapshot file of envelope version 2 (checksum verified) or 1 (no checksum).
///
/// # Errors
/// `Snapshot` naming `path` if the magic, version, length, checksum or payload is wrong.
pub fn decode_snapshot(path: &str, bytes: &[u8]) -> PersistenceResult<SnapshotFile> {
    let bad = |reason: String| PersistenceError::Snapshot { path: path.to_owned(), reason };
    if bytes.len() < 10 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(bad("not a Surge snapshot (bad magic)".into()));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    match version {
        1 => {
            let v1: SnapshotFileV1 = bincode::deserialize(&bytes[10..]).map_err(|e| bad(e.to_string()))?;
            Ok(SnapshotFile { lsn: v1.lsn, base: v1.base, cuts: v1.cuts, state: v1.state.into() })
        }
        SNAPSHOT_VERSION => {
            let payload = checked_payload(bytes).map_err(bad)?;
            bincode::deserialize(payload).map_err(|e| bad(e.to_string()))
        }
        _ => Err(bad(format!("unknown format version {version}"))),
    }
}

/// The payload of a version-2 snapshot, once its length and checksum match.
fn checked_payload(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err(format!("{} bytes is shorter than the snapshot header", bytes.len()));
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[10..14]);
    let (stored, actual) = (u32::from_le_bytes(crc), crc32fast::hash(&bytes[14..]));
    if stored != actual {
        return Err(format!("checksum mismatch (stored {stored:08x}, computed {actual:08x}): the file is damaged"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[14..22]);
    let payload = &bytes[SNAPSHOT_HEADER_BYTES..];
    if u64::from_le_bytes(len) != payload.len() as u64 {
        return Err(format!("payload is {} bytes, the header says {}", payload.len(), u64::from_le_bytes(len)));
    }
    Ok(payload)
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
    }
}
