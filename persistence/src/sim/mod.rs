//! Simulated storage: [`SimStore`] holds a data directory (log, archive, meta facts, snapshot
//! files) in memory, so the real WAL writer, recovery, snapshot and trimming code run over a
//! disk a seed controls (issue 11 item 3; FoundationDB's simulated disk, TigerBeetle's VOPR
//! storage). Nothing here sleeps or touches a file.
//!
//! # Written versus synced
//! Every write lands in the *written* image (what reads see, like the OS page cache) and in a
//! queue of unsynced operations. [`crate::LogStore::flush`] with `sync == true` moves all of
//! them, in order, into the *synced* image; a snapshot file is written durably at once (the
//! real code fsyncs it, renames it and fsyncs the directory). `flush(false)` syncs nothing.
//! [`SimStore::crash`] is a power loss: only the synced image survives, and with probability
//! [`SimConfig::torn_write_probability`] a prefix of the unsynced operations survives too, the
//! last of them torn at a record boundary (sled recovers a prefix of its log and checksums each
//! message, so that is what it can leave behind).
//!
//! # Faults
//! Each write rolls the seeded PRNG against [`FaultRates`]: I/O errors, `ENOSPC`, fsync errors
//! (each failing the operation; a failed write writes nothing, a failed fsync leaves the data
//! unsynced) and latency spikes, which only add simulated time ([`SimStats::elapsed_us`]). The
//! same seed and the same sequence of operations give the same faults and the same surviving
//! state ([`SimStore::digest`]).
//!
//! ```
//! use surge_persistence::{sim::{SimConfig, SimStore}, LogStore, Storage};
//! let mut sim = SimStore::new(SimConfig::new(42));
//! sim.append(&[(1, b"synced".to_vec())]).unwrap();
//! sim.flush(true).unwrap();
//! sim.append(&[(2, b"written only".to_vec())]).unwrap();
//! assert_eq!(sim.record_count(), 2);
//! sim.crash();
//! assert_eq!(sim.record_count(), 1); // the unsynced record is gone (torn writes are off)
//! ```

#[cfg(any(test, feature = "sim"))]
mod disk;
mod faults;
mod image;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use surge_engine::Order;

#[cfg(any(test, feature = "sim"))]
pub use self::disk::SimDisk;
pub use self::faults::FaultRates;
use self::faults::Rng;
use self::image::{ArchivedEntry, Image, Op};
use crate::error::{PersistenceError, PersistenceResult};
use crate::storage::{RecordVisitor, SnapshotStore, Storage};
use crate::LogStore;

/// How a [`SimStore`] behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seeds the PRNG behind every fault and torn write.
    pub seed: u64,
    /// Fault rates per operation (none by default).
    pub faults: FaultRates,
    /// Probability that a crash keeps a torn prefix of the unsynced writes (0 by default).
    pub torn_write_probability: f64,
    /// Simulated time of a write, in microseconds.
    pub write_latency_us: u64,
    /// Simulated time of an fsync, in microseconds (DESIGN.md measured 150 µs p50 here).
    pub fsync_latency_us: u64,
}

impl SimConfig {
    /// A perfect disk (no faults, no torn writes) with the given seed.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            faults: FaultRates::default(),
            torn_write_probability: 0.0,
            write_latency_us: 10,
            fsync_latency_us: 150,
        }
    }
}

/// What the store did so far (counters since it was created).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Write and fsync operations attempted.
    pub ops: u64,
    /// Writes failed with a simulated I/O error.
    pub write_errors: u64,
    /// Writes failed with a simulated `ENOSPC`.
    pub no_space_errors: u64,
    /// Fsyncs failed.
    pub fsync_errors: u64,
    /// Latency spikes.
    pub latency_spikes: u64,
    /// Simulated time spent in storage, in microseconds.
    pub elapsed_us: u64,
    /// Crashes simulated.
    pub crashes: u64,
    /// Crashes that left a torn prefix of the unsynced writes.
    pub torn_writes: u64,
    /// Unsynced write operations lost by crashes.
    pub ops_lost: u64,
}

struct Inner {
    config: SimConfig,
    rng: Rng,
    /// What reads see.
    written: Image,
    /// What survives a crash.
    synced: Image,
    /// Writes in `written` not yet in `synced`, oldest first.
    unsynced: Vec<Op>,
    /// Snapshot files by number (written durably, see the module docs).
    snapshots: BTreeMap<u64, Vec<u8>>,
    stats: SimStats,
}

impl Inner {
    /// Roll for a write: latency, then I/O error, then `ENOSPC` (always three draws).
    fn write_fault(&mut self, what: &str) -> io::Result<()> {
        self.spend(self.config.write_latency_us);
        let (eio, enospc) =
            (self.rng.chance(self.config.faults.write_error), self.rng.chance(self.config.faults.no_space));
        if eio {
            self.stats.write_errors += 1;
            return Err(faults::write_error(what));
        }
        if enospc {
            self.stats.no_space_errors += 1;
            return Err(faults::no_space(what));
        }
        Ok(())
    }

    /// Roll for an fsync: latency, then failure.
    fn fsync_fault(&mut self, what: &str) -> io::Result<()> {
        self.spend(self.config.fsync_latency_us);
        if self.rng.chance(self.config.faults.fsync_error) {
            self.stats.fsync_errors += 1;
            return Err(faults::fsync_error(what));
        }
        Ok(())
    }

    fn spend(&mut self, base_us: u64) {
        self.stats.ops += 1;
        self.stats.elapsed_us += base_us;
        if self.rng.chance(self.config.faults.latency_spike) {
            self.stats.latency_spikes += 1;
            self.stats.elapsed_us += self.config.faults.latency_spike_us;
        }
    }

    fn write(&mut self, what: &str, op: Op) -> io::Result<()> {
        self.write_fault(what)?;
        self.written.apply(&op);
        self.unsynced.push(op);
        Ok(())
    }

    fn sync(&mut self) {
        for op in self.unsynced.drain(..) {
            self.synced.apply(&op);
        }
    }
}

/// An in-memory data directory with crashes and seeded faults (see the module docs). Clones
/// share the same disk: give one to [`crate::DurableEngine::open_on`] as the [`Storage`] and
/// one as the writer's [`LogStore`], keep one to crash it.
#[derive(Clone)]
pub struct SimStore {
    inner: Arc<Mutex<Inner>>,
}

impl SimStore {
    /// An empty disk.
    pub fn new(config: SimConfig) -> Self {
        let inner = Inner {
            rng: Rng::new(config.seed),
            config,
            written: Image::default(),
            synced: Image::default(),
            unsynced: Vec::new(),
            snapshots: BTreeMap::new(),
            stats: SimStats::default(),
        };
        Self { inner: Arc::new(Mutex::new(inner)) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock already failed the test or ended the process.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Simulate a power loss: keep the synced image (and, with probability
    /// [`SimConfig::torn_write_probability`], a torn prefix of the unsynced writes). Returns
    /// how many unsynced write operations were lost. Drop every engine using the store first.
    pub fn crash(&self) -> u64 {
        let mut g = self.lock();
        let inner = &mut *g;
        let unsynced = std::mem::take(&mut inner.unsynced);
        let torn = inner.rng.chance(inner.config.torn_write_probability);
        // Always three draws, so the sequence does not depend on what was unsynced.
        let k = inner.rng.below(unsynced.len());
        let cut = inner.rng.below(unsynced.get(k).map_or(0, Op::items));
        let mut kept = 0;
        if torn && !unsynced.is_empty() {
            for op in &unsynced[..k] {
                inner.synced.apply(op);
            }
            inner.synced.apply(&unsynced[k].prefix(cut));
            inner.stats.torn_writes += 1;
            kept = k;
        }
        let lost = (unsynced.len() - kept) as u64;
        inner.stats.ops_lost += lost;
        inner.stats.crashes += 1;
        inner.written = inner.synced.clone();
        lost
    }

    /// Every archived order the written image holds (a simulation's checker reads them all).
    pub fn archived_orders(&self) -> Vec<Order> {
        let g = self.lock();
        g.written.archive.values().filter_map(|b| crate::codec::decode_order(b)).collect()
    }

    /// The fault rates in force.
    pub fn faults(&self) -> FaultRates {
        self.lock().config.faults
    }

    /// Change the fault rates from now on (e.g. none while a checker reads).
    pub fn set_faults(&self, faults: FaultRates) {
        self.lock().config.faults = faults;
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    /// A digest of what would survive a crash now (synced image and snapshot files, the
    /// latter by decoded content), stable across runs: equal seeds and operations give equal
    /// digests.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let g = self.lock();
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new();
        g.synced.digest().hash(&mut h);
        for (number, bytes) in &g.snapshots {
            number.hash(&mut h);
            // By content, not bytes: bincode writes the state's hash maps in per-process order.
            match crate::codec::decode_snapshot("sim", bytes) {
                Ok(s) => (s.lsn, s.base, s.cuts, s.state.digest()).hash(&mut h),
                Err(_) => bytes.hash(&mut h),
            }
        }
        h.finish()
    }

    /// Flip one byte in the middle of snapshot `number` (bit rot, a lying disk), so recovery's
    /// checksum rejects it. False if there is no such snapshot.
    pub fn damage_snapshot(&self, number: u64) -> bool {
        let mut g = self.lock();
        match g.snapshots.get_mut(&number) {
            Some(bytes) if !bytes.is_empty() => {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x5A;
                true
            }
            _ => false,
        }
    }

    fn snapshot_path(number: u64) -> PathBuf {
        PathBuf::from(format!("sim/snapshots/snapshot-{number:020}.bin"))
    }
}

impl LogStore for SimStore {
    fn append(&mut self, records: &[(u64, Vec<u8>)]) -> io::Result<()> {
        self.lock().write("log append", Op::Append(records.to_vec()))
    }

    fn archive(&mut self, orders: &[Arc<Order>]) -> io::Result<()> {
        Storage::put_archived(self, orders)
    }

    fn flush(&mut self, sync: bool) -> io::Result<()> {
        let mut g = self.lock();
        // sled's flush hands its buffers to the OS: nothing to fail or keep in memory here.
        if sync {
            g.fsync_fault("log fsync")?;
            g.sync();
        }
        Ok(())
    }
}

impl Storage for SimStore {
    fn for_each_record(&self, visit: &mut RecordVisitor<'_>) -> PersistenceResult<()> {
        // A copy, so the lock is not held while the visitor decodes (the engine reads the archive).
        let wal = self.lock().written.wal.clone();
        for (lsn, bytes) in &wal {
            visit(*lsn, bytes)?;
        }
        Ok(())
    }

    fn remove_where(&self, covered: &mut dyn FnMut(u64, &[u8]) -> bool) -> PersistenceResult<u64> {
        let mut g = self.lock();
        let lsns: Vec<u64> = g.written.wal.iter().filter(|(l, b)| covered(**l, b)).map(|(l, _)| *l).collect();
        let n = lsns.len() as u64;
        g.write("log trim", Op::Remove(lsns))?;
        Ok(n)
    }

    fn record_count(&self) -> usize {
        self.lock().written.wal.len()
    }

    fn size_bytes(&self) -> u64 {
        self.lock().written.wal_bytes()
    }

    fn put_archived(&self, orders: &[Arc<Order>]) -> io::Result<()> {
        let mut entries = Vec::with_capacity(orders.len());
        for o in orders {
            let bytes = crate::codec::encode_order(o).map_err(|e| io::Error::other(e.to_string()))?;
            entries.push(ArchivedEntry { order_id: o.order_id.0, user_id: o.user_id.to_string(), bytes });
        }
        self.lock().write("archive put", Op::Archive(entries))
    }

    fn archived(&self, order_id: u64) -> Option<Order> {
        let bytes = self.lock().written.archive.get(&order_id)?.clone();
        crate::codec::decode_order(&bytes)
    }

    fn archived_ids_before(&self, user_id: &str, before: Option<u64>, limit: usize) -> Vec<u64> {
        let g = self.lock();
        let lo = (user_id.to_owned(), 0);
        let hi = (user_id.to_owned(), before.unwrap_or(u64::MAX));
        let range = g.written.archive_by_user.range(lo..=hi).rev();
        range.filter(|(_, id)| before.is_none_or(|b| *id < b)).take(limit).map(|(_, id)| *id).collect()
    }

    fn archived_max_id(&self) -> Option<u64> {
        self.lock().written.archive.keys().next_back().copied()
    }

    fn archived_count(&self) -> usize {
        self.lock().written.archive.len()
    }

    fn meta_u64(&self, key: &str) -> Option<u64> {
        self.lock().written.meta.get(key).copied()
    }

    fn set_meta_u64(&self, key: &str, value: u64) -> PersistenceResult<()> {
        Ok(self.lock().write("meta put", Op::Meta(key.to_owned(), value))?)
    }

    fn snapshots(&self) -> &dyn SnapshotStore {
        self
    }
}

impl SnapshotStore for SimStore {
    fn list(&self) -> PersistenceResult<Vec<(u64, PathBuf)>> {
        Ok(self.lock().snapshots.keys().map(|n| (*n, Self::snapshot_path(*n))).collect())
    }

    fn write_durable(&self, number: u64, bytes: &[u8]) -> PersistenceResult<PathBuf> {
        let mut g = self.lock();
        let what = "snapshot file";
        g.write_fault(what)?;
        g.fsync_fault(what)?;
        g.snapshots.insert(number, bytes.to_vec());
        Ok(Self::snapshot_path(number))
    }

    fn read(&self, number: u64) -> io::Result<Vec<u8>> {
        let g = self.lock();
        g.snapshots.get(&number).cloned().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such snapshot"))
    }

    fn remove(&self, number: u64) {
        self.lock().snapshots.remove(&number);
    }

    fn retain(&self, keep: &[u64]) -> PersistenceResult<()> {
        let mut g = self.lock();
        g.snapshots.retain(|n, _| keep.contains(n));
        // The removals happened; the directory fsync that makes them durable may still fail.
        g.fsync_fault("snapshot directory").map_err(PersistenceError::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(from: u64, n: u64) -> Vec<(u64, Vec<u8>)> {
        (from..from + n).map(|l| (l, l.to_le_bytes().to_vec())).collect()
    }

    #[test]
    fn a_crash_keeps_exactly_what_was_synced() {
        let mut sim = SimStore::new(SimConfig::new(1));
        sim.append(&records(1, 3)).unwrap();
        sim.set_meta_u64("k", 1).unwrap();
        sim.flush(true).unwrap();
        sim.append(&records(4, 2)).unwrap();
        sim.flush(false).unwrap(); // to the OS only: lost on power loss
        sim.set_meta_u64("k", 2).unwrap();
        assert_eq!((sim.record_count(), sim.meta_u64("k")), (5, Some(2)));
        assert_eq!(sim.crash(), 2);
        assert_eq!((sim.record_count(), sim.meta_u64("k")), (3, Some(1)));
    }

    #[test]
    fn a_torn_crash_keeps_a_prefix_of_the_unsynced_writes() {
        let config = SimConfig { torn_write_probability: 1.0, ..SimConfig::new(3) };
        let mut kept = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mut sim = SimStore::new(SimConfig { seed, ..config.clone() });
            sim.append(&records(1, 4)).unwrap();
            sim.append(&records(5, 4)).unwrap();
            sim.crash();
            let mut lsns = Vec::new();
            sim.for_each_record(&mut |lsn, _| {
                lsns.push(lsn);
                Ok(())
            })
            .unwrap();
            // A prefix in LSN order, never everything (the last surviving write is torn).
            assert_eq!(lsns, (1..=lsns.len() as u64).collect::<Vec<_>>(), "seed {seed}");
            assert!(lsns.len() < 8, "seed {seed}");
            kept.insert(lsns.len());
        }
        assert!(kept.len() > 3, "torn writes cut at many places: {kept:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_and_time() {
        let rates = FaultRates::uniform(0.2);
        let run = |seed| {
            let mut sim = SimStore::new(SimConfig { faults: rates, ..SimConfig::new(seed) });
            let outcomes: Vec<bool> =
                (0..200).map(|i| sim.append(&records(i + 1, 1)).is_ok() && sim.flush(true).is_ok()).collect();
            (outcomes, sim.stats(), sim.digest())
        };
        let (a, b, c) = (run(9), run(9), run(10));
        assert_eq!(a, b);
        assert_ne!(a.0, c.0);
        let s = &a.1;
        assert!(s.write_errors > 0 && s.no_space_errors > 0 && s.fsync_errors > 0 && s.latency_spikes > 0, "{s:?}");
        assert!(s.elapsed_us >= s.latency_spikes * rates.latency_spike_us, "{s:?}");
    }

    #[test]
    fn enospc_is_storage_full_and_writes_nothing() {
        let faults = FaultRates { no_space: 1.0, ..FaultRates::default() };
        let mut sim = SimStore::new(SimConfig { faults, ..SimConfig::new(5) });
        let e = sim.append(&records(1, 1)).unwrap_err();
        assert_eq!(e.kind(), io::Error::from_raw_os_error(28).kind(), "ENOSPC's kind");
        assert_eq!(sim.record_count(), 0);
        assert!(sim.snapshots().write_durable(1, b"x").is_err());
        assert!(sim.snapshots().list().unwrap().is_empty());
    }
}
