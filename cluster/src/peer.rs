//! Messages between partitions hosted on different nodes, over NATS core request/reply (issue
//! 16): the engine's [`PeerLink`] ([`NatsLink`]) and the receiving side ([`serve_partition`]).
//!
//! A batch of messages for partition *p* is one request to `<prefix>.<p>`, answered `ok` by the
//! node hosting *p* once it has handed them to the shard, or `moved` by a node that no longer
//! hosts it. Without an `ok` (no responder while the partition moves, a timeout, `moved`) the
//! batch is sent again with a backoff for up to `retry_for_ms` (the engine's
//! `saga_timeout_ms`), then dropped: the engine deduplicates what arrives twice, and its
//! safety nets ([`surge_engine::cluster`]) cover what never arrives. Batches to one partition
//! go one after the other, in order.
//!
//! Encoding: JSON ([`PeerMsg`] is serde; its internally tagged form rules bincode out).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use surge_engine::cluster::{PeerLink, PeerMsg};
use surge_engine::Engine;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The default subject prefix: partition 7's messages go to `surge.peer.7`.
pub const PEER_PREFIX_DEFAULT: &str = "surge.peer";
/// How long one request waits for its `ok`.
pub const PEER_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// The first pause before a batch is sent again (doubled up to 500 ms).
pub const PEER_BACKOFF_MS: u64 = 20;

const OK: &[u8] = b"ok";
const MOVED: &[u8] = b"moved";

/// The engine's link to partitions on other nodes (see the module docs).
pub struct NatsLink {
    tx: mpsc::UnboundedSender<(usize, PeerMsg)>,
}

impl PeerLink for NatsLink {
    fn send(&self, shard: usize, msg: PeerMsg) {
        // Fails only once the node stopped: nothing is left to tell.
        let _ = self.tx.send((shard, msg));
    }
}

impl NatsLink {
    /// Start the link's sender on the current runtime.
    pub fn start(client: async_nats::Client, prefix: &str, retry_for_ms: u64) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(client, prefix.to_owned(), rx, Duration::from_millis(retry_for_ms)));
        Arc::new(Self { tx })
    }
}

/// Sort messages by destination; one worker per destination sends its batches in order.
async fn dispatch(
    client: async_nats::Client,
    prefix: String,
    mut rx: mpsc::UnboundedReceiver<(usize, PeerMsg)>,
    retry_for: Duration,
) {
    let mut workers: HashMap<usize, mpsc::UnboundedSender<Vec<PeerMsg>>> = HashMap::new();
    while let Some(first) = rx.recv().await {
        let mut by_shard: HashMap<usize, Vec<PeerMsg>> = HashMap::new();
        let (shard, msg) = first;
        by_shard.entry(shard).or_default().push(msg);
        while let Ok((shard, msg)) = rx.try_recv() {
            by_shard.entry(shard).or_default().push(msg);
        }
        for (shard, msgs) in by_shard {
            let worker = workers.entry(shard).or_insert_with(|| {
                let (wtx, wrx) = mpsc::unbounded_channel();
                let subject = format!("{prefix}.{shard}");
                tokio::spawn(deliver_in_order(client.clone(), subject, wrx, retry_for));
                wtx
            });
            let _ = worker.send(msgs);
        }
    }
}

async fn deliver_in_order(
    client: async_nats::Client,
    subject: String,
    mut rx: mpsc::UnboundedReceiver<Vec<PeerMsg>>,
    retry_for: Duration,
) {
    while let Some(mut msgs) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            msgs.extend(more);
        }
        let payload = match serde_json::to_vec(&msgs) {
            Ok(p) => bytes::Bytes::from(p),
            Err(e) => {
                tracing::error!(error = %e, "peer messages not encodable; dropped");
                continue;
            }
        };
        deliver(&client, &subject, payload, retry_for).await;
    }
}

/// Send one batch until it is answered `ok`, or `retry_for` has passed.
async fn deliver(client: &async_nats::Client, subject: &str, payload: bytes::Bytes, retry_for: Duration) {
    let started = tokio::time::Instant::now();
    let mut pause_ms = PEER_BACKOFF_MS;
    loop {
        let answer =
            tokio::time::timeout(PEER_REQUEST_TIMEOUT, client.request(subject.to_owned(), payload.clone())).await;
        let why = match answer {
            Ok(Ok(reply)) if reply.payload.as_ref() == OK => return,
            Ok(Ok(_)) => "moved".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        if started.elapsed() >= retry_for {
            tracing::warn!(subject, reason = %why, "peer messages undelivered past saga_timeout_ms; dropped (the engine's checks cover them)");
            return;
        }
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        pause_ms = (pause_ms * 2).min(500);
    }
}

/// Receive partition `p`'s messages for `engine` until the returned task is aborted (before the
/// partition is evicted). Answers `moved` while the engine does not host `p`.
///
/// # Errors
/// The subscription failed.
pub async fn serve_partition(
    client: &async_nats::Client,
    prefix: &str,
    p: u32,
    engine: Engine,
) -> Result<JoinHandle<()>, async_nats::SubscribeError> {
    let mut sub = client.subscribe(format!("{prefix}.{p}")).await?;
    let client = client.clone();
    Ok(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else { continue };
            let answer: &'static [u8] = if engine.hosts(p as usize) {
                match serde_json::from_slice::<Vec<PeerMsg>>(&msg.payload) {
                    Ok(msgs) => {
                        for m in msgs {
                            let _ = engine.deliver(p as usize, m);
                        }
                        OK
                    }
                    Err(e) => {
                        tracing::error!(partition = p, error = %e, "undecodable peer messages; dropped");
                        OK
                    }
                }
            } else {
                MOVED
            };
            let _ = client.publish(reply, bytes::Bytes::from_static(answer)).await;
        }
    }))
}
