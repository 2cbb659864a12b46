//! [`SimDisk`]: the engine simulator's [`Disk`] over a [`SimStore`], through the real
//! persistence code: the WAL codec (`encode_records`, split by bytes), the writer's order of
//! operations (append, archive, flush with fsync), recovery (`recovery::recover`: snapshot with
//! fallback, replay, archive-aware reconcile, repairs logged durably), and snapshots with the
//! WAL trim (`snapshot::write_and_trim`). Only the threads are gone: the simulator calls these
//! one at a time, in the order its seed chooses.

use std::sync::Arc;

use surge_engine::sim::{Disk, DiskFault, GroupEntry, Recovery};
use surge_engine::{EngineState, Event, Order, OrderArchive, OrderEvent};

use super::{FaultRates, SimConfig, SimStore};
use crate::codec::{encode_records, SnapshotFile};
use crate::durable::{log_repairs, StoreArchive};
use crate::snapshot::{self, KeptSnapshot};
use crate::storage::Storage;
use crate::LogStore;

/// The simulator's disk over a [`SimStore`] (see the module docs).
///
/// ```
/// use surge_engine::sim::{run_on, Bug, SimConfig};
/// use surge_persistence::sim::SimDisk;
/// let config = SimConfig { seed: 3, ops: 300, crash_rate: 0.002, ..SimConfig::default() };
/// let report = run_on(&config, Box::new(SimDisk::new(3, 0.001, 0.5)), Bug::None).unwrap();
/// assert_eq!(report.ops, 300);
/// ```
pub struct SimDisk {
    store: SimStore,
    storage: Arc<dyn Storage>,
    /// The next LSN the writer gives.
    next_lsn: u64,
    /// The last LSN written, and the last one synced (a snapshot file records the latter).
    written_lsn: u64,
    durable_lsn: u64,
    /// Journal positions of this run start above this.
    base: u64,
    /// The newest verified snapshot: the next trim's bound.
    kept: Option<KeptSnapshot>,
    /// Shard count recorded on first recovery.
    fresh: bool,
}

impl SimDisk {
    /// A fresh simulated data directory: faults follow `seed`; every write and fsync fails
    /// with probability `fault_rate` (I/O error, `ENOSPC` and fsync errors each at that rate);
    /// a crash keeps a torn prefix of the unsynced writes with probability `torn_probability`.
    pub fn new(seed: u64, fault_rate: f64, torn_probability: f64) -> Self {
        let config = SimConfig {
            faults: FaultRates { latency_spike: 0.0, ..FaultRates::uniform(fault_rate) },
            torn_write_probability: torn_probability,
            ..SimConfig::new(seed ^ 0x5EED_D15C)
        };
        let store = SimStore::new(config);
        let storage: Arc<dyn Storage> = Arc::new(store.clone());
        Self { store, storage, next_lsn: 1, written_lsn: 0, durable_lsn: 0, base: 0, kept: None, fresh: true }
    }

    /// The store underneath (its statistics, its digest).
    pub fn store(&self) -> &SimStore {
        &self.store
    }
}

fn fault(e: impl std::fmt::Display) -> DiskFault {
    DiskFault(e.to_string())
}

impl Disk for SimDisk {
    fn write(&mut self, group: &[GroupEntry<'_>]) -> Result<(), DiskFault> {
        let mut records = Vec::new();
        let mut archived: Vec<Arc<Order>> = Vec::new();
        for (shard, seq, events) in group {
            if events.is_empty() {
                continue;
            }
            let shard = u16::try_from(*shard).map_err(fault)?;
            for bytes in encode_records(shard, *seq, events).map_err(fault)? {
                records.push((self.next_lsn, bytes));
                self.next_lsn += 1;
            }
            archived.extend(events.iter().filter_map(|e| match e {
                Event::Order(OrderEvent::Archived(o)) => Some(o.clone()),
                _ => None,
            }));
        }
        if records.is_empty() {
            return Ok(());
        }
        // The writer's order: records, then the archive, both before the flush.
        self.store.append(&records).map_err(fault)?;
        self.store.archive(&archived).map_err(fault)?;
        self.written_lsn = self.next_lsn - 1;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), DiskFault> {
        self.store.flush(true).map_err(fault)?;
        self.durable_lsn = self.written_lsn;
        Ok(())
    }

    fn snapshot(&mut self, state: EngineState, cuts: Vec<u64>) -> Result<(), DiskFault> {
        let file = SnapshotFile { lsn: self.durable_lsn, base: self.base, cuts, state };
        snapshot::write_and_trim(&*self.storage, &mut self.kept, &file).map(|_| ()).map_err(fault)
    }

    fn crash(&mut self) {
        self.store.crash();
    }

    fn recover(&mut self) -> Result<Recovery, String> {
        // Recovery and the repairs' write run on a disk without faults: a fault there ends the
        // process again in production, which the simulator models as the next crash instead.
        let faults = self.store.faults();
        self.store.set_faults(FaultRates::default());
        let result = self.recover_now();
        self.store.set_faults(faults);
        result
    }

    fn archive(&self) -> Arc<dyn OrderArchive> {
        Arc::new(StoreArchive(Arc::downgrade(&self.storage)))
    }

    fn archived_orders(&self) -> Vec<Arc<Order>> {
        self.store.archived_orders().into_iter().map(Arc::new).collect()
    }
}

impl SimDisk {
    fn recover_now(&mut self) -> Result<Recovery, String> {
        if std::mem::take(&mut self.fresh) {
            // As `DurableEngine` opens a new directory: its log is complete from the start.
            self.storage.set_meta_u64(snapshot::META_WAL_TRIMMED_BY, 0).map_err(|e| e.to_string())?;
            self.store.flush(true).map_err(|e| e.to_string())?;
        }
        let recovered = crate::recovery::recover(&*self.storage).map_err(|e| format!("recovery refused: {e}"))?;
        let mut next_lsn = recovered.stats.last_lsn.max(recovered.stats.snapshot_lsn.unwrap_or(0)) + 1;
        next_lsn = log_repairs(&mut self.store, &recovered, next_lsn, true).map_err(|e| e.to_string())?;
        self.next_lsn = next_lsn;
        self.written_lsn = next_lsn - 1;
        self.durable_lsn = next_lsn - 1;
        self.base = recovered.base;
        self.kept = recovered.kept;
        Ok(Recovery { state: recovered.state, base: recovered.base })
    }
}
