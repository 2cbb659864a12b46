//! One connection's protocol logic, shared by the TCP and WebSocket transports: authentication,
//! role checks, rate limits, in-flight accounting (back-pressure), request deadline, routing
//! into the engine, subscriptions, and the outbound queue.
//!
//! One concern per file: this file holds the connection ([`Conn`]) and routes each message
//! through its checks (`on_text`); `execute.rs` makes the engine calls (deadline, a user's order
//! scope, the reply and its log line); `answer.rs` answers a connection's `create_order`
//! batches from one task; `outbound.rs` is what a transport's writer sends next
//! (replies, numbered pushes, the final error of a killed connection).

mod answer;
mod execute;
mod forward;
mod outbound;

pub(crate) use forward::{ClusterRoute, ForwardedHandler};

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{Map, Value};
use surge_engine::Engine;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::auth::{scope, Authenticator, Identity, Role};
use crate::config::LimitsConfig;
use crate::hub::{ConnShared, Control, HubLink, Outbound, Sink, Topic};
use crate::limits::{LimitStats, Replier};
use crate::protocol::{self, Op, WireError};

pub(crate) use outbound::{killed, next_outbound, Next};

/// The answer to a message before authentication that is not an `auth`.
const AUTHENTICATE_FIRST: &str = "authenticate first: {\"op\":\"auth\",\"token\":…}";

/// Most subscriptions one connection may hold.
pub const SUBSCRIPTIONS_PER_CONNECTION_MAX: usize = 1_000;

/// Everything the connections share.
pub(crate) struct Gateway {
    pub engine: Engine,
    pub auth: Authenticator,
    pub limits: LimitsConfig,
    pub control: HubLink,
    pub limit_stats: Arc<LimitStats>,
    pub user_limiter: crate::limits::UserLimiter,
    pub next_conn: AtomicU64,
    pub connections: AtomicUsize,
    pub shutdown: watch::Receiver<bool>,
    pub tracker: TaskTracker,
    pub ready: AtomicBool,
    pub clock: DefaultClock,
    /// The event stream's publisher, when `[events]` is on (its status is part of `/ready`).
    pub events: Option<surge_events::StatusSource>,
    /// Cluster mode: where requests for partitions hosted elsewhere are forwarded.
    pub cluster: Option<ClusterRoute>,
}

fn quota(rps: u32, burst: u32) -> Quota {
    let rps = NonZeroU32::new(rps).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(rps);
    Quota::per_second(rps).allow_burst(burst)
}

impl Gateway {
    pub fn user_quota(limits: &LimitsConfig) -> crate::limits::UserLimiter {
        crate::limits::UserLimiter::new(quota(limits.per_user_rps, limits.per_user_burst))
    }

    /// Reserve a connection slot, unless `max_connections` are open.
    pub fn try_connection(self: &Arc<Self>) -> Option<ConnSlot> {
        let max = self.limits.max_connections;
        let prev = self.connections.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            crate::metrics::connection_refused();
            return None;
        }
        crate::metrics::connection(true);
        Some(ConnSlot(self.clone()))
    }

    /// Has the server begun to shut down? Asked per pipelined request, so the common answer
    /// is one atomic load: this receiver is never marked seen and the only value ever sent is
    /// `true`, so "unchanged" means "not stopping"; `borrow` (a lock) only after a change.
    pub fn is_shutting_down(&self) -> bool {
        match self.shutdown.has_changed() {
            Ok(false) => false,
            _ => *self.shutdown.borrow(),
        }
    }
}

/// One open connection's slot (released on drop).
pub(crate) struct ConnSlot(Arc<Gateway>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::connection(false);
    }
}

/// Should the transport keep reading?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Close,
}

/// One connection's state (owned by its reader).
pub(crate) struct Conn {
    pub gw: Arc<Gateway>,
    pub id: u64,
    pub role: Option<Role>,
    /// Who authenticated (`role` is its role); `user` connections act only as its `user_id`.
    identity: Option<Identity>,
    /// Ends the token-expiry timer of a `user` connection when the connection goes away.
    expiry: Option<DropGuard>,
    pub out: mpsc::Sender<Outbound>,
    pub shared: Arc<ConnShared>,
    pub cancel: CancellationToken,
    pub inflight: Arc<Semaphore>,
    limiter: DefaultDirectRateLimiter,
    topics: HashSet<Topic>,
    /// `create_order` requests read and not yet submitted ([`Conn::flush_creates`]).
    creates: Vec<execute::QueuedCreate>,
    /// The task that answers this connection's `create_order` batches, once there was one.
    answerer: Option<answer::BatchSender>,
    /// How this connection's replies show an order (asked for in `auth`).
    reply_shape: protocol::ReplyShape,
    /// The transport frames replies by line (TCP): a batch's replies may be queued as one
    /// text of several lines (one queue message and one write for the batch).
    pub join_replies: bool,
    _slot: ConnSlot,
}

impl Conn {
    pub fn new(gw: Arc<Gateway>, slot: ConnSlot, identity: Option<Identity>) -> (Self, mpsc::Receiver<Outbound>) {
        let (out, rx) = mpsc::channel(gw.limits.outbound_queue);
        let id = gw.next_conn.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(ConnShared::default());
        let limiter = RateLimiter::direct(quota(gw.limits.per_connection_rps, gw.limits.per_connection_burst));
        let inflight = Arc::new(Semaphore::new(gw.limits.max_in_flight));
        let cancel = shared.cancel.clone();
        let topics = HashSet::new();
        let mut conn = Self {
            gw,
            id,
            role: None,
            identity: None,
            expiry: None,
            out,
            shared,
            cancel,
            inflight,
            limiter,
            topics,
            creates: Vec::new(),
            answerer: None,
            reply_shape: protocol::ReplyShape::Full,
            join_replies: false,
            _slot: slot,
        };
        if let Some(identity) = identity {
            conn.set_identity(identity);
        }
        (conn, rx)
    }

    /// Become `identity`; a `user` connection also gets a timer that closes it (final error
    /// `unauthorized`) when its token expires, so an idle subscriber stops getting pushes too.
    fn set_identity(&mut self, identity: Identity) {
        tracing::debug!(conn = self.id, role = identity.role.as_str(), "authenticated");
        self.role = Some(identity.role);
        if let Some(at_ms) = identity.expires_at_ms {
            let left = Duration::from_millis(at_ms.saturating_sub(crate::auth::wall_now_ms()));
            let gone = CancellationToken::new();
            let (shared, ended) = (self.shared.clone(), gone.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(left) => shared.kill("unauthorized"),
                    _ = ended.cancelled() => {}
                }
            });
            self.expiry = Some(gone.drop_guard());
        }
        self.identity = Some(identity);
    }

    /// The user a `user` connection acts as (`None` for `admin` / `service`).
    fn acting_user(&self) -> Option<&Arc<str>> {
        self.identity.as_ref().and_then(|i| i.user_id.as_ref())
    }

    /// Wait for an in-flight slot (back-pressure: the transport reads nothing until it has one).
    pub async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.inflight.clone().acquire_owned().await.ok()
    }

    /// The next in-flight slot (back-pressure: a transport reads its next request only with
    /// one), or `None` once the connection is killed or the server shuts down.
    pub async fn next_permit(&self, shutdown: &mut watch::Receiver<bool>) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            p = self.permit() => p,
            _ = self.cancel.cancelled() => None,
            _ = shutdown.wait_for(|s| *s) => None,
        }
    }

    /// Queues this connection's replies within `max_pending_reply_bytes`.
    pub fn replier(&self) -> Replier {
        let (out, shared, stats) = (self.out.clone(), self.shared.clone(), self.gw.limit_stats.clone());
        Replier { out, shared, stats, max_bytes: self.gw.limits.max_pending_reply_bytes }
    }

    pub async fn reply(&self, text: String) {
        self.replier().send(text).await;
    }

    pub async fn reply_err(&self, id: &Value, e: WireError) {
        self.reply(protocol::err_reply(id, &e)).await;
    }

    /// Handle one text message; `permit` is this request's in-flight slot. The steps, in order:
    /// the envelope, `auth`, [`Conn::admit`] (authenticated, known op, role), [`Conn::typed_op`]
    /// (a user's scope, rate limits, typed parse with lengths), then [`Conn::dispatch`]. A
    /// refusal answers with a typed error; only authentication failures close the connection.
    pub async fn on_text(&mut self, text: &str, permit: OwnedSemaphorePermit) -> Flow {
        self.on_text_read_at(text, permit, Instant::now()).await
    }

    /// [`Conn::on_text`] for a message read at `t0` (its latency is measured from there): the
    /// lines of one socket read share one clock read.
    pub async fn on_text_read_at(&mut self, text: &str, permit: OwnedSemaphorePermit, t0: Instant) -> Flow {
        // The hot request, read in one typed pass (`protocol::parse_create_order`), when the
        // connection acts for any user (a `user` connection's scope rewrites the fields).
        if self.role.is_some() && self.acting_user().is_none() {
            if let Some((id, create)) = protocol::parse_create_order(text) {
                let req = Req { id, op_name: "create_order", t0 };
                let role = match self.admit(&req, "create_order").await {
                    Ok(role) => role,
                    Err(flow) => return flow,
                };
                match self.limited(|| protocol::checked(Op::CreateOrder(create))) {
                    Ok(op) => self.dispatch(req, op, role, permit, text).await,
                    Err(e) => self.fail(&req.id, req.op_name, t0, e).await,
                }
                return Flow::Continue;
            }
        }
        let env = match protocol::parse_envelope(text) {
            Ok(env) => env,
            Err((id, e)) => return self.bad_envelope(&id, e, t0).await,
        };
        // A closed set of label values: the client's op string never becomes a label.
        let req = Req { id: env.id, op_name: crate::metrics::op_label(&env.op), t0 };
        if env.op == "auth" {
            return self.on_auth(&req.id, env.fields, req.op_name, t0).await;
        }
        let role = match self.admit(&req, &env.op).await {
            Ok(role) => role,
            Err(flow) => return flow,
        };
        match self.typed_op(&env.op, env.fields) {
            Ok(op) => self.dispatch(req, op, role, permit, text).await,
            Err(e) => self.fail(&req.id, req.op_name, t0, e).await,
        }
        Flow::Continue
    }

    /// A message that is not a request envelope: before authentication it closes the
    /// connection (`unauthorized`), after it is answered and the connection stays.
    async fn bad_envelope(&mut self, id: &Value, e: WireError, t0: Instant) -> Flow {
        if self.role.is_none() {
            return self.auth_failed(id, "invalid", t0, AUTHENTICATE_FIRST).await;
        }
        self.fail(id, "invalid", t0, e).await;
        Flow::Continue
    }

    /// May this connection send `op` at all? Unauthenticated or expired: `unauthorized`, and
    /// the connection closes; otherwise `unknown_op`, or `forbidden` when its role may not
    /// (the one table of who may do what, `protocol::OPS`).
    async fn admit(&mut self, req: &Req, op: &str) -> Result<Role, Flow> {
        let Some(role) = self.role else {
            return Err(self.auth_failed(&req.id, req.op_name, req.t0, AUTHENTICATE_FIRST).await);
        };
        if self.identity.as_ref().and_then(|i| i.expires_at_ms).is_some_and(|at| crate::auth::wall_now_ms() >= at) {
            let msg = "the token expired: connect and authenticate again";
            return Err(self.auth_failed(&req.id, req.op_name, req.t0, msg).await);
        }
        let refused = if !protocol::known_op(op) {
            WireError::new("unknown_op", "unknown op")
        } else if !protocol::allowed(role, op) {
            WireError::new("forbidden", format!("op {op} needs role {}", protocol::roles_of(op)))
        } else {
            return Ok(role);
        };
        self.fail(&req.id, req.op_name, req.t0, refused).await;
        Err(Flow::Continue)
    }

    /// The typed request, after: a user connection's `user_id` (filled in, or `forbidden` if
    /// another's), the connection's rate limit, the strict parse with its length checks, and
    /// the per-user rate limit (keyed on a `user_id` that is by then bounded).
    fn typed_op(&self, op: &str, mut fields: Map<String, Value>) -> Result<Op, WireError> {
        if let Some(sub) = self.acting_user() {
            scope::user_id_field(sub, op, &mut fields)?;
        }
        self.limited(|| protocol::parse_op(op, fields))
    }

    /// The connection's rate limit, then `parse` (the typed request with its lengths checked),
    /// then the per-user rate limit (keyed on a `user_id` that is by then bounded).
    fn limited(&self, parse: impl FnOnce() -> Result<Op, WireError>) -> Result<Op, WireError> {
        if let Err(nu) = self.limiter.check() {
            crate::metrics::rate_limited("connection");
            return Err(rate_limited("connection", nu.wait_time_from(self.gw.clock.now())));
        }
        let op = parse()?;
        let user = match &op {
            Op::CreateOrder(r) => Some(&*r.user_id),
            Op::ListOrders(r) => Some(r.user_id.as_str()),
            _ => None,
        };
        if let Some(Err(nu)) = user.map(|u| self.gw.user_limiter.check(u)) {
            crate::metrics::rate_limited("user");
            return Err(rate_limited("user", nu.wait_time_from(self.gw.clock.now())));
        }
        Ok(op)
    }

    /// Answer `ping` and (un)subscriptions here; queue `create_order` for the connection's
    /// next batch ([`Conn::queue_create`]); hand other engine requests to a task
    /// ([`Conn::spawn_request`]); in a cluster, forward a request for a partition another node
    /// hosts (`text` as sent, `forward.rs`). Each keeps `permit` until its reply is queued.
    async fn dispatch(&mut self, req: Req, op: Op, role: Role, permit: OwnedSemaphorePermit, text: &str) {
        if let Some(p) = self.remote_partition(&op) {
            self.flush_creates();
            return self.spawn_forward(req, text, role, p, permit);
        }
        let op = match op {
            Op::CreateOrder(r) => return self.queue_create(req, r, permit),
            op => op,
        };
        // Requests reach the engine in the order they were read.
        self.flush_creates();
        let code = match op {
            Op::Ping => {
                let now = self.gw.engine.now_ms();
                self.reply(protocol::ok_reply(&req.id, &serde_json::json!({ "pong": true, "now_ms": now }))).await;
                "ok"
            }
            Op::Subscribe(t) => self.subscribe(&req.id, &t.topic, true).await,
            Op::Unsubscribe(t) => self.subscribe(&req.id, &t.topic, false).await,
            op => return self.spawn_request(req, op, role, permit),
        };
        crate::metrics::request(req.op_name, code, req.t0.elapsed());
    }

    /// `{"op":"auth","token":…}` or `{"op":"auth","jwt":…}`: become `admin` / `service` or a
    /// `user`; a refused credential closes the connection.
    async fn on_auth(&mut self, id: &Value, fields: Map<String, Value>, op_name: &'static str, t0: Instant) -> Flow {
        if self.role.is_some() {
            self.fail(id, op_name, t0, WireError::new("invalid_request", "already authenticated")).await;
            return Flow::Continue;
        }
        let (credential, reply_shape) = match protocol::parse_auth(fields) {
            Ok(c) => c,
            Err(_) => return self.auth_failed(id, op_name, t0, "auth takes exactly one of token and jwt").await,
        };
        let verified = match credential {
            protocol::Credential::Token(t) => self.gw.auth.token(&t).ok_or_else(|| "invalid token".to_owned()),
            protocol::Credential::Jwt(j) => self.gw.auth.jwt(&j).map_err(|e| e.0),
        };
        match verified {
            Ok(identity) => {
                let mut result = serde_json::json!({ "role": identity.role.as_str() });
                if let Some(u) = &identity.user_id {
                    result["user_id"] = Value::String(u.to_string());
                }
                if let Some(ms) = identity.expires_at_ms {
                    result["expires_at_ms"] = Value::from(ms);
                }
                if reply_shape == protocol::ReplyShape::Minimal {
                    result["reply"] = Value::String("minimal".into());
                }
                self.reply_shape = reply_shape;
                self.set_identity(identity);
                self.reply(protocol::ok_reply(id, &result)).await;
                crate::metrics::request(op_name, "ok", t0.elapsed());
                Flow::Continue
            }
            Err(msg) => self.auth_failed(id, op_name, t0, &msg).await,
        }
    }

    /// Answer `e` to a request that never reached the engine, and count it.
    async fn fail(&self, id: &Value, op: &'static str, t0: Instant, e: WireError) {
        let code = e.code;
        self.reply_err(id, e).await;
        crate::metrics::request(op, code, t0.elapsed());
        tracing::debug!(conn = self.id, request_id = %ReqId(id), op, code, "request refused");
    }

    async fn auth_failed(&mut self, id: &Value, op: &'static str, t0: Instant, message: &str) -> Flow {
        // Never log the token (nor the message that carried it).
        tracing::info!(conn = self.id, request_id = %ReqId(id), "authentication failed; closing");
        crate::metrics::auth_failed();
        self.fail(id, op, t0, WireError::new("unauthorized", message)).await;
        Flow::Close
    }

    /// Subscribe or unsubscribe; returns the reply's code (`ok` or the error code).
    async fn subscribe(&mut self, id: &Value, topic: &str, on: bool) -> &'static str {
        let Some(t) = Topic::parse(topic) else {
            let e = WireError::new("invalid_request", "topic must be order:<id>, user:<id> or sku:<id>");
            self.reply_err(id, e).await;
            return "invalid_request";
        };
        if let (true, Some(sub)) = (on, self.acting_user()) {
            if let Err(refused) = scope::topic(&self.gw.engine, sub, &t) {
                self.reply(refused.reply(id)).await;
                return refused.code();
            }
        }
        if on && !self.topics.contains(&t) && self.topics.len() >= SUBSCRIPTIONS_PER_CONNECTION_MAX {
            let e = WireError::new("invalid_request", "too many subscriptions on this connection");
            self.reply_err(id, e).await;
            return "invalid_request";
        }
        let (ack, done) = oneshot::channel();
        let msg = if on {
            let sink = Sink { out: self.out.clone(), shared: self.shared.clone() };
            self.topics.insert(t.clone());
            Control::Subscribe { conn: self.id, topic: t, sink, ack }
        } else {
            self.topics.remove(&t);
            Control::Unsubscribe { conn: self.id, topic: t, ack }
        };
        if self.gw.control.send(msg).await.is_err() || done.await.is_err() {
            self.reply_err(id, WireError::new("shutting_down", "the server is shutting down")).await;
            return "shutting_down";
        }
        let result = serde_json::json!({ "topic": topic, "subscribed": on });
        self.reply(protocol::ok_reply(id, &result)).await;
        "ok"
    }

    /// End of a connection, for both transports: [`Conn::finish`], then wait (bounded by the
    /// same deadline) for the `writer` task to drain, and abort it if it cannot.
    pub async fn close(self, mut writer: tokio::task::JoinHandle<()>) {
        let wait = Duration::from_millis(self.gw.limits.request_timeout_ms.saturating_add(1_000));
        self.finish(wait).await;
        if tokio::time::timeout(wait, &mut writer).await.is_err() {
            writer.abort();
        }
    }

    /// Wait (bounded) for the in-flight requests, leave the hub, and tell the writer to finish.
    pub async fn finish(mut self, wait: Duration) {
        self.flush_creates();
        let max = u32::try_from(self.gw.limits.max_in_flight).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(wait, self.inflight.acquire_many(max)).await;
        let _ = tokio::time::timeout(wait, self.out.send(Outbound::Close)).await;
    }
}

impl Drop for Conn {
    /// Leave the hub however the connection ends (finished, aborted or panicked): the
    /// disconnect is never dropped (issue 10 item 14).
    fn drop(&mut self) {
        if !self.topics.is_empty() {
            self.gw.control.disconnect(self.id);
        }
    }
}

fn rate_limited(scope: &str, wait: Duration) -> WireError {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    WireError { retry_after_ms: Some(ms), ..WireError::new("rate_limited", format!("{scope} rate limit exceeded")) }
}

/// One request's context, from its envelope to its log line.
pub(crate) struct Req {
    /// The client's `id`, echoed in the reply.
    id: Value,
    /// The op as a metrics label (a closed set).
    op_name: &'static str,
    /// When its message was read (latency is measured from here).
    t0: Instant,
}

/// A request's `id` for logs: a string id unquoted with control characters, quotes and
/// backslashes escaped (Rust's `escape_debug`: a client's `\n` or `"` cannot forge a log line or
/// break a JSON log), a number as is, `-` when absent.
struct ReqId<'a>(&'a Value);

impl std::fmt::Display for ReqId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Value::String(s) => write!(f, "{}", s.escape_debug()),
            Value::Null => f.write_str("-"),
            v => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_escaped_in_logs() {
        let forged = Value::String("a\n2026-11-29T00:00:00Z INFO forged\"}\r\u{1b}[31m\\".into());
        let shown = ReqId(&forged).to_string();
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(shown, r#"a\n2026-11-29T00:00:00Z INFO forged\"}\r\u{1b}[31m\\"#);
        assert_eq!(ReqId(&Value::String("plain-7".into())).to_string(), "plain-7");
        assert_eq!(ReqId(&Value::from(7)).to_string(), "7");
    }
}
