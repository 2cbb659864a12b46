//! `surge cluster status` (issue 16): the partitions, their owners, leases, lag and stream
//! sequences, read from JetStream without claiming or creating anything.
//!
//! # What is read
//! * each partition's lease key `p<N>` in the lease bucket ([`crate::lease`]): the holder, its
//!   epoch and incarnation, whether it is held, the key's revision and its age;
//! * the nodes' keys `node.<id>` in the same bucket (each node writes its own when it starts,
//!   so the first revision is its incarnation, and rewrites it as a heartbeat if it runs the
//!   control loop; a clean stop deletes it);
//! * the partitions' stream ([`crate::partition_log`]): its totals, each partition's message
//!   count, last stream sequence and the age of its last message.
//!
//! Nothing is written: the bucket and the stream are opened only if they exist (a cluster no
//! node ever joined shows every partition unowned and the stream absent), and no consumer is
//! created.
//!
//! # Ages
//! Ages (`*_age_ms`) are this reader's wall clock minus a timestamp the NATS server stamped (a
//! key's last write, a message's append), in milliseconds. They are for people: a clock skew
//! between this machine and the server shifts them, and they can come out negative. Leases
//! themselves never compare clocks across machines (see [`crate::lease`]).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use surge_cluster::{status, ClusterConfig};
//! let cfg = ClusterConfig { nats_urls: "nats://127.0.0.1:4222".into(), ..Default::default() };
//! let js = status::connect(&cfg).await?;
//! let s = status::cluster_status(&js, &cfg).await?;
//! print!("{}", s.render_table());
//! # Ok(()) }
//! ```

use std::collections::HashMap;

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use async_nats::jetstream::{Context, ErrorCode};
use futures_util::StreamExt;
use serde::Serialize;

use crate::lease::Holder;
use crate::ClusterConfig;

/// The whole cluster as read at one moment (a few requests apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// One entry per partition, `0..partitions` of the config, in order.
    pub partitions: Vec<PartitionStatus>,
    /// Every node whose key `node.<id>` is in the lease bucket (not deleted), by node id.
    pub nodes: Vec<NodeSeen>,
    /// The partitions' stream.
    pub stream: StreamSummary,
}

/// One partition: its lease and its journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    /// The partition (= the engine's shard), `0..partitions`.
    pub partition: u32,
    /// The node named by the lease key: the holder, or the last one when `held` is false.
    /// `None`: never claimed (or the key does not decode).
    pub owner: Option<String>,
    /// The owner's process incarnation (the revision of its `node.<id>` key when it started).
    pub incarnation: Option<u64>,
    /// The lease's epoch, the fencing token (1 for the first claim, one more per claim).
    pub epoch: Option<u64>,
    /// The key says the lease is held (false once released, or never claimed). A crashed
    /// holder's key still says held until another node takes it over: see `stale`.
    pub held: bool,
    /// Held, but the key was last written more than `lease_ms` ago (`lease_age_ms`): its holder
    /// has stopped renewing, and a claimant may take it over. A hint for people (it compares
    /// this reader's clock with the server's).
    pub stale: bool,
    /// The lease key's revision (its sequence in the bucket's stream; grows with every renewal).
    pub lease_revision: Option<u64>,
    /// Milliseconds since the lease key was last written (claim, renewal or release), by the
    /// NATS server's timestamp against this reader's clock. A holder renews every
    /// `lease_ms / 3`.
    pub lease_age_ms: Option<i64>,
    /// The stream sequence of the partition's last message (0: none).
    pub last_seq: u64,
    /// Messages (group commits) on the partition's subject.
    pub messages: u64,
    /// Milliseconds since the partition's last message was appended (its server timestamp
    /// against this reader's clock). `None`: no message.
    pub last_append_age_ms: Option<i64>,
}

/// A node seen in the lease bucket (its key `node.<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSeen {
    /// The node's id.
    pub node_id: String,
    /// Its key's revision: the incarnation of its latest start while the node has not rewritten
    /// the key since, else its latest heartbeat's.
    pub revision: u64,
    /// Milliseconds since the node last wrote its key (its start, or its latest heartbeat).
    pub key_age_ms: i64,
    /// The incarnation named by the leases it holds (the highest, should a restarted node hold
    /// leases of both lives). `None`: it holds none.
    pub incarnation: Option<u64>,
    /// Partitions whose lease names this node and is held.
    pub partitions_held: u32,
}

/// The partitions' stream as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamSummary {
    /// Its name (`SURGE_PARTITIONS` by default).
    pub name: String,
    /// False when the stream does not exist yet (no node ever started); then every number is 0.
    pub exists: bool,
    /// Messages in the stream, all partitions.
    pub messages: u64,
    /// Bytes in the stream.
    pub bytes: u64,
    /// The first sequence still stored (0: empty).
    pub first_seq: u64,
    /// The last sequence assigned (0: none yet).
    pub last_seq: u64,
    /// Milliseconds since the last message of any partition was appended. `None`: no message.
    pub last_append_age_ms: Option<i64>,
    /// Its replicas.
    pub replicas: usize,
    /// The NATS server leading its Raft group (`None` on a server without a cluster).
    pub leader: Option<String>,
}

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The config names no NATS server.
    #[error("no NATS server: give --cluster-nats-urls, SURGE_CLUSTER_NATS_URLS or [cluster] nats_urls")]
    NoServers,
    /// The NATS servers could not be reached.
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect {
        /// The URLs tried, comma-separated.
        urls: String,
        /// Why.
        reason: String,
    },
    /// The lease bucket could not be read.
    #[error("lease bucket {bucket}: {reason}")]
    Leases {
        /// The bucket.
        bucket: String,
        /// Why.
        reason: String,
    },
    /// The partitions' stream could not be read.
    #[error("partition stream {stream}: {reason}")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
}

/// Connect to the NATS servers of `cfg` (`async_nats::connect` over [`ClusterConfig::urls`]).
///
/// # Errors
/// [`StatusError::NoServers`], [`StatusError::Connect`].
pub async fn connect(cfg: &ClusterConfig) -> Result<Context, StatusError> {
    let urls = cfg.urls();
    if urls.is_empty() {
        return Err(StatusError::NoServers);
    }
    let joined = urls.join(",");
    let client =
        async_nats::connect(urls).await.map_err(|e| StatusError::Connect { urls: joined, reason: e.to_string() })?;
    Ok(async_nats::jetstream::new(client))
}

/// Read the cluster's status (see the module docs): the lease bucket `cfg.node().lease.bucket`,
/// the stream `cfg.node().log.stream`, partitions `0..cfg.partitions`. Claims, creates and writes
/// nothing.
///
/// # Errors
/// [`StatusError::Leases`] or [`StatusError::Stream`] when JetStream does not answer (a missing
/// bucket or stream is not an error: nothing has been claimed or appended yet).
pub async fn cluster_status(js: &Context, cfg: &ClusterConfig) -> Result<ClusterStatus, StatusError> {
    let node = cfg.node();
    let leases = LeaseReader::open(js, &node.lease.bucket).await?;
    let log = LogReader::open(js, &node.log.stream, &node.log.subject_prefix).await?;
    let mut partitions = Vec::with_capacity(cfg.partitions as usize);
    for partition in 0..cfg.partitions {
        let lease = leases.lease(partition).await?;
        let (last_seq, last_append_age_ms) = log.last(partition).await?;
        let stale = lease.held && lease.age_ms.is_some_and(|a| a > i64::try_from(cfg.lease_ms).unwrap_or(i64::MAX));
        partitions.push(PartitionStatus {
            partition,
            owner: lease.holder.as_ref().map(|h| h.node_id.clone()),
            incarnation: lease.holder.as_ref().map(|h| h.incarnation),
            epoch: lease.holder.as_ref().map(|h| h.epoch),
            held: lease.held,
            stale,
            lease_revision: lease.revision,
            lease_age_ms: lease.age_ms,
            last_seq,
            messages: log.messages(partition),
            last_append_age_ms,
        });
    }
    let mut nodes = leases.nodes().await?;
    for n in &mut nodes {
        let held: Vec<&PartitionStatus> =
            partitions.iter().filter(|p| p.held && p.owner.as_deref() == Some(n.node_id.as_str())).collect();
        n.partitions_held = u32::try_from(held.len()).unwrap_or(u32::MAX);
        n.incarnation = held.iter().filter_map(|p| p.incarnation).max();
    }
    Ok(ClusterStatus { partitions, nodes, stream: log.summary })
}

impl ClusterStatus {
    /// For people: the stream on one line, one row per partition (partition, owner, epoch,
    /// held, lease age ms, last seq, messages, last append age ms; `-` where there is nothing),
    /// then one line per node. Ends with a newline.
    pub fn render_table(&self) -> String {
        let s = &self.stream;
        let mut out = if s.exists {
            format!(
                "stream {}: {} messages, {} bytes, seq {}..={}, last append {} ms ago, {} replica(s), leader {}\n",
                s.name,
                s.messages,
                s.bytes,
                s.first_seq,
                s.last_seq,
                opt(s.last_append_age_ms),
                s.replicas,
                s.leader.as_deref().unwrap_or("-"),
            )
        } else {
            format!("stream {}: does not exist (no node has started)\n", s.name)
        };
        let header =
            ["partition", "owner", "epoch", "held", "lease age ms", "last seq", "messages", "last append age ms"];
        let mut rows = vec![header.map(str::to_owned).to_vec()];
        for p in &self.partitions {
            let held = match (p.held, p.stale) {
                (true, true) => "stale",
                (true, false) => "yes",
                (false, _) => "no",
            };
            rows.push(vec![
                p.partition.to_string(),
                p.owner.clone().unwrap_or_else(|| "-".into()),
                opt(p.epoch),
                held.into(),
                opt(p.lease_age_ms),
                p.last_seq.to_string(),
                p.messages.to_string(),
                opt(p.last_append_age_ms),
            ]);
        }
        out.push_str(&columns(&rows));
        if self.nodes.is_empty() {
            out.push_str("nodes: none seen\n");
        } else {
            out.push_str("nodes:\n");
            let header = ["node", "key revision", "key age ms", "incarnation", "partitions held"];
            let mut rows = vec![header.map(str::to_owned).to_vec()];
            for n in &self.nodes {
                rows.push(vec![
                    n.node_id.clone(),
                    n.revision.to_string(),
                    n.key_age_ms.to_string(),
                    opt(n.incarnation),
                    n.partitions_held.to_string(),
                ]);
            }
            for line in columns(&rows).lines() {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Left-aligned columns two spaces apart, one line per row.
fn columns(rows: &[Vec<String>]) -> String {
    let mut widths = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            match widths.get_mut(i) {
                Some(w) => *w = cell.chars().count().max(*w),
                None => widths.push(cell.chars().count()),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `now - then` in milliseconds (saturating).
fn age_ms(then: async_nats::datetime::DateTime) -> i64 {
    let nanos = async_nats::datetime::now().unix_timestamp_nanos() - then.unix_timestamp_nanos();
    let ms = nanos / 1_000_000;
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// Whether a `get_stream` failure means the stream does not exist.
fn not_found(kind: &GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// One lease key as read.
struct LeaseRead {
    holder: Option<Holder>,
    held: bool,
    revision: Option<u64>,
    age_ms: Option<i64>,
}

/// The lease bucket, read-only (unlike [`crate::lease::Leases::open`], which writes the node's
/// key). `None`: the bucket does not exist.
struct LeaseReader {
    bucket: String,
    kv: Option<kv::Store>,
}

impl LeaseReader {
    async fn open(js: &Context, bucket: &str) -> Result<Self, StatusError> {
        let err = |reason: String| StatusError::Leases { bucket: bucket.to_owned(), reason };
        // Look for the bucket's stream first: `get_key_value` does not tell "missing" apart.
        if let Err(e) = js.get_stream(format!("KV_{bucket}")).await {
            return if not_found(&e.kind()) {
                Ok(Self { bucket: bucket.to_owned(), kv: None })
            } else {
                Err(err(e.to_string()))
            };
        }
        let kv = js.get_key_value(bucket).await.map_err(|e| err(e.to_string()))?;
        Ok(Self { bucket: bucket.to_owned(), kv: Some(kv) })
    }

    fn err(&self, e: impl std::fmt::Display) -> StatusError {
        StatusError::Leases { bucket: self.bucket.clone(), reason: e.to_string() }
    }

    /// The latest entry of `key` (a put), with its age.
    async fn entry(&self, key: &str) -> Result<Option<(kv::Entry, i64)>, StatusError> {
        let Some(kv) = &self.kv else { return Ok(None) };
        let entry = kv.entry(key).await.map_err(|e| self.err(e))?;
        Ok(entry.filter(|e| e.operation == Operation::Put).map(|e| {
            let age = age_ms(e.created);
            (e, age)
        }))
    }

    /// Partition `partition`'s lease key (`p<N>`, as [`crate::lease`] writes it).
    async fn lease(&self, partition: u32) -> Result<LeaseRead, StatusError> {
        let Some((entry, age)) = self.entry(&format!("p{partition}")).await? else {
            return Ok(LeaseRead { holder: None, held: false, revision: None, age_ms: None });
        };
        let holder = serde_json::from_slice::<Holder>(&entry.value).ok();
        let held = holder.as_ref().is_some_and(|h| h.held);
        Ok(LeaseRead { holder, held, revision: Some(entry.revision), age_ms: Some(age) })
    }

    /// The nodes' keys `node.<id>`, by id (`incarnation` and `partitions_held` left empty). Their names come from the
    /// bucket stream's per-subject counts: no consumer is created.
    async fn nodes(&self) -> Result<Vec<NodeSeen>, StatusError> {
        let Some(kv) = &self.kv else { return Ok(Vec::new()) };
        let prefix = format!("{}node.", kv.prefix);
        let mut subjects = kv.stream.info_with_subjects(format!("{prefix}>")).await.map_err(|e| self.err(e))?;
        let mut ids = Vec::new();
        while let Some(item) = subjects.next().await {
            let (subject, _) = item.map_err(|e| self.err(e))?;
            if let Some(id) = subject.strip_prefix(&prefix) {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        let mut nodes = Vec::with_capacity(ids.len());
        for node_id in ids {
            if let Some((entry, key_age_ms)) = self.entry(&format!("node.{node_id}")).await? {
                let node =
                    NodeSeen { node_id, revision: entry.revision, key_age_ms, incarnation: None, partitions_held: 0 };
                nodes.push(node);
            }
        }
        Ok(nodes)
    }
}

/// The partitions' stream, read-only (unlike [`crate::partition_log::PartitionLogs::open`],
/// which creates it). `None`: it does not exist.
struct LogReader {
    stream: Option<stream::Stream>,
    subject_prefix: String,
    /// Messages per subject.
    counts: HashMap<String, u64>,
    summary: StreamSummary,
}

impl LogReader {
    async fn open(js: &Context, name: &str, subject_prefix: &str) -> Result<Self, StatusError> {
        let err = |e: &dyn std::fmt::Display| StatusError::Stream { stream: name.to_owned(), reason: e.to_string() };
        let mut summary = StreamSummary {
            name: name.to_owned(),
            exists: false,
            messages: 0,
            bytes: 0,
            first_seq: 0,
            last_seq: 0,
            last_append_age_ms: None,
            replicas: 0,
            leader: None,
        };
        let stream = match js.get_stream(name).await {
            Ok(s) => s,
            Err(e) if not_found(&e.kind()) => {
                return Ok(Self {
                    stream: None,
                    subject_prefix: subject_prefix.to_owned(),
                    counts: HashMap::new(),
                    summary,
                })
            }
            Err(e) => return Err(err(&e)),
        };
        // One request gives the totals and each partition's count (≤ 64 subjects: one page).
        let mut with_subjects = stream.info_with_subjects(format!("{subject_prefix}.>")).await.map_err(|e| err(&e))?;
        let mut counts = HashMap::new();
        while let Some(item) = with_subjects.next().await {
            let (subject, n) = item.map_err(|e| err(&e))?;
            counts.insert(subject, u64::try_from(n).unwrap_or(u64::MAX));
        }
        let info = &with_subjects.info;
        summary.exists = true;
        summary.messages = info.state.messages;
        summary.bytes = info.state.bytes;
        summary.first_seq = info.state.first_sequence;
        summary.last_seq = info.state.last_sequence;
        summary.last_append_age_ms = (info.state.messages > 0).then(|| age_ms(info.state.last_timestamp));
        summary.replicas = info.config.num_replicas;
        summary.leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
        Ok(Self { stream: Some(stream), subject_prefix: subject_prefix.to_owned(), counts, summary })
    }

    fn subject(&self, partition: u32) -> String {
        format!("{}.{partition}", self.subject_prefix)
    }

    fn messages(&self, partition: u32) -> u64 {
        self.counts.get(&self.subject(partition)).copied().unwrap_or(0)
    }

    /// The partition's last stream sequence (0: none) and its last message's age.
    async fn last(&self, partition: u32) -> Result<(u64, Option<i64>), StatusError> {
        let Some(stream) = &self.stream else { return Ok((0, None)) };
        match stream.get_last_raw_message_by_subject(&self.subject(partition)).await {
            Ok(m) => Ok((m.sequence, Some(age_ms(m.time)))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok((0, None)),
            Err(e) => Err(StatusError::Stream { stream: self.summary.name.clone(), reason: e.to_string() }),
        }
    }
}
