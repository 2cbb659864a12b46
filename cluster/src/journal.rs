//! The engine's [`Journal`] over the partition logs (issue 16): each shard is a partition, each
//! group commit one fenced append per partition, and recovery replays the stream.
//!
//! # Order
//! The engine needs its batches durable in submission order across all shards (a shard submits
//! a batch before it sends the messages that batch caused, so a saga's reservation is never
//! lost while the order it made possible survives). One appender task keeps it: it takes every
//! submission waiting (a *round*), appends each partition's share concurrently (different
//! subjects), and releases the round's replies only when every append of the round is
//! acknowledged; the next round starts after. All partitions are subjects of one stream, so the
//! stream's sequence is a total order that respects the rounds, and [`replay`] applies events in
//! it.
//!
//! # Failure
//! An append refused as fenced (another owner took a partition) or not acknowledged ends the
//! journal: the round's and every later submission's replies fail with `storage_unavailable`,
//! and the node must give up its partitions and recover (the single node's fail-stop rule).
//!
//! # Payload
//! A message is a container of WAL records (the persistence codec, format 4): `[u32 LE
//! length][record]`…, at most [`MESSAGE_BYTES_MAX`] bytes (NATS's default payload limit is
//! 1 MiB); a larger share is split over consecutive appends.

use std::collections::BTreeMap;

use bytes::Bytes;
use surge_engine::{EngineError, EngineState, Event, Journal, JournalFactory, OnDurable};
use surge_persistence::codec::{decode_record, encode_records};
use tokio::sync::mpsc;

use crate::partition_log::{AppendError, LogError, PartitionLogs, PartitionWriter};

/// Largest message the journal publishes (bytes).
pub const MESSAGE_BYTES_MAX: usize = 512 * 1024;

struct Submission {
    shard: usize,
    records: Vec<Vec<u8>>,
    on_durable: OnDurable,
}

/// A shard's handle: encodes on the shard's thread, hands the records to the appender.
struct ShardJournal {
    shard: usize,
    position: u64,
    tx: mpsc::UnboundedSender<Submission>,
}

impl Journal for ShardJournal {
    fn submit(&mut self, shard: usize, events: Vec<Event>, on_durable: OnDurable) {
        if !events.is_empty() {
            self.position += 1;
        }
        let tag = u16::try_from(self.shard).unwrap_or(u16::MAX);
        let records = match encode_records(tag, self.position, &events) {
            Ok(r) => r,
            Err(e) => return on_durable(Err(EngineError::StorageUnavailable { message: e.to_string() })),
        };
        if let Err(e) = self.tx.send(Submission { shard, records, on_durable }) {
            (e.0.on_durable)(Err(EngineError::ShuttingDown));
        }
    }

    fn position(&self) -> u64 {
        self.position
    }
}

/// Start the appender for partitions `0..shards` (shard *i* journals to partition *i*) on
/// `runtime`. Returns the engine's journal factory. Take the partitions' leases first, and
/// [`replay`] only after this returns.
///
/// Each writer first appends a *fence*: an empty message (a container of no records) after its
/// partition's last one. Fencing by `Nats-Expected-Last-Subject-Sequence` refuses a deposed
/// owner's append only once the new owner has appended to that partition; without the fence, a
/// paused old owner could still append to a partition its successor had not yet written to, and
/// the successor, having replayed before, would never see it.
///
/// # Errors
/// [`LogError`] when a partition's last sequence cannot be read or its fence not appended.
pub async fn start(
    logs: &PartitionLogs,
    shards: usize,
    runtime: &tokio::runtime::Handle,
) -> Result<JournalFactory, LogError> {
    let mut writers = Vec::with_capacity(shards);
    for p in 0..shards {
        let mut w = logs.writer(u32::try_from(p).map_err(|_| LogError("too many shards".into()))?).await?;
        w.append(Bytes::new()).await.map_err(|e| LogError(format!("fence: {e}")))?;
        writers.push(w);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    runtime.spawn(append_rounds(writers, rx));
    Ok(Box::new(move |shard| Box::new(ShardJournal { shard, position: 0, tx: tx.clone() })))
}

/// The appender: rounds until every shard journal is dropped, or an append fails.
async fn append_rounds(mut writers: Vec<PartitionWriter>, mut rx: mpsc::UnboundedReceiver<Submission>) {
    let mut failed: Option<String> = None;
    while let Some(first) = rx.recv().await {
        let mut round = vec![first];
        while let Ok(s) = rx.try_recv() {
            round.push(s);
        }
        // Each partition's records, in submission order; the replies wait for all of them.
        let mut shares: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
        let mut replies = Vec::with_capacity(round.len());
        for s in round {
            shares.entry(s.shard).or_default().extend(s.records);
            replies.push(s.on_durable);
        }
        if failed.is_none() {
            if let Err(e) = append_round(&mut writers, shares).await {
                tracing::error!(error = %e, "cluster journal failed: this node must give up its partitions");
                failed = Some(e.to_string());
            }
        }
        for on_durable in replies {
            let result = match &failed {
                None => Ok(()),
                Some(m) => Err(EngineError::StorageUnavailable { message: m.clone() }),
            };
            on_durable(result);
        }
    }
}

/// Append a round: each partition's records, partitions concurrently, all acknowledged.
async fn append_round(
    writers: &mut [PartitionWriter],
    mut shares: BTreeMap<usize, Vec<Vec<u8>>>,
) -> Result<(), AppendError> {
    let appends = writers.iter_mut().enumerate().filter_map(|(shard, w)| {
        let records = shares.remove(&shard)?;
        Some(async move {
            for message in containers(&records) {
                w.append(message).await?;
            }
            Ok::<(), AppendError>(())
        })
    });
    for r in futures_util::future::join_all(appends).await {
        r?;
    }
    Ok(())
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

/// Rebuild the engine's state from partitions `0..shards`, in the stream's order, then
/// reconcile (the returned events must be journaled before serving, as after a single node's
/// recovery).
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
    for (seq, message) in &messages {
        for record in records_of(message)? {
            let (_, events) = decode_record(*seq, record).map_err(|e| LogError(format!("sequence {seq}: {e}")))?;
            for e in &events {
                state.apply(e);
            }
        }
    }
    let fixes = state.reconcile();
    Ok((state, fixes))
}
