//! One connection's protocol logic, shared by the TCP and WebSocket transports: authentication,
//! role checks, rate limits, in-flight accounting (back-pressure), request deadline, routing
//! into the engine, subscriptions, and the outbound queue.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::{Map, Value};
use surge_engine::{
    CreateOrder, Engine, EngineError, Initiator, ListOrders, OrderEventKind, SaleRules, SkuSpec, SkuUpdate,
    TransitionOptions,
};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::auth::{scope, Authenticator, Identity, Role};
use crate::config::LimitsConfig;
use crate::hub::{ConnShared, Control, HubLink, Outbound, Sink, Topic};
use crate::limits::{LimitStats, Replier};
use crate::protocol::{self, encode_order_cursor, Op, WireError};

/// Most subscriptions one connection may hold.
pub const SUBSCRIPTIONS_PER_CONNECTION_MAX: usize = 1_000;

/// Everything the connections share.
pub(crate) struct Gateway {
    pub engine: Engine,
    pub auth: Authenticator,
    pub limits: LimitsConfig,
    pub control: HubLink,
    pub limit_stats: Arc<LimitStats>,
    pub user_limiter: DefaultKeyedRateLimiter<String>,
    pub next_conn: AtomicU64,
    pub connections: AtomicUsize,
    pub shutdown: watch::Receiver<bool>,
    pub tracker: TaskTracker,
    pub ready: AtomicBool,
    pub clock: DefaultClock,
}

fn quota(rps: u32, burst: u32) -> Quota {
    let rps = NonZeroU32::new(rps).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(rps);
    Quota::per_second(rps).allow_burst(burst)
}

impl Gateway {
    pub fn user_quota(limits: &LimitsConfig) -> DefaultKeyedRateLimiter<String> {
        RateLimiter::keyed(quota(limits.per_user_rps, limits.per_user_burst))
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

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
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

    /// Handle one text message; `permit` is this request's in-flight slot.
    pub async fn on_text(&mut self, text: &str, permit: OwnedSemaphorePermit) -> Flow {
        let t0 = Instant::now();
        let env = match protocol::parse_envelope(text) {
            Ok(env) => env,
            Err((id, e)) => {
                if self.role.is_none() {
                    return self
                        .auth_failed(&id, "invalid", t0, "authenticate first: {\"op\":\"auth\",\"token\":…}")
                        .await;
                }
                self.fail(&id, "invalid", t0, e).await;
                return Flow::Continue;
            }
        };
        let id = env.id;
        // A closed set of label values: the client's op string never becomes a label.
        let op_name = crate::metrics::op_label(&env.op);
        if env.op == "auth" {
            return self.on_auth(&id, env.fields, op_name, t0).await;
        }
        let Some(role) = self.role else {
            return self.auth_failed(&id, op_name, t0, "authenticate first: {\"op\":\"auth\",\"token\":…}").await;
        };
        if self.identity.as_ref().and_then(|i| i.expires_at_ms).is_some_and(|at| crate::auth::wall_now_ms() >= at) {
            return self.auth_failed(&id, op_name, t0, "the token expired: connect and authenticate again").await;
        }
        if !protocol::known_op(&env.op) {
            self.fail(&id, op_name, t0, WireError::new("unknown_op", "unknown op")).await;
            return Flow::Continue;
        }
        if !protocol::allowed(role, &env.op) {
            let msg = format!("op {} needs role {}", env.op, protocol::roles_of(&env.op));
            self.fail(&id, op_name, t0, WireError::new("forbidden", msg)).await;
            return Flow::Continue;
        }
        let mut fields = env.fields;
        if let Some(sub) = self.acting_user() {
            if let Err(e) = scope::user_id_field(sub, &env.op, &mut fields) {
                self.fail(&id, op_name, t0, e).await;
                return Flow::Continue;
            }
        }
        if let Err(nu) = self.limiter.check() {
            let wait = nu.wait_time_from(self.gw.clock.now());
            crate::metrics::rate_limited("connection");
            self.fail(&id, op_name, t0, rate_limited("connection", wait)).await;
            return Flow::Continue;
        }
        let op = match protocol::parse_op(&env.op, fields) {
            Ok(op) => op,
            Err(e) => {
                self.fail(&id, op_name, t0, e).await;
                return Flow::Continue;
            }
        };
        let user = match &op {
            Op::CreateOrder(r) => Some(&r.user_id),
            Op::ListOrders(r) => Some(&r.user_id),
            _ => None,
        };
        if let Some(user) = user {
            if let Err(nu) = self.gw.user_limiter.check_key(user) {
                let wait = nu.wait_time_from(self.gw.clock.now());
                crate::metrics::rate_limited("user");
                self.fail(&id, op_name, t0, rate_limited("user", wait)).await;
                return Flow::Continue;
            }
        }
        match op {
            Op::Ping => {
                let now = self.gw.engine.now_ms();
                self.reply(protocol::ok_reply(&id, &serde_json::json!({ "pong": true, "now_ms": now }))).await;
                crate::metrics::request(op_name, "ok", t0.elapsed());
            }
            Op::Subscribe(t) => {
                let code = self.subscribe(&id, &t.topic, true).await;
                crate::metrics::request(op_name, code, t0.elapsed());
            }
            Op::Unsubscribe(t) => {
                let code = self.subscribe(&id, &t.topic, false).await;
                crate::metrics::request(op_name, code, t0.elapsed());
            }
            op => {
                let engine = self.gw.engine.clone();
                let out = self.replier();
                let deadline = Duration::from_millis(self.gw.limits.request_timeout_ms);
                let by = if role == Role::Admin { Initiator::Admin } else { Initiator::User };
                let conn = self.id;
                let user = self.acting_user().cloned();
                self.gw.tracker.spawn(async move {
                    let (mut order_id, sku_id) = log_ids(&op);
                    let run = async {
                        // A user's request for another user's order answers as if it did not exist.
                        if let (Some(sub), Some(order_id)) = (&user, scope::order_of(&op)) {
                            scope::own_order(&engine, sub, order_id)?;
                        }
                        execute(&engine, op, by).await
                    };
                    let (text, code, err_sku) = match tokio::time::timeout(deadline, run).await {
                        Ok(Ok(v)) => {
                            order_id = order_id.or_else(|| v.order_id());
                            (protocol::ok_reply(&id, &v), "ok", None)
                        }
                        Ok(Err(e)) => {
                            if matches!(e, EngineError::Overloaded) {
                                crate::metrics::overloaded("mailbox");
                            }
                            (protocol::engine_err_reply(&id, &e), e.code(), e.sku_id().map(str::to_owned))
                        }
                        Err(_) => {
                            crate::metrics::overloaded("deadline");
                            let e = WireError::new(
                                "overloaded",
                                "request deadline exceeded; the outcome is unknown: retry with the same \
                                 idempotency key or payment id",
                            );
                            (protocol::err_reply(&id, &e), "overloaded", None)
                        }
                    };
                    out.send(text).await;
                    drop(permit);
                    let elapsed = t0.elapsed();
                    crate::metrics::request(op_name, code, elapsed);
                    tracing::debug!(
                        conn,
                        request_id = %ReqId(&id),
                        op = op_name,
                        code,
                        order_id,
                        sku_id = err_sku.as_deref().or(sku_id.as_deref()),
                        elapsed_us = elapsed.as_micros() as u64,
                        "request"
                    );
                });
            }
        }
        Flow::Continue
    }

    /// `{"op":"auth","token":…}` or `{"op":"auth","jwt":…}`: become `admin` / `service` or a
    /// `user`; a refused credential closes the connection.
    async fn on_auth(&mut self, id: &Value, fields: Map<String, Value>, op_name: &'static str, t0: Instant) -> Flow {
        if self.role.is_some() {
            self.fail(id, op_name, t0, WireError::new("invalid_request", "already authenticated")).await;
            return Flow::Continue;
        }
        let credential = match protocol::parse_auth(fields) {
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
    pub async fn finish(self, wait: Duration) {
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

/// Number `seq` for one push and encode it.
pub(crate) fn encode_push(seq: u64, push: &Map<String, Value>) -> String {
    let mut m = push.clone();
    m.insert("seq".into(), Value::from(seq));
    Value::Object(m).to_string()
}

/// What a writer does next.
pub(crate) enum Next {
    /// Write this push.
    Text(String),
    /// Write this reply, then tell `limits::reply_written`.
    Reply(String),
    /// Write this final error, then close.
    Final(String),
    /// Close.
    End,
}

/// The writer's next step: the next reply/push (numbering pushes), or the kill switch.
pub(crate) async fn next_outbound(rx: &mut mpsc::Receiver<Outbound>, shared: &ConnShared, seq: &mut u64) -> Next {
    tokio::select! {
        biased;
        _ = shared.cancel.cancelled() => match shared.kill_code.get() {
            Some(code) => {
                *seq += 1;
                let msg = match *code {
                    "slow_consumer" => {
                        "this connection does not read what it is sent (outbound queue, max_pending_reply_bytes or \
                         write_timeout_ms exceeded) and is disconnected"
                    }
                    "unauthorized" => "the token expired: connect and authenticate again",
                    _ => "connection closed by the server",
                };
                let v = serde_json::json!({ "event": "error", "seq": *seq, "error": { "code": code, "message": msg } });
                Next::Final(v.to_string())
            }
            None => Next::End,
        },
        m = rx.recv() => match m {
            Some(Outbound::Reply(s)) => Next::Reply(s),
            Some(Outbound::Push(p)) => {
                *seq += 1;
                Next::Text(encode_push(*seq, &p))
            }
            Some(Outbound::Close) | None => Next::End,
        },
    }
}

fn opts(expected_version: Option<u32>, reason: Option<String>) -> TransitionOptions {
    TransitionOptions { expected_version, reason }
}

/// What an engine request returns, serialized straight into the reply (no `Value` tree: the
/// order is the bulk of every reply, and building a map of it first cost a fifth of the
/// gateway's CPU per request).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Outcome {
    Order(#[serde(serialize_with = "crate::wire::order")] Arc<surge_engine::Order>),
    Sku(surge_engine::SkuView),
    /// A `list_orders` page; `next_cursor` is `null` on the last page.
    Orders {
        #[serde(serialize_with = "crate::wire::orders")]
        orders: Vec<Arc<surge_engine::Order>>,
        next_cursor: Option<String>,
    },
    Null(()),
}

impl Outcome {
    fn order_id(&self) -> Option<u64> {
        match self {
            Outcome::Order(o) => Some(o.order_id.0),
            _ => None,
        }
    }
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

/// The order id and SKU id a request names, for its log line (never the payload itself).
fn log_ids(op: &Op) -> (Option<u64>, Option<String>) {
    match op {
        Op::CreateSku(r) => (None, Some(r.sku_id.clone())),
        Op::UpdateSku(r) => (None, Some(r.sku_id.clone())),
        Op::AdjustStock(r) => (None, Some(r.sku_id.clone())),
        Op::GetSku(r) => (None, Some(r.sku_id.clone())),
        Op::CreateOrder(r) => (None, r.items.first().map(|i| i.sku_id.clone())),
        Op::GetOrder(r) => (Some(r.order_id.0 .0), None),
        Op::Pay(r) => (Some(r.order_id.0 .0), None),
        Op::Transition(_, r) => (Some(r.order_id.0 .0), None),
        Op::Ship(r) => (Some(r.order_id.0 .0), None),
        Op::ResolveDispute(r) => (Some(r.order_id.0 .0), None),
        Op::ListOrders(_) | Op::Ping | Op::Subscribe(_) | Op::Unsubscribe(_) => (None, None),
    }
}

/// Run one typed request on the engine.
async fn execute(engine: &Engine, op: Op, by: Initiator) -> Result<Outcome, EngineError> {
    Ok(match op {
        Op::CreateSku(r) => Outcome::Sku(
            engine
                .create_sku(SkuSpec {
                    sku_id: r.sku_id,
                    name: r.name,
                    price: r.price,
                    initial_stock: r.initial_stock,
                    rules: SaleRules {
                        per_user_limit: r.per_user_limit,
                        sale_starts_at_ms: r.sale_starts_at_ms,
                        sale_ends_at_ms: r.sale_ends_at_ms,
                        paused: r.paused,
                    },
                })
                .await?,
        ),
        Op::UpdateSku(r) => {
            let update = SkuUpdate {
                name: r.name,
                price: r.price,
                per_user_limit: r.per_user_limit,
                sale_starts_at_ms: r.sale_starts_at_ms,
                sale_ends_at_ms: r.sale_ends_at_ms,
                paused: r.paused,
            };
            Outcome::Sku(engine.update_sku(&r.sku_id, update).await?)
        }
        Op::AdjustStock(r) => Outcome::Sku(engine.adjust_stock(&r.sku_id, &r.adjustment_id, r.delta, &r.reason).await?),
        Op::GetSku(r) => Outcome::Sku(engine.get_sku(&r.sku_id)?),
        Op::CreateOrder(r) => {
            let req = CreateOrder {
                user_id: r.user_id.into(),
                items: r.items.into_iter().map(|i| (i.sku_id.into(), i.qty)).collect(),
                idempotency_key: r.idempotency_key,
            };
            Outcome::Order(engine.create_order(req).await?)
        }
        Op::GetOrder(r) => Outcome::Order(engine.get_order(r.order_id.0)?),
        Op::ListOrders(r) => {
            let q = ListOrders { user_id: r.user_id, status: r.status, limit: r.limit, before: r.cursor };
            let page = engine.list_orders(&q)?;
            Outcome::Orders { orders: page.orders, next_cursor: page.next_before.map(encode_order_cursor) }
        }
        Op::Pay(r) => {
            Outcome::Order(engine.pay(r.order_id.0, &r.payment_id, r.amount, opts(r.expected_version, None)).await?)
        }
        Op::Transition(name, r) => {
            let event = match name {
                "cancel_order" => OrderEventKind::Cancel,
                "start_packing" => OrderEventKind::StartPacking,
                "deliver" => OrderEventKind::Deliver,
                "complete" => OrderEventKind::Complete,
                "request_refund" => OrderEventKind::RequestRefund,
                "confirm_refund" => OrderEventKind::ConfirmRefund,
                "reject_refund" => OrderEventKind::RejectRefund,
                "open_dispute" => OrderEventKind::OpenDispute,
                other => return Err(EngineError::InvalidRequest { message: format!("unknown transition {other}") }),
            };
            Outcome::Order(engine.transition(r.order_id.0, event, by, opts(r.expected_version, r.reason)).await?)
        }
        Op::Ship(r) => {
            Outcome::Order(engine.ship(r.order_id.0, &r.tracking_number, opts(r.expected_version, r.reason)).await?)
        }
        Op::ResolveDispute(r) => Outcome::Order(
            engine.resolve_dispute(r.order_id.0, r.resolution, opts(r.expected_version, r.reason)).await?,
        ),
        Op::Ping | Op::Subscribe(_) | Op::Unsubscribe(_) => Outcome::Null(()),
    })
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
