//! Cluster mode (issue 16): a request for a partition another node hosts is forwarded to that
//! node, whichever node the client reached. The forwarding node authenticates, checks the role
//! and rate limits, then sends the request's text with the connection's role, user scope and
//! reply shape ([`Forwarded`]) to `<rpc prefix>.<partition>` (`surge_cluster::rpc`); the node
//! hosting the partition parses it again (applying the user's scope), runs it, and its reply
//! line goes back to the client unchanged. No node answering (the partition moving, its node
//! dead) is `unavailable` with `retry_after_ms`: the outcome is unknown, retry with the same
//! idempotency key. Nodes trust each other's forwarded role: NATS is the cluster's own network.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use surge_engine::{Engine, EngineError};
use tokio::sync::OwnedSemaphorePermit;

use super::{Conn, Gateway, Req};
use crate::auth::{scope, Role};
use crate::protocol::{self, Op, ReplyShape, WireError};

/// How long a forwarding node tells its client to wait before retrying.
pub const FORWARD_RETRY_AFTER_MS: u64 = 200;

/// Where forwarded requests go.
#[derive(Clone)]
pub(crate) struct ClusterRoute {
    pub client: async_nats::Client,
    pub prefix: String,
}

/// A forwarded request: the client's text and what the forwarding connection knew.
#[derive(serde::Serialize, serde::Deserialize)]
struct Forwarded {
    line: String,
    /// `admin`, `service` or `user`.
    role: String,
    /// A `user` connection's `sub`.
    user: Option<String>,
    minimal: bool,
}

/// The partition a request belongs to (`None`: answered by any node, as `ping`).
pub(crate) fn partition_of(engine: &Engine, op: &Op) -> Option<usize> {
    Some(match op {
        Op::CreateSku(r) => engine.sku_shard_of(&r.sku_id),
        Op::UpdateSku(r) => engine.sku_shard_of(&r.sku_id),
        Op::AdjustStock(r) => engine.sku_shard_of(&r.sku_id),
        Op::GetSku(r) => engine.sku_shard_of(&r.sku_id),
        Op::CreateOrder(r) => engine.user_shard(&r.user_id),
        Op::ListOrders(r) => engine.user_shard(&r.user_id),
        Op::WalletCredit(r) | Op::WalletDebit(r) => engine.user_shard(&r.user_id),
        Op::GetWallet(r) => engine.user_shard(&r.user_id),
        Op::ListWalletEntries(r) => engine.user_shard(&r.user_id),
        Op::GetOrder(r) => engine.order_shard(r.order_id.0),
        Op::Pay(r) => engine.order_shard(r.order_id.0),
        Op::Transition(_, r) => engine.order_shard(r.order_id.0),
        Op::Ship(r) => engine.order_shard(r.order_id.0),
        Op::ResolveDispute(r) => engine.order_shard(r.order_id.0),
        Op::PayWithWallet(r) => engine.order_shard(r.order_id.0),
        Op::Ping | Op::Subscribe(_) | Op::Unsubscribe(_) => return None,
    })
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Service => "service",
        Role::User => "user",
    }
}

fn unavailable_reply(id: &Value) -> String {
    protocol::engine_err_reply(id, &EngineError::Unavailable { retry_after_ms: FORWARD_RETRY_AFTER_MS })
}

impl Conn {
    /// The partition `op` belongs to, if another node hosts it (cluster mode only).
    pub(super) fn remote_partition(&self, op: &Op) -> Option<usize> {
        self.gw.cluster.as_ref()?;
        let p = partition_of(&self.gw.engine, op)?;
        (!self.gw.engine.hosts(p)).then_some(p)
    }

    /// Forward `line` (the request as the client sent it) to the node hosting partition `p`,
    /// and queue its answer as this request's reply.
    pub(super) fn spawn_forward(&self, req: Req, line: &str, role: Role, p: usize, permit: OwnedSemaphorePermit) {
        let Some(route) = self.gw.cluster.clone() else { return };
        let fwd = Forwarded {
            line: line.to_owned(),
            role: role_name(role).to_owned(),
            user: self.acting_user().map(|u| u.to_string()),
            minimal: self.reply_shape == ReplyShape::Minimal,
        };
        let payload = serde_json::to_vec(&fwd).map(bytes::Bytes::from).unwrap_or_default();
        let timeout = Duration::from_millis(self.gw.limits.request_timeout_ms);
        let out = self.replier();
        self.gw.tracker.spawn(async move {
            let p32 = u32::try_from(p).unwrap_or(u32::MAX);
            let (text, code) =
                match surge_cluster::rpc::forward(&route.client, &route.prefix, p32, payload, timeout).await {
                    Ok(bytes) => match String::from_utf8(bytes.to_vec()) {
                        Ok(text) => (text, "forwarded"),
                        Err(_) => (unavailable_reply(&req.id), "unavailable"),
                    },
                    Err(e) => {
                        tracing::debug!(partition = p, error = %e, "forwarded request got no answer");
                        (unavailable_reply(&req.id), "unavailable")
                    }
                };
            out.send(text).await;
            drop(permit);
            crate::metrics::request(req.op_name, code, req.t0.elapsed());
        });
    }
}

/// Answers requests other nodes forward to this node's partitions, once the gateway is built
/// ([`ForwardedHandler::attach`]; `unavailable` before).
#[derive(Default)]
pub(crate) struct ForwardedHandler {
    gateway: OnceLock<Arc<Gateway>>,
}

impl ForwardedHandler {
    pub fn attach(&self, gateway: Arc<Gateway>) {
        let _ = self.gateway.set(gateway);
    }
}

impl surge_cluster::rpc::RpcHandler for ForwardedHandler {
    fn handle(&self, request: bytes::Bytes) -> Pin<Box<dyn Future<Output = bytes::Bytes> + Send>> {
        let gw = self.gateway.get().cloned();
        Box::pin(async move {
            let text = match gw {
                Some(gw) => run_forwarded(&gw, &request).await,
                None => unavailable_reply(&Value::Null),
            };
            bytes::Bytes::from(text)
        })
    }
}

/// Parse a forwarded request as its connection would (the user's scope applied) and run it.
async fn run_forwarded(gw: &Arc<Gateway>, request: &[u8]) -> String {
    let fwd: Forwarded = match serde_json::from_slice(request) {
        Ok(f) => f,
        Err(e) => return protocol::err_reply(&Value::Null, &WireError::new("invalid_request", e.to_string())),
    };
    let env = match protocol::parse_envelope(&fwd.line) {
        Ok(env) => env,
        Err((id, e)) => return protocol::err_reply(&id, &e),
    };
    let role = match fwd.role.as_str() {
        "admin" => Role::Admin,
        "service" => Role::Service,
        _ => Role::User,
    };
    let user: Option<Arc<str>> = fwd.user.map(Arc::from);
    let mut fields = env.fields;
    if let Some(sub) = &user {
        if let Err(e) = scope::user_id_field(sub, &env.op, &mut fields) {
            return protocol::err_reply(&env.id, &e);
        }
    }
    let op = match protocol::parse_op(&env.op, fields) {
        Ok(op) => op,
        Err(e) => return protocol::err_reply(&env.id, &e),
    };
    let shape = if fwd.minimal { ReplyShape::Minimal } else { ReplyShape::Full };
    super::execute::run_for(gw, &env.id, op, role, user, shape).await
}
