//! Snapshot files: the envelope (magic, version, checksum, length: the layout is in `codec`'s
//! module docs) and the payloads of every envelope version. Versions 3 and 4 are compact,
//! written by hand like format 4's events:
//!
//! ```text
//! payload  := uv(lsn) uv(base) uv(#cuts) uv(cut)*
//!             uv(#skus)   { uv(len) bincode-varint((sku_id, SkuState)) }*
//!             uv(#blocks) { uv(#orders) uv(len) order* }*
//!             wallets                                        (version 4 only)
//! order    := format 4's whole order (the `order_archived` body), one fresh encoder per block
//! wallets  := uv(#users)  { uv(len) bincode-varint((user_id, UserWallet)) }*
//! ```
//! Orders go in blocks of [`ORDERS_PER_BLOCK`], in id order: inside a block, order ids and times
//! are deltas and SKU ids, names and reasons come from the block's dictionary, so an order of a
//! flash sale takes about 60 bytes instead of version 2's ~300 (bincode with fixed-width
//! integers and every string in full). Issue 12: at millions of live orders the snapshot's own
//! encoding, read-back and disk writes were what was left of the WAL's commit stalls. Blocks are
//! length-prefixed so a reader may skip or split them.
//!
//! SKUs and wallets (issue 14, version 4) stay serde (bincode with varint integers), one
//! length-prefixed entry per SKU and per user, in key order: their state (holdings, per-user
//! counts, adjustment ids; accounts, transfers by id, open tries, payments, ledger entries) is
//! the engine's to shape. A version-3 file decodes with no wallets.

use std::collections::BTreeMap;
use std::sync::Arc;

use bincode::Options;
use serde::Deserialize;
use surge_engine::wallet::{UserWallet, WalletBook};
use surge_engine::{EngineState, Order, OrderId, SkuId, SkuState, UserId};

use super::wire::{put_uv, Bad, In};
use super::{v4, SnapshotFile, SNAPSHOT_VERSION};
use crate::error::{PersistenceError, PersistenceResult};

/// Orders per block: big enough that a block's dictionary pays off, small enough to stay in
/// cache while it is encoded.
pub(crate) const ORDERS_PER_BLOCK: usize = 4096;
const SNAPSHOT_MAGIC: &[u8; 8] = b"SURGESNP";
/// Bytes before the payload of a snapshot of envelope version 2 or later.
const SNAPSHOT_HEADER_BYTES: usize = 22;

/// A snapshot file as format version 1 stored it (SKU states without adjustment ids).
#[derive(Deserialize)]
struct SnapshotFileV1 {
    lsn: u64,
    base: u64,
    cuts: Vec<u64>,
    state: surge_engine::EngineStateV1,
}

/// A snapshot file as envelope version 2 stored it: bincode is not self-describing, so its
/// state is read in the shape it had then (no wallets), not through today's `EngineState`.
#[derive(Deserialize)]
struct SnapshotFileV2 {
    lsn: u64,
    base: u64,
    cuts: Vec<u64>,
    state: StateV2,
}

/// `EngineState` before wallets: its fields in the same order, so the same bincode.
#[derive(Deserialize)]
struct StateV2 {
    skus: BTreeMap<SkuId, SkuState>,
    orders: BTreeMap<OrderId, Arc<Order>>,
}

fn entry_options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// Encode a snapshot file (envelope version [`SNAPSHOT_VERSION`]; layout in the module docs).
///
/// ```
/// use surge_persistence::codec::{decode_snapshot, encode_snapshot, SnapshotFile};
/// let file = SnapshotFile { lsn: 9, base: 2, cuts: vec![4, 5], state: Default::default() };
/// let bytes = encode_snapshot(&file).unwrap();
/// assert_eq!(decode_snapshot("s", &bytes).unwrap().cuts, vec![4, 5]);
/// ```
///
/// # Errors
/// bincode refused a SKU's state or a wallet.
pub fn encode_snapshot(s: &SnapshotFile) -> PersistenceResult<Vec<u8>> {
    let mut out = Vec::with_capacity(4096 + 64 * s.state.orders.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0u8; 12]); // checksum and length, filled in below
    encode_payload(s, &mut out).map_err(|reason| PersistenceError::Snapshot { path: String::new(), reason })?;
    let payload_bytes = (out.len() - SNAPSHOT_HEADER_BYTES) as u64;
    out[14..22].copy_from_slice(&payload_bytes.to_le_bytes());
    let crc = crc32fast::hash(&out[14..]);
    out[10..14].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decode a snapshot file of envelope version 4 or 3 (compact payload), 2 (bincode payload;
/// checksums verified) or 1 (no checksum). Versions before 4 decode with no wallets.
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
        2 => {
            let payload = checked_payload(bytes).map_err(bad)?;
            let v2: SnapshotFileV2 = bincode::deserialize(payload).map_err(|e| bad(e.to_string()))?;
            let state = EngineState { skus: v2.state.skus, orders: v2.state.orders, wallets: WalletBook::default() };
            Ok(SnapshotFile { lsn: v2.lsn, base: v2.base, cuts: v2.cuts, state })
        }
        3 | 4 => decode_payload(checked_payload(bytes).map_err(bad)?, version).map_err(bad),
        _ => Err(bad(format!("unknown format version {version}"))),
    }
}

/// Check a snapshot file's envelope (magic, version, length and checksum) without decoding its
/// payload: what the snapshotter verifies after writing (see `snapshot::write_kept`).
///
/// # Errors
/// `Snapshot` naming `path` if the magic, version, length or checksum is wrong (a version-1 file,
/// which has no checksum, is refused too: nothing writes one any more).
pub fn verify_snapshot_envelope(path: &str, bytes: &[u8]) -> PersistenceResult<()> {
    let bad = |reason: String| PersistenceError::Snapshot { path: path.to_owned(), reason };
    if bytes.len() < 10 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(bad("not a Surge snapshot (bad magic)".into()));
    }
    match u16::from_le_bytes([bytes[8], bytes[9]]) {
        2..=SNAPSHOT_VERSION => checked_payload(bytes).map(|_| ()).map_err(bad),
        version => Err(bad(format!("envelope version {version} has no checksum to verify"))),
    }
}

/// The payload of a snapshot of envelope version 2 or later, once its length and checksum match.
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

/// Append the version-4 payload of `s` to `out`.
///
/// # Errors
/// bincode refused a SKU's state or a wallet.
fn encode_payload(s: &SnapshotFile, out: &mut Vec<u8>) -> Result<(), String> {
    put_uv(out, s.lsn);
    put_uv(out, s.base);
    put_uv(out, s.cuts.len() as u64);
    for c in &s.cuts {
        put_uv(out, *c);
    }
    put_entries(out, &s.state.skus)?;
    let orders: Vec<&Order> = s.state.orders.values().map(|o| &**o).collect();
    put_uv(out, orders.chunks(ORDERS_PER_BLOCK).len() as u64);
    let mut block = Vec::new();
    for chunk in orders.chunks(ORDERS_PER_BLOCK) {
        block.clear();
        let mut enc = v4::Encoder::new();
        for o in chunk {
            enc.order(&mut block, o);
        }
        put_uv(out, chunk.len() as u64);
        put_uv(out, block.len() as u64);
        out.extend_from_slice(&block);
    }
    put_entries(out, &s.state.wallets.users)
}

/// `uv(#entries) { uv(len) bincode-varint((key, value)) }*`, in key order.
fn put_entries<K: serde::Serialize, V: serde::Serialize>(
    out: &mut Vec<u8>,
    map: &BTreeMap<K, V>,
) -> Result<(), String> {
    put_uv(out, map.len() as u64);
    let mut entry = Vec::new();
    for e in map {
        entry.clear();
        entry_options().serialize_into(&mut entry, &e).map_err(|e| e.to_string())?;
        put_uv(out, entry.len() as u64);
        out.extend_from_slice(&entry);
    }
    Ok(())
}

/// Decode a version-3 or version-4 payload (its checksum already verified).
///
/// # Errors
/// A description of the first damage found.
fn decode_payload(payload: &[u8], version: u16) -> Result<SnapshotFile, String> {
    let mut r = In::new(payload);
    let (lsn, base) = (r.uv().map_err(str_of)?, r.uv().map_err(str_of)?);
    let cut_count = r.count().map_err(str_of)?;
    let cuts = (0..cut_count).map(|_| r.uv()).collect::<Result<Vec<u64>, _>>().map_err(str_of)?;
    let skus: BTreeMap<SkuId, SkuState> = read_entries(&mut r)?;
    let orders = read_orders(&mut r)?;
    let users: BTreeMap<UserId, UserWallet> = if version >= 4 { read_entries(&mut r)? } else { BTreeMap::new() };
    if !r.at_end() {
        return Err(format!("{} bytes after the payload", r.remaining()));
    }
    Ok(SnapshotFile { lsn, base, cuts, state: EngineState { skus, orders, wallets: WalletBook { users } } })
}

/// The entries [`put_entries`] wrote.
fn read_entries<K, V>(r: &mut In<'_>) -> Result<BTreeMap<K, V>, String>
where
    K: Ord + for<'de> Deserialize<'de>,
    V: for<'de> Deserialize<'de>,
{
    let mut map = BTreeMap::new();
    for _ in 0..r.count().map_err(str_of)? {
        let len = r.uv().map_err(str_of)?;
        let bytes = r.raw(len).map_err(str_of)?;
        let (k, v): (K, V) = entry_options().deserialize(bytes).map_err(|e| e.to_string())?;
        map.insert(k, v);
    }
    Ok(map)
}

/// The order blocks.
fn read_orders(r: &mut In<'_>) -> Result<BTreeMap<OrderId, Arc<Order>>, String> {
    let mut orders = Vec::new();
    for _ in 0..r.count().map_err(str_of)? {
        let (n, len) = (r.count().map_err(str_of)?, r.uv().map_err(str_of)?);
        let mut block = In::new(r.raw(len).map_err(str_of)?);
        let mut dec = v4::Decoder::new();
        orders.reserve(n);
        for _ in 0..n {
            let o = dec.order(&mut block).map_err(str_of)?;
            orders.push((o.order_id, Arc::new(o)));
        }
        if !block.at_end() {
            return Err(format!("{} bytes after an order block's last order", block.remaining()));
        }
    }
    // Written in id order: the map is built in one pass (a damaged order is caught above).
    Ok(orders.into_iter().collect())
}

fn str_of(b: Bad) -> String {
    b.to_string()
}
