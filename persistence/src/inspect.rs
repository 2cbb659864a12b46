//! Read-only views of a data directory for `surge wal inspect` and `surge wal dump` (audits).
//!
//! Opening takes sled's lock, so run them on a stopped server's data directory.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use surge_engine::Event;

use crate::codec::{decode_record, event_type};
use crate::error::PersistenceResult;
use crate::snapshot;
use crate::store::SledStore;

/// Summary of a data directory.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WalSummary {
    /// Lowest LSN in the log.
    pub lsn_first: Option<u64>,
    /// Highest LSN in the log.
    pub lsn_last: Option<u64>,
    /// Records in the log.
    pub records: u64,
    /// Events in the log.
    pub events: u64,
    /// Events per type (`order_created`, `reserved`, …).
    pub events_by_type: BTreeMap<String, u64>,
    /// LSN recorded by the newest snapshot.
    pub snapshot_lsn: Option<u64>,
    /// Orders in the newest snapshot.
    pub snapshot_orders: Option<usize>,
    /// Users with a wallet in the newest snapshot (0 for snapshots from before wallets).
    pub snapshot_wallets: Option<usize>,
    /// Bytes sled's files take.
    pub wal_size_bytes: u64,
    /// Bytes of the newest snapshot file.
    pub snapshot_size_bytes: Option<u64>,
}

/// Summarize `data_dir`.
///
/// # Errors
/// The directory cannot be opened (missing, or a server holds it) or a record does not decode
/// (named by LSN).
pub fn inspect(data_dir: &Path) -> PersistenceResult<WalSummary> {
    let store = SledStore::open(data_dir)?;
    let mut s = WalSummary { wal_size_bytes: store.size_on_disk(), ..WalSummary::default() };
    for r in store.iter() {
        let (lsn, bytes) = r?;
        let (_, events) = decode_record(lsn, &bytes)?;
        s.lsn_first.get_or_insert(lsn);
        s.lsn_last = Some(lsn);
        s.records += 1;
        s.events += events.len() as u64;
        for e in &events {
            *s.events_by_type.entry(event_type(e).to_owned()).or_default() += 1;
        }
    }
    if let Some((path, snap)) = snapshot::load_latest(data_dir)? {
        s.snapshot_lsn = Some(snap.lsn);
        s.snapshot_orders = Some(snap.state.orders.len());
        s.snapshot_wallets = Some(snap.state.wallets.users.len());
        s.snapshot_size_bytes = std::fs::metadata(path).ok().map(|m| m.len());
    }
    Ok(s)
}

/// One dumped event.
#[derive(Debug, Serialize)]
pub struct DumpLine<'a> {
    /// The record's LSN.
    pub lsn: u64,
    /// The shard that wrote it (65535 = recovery repairs).
    pub shard: u16,
    /// The shard's batch sequence.
    pub seq: u64,
    /// The event.
    pub event: &'a Event,
}

/// Call `out` with every event in log order.
///
/// # Errors
/// As [`inspect`]; or whatever `out` returns.
pub fn dump(data_dir: &Path, mut out: impl FnMut(&DumpLine<'_>) -> std::io::Result<()>) -> PersistenceResult<u64> {
    let store = SledStore::open(data_dir)?;
    let mut n = 0;
    for r in store.iter() {
        let (lsn, bytes) = r?;
        let (h, events) = decode_record(lsn, &bytes)?;
        for event in &events {
            out(&DumpLine { lsn, shard: h.shard, seq: h.seq, event })?;
            n += 1;
        }
    }
    Ok(n)
}
