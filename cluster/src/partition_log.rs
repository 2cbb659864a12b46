//! Each partition's journal on JetStream (issue 16): one replicated stream, one subject per
//! partition, one message per group commit, appended with fencing.
//!
//! # Fencing
//! Every append carries `Nats-Expected-Last-Subject-Sequence`: the stream sequence of the
//! partition's last message as this writer knows it. JetStream (through its Raft group) refuses
//! the append when another message was appended to the subject since, so an owner deposed while
//! paused cannot write after its successor did, whatever the clocks say: its first late append
//! fails with [`AppendError::Fenced`], and it must stop serving the partition. A writer therefore
//! has at most one append in flight (the next expected sequence is known only from the ack); a
//! group commit gathers what arrives meanwhile.
//!
//! # Durability
//! A reply may be released when the append is acknowledged: JetStream acknowledges after the
//! message is stored by a quorum of the stream's replicas. The servers must run with
//! `sync_interval: always` (JetStream's default fsyncs every 2 minutes; Jepsen found
//! acknowledged writes lost without it): `docs/cluster.md` says how.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use surge_cluster::partition_log::{PartitionLogConfig, PartitionLogs};
//! let js = async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await?);
//! let logs = PartitionLogs::open(&js, PartitionLogConfig::default()).await?;
//! let mut writer = logs.writer(7).await?;
//! let seq = writer.append(bytes::Bytes::from_static(b"a group commit")).await?;
//! let records = logs.read_after(7, 0).await?;
//! assert_eq!(records.last().map(|r| r.0), Some(seq));
//! # Ok(()) }
//! ```

use std::hash::BuildHasher;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use async_nats::jetstream::{consumer, Context};
use bytes::Bytes;
use futures_util::StreamExt;

/// The partitions' stream's default name.
pub const STREAM_DEFAULT: &str = "SURGE_PARTITIONS";
/// The default subject prefix: partition 7 appends to `surge.partition.7`.
pub const SUBJECT_PREFIX_DEFAULT: &str = "surge.partition";
/// How long a read, or one attempt of an append, waits for JetStream.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an append keeps trying (ms) before its fate is declared unknown. Covers a NATS
/// server's death with the append in flight: the client reconnects to another server, and the
/// stream's Raft group elects a new leader (JetStream answers "no stream found" or "no
/// responders" meanwhile; a follower waits 4–9 s for a lost leader before it campaigns, per
/// nats-server's `server/raft.go`, so 20 s allows a second election round).
pub const APPEND_DEADLINE_MS: u64 = 20_000;
/// The first pause between two attempts (ms); doubled after each, up to [`APPEND_BACKOFF_MS_MAX`].
pub const APPEND_BACKOFF_MS: u64 = 25;
/// The longest pause between two attempts (ms).
pub const APPEND_BACKOFF_MS_MAX: u64 = 500;

/// Where the partitions' journals live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLogConfig {
    /// The stream (created if missing: file storage, subjects `<subject_prefix>.>`).
    pub stream: String,
    /// Subjects' prefix.
    pub subject_prefix: String,
    /// Replicas (R3 in production: one server may fail; 1 on a single test server).
    pub replicas: usize,
}

impl Default for PartitionLogConfig {
    fn default() -> Self {
        Self { stream: STREAM_DEFAULT.into(), subject_prefix: SUBJECT_PREFIX_DEFAULT.into(), replicas: 1 }
    }
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended to the partition since this one's last append (or read): this
    /// writer is deposed. Stop serving the partition.
    #[error("partition {partition}: fenced (another owner appended after sequence {expected})")]
    Fenced {
        /// The partition.
        partition: u32,
        /// The last sequence this writer knew.
        expected: u64,
    },
    /// JetStream did not acknowledge (timeout, no quorum, connection): the append may or may not
    /// be stored. Re-read the partition's last sequence before appending again.
    #[error("partition {partition}: append not acknowledged: {reason}")]
    Unknown {
        /// The partition.
        partition: u32,
        /// Why.
        reason: String,
    },
}

/// A failure to open the stream or to read a partition.
#[derive(Debug, thiserror::Error)]
#[error("partition log: {0}")]
pub struct LogError(pub String);

fn log_err(e: impl std::fmt::Display) -> LogError {
    LogError(e.to_string())
}

/// The partitions' stream.
#[derive(Clone)]
pub struct PartitionLogs {
    js: Context,
    stream: stream::Stream,
    cfg: PartitionLogConfig,
}

impl PartitionLogs {
    /// Open (create if missing) the stream of `cfg`.
    ///
    /// # Errors
    /// [`LogError`] when the stream cannot be created or read.
    pub async fn open(js: &Context, cfg: PartitionLogConfig) -> Result<Self, LogError> {
        let config = stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![format!("{}.>", cfg.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: cfg.replicas,
            ..Default::default()
        };
        let stream = js.get_or_create_stream(config).await.map_err(log_err)?;
        Ok(Self { js: js.clone(), stream, cfg })
    }

    fn subject(&self, partition: u32) -> String {
        format!("{}.{partition}", self.cfg.subject_prefix)
    }

    /// The stream sequence of `partition`'s last message (0 if none).
    ///
    /// # Errors
    /// [`LogError`] when JetStream does not answer.
    pub async fn last_seq(&self, partition: u32) -> Result<u64, LogError> {
        match self.stream.get_last_raw_message_by_subject(&self.subject(partition)).await {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(log_err(e)),
        }
    }

    /// Purge `partition`'s messages below stream sequence `seq` (a snapshot covers them); the
    /// message at `seq`, and the subject's last message, stay.
    ///
    /// # Errors
    /// [`LogError`] when JetStream refuses.
    pub async fn purge_below(&self, partition: u32, seq: u64) -> Result<(), LogError> {
        self.stream.purge().filter(self.subject(partition)).sequence(seq).await.map(drop).map_err(log_err)
    }

    /// A writer for `partition`, fenced from its last message as of now. Take it only while
    /// holding the partition's lease ([`crate::lease`]).
    ///
    /// # Errors
    /// [`LogError`] when the last sequence cannot be read.
    pub async fn writer(&self, partition: u32) -> Result<PartitionWriter, LogError> {
        let last_seq = self.last_seq(partition).await?;
        // Unique per writer (hashed with per-process random keys): its appends' message ids.
        let id = std::collections::hash_map::RandomState::new().hash_one((partition, last_seq, std::process::id()));
        let subject = self.subject(partition);
        Ok(PartitionWriter { js: self.js.clone(), partition, subject, last_seq, id, appended: 0 })
    }

    /// `partition`'s messages after stream sequence `after_seq`, in order, up to its last one as
    /// of the call: (sequence, payload).
    ///
    /// # Errors
    /// [`LogError`] when JetStream does not answer.
    pub async fn read_after(&self, partition: u32, after_seq: u64) -> Result<Vec<(u64, Bytes)>, LogError> {
        let last = self.last_seq(partition).await?;
        if last <= after_seq {
            return Ok(Vec::new());
        }
        let config = consumer::pull::OrderedConfig {
            filter_subject: self.subject(partition),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: after_seq + 1 },
            ..Default::default()
        };
        let mut messages =
            self.stream.create_consumer(config).await.map_err(log_err)?.messages().await.map_err(log_err)?;
        let mut out = Vec::new();
        while out.last().is_none_or(|(seq, _)| *seq < last) {
            let next = tokio::time::timeout(REQUEST_TIMEOUT, messages.next()).await;
            let msg = match next {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(log_err(e)),
                Ok(None) => break,
                Err(_) => return Err(LogError(format!("partition {partition}: read timed out"))),
            };
            let seq = msg.info().map_err(log_err)?.stream_sequence;
            out.push((seq, msg.payload.clone()));
        }
        Ok(out)
    }
}

/// Appends to one partition's subject, fenced (see the module docs).
pub struct PartitionWriter {
    js: Context,
    partition: u32,
    subject: String,
    last_seq: u64,
    /// This writer's id (random): with `appended`, each append's `Nats-Msg-Id`.
    id: u64,
    appended: u64,
}

impl PartitionWriter {
    /// The stream sequence of the last message this writer knows of.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Append one group commit; returns its stream sequence once JetStream acknowledged it.
    ///
    /// An attempt that is not acknowledged (a server died with it in flight, the stream is
    /// electing a leader) is sent again after a pause (backing off from [`APPEND_BACKOFF_MS`])
    /// for up to [`APPEND_DEADLINE_MS`], with the same `Nats-Msg-Id`: if the first attempt was
    /// stored, JetStream answers the retry as a duplicate with the original sequence (it checks
    /// duplicates before the expected sequence), so an append lands at most once.
    ///
    /// # Errors
    /// [`AppendError::Fenced`]: deposed, stop serving; [`AppendError::Unknown`]: still not
    /// acknowledged after every attempt, its fate unknown (take a new writer, which reads the
    /// last sequence, and look whether it landed before appending again).
    pub async fn append(&mut self, record: Bytes) -> Result<u64, AppendError> {
        self.appended += 1;
        let msg_id = format!("{:016x}-{}", self.id, self.appended);
        let (partition, expected) = (self.partition, self.last_seq);
        let mut reason = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(APPEND_DEADLINE_MS);
        let mut pause_ms = APPEND_BACKOFF_MS;
        while tokio::time::Instant::now() < deadline {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected.to_string().as_str());
            headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
            let ack = match self.js.publish_with_headers(self.subject.clone(), headers, record.clone()).await {
                Ok(future) => tokio::time::timeout(REQUEST_TIMEOUT, future).await,
                Err(e) => Ok(Err(e)),
            };
            match ack {
                Ok(Ok(a)) => {
                    self.last_seq = a.sequence;
                    return Ok(a.sequence);
                }
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Err(AppendError::Fenced { partition, expected });
                }
                Ok(Err(e)) => reason = e.to_string(),
                Err(_) => reason = "not acknowledged in time".into(),
            }
            tracing::warn!(partition, %reason, "partition append not acknowledged; sending it again");
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            pause_ms = (pause_ms * 2).min(APPEND_BACKOFF_MS_MAX);
        }
        Err(AppendError::Unknown { partition, reason })
    }
}
