//! Partition snapshots in a JetStream object store, and trimming a partition's subject behind
//! them (issue 16).
//!
//! A snapshot of partition *p* is the state its log's prefix up to stream sequence *S*
//! replays to, *before* reconciling (a pure function of the log: whoever computes it gets the
//! same state), stored as the object `p<p>.<S>` (S zero-padded, so names sort by sequence) in
//! the bucket `SURGE_SNAPSHOTS`, encoded as a WAL snapshot file (`surge_persistence::codec`,
//! checksummed). Recovery loads the newest snapshot and replays only the messages after it.
//!
//! [`compact`] is how a snapshot is made: the partition's owner takes the newest snapshot,
//! replays the messages after it, stores the result, and then purges the subject's messages
//! *older than the previous snapshot* (two generations are kept, so a replayer that has just
//! loaded the previous one still finds every message after it), keeping at least the subject's
//! last message (the fencing header compares against it). It purges only while its lease is
//! valid (the caller checks), so a deposed owner cannot purge under its successor's replay.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use surge_cluster::partition_log::{PartitionLogConfig, PartitionLogs};
//! use surge_cluster::snapshot::Snapshots;
//! let js = async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await?);
//! let logs = PartitionLogs::open(&js, PartitionLogConfig::default()).await?;
//! let snaps = Snapshots::open(&js, 1).await?;
//! let (state, fixes, snapshot_seq) = surge_cluster::journal::replay_partition(&logs, &snaps, 3, 8).await?;
//! # let _ = (state, fixes, snapshot_seq);
//! # Ok(()) }
//! ```

use futures_util::StreamExt;
use surge_engine::EngineState;
use surge_persistence::codec::{decode_snapshot, encode_snapshot, SnapshotFile};
use tokio::io::AsyncReadExt;

use crate::partition_log::{LogError, PartitionLogs};

/// The object store's default bucket.
pub const BUCKET_DEFAULT: &str = "SURGE_SNAPSHOTS";

fn err(e: impl std::fmt::Display) -> LogError {
    LogError(format!("snapshots: {e}"))
}

fn name(p: u32, seq: u64) -> String {
    format!("p{p}.{seq:020}")
}

/// `p<p>.<seq>` → `seq`, for partition `p`'s objects only.
fn seq_of(p: u32, object: &str) -> Option<u64> {
    object.strip_prefix(&format!("p{p}."))?.parse().ok()
}

/// The snapshot bucket.
#[derive(Clone)]
pub struct Snapshots {
    store: async_nats::jetstream::object_store::ObjectStore,
}

impl Snapshots {
    /// Open (create if missing) the bucket, with `replicas` replicas.
    ///
    /// # Errors
    /// [`LogError`] when the bucket cannot be created or opened.
    pub async fn open(js: &async_nats::jetstream::Context, replicas: usize) -> Result<Self, LogError> {
        let store = match js.get_object_store(BUCKET_DEFAULT).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(async_nats::jetstream::object_store::Config {
                    bucket: BUCKET_DEFAULT.into(),
                    num_replicas: replicas,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(err)?,
        };
        Ok(Self { store })
    }

    /// Partition `p`'s snapshot sequences, ascending.
    ///
    /// # Errors
    /// [`LogError`] when the bucket cannot be listed.
    pub async fn sequences(&self, p: u32) -> Result<Vec<u64>, LogError> {
        let mut list = self.store.list().await.map_err(err)?;
        let mut out = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(err)?;
            if let Some(seq) = seq_of(p, &info.name).filter(|_| !info.deleted) {
                out.push(seq);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Partition `p`'s newest snapshot: (sequence, state), if any.
    ///
    /// # Errors
    /// [`LogError`] when the bucket cannot be read or the object does not decode.
    pub async fn latest(&self, p: u32) -> Result<Option<(u64, EngineState)>, LogError> {
        let Some(seq) = self.sequences(p).await?.last().copied() else { return Ok(None) };
        let mut object = self.store.get(name(p, seq)).await.map_err(err)?;
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await.map_err(err)?;
        let file = decode_snapshot(&name(p, seq), &bytes).map_err(err)?;
        Ok(Some((seq, file.state)))
    }

    /// Store partition `p`'s state as of stream sequence `seq`.
    ///
    /// # Errors
    /// [`LogError`] when it cannot be encoded or stored.
    pub async fn put(&self, p: u32, seq: u64, state: EngineState) -> Result<(), LogError> {
        let file = SnapshotFile { lsn: seq, base: seq, cuts: Vec::new(), state };
        let bytes = encode_snapshot(&file).map_err(err)?;
        self.store.put(name(p, seq).as_str(), &mut bytes.as_slice()).await.map_err(err)?;
        Ok(())
    }

    /// Delete partition `p`'s snapshots older than `keep_from`.
    ///
    /// # Errors
    /// [`LogError`] when the bucket cannot be listed or an object deleted.
    pub async fn prune(&self, p: u32, keep_from: u64) -> Result<(), LogError> {
        for seq in self.sequences(p).await?.into_iter().filter(|s| *s < keep_from) {
            self.store.delete(name(p, seq)).await.map_err(err)?;
        }
        Ok(())
    }
}

/// What [`compact`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    /// The new snapshot's stream sequence.
    pub snapshot_seq: u64,
    /// Messages replayed into it.
    pub replayed: usize,
    /// The subject's messages below this sequence were purged (0: none).
    pub purged_below: u64,
}

/// Snapshot partition `p` if at least `min_messages` messages follow its newest snapshot, and
/// trim the subject behind the previous one (see the module docs). `may_purge` is asked right
/// before the purge (the caller's lease must still be valid).
///
/// # Errors
/// [`LogError`] when the log or the bucket fails.
pub async fn compact(
    logs: &PartitionLogs,
    snaps: &Snapshots,
    p: u32,
    min_messages: usize,
    may_purge: impl Fn() -> bool,
) -> Result<Option<Compaction>, LogError> {
    let (base, mut state) = snaps.latest(p).await?.unwrap_or_default();
    let messages = logs.read_after(p, base).await?;
    if messages.len() < min_messages.max(1) {
        return Ok(None);
    }
    crate::journal::apply_messages(&mut state, &messages)?;
    let snapshot_seq = messages.last().map_or(base, |(seq, _)| *seq);
    snaps.put(p, snapshot_seq, state).await?;
    // Two generations: the previous snapshot (`base`) stays, and so does every message after
    // it; older snapshots and messages go.
    let mut purged_below = 0;
    if base > 0 && may_purge() {
        logs.purge_below(p, base).await?;
        snaps.prune(p, base).await?;
        purged_below = base;
    }
    Ok(Some(Compaction { snapshot_seq, replayed: messages.len(), purged_below }))
}
