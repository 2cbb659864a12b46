//! The payload of a version-3 snapshot file: compact, written by hand like format 4's events.
//!
//! ```text
//! payload  := uv(lsn) uv(base) uv(#cuts) uv(cut)*
//!             uv(#skus)   { uv(len) bincode-varint((sku_id, SkuState)) }*
//!             uv(#blocks) { uv(#orders) uv(len) order* }*
//! order    := format 4's whole order (the `order_archived` body), one fresh encoder per block
//! ```
//! Orders go in blocks of [`ORDERS_PER_BLOCK`], in id order: inside a block, order ids and times
//! are deltas and SKU ids, names and reasons come from the block's dictionary, so an order of a
//! flash sale takes about 60 bytes instead of version 2's ~300 (bincode with fixed-width
//! integers and every string in full). Issue 12: at millions of live orders the snapshot's own
//! encoding, read-back and disk writes were what was left of the WAL's commit stalls. Blocks are
//! length-prefixed so a reader may skip or split them.
//!
//! SKUs stay serde (bincode with varint integers): there are few, and their state (holdings,
//! per-user counts, adjustment ids) is the engine's to shape.

use std::collections::BTreeMap;
use std::sync::Arc;

use bincode::Options;
use surge_engine::{EngineState, SkuId, SkuState};

use super::v4;
use super::wire::{put_uv, In};
use super::SnapshotFile;

/// Orders per block: big enough that a block's dictionary pays off, small enough to stay in
/// cache while it is encoded.
pub(crate) const ORDERS_PER_BLOCK: usize = 4096;

fn sku_options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// Append the version-3 payload of `s` to `out`.
///
/// # Errors
/// bincode refused a SKU's state.
pub(crate) fn encode_payload(s: &SnapshotFile, out: &mut Vec<u8>) -> Result<(), String> {
    put_uv(out, s.lsn);
    put_uv(out, s.base);
    put_uv(out, s.cuts.len() as u64);
    for c in &s.cuts {
        put_uv(out, *c);
    }
    put_uv(out, s.state.skus.len() as u64);
    let mut sku = Vec::new();
    for entry in &s.state.skus {
        sku.clear();
        sku_options().serialize_into(&mut sku, &entry).map_err(|e| e.to_string())?;
        put_uv(out, sku.len() as u64);
        out.extend_from_slice(&sku);
    }
    let orders: Vec<&surge_engine::Order> = s.state.orders.values().map(|o| &**o).collect();
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
    Ok(())
}

/// Decode a version-3 payload (its checksum already verified).
///
/// # Errors
/// A description of the first damage found.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<SnapshotFile, String> {
    let mut r = In::new(payload);
    let (lsn, base) = (r.uv().map_err(str_of)?, r.uv().map_err(str_of)?);
    let cut_count = r.count().map_err(str_of)?;
    let cuts = (0..cut_count).map(|_| r.uv()).collect::<Result<Vec<u64>, _>>().map_err(str_of)?;
    let mut skus = BTreeMap::new();
    for _ in 0..r.count().map_err(str_of)? {
        let len = r.uv().map_err(str_of)?;
        let bytes = r.raw(len).map_err(str_of)?;
        let (id, state): (SkuId, SkuState) = sku_options().deserialize(bytes).map_err(|e| e.to_string())?;
        skus.insert(id, state);
    }
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
    if !r.at_end() {
        return Err(format!("{} bytes after the payload", r.remaining()));
    }
    // Written in id order: the map is built in one pass (a damaged order is caught above).
    let orders = orders.into_iter().collect();
    Ok(SnapshotFile { lsn, base, cuts, state: EngineState { skus, orders } })
}

fn str_of(b: super::wire::Bad) -> String {
    b.to_string()
}
