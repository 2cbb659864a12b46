//! The one module that knows the record format (bincode 1.3.3, pinned; DESIGN.md).
//!
//! # WAL record
//! ```text
//! offset  size  field
//! 0       2     format version (u16 LE) = FORMAT_VERSION
//! 2       2     origin shard (u16 LE)
//! 4       8     shard batch sequence (u64 LE): the shard's journal position
//! 12      ..    bincode(Vec<Event>)
//! ```
//! Money (`Decimal`) travels as a string (rust_decimal's `serde-str`), because bincode has no
//! `deserialize_any`. A record that does not decode stops recovery with its LSN.
//!
//! # Snapshot file
//! `b"SURGESNP"`, format version (u16 LE), then bincode([`SnapshotFile`]).
//!
//! # Versions
//! * 1: the first format.
//! * 2: event variants appended at the end of their enums (`SkuEvent::AdjustedOnce`,
//!   `SkuEvent::Remembered`, `OrderEvent::Restored`), so a v1
//!   record decodes with the v2 decoder unchanged; `SkuState` gained its adjustment ids, so a v1
//!   snapshot decodes through the engine's `EngineStateV1` and is converted.

use serde::{Deserialize, Serialize};
use surge_engine::{EngineState, Event};

use crate::error::{PersistenceError, PersistenceResult};

/// Current record and snapshot format version. Bump it when the encoding changes, and keep a
/// decoder for every older version (the fixture tests guard versions 1 and 2).
pub const FORMAT_VERSION: u16 = 2;
/// Oldest format version still decoded.
pub const FORMAT_VERSION_MIN: u16 = 1;
/// Bytes before the bincode payload of a WAL record.
pub const HEADER_BYTES: usize = 12;
const SNAPSHOT_MAGIC: &[u8; 8] = b"SURGESNP";

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
    let mut out = Vec::with_capacity(HEADER_BYTES + 64 * events.len());
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&shard.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    bincode::serialize_into(&mut out, events)
        .map_err(|e| PersistenceError::Corrupt { lsn: 0, reason: e.to_string() })?;
    Ok(out)
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
    let events = bincode::deserialize(&bytes[HEADER_BYTES..])
        .map_err(|e| PersistenceError::Corrupt { lsn, reason: e.to_string() })?;
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

/// Encode a snapshot file.
///
/// # Errors
/// bincode refused a value.
pub fn encode_snapshot(s: &SnapshotFile) -> PersistenceResult<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bincode::serialize_into(&mut out, s)
        .map_err(|e| PersistenceError::Snapshot { path: String::new(), reason: e.to_string() })?;
    Ok(out)
}

/// Decode a snapshot file.
///
/// # Errors
/// `Snapshot` if the magic, version or payload is wrong.
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
        FORMAT_VERSION => bincode::deserialize(&bytes[10..]).map_err(|e| bad(e.to_string())),
        _ => Err(bad(format!("unknown format version {version}"))),
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
    }
}
