//! The simulator's durable half as a port: [`Disk`] is what a simulated run writes its group
//! commits to, snapshots into, crashes, and recovers from. [`MemDisk`] is the engine's own
//! (events in memory, recovery by the engine's `EngineState::apply` and `reconcile_with`);
//! `surge_persistence::sim::SimDisk` runs the real WAL codec, recovery, snapshot and trimming
//! code over `SimStore` (the `surge sim` command and the CI simulation use it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::prng::SplitMix64;
use crate::domain::{Order, OrderId};
use crate::event::{Event, OrderArchive, OrderEvent};
use crate::state::EngineState;

/// One batch of a group commit: (shard, the batch's journal position `seq`, its events).
pub type GroupEntry<'a> = (usize, u64, &'a [Event]);

/// A storage operation failed (a simulated I/O error, `ENOSPC` or failed fsync). The run
/// treats it as production does: the writer fails every waiting batch, the process exits
/// (fail-stop), and recovery runs on restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFault(pub String);

/// What recovery rebuilt.
pub struct Recovery {
    /// Every actor's state, with recovery's repairs applied (and logged durably).
    pub state: EngineState,
    /// Journal positions of the new run start above this (as `Recovered::base` in
    /// `surge_persistence`).
    pub base: u64,
}

/// The durable storage of a simulated run. Implementations are deterministic: the same calls
/// give the same results (faults come from their own seeded PRNG).
pub trait Disk {
    /// Write one group commit, batches in submission order (their records and, for archived
    /// orders, the archive): written, not yet durable.
    ///
    /// # Errors
    /// [`DiskFault`]: nothing of the group may be relied on.
    fn write(&mut self, group: &[GroupEntry<'_>]) -> Result<(), DiskFault>;

    /// Make everything written so far durable (fsync).
    ///
    /// # Errors
    /// [`DiskFault`]: what was written is not known to be durable.
    fn sync(&mut self) -> Result<(), DiskFault>;

    /// Take a snapshot of `state`, whose cut is `cuts` (per shard, the last journal position
    /// it includes), and trim the log behind the previous one. The default keeps none.
    ///
    /// # Errors
    /// [`DiskFault`]: the snapshot was not taken (the log still holds everything).
    fn snapshot(&mut self, state: EngineState, cuts: Vec<u64>) -> Result<(), DiskFault> {
        let _ = (state, cuts);
        Ok(())
    }

    /// Power loss: whatever was not synced may be gone.
    fn crash(&mut self);

    /// Rebuild the state from what survived (and log recovery's repairs durably).
    ///
    /// # Errors
    /// Recovery refused what it read (a record or snapshot that does not decode): a
    /// violation, since the simulated disk only loses unsynced data.
    fn recover(&mut self) -> Result<Recovery, String>;

    /// The archive of terminal orders, as the engine reads it.
    fn archive(&self) -> Arc<dyn OrderArchive>;

    /// Every archived order (the checker's end-of-run and after-recovery view).
    fn archived_orders(&self) -> Vec<Arc<Order>>;
}

/// The archive of a [`MemDisk`]: what its written image holds.
#[derive(Default)]
pub struct MemArchive(Mutex<BTreeMap<OrderId, Arc<Order>>>);

impl MemArchive {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<OrderId, Arc<Order>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl OrderArchive for MemArchive {
    fn get(&self, order_id: OrderId) -> Option<Arc<Order>> {
        self.map().get(&order_id).cloned()
    }

    fn list_user(&self, user_id: &str) -> Vec<OrderId> {
        self.map().values().filter(|o| &*o.user_id == user_id).map(|o| o.order_id).collect()
    }

    fn highest_id(&self) -> Option<OrderId> {
        self.map().keys().next_back().copied()
    }
}

/// A test-only defect of [`MemDisk`]'s recovery (the simulator's planted bugs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryBug {
    /// None: recovery as the engine does it.
    #[default]
    None,
    /// Reconcile without the archive: a crash between `order_archived` and its SKU's
    /// `holding_forgotten` restocks sold units (the bug issue 10 item 1 fixed).
    IgnoreArchive,
}

/// The engine's own simulated disk: events in memory, split into synced and written-only;
/// faults at `fault_rate` per write or sync; recovery replays the synced events with
/// [`EngineState::apply`] and repairs with [`EngineState::reconcile_with`], consulting the
/// archive. No snapshots (recovery replays from the start), no torn writes: those are
/// `surge_persistence::sim`'s.
///
/// ```
/// use surge_engine::sim::{Disk, MemDisk};
/// let mut disk = MemDisk::new(1, 0.0);
/// disk.write(&[]).unwrap();
/// disk.sync().unwrap();
/// assert!(disk.recover().unwrap().state.skus.is_empty());
/// ```
pub struct MemDisk {
    rng: SplitMix64,
    fault_rate: f64,
    synced: Vec<Event>,
    written: Vec<Event>,
    archive: Arc<MemArchive>,
    bug: RecoveryBug,
}

impl MemDisk {
    /// A disk whose faults follow `seed`; each write or sync fails with probability
    /// `fault_rate` (0 for a perfect disk).
    pub fn new(seed: u64, fault_rate: f64) -> Self {
        Self {
            rng: SplitMix64::new(seed ^ 0xD15C),
            fault_rate,
            synced: Vec::new(),
            written: Vec::new(),
            archive: Arc::default(),
            bug: RecoveryBug::None,
        }
    }

    /// Plant `bug` in recovery (tests show the simulator catches it).
    pub fn with_bug(mut self, bug: RecoveryBug) -> Self {
        self.bug = bug;
        self
    }

    fn roll(&mut self, what: &str) -> Result<(), DiskFault> {
        if self.fault_rate > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < self.fault_rate {
            return Err(DiskFault(format!("simulated {what} error")));
        }
        Ok(())
    }
}

impl Disk for MemDisk {
    fn write(&mut self, group: &[GroupEntry<'_>]) -> Result<(), DiskFault> {
        self.roll("write")?;
        let mut archive = self.archive.map();
        for (_, _, events) in group {
            for e in events.iter() {
                if let Event::Order(OrderEvent::Archived(o)) = e {
                    archive.insert(o.order_id, o.clone());
                }
            }
            self.written.extend(events.iter().cloned());
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), DiskFault> {
        self.roll("fsync")?;
        self.synced.append(&mut self.written);
        Ok(())
    }

    fn crash(&mut self) {
        self.written.clear();
        let mut archive = self.archive.map();
        archive.clear();
        for e in &self.synced {
            if let Event::Order(OrderEvent::Archived(o)) = e {
                archive.insert(o.order_id, o.clone());
            }
        }
    }

    fn recover(&mut self) -> Result<Recovery, String> {
        let mut state = EngineState::default();
        for e in &self.synced {
            state.apply(e);
        }
        let fixes = match self.bug {
            RecoveryBug::None => {
                let archive = self.archive.clone();
                state.reconcile_with(&move |id| archive.get(id))
            }
            RecoveryBug::IgnoreArchive => state.reconcile_with(&|_| None),
        };
        // Logged durably before anything new, as `DurableEngine` does.
        self.synced.extend(fixes);
        Ok(Recovery { state, base: 0 })
    }

    fn archive(&self) -> Arc<dyn OrderArchive> {
        self.archive.clone()
    }

    fn archived_orders(&self) -> Vec<Arc<Order>> {
        self.archive.map().values().cloned().collect()
    }
}
