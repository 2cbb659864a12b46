//! One image of the simulated disk (the log, the archive, the meta facts) and the write
//! operations that change it, kept as data so a crash can replay a prefix of the unsynced ones.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

/// The contents of the simulated sled database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Image {
    /// LSN → record bytes.
    pub wal: BTreeMap<u64, Vec<u8>>,
    /// Order id → `codec::encode_order` bytes.
    pub archive: BTreeMap<u64, Vec<u8>>,
    /// (user id, order id): a user's archived orders.
    pub archive_by_user: BTreeSet<(String, u64)>,
    /// Meta facts.
    pub meta: BTreeMap<String, u64>,
}

/// One archived order as written.
#[derive(Debug, Clone)]
pub(crate) struct ArchivedEntry {
    pub order_id: u64,
    pub user_id: String,
    pub bytes: Vec<u8>,
}

/// A write to the image, in the order the store received it.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Log records (one sled batch).
    Append(Vec<(u64, Vec<u8>)>),
    /// Archived orders.
    Archive(Vec<ArchivedEntry>),
    /// The WAL trim: these LSNs go.
    Remove(Vec<u64>),
    /// A meta fact.
    Meta(String, u64),
}

impl Op {
    /// Items a torn write may cut between (1 for atomic operations).
    pub fn items(&self) -> usize {
        match self {
            Op::Append(r) => r.len(),
            Op::Archive(a) => a.len(),
            Op::Remove(_) | Op::Meta(..) => 1,
        }
    }

    /// The first `n` items of this operation (a torn write cut at an item boundary: sled
    /// checksums every message, so a torn write loses whole records, never leaves half of one).
    pub fn prefix(&self, n: usize) -> Op {
        match self {
            Op::Append(r) => Op::Append(r[..n.min(r.len())].to_vec()),
            Op::Archive(a) => Op::Archive(a[..n.min(a.len())].to_vec()),
            Op::Remove(_) | Op::Meta(..) if n == 0 => Op::Remove(Vec::new()),
            other => other.clone(),
        }
    }
}

impl Image {
    /// Apply one write.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(records) => {
                for (lsn, bytes) in records {
                    self.wal.insert(*lsn, bytes.clone());
                }
            }
            Op::Archive(entries) => {
                for e in entries {
                    self.archive.insert(e.order_id, e.bytes.clone());
                    self.archive_by_user.insert((e.user_id.clone(), e.order_id));
                }
            }
            Op::Remove(lsns) => {
                for lsn in lsns {
                    self.wal.remove(lsn);
                }
            }
            Op::Meta(key, value) => {
                self.meta.insert(key.clone(), *value);
            }
        }
    }

    /// A digest of the contents (SipHash with fixed keys: stable across runs).
    pub fn digest(&self) -> u64 {
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new();
        self.hash(&mut h);
        h.finish()
    }

    /// Bytes of log records held.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.values().map(|v| v.len() as u64).sum()
    }
}
