//! The engine's [`Journal`] over the partition logs (issue 16): shard *p* journals to partition
//! *p*, each group commit one fenced append (or a few, see *Payload*), and recovery replays a
//! partition's subject.
//!
//! # Order
//! Each partition has its own appender task: a partition's batches become durable in the order
//! its shard submitted them, and partitions append concurrently. Order *across* partitions is
//! not needed: a clustered engine sends a message to another partition only once the batch that
//! sent it is durable ([`surge_engine::cluster`]), so a durable `order_created` always follows
//! its durable reservations, whichever nodes host the two partitions.
//!
//! # Partitions come and go
//! A node [`Journals::open`]s a partition when it takes it over (a new writer, which first
//! appends a *fence*) and [`Journals::close`]s it when it gives it up. A shard submitting to a
//! partition that is not open gets `storage_unavailable` (only a race with a move gets there).
//!
//! # Failure
//! An append refused as fenced (another owner took the partition) or not acknowledged ends that
//! partition's journal: its pending and later submissions fail with `storage_unavailable`, and
//! [`Journals::failures`] reports it; the node must give the partition up (it fail-stops).
//!
//! # Payload
//! A message is a container of WAL records (the persistence codec, format 4): `[u32 LE
//! length][record]`…, at most [`MESSAGE_BYTES_MAX`] bytes (NATS's default payload limit is
//! 1 MiB); a larger group commit is split over consecutive appends. A fence is an empty
//! message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use surge_engine::{EngineError, EngineState, Event, Journal, JournalFactory, OnDurable};
use surge_persistence::codec::{decode_record, encode_records};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::partition_log::{LogError, PartitionLogs, PartitionWriter};

/// Largest message the journal publishes (bytes).
pub const MESSAGE_BYTES_MAX: usize = 512 * 1024;

struct Submission {
    records: Vec<Vec<u8>>,
    on_durable: OnDurable,
}

struct Appender {
    tx: mpsc::UnboundedSender<Submission>,
    task: JoinHandle<()>,
    /// Messages appended since the partition was opened (fence included).
    appended: Arc<std::sync::atomic::AtomicU64>,
}

/// The open partitions' appenders, shared by the engine's shard journals and the node.
#[derive(Clone)]
pub struct Journals {
    logs: PartitionLogs,
    open: Arc<Mutex<HashMap<u32, Appender>>>,
    failed: Arc<watch::Sender<Option<(u32, String)>>>,
}

impl Journals {
    /// No partition open yet.
    pub fn new(logs: PartitionLogs) -> Self {
        Self { logs, open: Arc::default(), failed: Arc::new(watch::channel(None).0) }
    }

    /// The engine's journal factory: shard *p*'s journal appends to partition *p* while it is
    /// open.
    pub fn factory(&self) -> JournalFactory {
        let journals = self.clone();
        Box::new(move |shard| Box::new(ShardJournal { shard, position: 0, journals: journals.clone() }))
    }

    /// Start journaling partition `p`: a writer fenced after the partition's last message (its
    /// fence appended). Take the partition's lease first, and replay it only after this
    /// returns: nothing a deposed owner appends can then land after the fence.
    ///
    /// Fencing by `Nats-Expected-Last-Subject-Sequence` refuses a deposed owner's append only
    /// once the new owner has appended to the partition; without the fence, a paused old owner
    /// could still append to a partition its successor had not written to yet, and the
    /// successor, having replayed before, would never see it.
    ///
    /// # Errors
    /// [`LogError`] when the partition's last sequence cannot be read or the fence not appended.
    pub async fn open(&self, p: u32) -> Result<(), LogError> {
        let mut writer = self.logs.writer(p).await?;
        writer.append(Bytes::new()).await.map_err(|e| LogError(format!("fence: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let appended = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let task = tokio::spawn(append_loop(p, writer, rx, self.failed.clone(), appended.clone()));
        if let Some(old) = self.lock().insert(p, Appender { tx, task, appended }) {
            old.task.abort();
        }
        Ok(())
    }

    /// Stop journaling partition `p` once what was submitted is appended (or failed).
    pub async fn close(&self, p: u32) {
        let appender = self.lock().remove(&p);
        if let Some(a) = appender {
            drop(a.tx);
            let _ = a.task.await;
        }
    }

    /// Journal `events` to partition `p` now (recovery's repairs, before the partition is
    /// served) and wait until they are durable.
    ///
    /// # Errors
    /// `storage_unavailable` when the partition is not open or the append failed.
    pub async fn append_events(&self, p: u32, events: Vec<Event>) -> Result<(), EngineError> {
        let tag = u16::try_from(p).unwrap_or(u16::MAX);
        let records =
            encode_records(tag, 0, &events).map_err(|e| EngineError::StorageUnavailable { message: e.to_string() })?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(p, records, Box::new(move |r| drop(tx.send(r))));
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Messages appended to partition `p` since it was opened (0 when it is not open).
    pub fn appended(&self, p: u32) -> u64 {
        self.lock().get(&p).map_or(0, |a| a.appended.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether partition `p` is open.
    pub fn is_open(&self, p: u32) -> bool {
        self.lock().contains_key(&p)
    }

    /// The first partition whose journal failed, and why (`None` while none has).
    pub fn failures(&self) -> watch::Receiver<Option<(u32, String)>> {
        self.failed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Appender>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn submit(&self, p: u32, records: Vec<Vec<u8>>, on_durable: OnDurable) {
        let tx = self.lock().get(&p).map(|a| a.tx.clone());
        let refused = match tx {
            Some(tx) => match tx.send(Submission { records, on_durable }) {
                Ok(()) => return,
                Err(e) => e.0.on_durable,
            },
            None => on_durable,
        };
        refused(Err(EngineError::StorageUnavailable { message: format!("partition {p} is not held by this node") }));
    }
}

/// A shard's handle: encodes on the shard's thread, hands the records to its partition's
/// appender.
struct ShardJournal {
    shard: usize,
    position: u64,
    journals: Journals,
}

impl Journal for ShardJournal {
    fn submit(&mut self, _shard: usize, events: Vec<Event>, on_durable: OnDurable) {
        if !events.is_empty() {
            self.position += 1;
        }
        let tag = u16::try_from(self.shard).unwrap_or(u16::MAX);
        let records = match encode_records(tag, self.position, &events) {
            Ok(r) => r,
            Err(e) => return on_durable(Err(EngineError::StorageUnavailable { message: e.to_string() })),
        };
        let p = u32::try_from(self.shard).unwrap_or(u32::MAX);
        self.journals.submit(p, records, on_durable);
    }

    fn position(&self) -> u64 {
        self.position
    }
}

/// One partition's appender: everything waiting becomes one group commit (one append, or a few
/// for a large one); its replies are released when JetStream acknowledged it.
async fn append_loop(
    p: u32,
    mut writer: PartitionWriter,
    mut rx: mpsc::UnboundedReceiver<Submission>,
    failed: Arc<watch::Sender<Option<(u32, String)>>>,
    appended: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut failure: Option<String> = None;
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while let Ok(s) = rx.try_recv() {
            group.push(s);
        }
        let records: Vec<Vec<u8>> = group.iter_mut().flat_map(|s| std::mem::take(&mut s.records)).collect();
        if failure.is_none() {
            for message in containers(&records) {
                let result = writer.append(message).await;
                appended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = result {
                    tracing::error!(partition = p, error = %e, "partition journal failed: this node must give the partition up");
                    failed.send_if_modified(|f| {
                        let first = f.is_none();
                        if first {
                            *f = Some((p, e.to_string()));
                        }
                        first
                    });
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        for s in group {
            let result = match &failure {
                None => Ok(()),
                Some(m) => Err(EngineError::StorageUnavailable { message: m.clone() }),
            };
            (s.on_durable)(result);
        }
    }
}

/// `records` as containers of at most [`MESSAGE_BYTES_MAX`] bytes (a record alone may exceed
/// it; it then travels alone).
fn containers(records: &[Vec<u8>]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for r in records {
        if !cur.is_empty() && cur.len() + 4 + r.len() > MESSAGE_BYTES_MAX {
            out.push(Bytes::from(std::mem::take(&mut cur)));
        }
        cur.extend_from_slice(&u32::try_from(r.len()).unwrap_or(u32::MAX).to_le_bytes());
        cur.extend_from_slice(r);
    }
    if !cur.is_empty() {
        out.push(Bytes::from(cur));
    }
    out
}

/// The records of a container, in order.
///
/// # Errors
/// A length that runs past the end.
pub fn records_of(message: &[u8]) -> Result<Vec<&[u8]>, LogError> {
    let mut out = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let len_bytes: [u8; 4] =
            rest.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(|| LogError("truncated length".into()))?;
        let n = u32::from_le_bytes(len_bytes) as usize;
        let record = rest.get(4..4 + n).ok_or_else(|| LogError("truncated record".into()))?;
        out.push(record);
        rest = &rest[4 + n..];
    }
    Ok(out)
}

/// Apply `messages` (stream sequence, container) to `state`, in order.
///
/// # Errors
/// A container or record that does not decode.
pub fn apply_messages(state: &mut EngineState, messages: &[(u64, Bytes)]) -> Result<(), LogError> {
    for (seq, message) in messages {
        for record in records_of(message)? {
            let (_, events) = decode_record(*seq, record).map_err(|e| LogError(format!("sequence {seq}: {e}")))?;
            for e in &events {
                state.apply(e);
            }
        }
    }
    Ok(())
}

/// Rebuild partition `p` of `partitions` from its newest snapshot and the messages after it,
/// and reconcile it on its own ([`EngineState::reconcile_partition`]): the returned events must
/// be journaled to the partition before it is served. Also returns the snapshot's sequence (0:
/// none).
///
/// # Errors
/// [`LogError`] when the partition or the snapshot cannot be read or a record does not decode.
pub async fn replay_partition(
    logs: &PartitionLogs,
    snaps: &crate::snapshot::Snapshots,
    p: u32,
    partitions: usize,
) -> Result<(EngineState, Vec<Event>, u64), LogError> {
    let (base, mut state) = snaps.latest(p).await?.unwrap_or_default();
    let messages = logs.read_after(p, base).await?;
    apply_messages(&mut state, &messages)?;
    let fixes = state.reconcile_partition(p as usize, partitions);
    Ok((state, fixes, base))
}

/// Rebuild the whole engine from partitions `0..shards`, in the stream's order, then reconcile
/// it as one (the state an observer of every partition sees: tests and tools).
///
/// # Errors
/// [`LogError`] when a partition cannot be read or a record does not decode.
pub async fn replay(logs: &PartitionLogs, shards: usize) -> Result<(EngineState, Vec<Event>), LogError> {
    let mut messages: Vec<(u64, Bytes)> = Vec::new();
    for p in 0..shards {
        messages.extend(logs.read_after(u32::try_from(p).map_err(|_| LogError("too many shards".into()))?, 0).await?);
    }
    messages.sort_by_key(|(seq, _)| *seq);
    let mut state = EngineState::default();
    apply_messages(&mut state, &messages)?;
    let fixes = state.reconcile();
    Ok((state, fixes))
}
