//! Requests forwarded to the node hosting their partition (issue 16), over NATS core
//! request/reply: the node a client reached sends the request to `<prefix>.<partition>`
//! ([`forward`]); the node hosting that partition answers it with its [`RpcHandler`] (the
//! gateway runs it as if its own client had sent it). The bytes are the gateway's business.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use surge_engine::Engine;
use tokio::task::JoinHandle;

/// The default subject prefix: requests for partition 7 go to `surge.rpc.7`.
pub const RPC_PREFIX_DEFAULT: &str = "surge.rpc";
/// The answer of a node that does not host the partition (any more).
const MOVED: &[u8] = b"\0moved";

/// Answers forwarded requests: request bytes in, reply bytes out.
pub trait RpcHandler: Send + Sync {
    /// Answer `request`.
    fn handle(&self, request: bytes::Bytes) -> Pin<Box<dyn Future<Output = bytes::Bytes> + Send>>;
}

/// Why a forwarded request got no answer. Either way its outcome is unknown: the caller
/// answers `unavailable` and the client retries with the same idempotency key.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No node answers for the partition right now (it is moving, or its node died).
    #[error("partition {partition} has no node answering")]
    NoOwner {
        /// The partition.
        partition: u32,
    },
    /// The node did not answer within the timeout.
    #[error("partition {partition}: forwarded request timed out")]
    Timeout {
        /// The partition.
        partition: u32,
    },
}

/// Send `request` to the node hosting partition `p` and return its answer.
///
/// # Errors
/// [`ForwardError`].
pub async fn forward(
    client: &async_nats::Client,
    prefix: &str,
    p: u32,
    request: bytes::Bytes,
    timeout: Duration,
) -> Result<bytes::Bytes, ForwardError> {
    match tokio::time::timeout(timeout, client.request(format!("{prefix}.{p}"), request)).await {
        Ok(Ok(reply)) if reply.payload.as_ref() == MOVED => Err(ForwardError::NoOwner { partition: p }),
        Ok(Ok(reply)) => Ok(reply.payload),
        Ok(Err(_)) => Err(ForwardError::NoOwner { partition: p }),
        Err(_) => Err(ForwardError::Timeout { partition: p }),
    }
}

/// Answer partition `p`'s forwarded requests with `handler` until the task is aborted; `moved`
/// while `engine` does not host `p`.
///
/// # Errors
/// The subscription failed.
pub async fn serve_partition(
    client: &async_nats::Client,
    prefix: &str,
    p: u32,
    engine: Engine,
    handler: Arc<dyn RpcHandler>,
) -> Result<JoinHandle<()>, async_nats::SubscribeError> {
    let mut sub = client.subscribe(format!("{prefix}.{p}")).await?;
    let client = client.clone();
    Ok(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else { continue };
            if !engine.hosts(p as usize) {
                let _ = client.publish(reply, bytes::Bytes::from_static(MOVED)).await;
                continue;
            }
            // Each request on its own task: a slow one never holds up the next.
            let (client, handler) = (client.clone(), handler.clone());
            tokio::spawn(async move {
                let answer = handler.handle(msg.payload).await;
                let _ = client.publish(reply, answer).await;
            });
        }
    }))
}
