//! Engine requests of one connection: each runs on the gateway's task tracker under the
//! request deadline (`request_timeout_ms`), a `user` connection's request for another user's
//! order answers `unknown_order` before the engine acts (`auth::scope`), and the reply is queued
//! within the connection's reply-byte bound before the in-flight permit is released.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use surge_engine::{
    CreateOrder, Engine, EngineError, Initiator, ListOrders, OrderEventKind, SaleRules, SkuSpec, SkuUpdate,
    TransitionOptions,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::{answer, Conn, Req, ReqId};
use crate::auth::{scope, Role};
use crate::protocol::{
    self, encode_order_cursor, CreateOrderReq, CreateSkuReq, Op, ReplyShape, UpdateSkuReq, WireError,
};

/// Most `create_order` requests one connection submits as one engine batch
/// (`Engine::create_orders`); a pipelined client rarely has more ready at once.
pub const CREATE_BATCH_PER_CONNECTION_MAX: usize = 256;

/// A `create_order` read from the connection and waiting to be submitted with the others read
/// in the same wake-up ([`Conn::flush_creates`]).
pub(crate) struct QueuedCreate {
    req: Req,
    create: CreateOrder,
    /// The first item's SKU, for the log line.
    sku_id: Option<String>,
    /// Held until the reply is queued (back-pressure, as every request's).
    permit: OwnedSemaphorePermit,
}

impl Conn {
    /// Queue a `create_order` for [`Conn::flush_creates`]; the transport flushes when it has
    /// no complete message left to read, so every request that arrived together reaches the
    /// engine as one batch: one mailbox message per shard per batch, and no task or timer of
    /// its own (issue 13).
    pub(super) fn queue_create(&mut self, req: Req, r: CreateOrderReq, permit: OwnedSemaphorePermit) {
        let sku_id = r.items.first().filter(|_| debug_logged()).map(|i| i.sku_id.to_string());
        let create = CreateOrder {
            user_id: r.user_id,
            // In place: an item and an engine item have the same layout.
            items: r.items.into_iter().map(|i| (i.sku_id, i.qty)).collect(),
            idempotency_key: r.idempotency_key,
        };
        self.creates.push(QueuedCreate { req, create, sku_id, permit });
        if self.creates.len() >= CREATE_BATCH_PER_CONNECTION_MAX {
            self.flush_creates();
        }
    }

    /// Submit the queued `create_order` requests as one engine batch, and hand their answers to
    /// the connection's answering task (`answer.rs`), under one deadline (`request_timeout_ms`
    /// from now): an answer not in by then is `overloaded`, outcome unknown, as for any request.
    pub fn flush_creates(&mut self) {
        if self.creates.is_empty() {
            return;
        }
        let queued = std::mem::take(&mut self.creates);
        let mut creates = Vec::with_capacity(queued.len());
        let mut waiting = Vec::with_capacity(queued.len());
        for q in queued {
            creates.push(q.create);
            waiting.push((q.req, q.sku_id, q.permit));
        }
        crate::metrics::create_batch(creates.len());
        let answers = self.gw.engine.create_orders(creates);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.gw.limits.request_timeout_ms);
        let mut batch = answer::Batch { waiting, answers, deadline };
        // One answering task per connection, started with its first batch (`answer.rs`). It
        // ends only when this connection drops its sender, unless it panicked: then a new one
        // takes the batch, so a reply is never silently lost.
        for _ in 0..2 {
            let tx = match &self.answerer {
                Some(tx) => tx,
                None => {
                    let (out, shape) = (self.replier(), self.reply_shape);
                    self.answerer.insert(answer::spawn(&self.gw.tracker, out, self.id, shape, self.join_replies))
                }
            };
            match tx.send(batch) {
                Ok(()) => return,
                Err(mpsc::error::SendError(b)) => {
                    tracing::error!(conn = self.id, "the connection's answering task ended; starting another");
                    self.answerer = None;
                    batch = b;
                }
            }
        }
    }

    /// Run `op` on the engine in a task; the task queues the reply, releases `permit`, records
    /// the request's metrics and logs one line (ids and code, never the payload).
    pub(super) fn spawn_request(&self, req: Req, op: Op, role: Role, permit: OwnedSemaphorePermit) {
        let call = Call {
            engine: self.gw.engine.clone(),
            deadline: Duration::from_millis(self.gw.limits.request_timeout_ms),
            by: if role == Role::Admin { Initiator::Admin } else { Initiator::User },
            user: self.acting_user().cloned(),
            shape: self.reply_shape,
        };
        let out = self.replier();
        let conn = self.id;
        self.gw.tracker.spawn(async move {
            let (order_id, sku_id) = log_ids(&op);
            let mut answer = call.run(&req.id, op).await;
            out.send(std::mem::take(&mut answer.text)).await;
            drop(permit);
            finished(conn, &req, &answer, order_id, sku_id.as_deref());
        });
    }
}

/// A request's metrics and its log line (ids and code, never the payload), once its reply is
/// queued.
pub(super) fn finished(conn: u64, req: &Req, answer: &Answer, order_id: Option<u64>, sku_id: Option<&str>) {
    let now = std::time::Instant::now();
    crate::metrics::request(req.op_name, answer.code, now.saturating_duration_since(req.t0));
    logged_at(conn, req, answer, (order_id, sku_id), now);
}

/// Requests answered together, timed at `now`: their log lines, and their metrics with one
/// handle lookup per run of requests read together (same `t0`) and answered alike (same code).
pub(super) fn all_finished_at<'a>(
    conn: u64,
    answered: impl IntoIterator<Item = (&'a Req, &'a Answer, Option<&'a str>)>,
    now: std::time::Instant,
) {
    let mut run: Option<(&Req, &Answer, u64)> = None;
    for (req, answer, sku_id) in answered {
        logged_at(conn, req, answer, (None, sku_id), now);
        match &mut run {
            Some((r, a, n)) if r.t0 == req.t0 && r.op_name == req.op_name && a.code == answer.code => *n += 1,
            _ => {
                if let Some((r, a, n)) = run.replace((req, answer, 1)) {
                    crate::metrics::requests(r.op_name, a.code, now.saturating_duration_since(r.t0), n);
                }
            }
        }
    }
    if let Some((r, a, n)) = run {
        crate::metrics::requests(r.op_name, a.code, now.saturating_duration_since(r.t0), n);
    }
}

/// A request's log line (ids and code, never the payload), timed at `now`; `ids` are the
/// order and SKU the request named, when the answer does not say.
fn logged_at(conn: u64, req: &Req, answer: &Answer, ids: (Option<u64>, Option<&str>), now: std::time::Instant) {
    let (order_id, sku_id) = ids;
    let elapsed = now.saturating_duration_since(req.t0);
    tracing::debug!(
        conn,
        request_id = %ReqId(&req.id),
        op = req.op_name,
        code = answer.code,
        order_id = order_id.or(answer.order_id),
        sku_id = answer.err_sku.as_deref().or(sku_id),
        elapsed_us = elapsed.as_micros() as u64,
        "request"
    );
}

/// The reply to an engine request's outcome.
pub(super) fn answer_of(id: &Value, result: Result<Outcome, EngineError>) -> Answer {
    let mut out = Vec::new();
    let mut answer = answer_into(&mut out, id, result);
    answer.text = protocol::text_of(out);
    answer
}

/// [`answer_of`] with the reply appended to `out` (a joined batch's one text) and the answer's
/// own `text` left empty.
pub(super) fn answer_into(out: &mut Vec<u8>, id: &Value, result: Result<Outcome, EngineError>) -> Answer {
    match result {
        Ok(v) => {
            protocol::write_ok_reply(out, id, &v);
            Answer { text: String::new(), code: "ok", order_id: v.order_id(), err_sku: None }
        }
        Err(e) => {
            if matches!(e, EngineError::Overloaded) {
                crate::metrics::overloaded("mailbox");
            }
            // Only the debug log line shows it: not copied per `sold_out` otherwise.
            let err_sku = e.sku_id().filter(|_| debug_logged()).map(str::to_owned);
            protocol::write_engine_err_reply(out, id, &e);
            Answer { text: String::new(), code: e.code(), order_id: None, err_sku }
        }
    }
}

/// Is the per-request log line (`debug`) written? Its ids are copied only then.
pub(super) fn debug_logged() -> bool {
    tracing::enabled!(tracing::Level::DEBUG)
}

/// The reply to a request whose answer did not come within `request_timeout_ms`.
pub(super) fn deadline_passed(id: &Value) -> Answer {
    crate::metrics::overloaded("deadline");
    let e = WireError::new(
        "overloaded",
        "request deadline exceeded; the outcome is unknown: retry with the same idempotency key or payment id",
    );
    Answer { text: protocol::err_reply(id, &e), code: "overloaded", order_id: None, err_sku: None }
}

/// What an engine request needs besides the request itself.
struct Call {
    engine: Engine,
    /// `request_timeout_ms`: past it the answer is `overloaded` (outcome unknown).
    deadline: Duration,
    /// Who the history records as the initiator of a transition.
    by: Initiator,
    /// A `user` connection's `sub`: it may touch only its own orders.
    user: Option<Arc<str>>,
    /// How the reply shows an order.
    shape: ReplyShape,
}

/// A request's reply line and what its log line and metrics need.
pub(super) struct Answer {
    pub(super) text: String,
    code: &'static str,
    /// The order the request created or changed (on success).
    order_id: Option<u64>,
    /// The SKU an engine error names.
    err_sku: Option<String>,
}

impl Call {
    async fn run(self, id: &Value, op: Op) -> Answer {
        let Call { engine, deadline, by, user, shape } = self;
        let run = async {
            // A user's request for another user's order answers as if it did not exist.
            if let (Some(sub), Some(order_id)) = (&user, scope::order_of(&op)) {
                scope::own_order(&engine, sub, order_id)?;
            }
            execute(&engine, op, by).await.map(|outcome| match outcome {
                Outcome::Order(o) => Outcome::order(o, shape),
                other => other,
            })
        };
        match tokio::time::timeout(deadline, run).await {
            Ok(result) => answer_of(id, result),
            Err(_) => deadline_passed(id),
        }
    }
}

/// Run `op` as a connection with `role` acting for `user` would, and return its reply line (a
/// request forwarded from another cluster node, `forward.rs`).
pub(super) async fn run_for(
    gw: &super::Gateway,
    id: &Value,
    op: Op,
    role: Role,
    user: Option<Arc<str>>,
    shape: ReplyShape,
) -> String {
    let call = Call {
        engine: gw.engine.clone(),
        deadline: Duration::from_millis(gw.limits.request_timeout_ms),
        by: if role == Role::Admin { Initiator::Admin } else { Initiator::User },
        user,
        shape,
    };
    call.run(id, op).await.text
}

fn opts(expected_version: Option<u32>, reason: Option<String>) -> TransitionOptions {
    TransitionOptions { expected_version, reason }
}

/// What an engine request returns, serialized straight into the reply (no `Value` tree: the
/// order is the bulk of every reply, and building a map of it first cost a fifth of the
/// gateway's CPU per request).
#[derive(serde::Serialize)]
#[serde(untagged)]
pub(super) enum Outcome {
    Order(#[serde(serialize_with = "crate::wire::order")] Arc<surge_engine::Order>),
    /// An order on a `"reply":"minimal"` connection.
    OrderMinimal(#[serde(serialize_with = "crate::wire::order_minimal")] Arc<surge_engine::Order>),
    Sku(surge_engine::SkuView),
    /// A `list_orders` page; `next_cursor` is `null` on the last page.
    Orders {
        #[serde(serialize_with = "crate::wire::orders")]
        orders: Vec<Arc<surge_engine::Order>>,
        next_cursor: Option<String>,
    },
    Null(()),
    /// `wallet_credit` / `wallet_debit`.
    Receipt(#[serde(serialize_with = "receipt")] surge_engine::wallet::TransferReceipt),
    /// `get_wallet`.
    Wallet(#[serde(serialize_with = "wallet")] surge_engine::wallet::WalletView),
    /// `list_wallet_entries`.
    Entries(#[serde(serialize_with = "entries")] surge_engine::wallet::EntryPage),
}

fn receipt<S: serde::Serializer>(r: &surge_engine::wallet::TransferReceipt, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&crate::wire::WireReceipt::from(r), s)
}

fn wallet<S: serde::Serializer>(w: &surge_engine::wallet::WalletView, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&crate::wire::WireWallet::from(w), s)
}

fn entries<S: serde::Serializer>(p: &surge_engine::wallet::EntryPage, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&crate::wire::WireEntryPage::from(p), s)
}

impl Outcome {
    /// An order, in the connection's reply shape.
    pub(super) fn order(o: Arc<surge_engine::Order>, shape: ReplyShape) -> Self {
        match shape {
            ReplyShape::Full => Outcome::Order(o),
            ReplyShape::Minimal => Outcome::OrderMinimal(o),
        }
    }

    fn order_id(&self) -> Option<u64> {
        match self {
            Outcome::Order(o) | Outcome::OrderMinimal(o) => Some(o.order_id.0),
            _ => None,
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
        Op::CreateOrder(r) => (None, r.items.first().map(|i| i.sku_id.to_string())),
        Op::GetOrder(r) => (Some(r.order_id.0 .0), None),
        Op::Pay(r) => (Some(r.order_id.0 .0), None),
        Op::Transition(_, r) => (Some(r.order_id.0 .0), None),
        Op::Ship(r) => (Some(r.order_id.0 .0), None),
        Op::ResolveDispute(r) => (Some(r.order_id.0 .0), None),
        Op::PayWithWallet(r) => (Some(r.order_id.0 .0), None),
        Op::ListOrders(_) | Op::Ping | Op::Subscribe(_) | Op::Unsubscribe(_) => (None, None),
        Op::WalletCredit(_) | Op::WalletDebit(_) | Op::GetWallet(_) | Op::ListWalletEntries(_) => (None, None),
    }
}

/// Run one typed request on the engine.
async fn execute(engine: &Engine, op: Op, by: Initiator) -> Result<Outcome, EngineError> {
    Ok(match op {
        Op::CreateSku(r) => Outcome::Sku(engine.create_sku(sku_spec(r)).await?),
        Op::UpdateSku(r) => {
            let (sku_id, update) = sku_update(r);
            Outcome::Sku(engine.update_sku(&sku_id, update).await?)
        }
        Op::AdjustStock(r) => Outcome::Sku(engine.adjust_stock(&r.sku_id, &r.adjustment_id, r.delta, &r.reason).await?),
        Op::GetSku(r) => Outcome::Sku(engine.get_sku(&r.sku_id)?),
        Op::CreateOrder(r) => {
            let req = CreateOrder {
                user_id: r.user_id,
                items: r.items.into_iter().map(|i| (i.sku_id, i.qty)).collect(),
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
            let event = transition_event(name)?;
            Outcome::Order(engine.transition(r.order_id.0, event, by, opts(r.expected_version, r.reason)).await?)
        }
        Op::Ship(r) => {
            Outcome::Order(engine.ship(r.order_id.0, &r.tracking_number, opts(r.expected_version, r.reason)).await?)
        }
        Op::ResolveDispute(r) => Outcome::Order(
            engine.resolve_dispute(r.order_id.0, r.resolution, opts(r.expected_version, r.reason)).await?,
        ),
        Op::Ping | Op::Subscribe(_) | Op::Unsubscribe(_) => Outcome::Null(()),
        op => execute_wallet(engine, op).await?,
    })
}

/// The wallet ops (issue 14).
async fn execute_wallet(engine: &Engine, op: Op) -> Result<Outcome, EngineError> {
    use surge_engine::wallet::{ListWalletEntries, WalletPayment};
    Ok(match op {
        Op::WalletCredit(r) => {
            Outcome::Receipt(engine.wallet_credit(&r.user_id, &r.asset, r.amount, &r.transfer_id).await?)
        }
        Op::WalletDebit(r) => {
            Outcome::Receipt(engine.wallet_debit(&r.user_id, &r.asset, r.amount, &r.transfer_id).await?)
        }
        Op::GetWallet(r) => Outcome::Wallet(engine.get_wallet(&r.user_id).await?),
        Op::ListWalletEntries(r) => {
            let q = ListWalletEntries { user_id: r.user_id, asset: r.asset, before: r.cursor, limit: r.limit };
            Outcome::Entries(engine.list_wallet_entries(&q).await?)
        }
        Op::PayWithWallet(r) => {
            let p = WalletPayment {
                order_id: r.order_id.0,
                legs: r.legs.into_iter().map(|l| (l.asset, l.amount)).collect(),
                transfer_id: r.transfer_id,
                expected_version: r.expected_version,
                owner: None,
            };
            Outcome::Order(engine.pay_with_wallet(&p).await?)
        }
        _ => return Err(EngineError::InvalidRequest { message: "not a wallet op".into() }),
    })
}

fn sku_spec(r: CreateSkuReq) -> SkuSpec {
    let rules = SaleRules {
        per_user_limit: r.per_user_limit,
        sale_starts_at_ms: r.sale_starts_at_ms,
        sale_ends_at_ms: r.sale_ends_at_ms,
        paused: r.paused,
    };
    SkuSpec { sku_id: r.sku_id, name: r.name, price: r.price, initial_stock: r.initial_stock, rules }
}

/// The SKU to update and the update.
fn sku_update(r: UpdateSkuReq) -> (String, SkuUpdate) {
    let update = SkuUpdate {
        name: r.name,
        price: r.price,
        per_user_limit: r.per_user_limit,
        sale_starts_at_ms: r.sale_starts_at_ms,
        sale_ends_at_ms: r.sale_ends_at_ms,
        paused: r.paused,
    };
    (r.sku_id, update)
}

/// The engine event of a parameterless transition op (the names `protocol` parses into
/// `Op::Transition`).
fn transition_event(name: &str) -> Result<OrderEventKind, EngineError> {
    Ok(match name {
        "cancel_order" => OrderEventKind::Cancel,
        "start_packing" => OrderEventKind::StartPacking,
        "deliver" => OrderEventKind::Deliver,
        "complete" => OrderEventKind::Complete,
        "request_refund" => OrderEventKind::RequestRefund,
        "confirm_refund" => OrderEventKind::ConfirmRefund,
        "reject_refund" => OrderEventKind::RejectRefund,
        "open_dispute" => OrderEventKind::OpenDispute,
        other => return Err(EngineError::InvalidRequest { message: format!("unknown transition {other}") }),
    })
}
