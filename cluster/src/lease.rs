//! Partition ownership as leases in a replicated JetStream KV bucket (issue 16).
//!
//! # Shape
//! One key per partition (`p<partition>`), whose value names the holder: its node id, the
//! incarnation of its process (so a restarted node never mistakes its old self's lease for its
//! own) and the lease's epoch (the fencing token: it grows with every claim). Every write is a
//! compare-and-set on the key's revision (`Nats-Expected-Last-Subject-Sequence`): a claim
//! creates the key or replaces an expired holder, a renewal rewrites the holder's own revision.
//!
//! # Expiry without clocks
//! A lease expires when its key keeps the same revision for `lease_ms`, as measured by the node
//! that wants it on its own monotonic clock from the moment it first saw that revision. No wall
//! clock is compared across machines (the Chubby/etcd-lease argument): the holder wrote that
//! revision before the claimant saw it, so the claimant's earliest claim comes more than
//! `lease_ms` after the holder *sent* its last successful write. The holder serves only until
//! `sent + lease_ms - safety_ms` by its own monotonic clock ([`Lease::is_valid`]), so it has
//! stopped before any claim can succeed, as long as the clocks' rates differ by less than
//! `safety_ms / lease_ms`. The journal's own fencing (`Nats-Expected-Last-Subject-Sequence` on
//! every append) refuses a deposed owner's writes even if this argument's assumptions break.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use surge_cluster::lease::{LeaseConfig, Leases};
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let js = async_nats::jetstream::new(client);
//! let leases = Leases::open(&js, LeaseConfig::new("node-a")).await?;
//! let mut lease = leases.claim(7).await?;
//! assert!(lease.is_valid());
//! leases.renew(&mut lease).await?; // every lease_ms / 3
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::jetstream::Context;
use serde::{Deserialize, Serialize};

/// The lease bucket's default name.
pub const BUCKET_DEFAULT: &str = "SURGE_LEASES";
/// Longest node id (bytes).
pub const NODE_ID_BYTES_MAX: usize = 64;

/// How leases are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// This node's id: ASCII letters, digits, `-`, `_`; 1 to [`NODE_ID_BYTES_MAX`] bytes.
    pub node_id: String,
    /// The KV bucket (created if missing, history 1, file storage).
    pub bucket: String,
    /// Replicas of the bucket (R3 in production; 1 on a single test server).
    pub replicas: usize,
    /// A revision unchanged this long (ms, the claimant's monotonic clock) is expired. Default
    /// 15,000: a holder must outlive a NATS server's death, after which the bucket's Raft group
    /// needs an election (nats-server waits 4–9 s for a lost leader: `minElectionTimeoutDefault`
    /// and `maxElectionTimeoutDefault` in its `server/raft.go`) before a renewal can land.
    pub lease_ms: u64,
    /// The holder stops serving this long (ms) before `lease_ms` after its last write was sent.
    /// Default 2,000: covers clock rate drift (far below 1%) and scheduling delays.
    pub safety_ms: u64,
}

impl LeaseConfig {
    /// Defaults for `node_id`: bucket [`BUCKET_DEFAULT`], one replica, `lease_ms` 15,000,
    /// `safety_ms` 2,000.
    pub fn new(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_owned(),
            bucket: BUCKET_DEFAULT.into(),
            replicas: 1,
            lease_ms: 15_000,
            safety_ms: 2_000,
        }
    }

    /// Check the values.
    ///
    /// # Errors
    /// [`LeaseError::Config`] naming the bad value.
    pub fn validate(&self) -> Result<(), LeaseError> {
        let id_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if self.node_id.is_empty() || self.node_id.len() > NODE_ID_BYTES_MAX || !self.node_id.bytes().all(id_ok) {
            return Err(LeaseError::Config(format!(
                "node_id {:?}: 1 to 64 ASCII letters, digits, '-', '_'",
                self.node_id
            )));
        }
        if self.safety_ms == 0 || self.lease_ms < 2 * self.safety_ms {
            return Err(LeaseError::Config(format!(
                "lease_ms ({}) must be at least twice safety_ms ({}), which must be positive",
                self.lease_ms, self.safety_ms
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(LeaseError::Config(format!("replicas {}: 1 to 5", self.replicas)));
        }
        Ok(())
    }
}

/// Who holds a partition, as stored in its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The node.
    pub node_id: String,
    /// Its process's incarnation (unique per [`Leases::open`]: the revision of a write to the
    /// node's key `node.<node_id>` in the same bucket).
    pub incarnation: u64,
    /// The fencing token: one more than the previous holder's.
    pub epoch: u64,
    /// False once the holder released it (anyone may claim at once).
    pub held: bool,
}

/// A lease this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The partition.
    pub partition: u32,
    /// The fencing token.
    pub epoch: u64,
    /// The key's revision this node wrote last.
    pub revision: u64,
    /// Serve only before this instant (see the module docs).
    pub valid_until: Instant,
}

impl Lease {
    /// Still safe to serve the partition.
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another node holds it; retry after `retry_after_ms` at the earliest.
    #[error("partition {partition} is held by {node_id} (epoch {epoch}); retry in {retry_after_ms} ms")]
    Held {
        /// The partition.
        partition: u32,
        /// Its holder.
        node_id: String,
        /// The holder's epoch.
        epoch: u64,
        /// When its revision would expire, if it does not change.
        retry_after_ms: u64,
    },
    /// The lease was taken over (or changed under us): stop serving the partition now.
    #[error("lease of partition {partition} lost")]
    Lost {
        /// The partition.
        partition: u32,
    },
    /// A bad configuration value.
    #[error("lease config: {0}")]
    Config(String),
    /// NATS failed (timeout, no quorum, connection); the lease's state is unknown: a holder keeps
    /// serving only while [`Lease::is_valid`].
    #[error("lease store: {0}")]
    Store(String),
}

fn store_err(e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Store(e.to_string())
}

/// The lease bucket, from one node's point of view.
pub struct Leases {
    kv: kv::Store,
    cfg: LeaseConfig,
    incarnation: u64,
    /// Revisions of other holders' keys and when this node first saw each (for expiry).
    seen: Mutex<HashMap<u32, (u64, Instant)>>,
}

impl Leases {
    /// Open (create if missing) the bucket of `cfg`.
    ///
    /// # Errors
    /// [`LeaseError::Config`]; [`LeaseError::Store`] when the bucket cannot be created or read.
    pub async fn open(js: &Context, cfg: LeaseConfig) -> Result<Self, LeaseError> {
        cfg.validate()?;
        let kv_cfg = kv::Config {
            bucket: cfg.bucket.clone(),
            history: 1,
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: cfg.replicas,
            ..Default::default()
        };
        let kv = match js.get_key_value(&cfg.bucket).await {
            Ok(kv) => kv,
            Err(_) => js.create_key_value(kv_cfg).await.map_err(store_err)?,
        };
        // The incarnation is the revision of a write to the node's own key: the bucket's
        // sequence never repeats, so neither does an incarnation.
        let incarnation = kv.put(format!("node.{}", cfg.node_id), bytes::Bytes::new()).await.map_err(store_err)?;
        Ok(Self { kv, cfg, incarnation, seen: Mutex::new(HashMap::new()) })
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.cfg.node_id
    }

    /// Announce this node alive: rewrite its key `node.<id>` (each renewal round). Other nodes
    /// count it live while that key's revision keeps changing within `lease_ms`, as for leases.
    ///
    /// # Errors
    /// [`LeaseError::Store`].
    pub async fn heartbeat(&self) -> Result<(), LeaseError> {
        self.kv.put(format!("node.{}", self.cfg.node_id), bytes::Bytes::new()).await.map(drop).map_err(store_err)
    }

    /// Remove this node's key (a clean stop: the others rebalance at once).
    ///
    /// # Errors
    /// [`LeaseError::Store`].
    pub async fn leave(&self) -> Result<(), LeaseError> {
        self.kv.delete(format!("node.{}", self.cfg.node_id)).await.map_err(store_err)
    }

    /// Every node that announced itself and did not leave: (node id, its key's revision).
    ///
    /// # Errors
    /// [`LeaseError::Store`].
    pub async fn members(&self) -> Result<Vec<(String, u64)>, LeaseError> {
        use futures_util::StreamExt;
        let mut keys = self.kv.keys().await.map_err(store_err)?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(store_err)?;
            let Some(node) = key.strip_prefix("node.") else { continue };
            if let Some(e) = self.kv.entry(&key).await.map_err(store_err)? {
                if e.operation == Operation::Put {
                    out.push((node.to_owned(), e.revision));
                }
            }
        }
        Ok(out)
    }

    /// The holder of `partition`, with the key's revision, if any.
    ///
    /// # Errors
    /// [`LeaseError::Store`].
    pub async fn holder(&self, partition: u32) -> Result<Option<(Holder, u64)>, LeaseError> {
        let entry = self.kv.entry(key(partition)).await.map_err(store_err)?;
        Ok(entry.and_then(|e| match e.operation {
            Operation::Put => serde_json::from_slice::<Holder>(&e.value).ok().map(|h| (h, e.revision)),
            Operation::Delete | Operation::Purge => None,
        }))
    }

    /// Claim `partition`: free (never held, or released), or held by a revision this node has
    /// seen unchanged for `lease_ms`.
    ///
    /// # Errors
    /// [`LeaseError::Held`] while another holder's lease runs (call again later: the first call
    /// starts the expiry clock); [`LeaseError::Lost`] when another node won the race;
    /// [`LeaseError::Store`].
    pub async fn claim(&self, partition: u32) -> Result<Lease, LeaseError> {
        let current = self.holder(partition).await?;
        let epoch = current.as_ref().map_or(0, |(h, _)| h.epoch) + 1;
        if let Some((h, revision)) = &current {
            if h.held {
                self.expired(partition, h, *revision)?;
            }
        }
        let value = self.value(epoch, true)?;
        let sent = Instant::now();
        let written = match &current {
            None => self.kv.create(key(partition), value).await.map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => LeaseError::Lost { partition },
                _ => store_err(e),
            })?,
            Some((_, revision)) => self.update(partition, value, *revision).await?,
        };
        self.forget(partition);
        Ok(Lease { partition, epoch, revision: written, valid_until: self.valid_from(sent) })
    }

    /// Renew `lease` (every `lease_ms / 3` or so): rewrite its revision.
    ///
    /// # Errors
    /// [`LeaseError::Lost`] when the key changed (taken over): stop serving at once;
    /// [`LeaseError::Store`]: keep serving only while [`Lease::is_valid`], and retry.
    pub async fn renew(&self, lease: &mut Lease) -> Result<(), LeaseError> {
        let value = self.value(lease.epoch, true)?;
        let sent = Instant::now();
        // Bounded well inside the lease: a NATS server that dies with the write in flight must
        // not hold the renewal past the lease's validity; the caller retries.
        let wait = Duration::from_millis((self.cfg.lease_ms / 6).max(100));
        match tokio::time::timeout(wait, self.update(lease.partition, value, lease.revision)).await {
            Ok(Ok(revision)) => {
                lease.revision = revision;
                lease.valid_until = self.valid_from(sent);
                Ok(())
            }
            Ok(Err(LeaseError::Lost { partition })) => self.adopt(lease, partition, sent).await,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(LeaseError::Store("renewal not acknowledged in time".into())),
        }
    }

    /// After a refused renewal: if the key holds this very holder's value (an earlier attempt
    /// landed though its acknowledgement was lost), take its revision; else the lease is lost.
    async fn adopt(&self, lease: &mut Lease, partition: u32, sent: Instant) -> Result<(), LeaseError> {
        match self.holder(partition).await? {
            Some((h, revision))
                if h.held
                    && h.epoch == lease.epoch
                    && h.incarnation == self.incarnation
                    && h.node_id == self.cfg.node_id =>
            {
                lease.revision = revision;
                lease.valid_until = self.valid_from(sent);
                Ok(())
            }
            _ => Err(LeaseError::Lost { partition }),
        }
    }

    /// Give `lease` up (a clean shutdown, or a rebalance): anyone may claim at once.
    ///
    /// # Errors
    /// [`LeaseError::Lost`] when it was already taken over; [`LeaseError::Store`].
    pub async fn release(&self, lease: Lease) -> Result<(), LeaseError> {
        let value = self.value(lease.epoch, false)?;
        self.update(lease.partition, value, lease.revision).await.map(drop)
    }

    /// Note that `partition`'s key has `revision` now: its expiry clock starts at the first
    /// sighting of a revision. A node that reads every holder each round (the control loop)
    /// starts the clock of a dead holder's lease at its last renewal, not at its own first
    /// claim attempt, so failover takes `lease_ms`, not twice that.
    pub fn observe(&self, partition: u32, revision: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.get(&partition) {
            Some((r, _)) if *r == revision => {}
            _ => {
                seen.insert(partition, (revision, Instant::now()));
            }
        }
    }

    /// Record `partitions` as the cluster's partition count on first use, or check it against
    /// the recorded one: a node with another count would route keys to other partitions.
    ///
    /// # Errors
    /// [`LeaseError::Config`] on a mismatch; [`LeaseError::Store`].
    pub async fn pin_partitions(&self, partitions: u32) -> Result<(), LeaseError> {
        let value = bytes::Bytes::from(partitions.to_string());
        match self.kv.create("config.partitions", value).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(store_err(e)),
        }
        let stored = self.kv.get("config.partitions").await.map_err(store_err)?;
        let stored = stored.and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse::<u32>().ok()));
        match stored {
            Some(p) if p == partitions => Ok(()),
            Some(p) => Err(LeaseError::Config(format!(
                "this cluster was created with {p} partitions; this node is configured with {partitions}"
            ))),
            None => Err(LeaseError::Store("config.partitions is unreadable".into())),
        }
    }

    /// Refuse a claim while `h`'s revision has not been seen unchanged for `lease_ms`.
    fn expired(&self, partition: u32, h: &Holder, revision: u64) -> Result<(), LeaseError> {
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let first = match seen.get(&partition) {
            Some((r, at)) if *r == revision => *at,
            _ => {
                seen.insert(partition, (revision, now));
                now
            }
        };
        let waited = now.saturating_duration_since(first);
        let lease = Duration::from_millis(self.cfg.lease_ms);
        if waited >= lease {
            return Ok(());
        }
        let retry_after_ms = u64::try_from((lease - waited).as_millis()).unwrap_or(u64::MAX);
        Err(LeaseError::Held { partition, node_id: h.node_id.clone(), epoch: h.epoch, retry_after_ms })
    }

    fn forget(&self, partition: u32) {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&partition);
    }

    async fn update(&self, partition: u32, value: bytes::Bytes, revision: u64) -> Result<u64, LeaseError> {
        self.kv.update(key(partition), value, revision).await.map_err(|e| match e.kind() {
            UpdateErrorKind::WrongLastRevision => LeaseError::Lost { partition },
            _ => store_err(e),
        })
    }

    fn value(&self, epoch: u64, held: bool) -> Result<bytes::Bytes, LeaseError> {
        let h = Holder { node_id: self.cfg.node_id.clone(), incarnation: self.incarnation, epoch, held };
        serde_json::to_vec(&h).map(bytes::Bytes::from).map_err(store_err)
    }

    fn valid_from(&self, sent: Instant) -> Instant {
        sent + Duration::from_millis(self.cfg.lease_ms - self.cfg.safety_ms)
    }
}

/// The key of `partition`.
fn key(partition: u32) -> String {
    format!("p{partition}")
}
