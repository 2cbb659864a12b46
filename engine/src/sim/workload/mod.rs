//! The simulated clients: what they ask and how they wait. They create SKUs first (again after
//! a crash lost the request), then multi-SKU orders, retries with the same idempotency key after
//! a timeout, payments with duplicate callbacks and second payment ids, cancels, the order's
//! life after payment (packing, shipping, delivery, completion, refunds, disputes), restocks
//! (some retried with the same adjustment id) and SKU rule changes (pause, resume, price);
//! and the wallet clients of `wallet` (credits, debits, payments from wallets, retries, reads).
//! Every answer is judged by the reference models in `model` and `wallet_model`.

mod model;
mod wallet;
mod wallet_model;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use rust_decimal::Decimal;

use super::prng::{Fnv64, SplitMix64};
use crate::domain::{
    CreateOrder, DisputeResolution, Initiator, Order, OrderId, OrderStatus, SaleRules, SkuId, SkuSpec, SkuUpdate,
    SkuView, UserId,
};
use crate::error::EngineResult;
use crate::order::OrderCommand;
use crate::routing::shard_for_key;
use crate::shard::{OrderMsg, ShardMsg, SkuMsg};
use crate::snowflake::shard_of;
use crate::state_machine::OrderEventKind;
use crate::wallet::{Assets, TransferReceipt, WalletBook, WalletView};
pub(super) use model::KeyReuse;
use model::{Asked, Model};
use wallet::WalletClients;
use wallet_model::WalletModel;

const SKUS: usize = 6;
const USERS: usize = 200;
/// Payments and cancels mostly pick among the newest orders (where they can still act).
const ORDERS_RECENT: usize = 48;
/// Recent create requests kept for retries.
const RETRIES_KEPT: usize = 64;

/// A create request as sent: (user, items, idempotency key).
type CreateRequest = (UserId, Vec<(SkuId, u32)>, Arc<str>);

/// Where a SKU's creation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SkuCreation {
    NotSent,
    Waiting,
    Done,
}

/// An answer taken from its channel.
enum Answer {
    Order(EngineResult<Arc<Order>>),
    Sku(EngineResult<SkuView>),
    Receipt(EngineResult<TransferReceipt>),
    Wallet(EngineResult<WalletView>),
}

/// A request whose answer has not arrived. Wallet requests carry their number in the wallet
/// model (an order command has one when it may move money: a wallet payment, a refund).
enum Waiting {
    Order(Asked, Option<u64>, oneshot::Receiver<EngineResult<Arc<Order>>>),
    /// A SKU request; `Some(i)` for the creation of SKU `i`.
    Sku(Option<usize>, oneshot::Receiver<EngineResult<SkuView>>),
    /// A credit or debit, with its kind.
    Receipt(u64, &'static str, oneshot::Receiver<EngineResult<TransferReceipt>>),
    /// A read of a wallet.
    Wallet(u64, oneshot::Receiver<EngineResult<WalletView>>),
}

pub(super) struct Workload {
    shard_count: usize,
    /// (SKU id, initial stock, per-user limit).
    skus: Vec<(SkuId, u64, Option<u32>)>,
    creation: Vec<SkuCreation>,
    users: Vec<UserId>,
    key_seq: u64,
    /// The last adjustment (id number, SKU, delta), for retries.
    last_adjust: (u64, usize, i64),
    /// Recent create requests (user, items, key), for retries.
    recent: VecDeque<CreateRequest>,
    /// Orders the clients know, with their totals and users.
    orders: Vec<(OrderId, Decimal, UserId)>,
    /// Orders answered paid, for the steps after payment.
    paid: Vec<OrderId>,
    waiting: VecDeque<Waiting>,
    model: Model,
    wallet: WalletClients,
    wmodel: WalletModel,
    /// Per-user limits by SKU (for the audit's check; fixed for a run).
    pub limits: HashMap<SkuId, u32>,
    pub replies_ok: u64,
    pub replies_err: u64,
    /// Answers by request kind and outcome (`create:ok`, `pay:order_not_payable`, ...).
    pub outcomes: BTreeMap<String, u64>,
}

impl Workload {
    pub fn new(rng: &mut SplitMix64, shard_count: usize, assets: Assets) -> Self {
        let skus: Vec<_> = (0..SKUS)
            .map(|i| {
                let limit = if i % 2 == 0 { Some(2 + rng.below(3) as u32) } else { None };
                (SkuId::from(format!("sku-{i}")), 30 + rng.below(90), limit)
            })
            .collect();
        let limits: HashMap<SkuId, u32> = skus.iter().filter_map(|(id, _, l)| l.map(|l| (id.clone(), l))).collect();
        Self {
            shard_count,
            creation: vec![SkuCreation::NotSent; skus.len()],
            skus,
            users: (0..USERS).map(|i| UserId::from(format!("user-{i}"))).collect(),
            key_seq: 0,
            last_adjust: (0, 0, 1),
            recent: VecDeque::new(),
            orders: Vec::new(),
            paid: Vec::new(),
            waiting: VecDeque::new(),
            model: Model::new(limits.clone()),
            wallet: WalletClients::default(),
            wmodel: WalletModel::new(assets),
            limits,
            replies_ok: 0,
            replies_err: 0,
            outcomes: BTreeMap::new(),
        }
    }

    /// Requests sent and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.waiting.len()
    }

    /// Every order a client was answered with: (status, version) of the newest answer.
    pub fn acked(&self) -> impl Iterator<Item = (&OrderId, &(crate::domain::OrderStatus, u32))> + '_ {
        self.model.acked()
    }

    /// SKUs a client was answered created.
    pub fn skus_acked(&self) -> impl Iterator<Item = &SkuId> + '_ {
        self.skus.iter().zip(&self.creation).filter(|(_, c)| **c == SkuCreation::Done).map(|(s, _)| &s.0)
    }

    /// A create answered with another order than the key's earlier one (allowed only once the
    /// earlier one left memory: archiving drops its idempotency record). The world checks them.
    pub fn take_key_reuses(&mut self) -> Vec<KeyReuse> {
        self.model.take_key_reuses()
    }

    /// A crash: every request still waiting times out, its outcome unknown (creates stay in
    /// `recent`, so clients retry them with the same key).
    pub fn forget_pending(&mut self) {
        for w in self.waiting.drain(..) {
            let kind = match w {
                Waiting::Order(asked, _, _) => asked.kind(),
                Waiting::Receipt(_, kind, _) => kind,
                Waiting::Wallet(..) => "get_wallet",
                Waiting::Sku(Some(i), _) => {
                    self.creation[i] = SkuCreation::NotSent;
                    "sku"
                }
                Waiting::Sku(None, _) => "sku",
            };
            *self.outcomes.entry(format!("{kind}:unknown")).or_default() += 1;
        }
        self.wmodel.forget_all();
    }

    /// The wallets against the wallet model, with nothing in flight (a quiet point, or right
    /// after a recovery: `recovered`).
    ///
    /// # Errors
    /// The first disagreement.
    pub fn check_wallets(&mut self, books: &[&WalletBook], recovered: bool) -> Result<(), String> {
        self.wmodel.check_books(books, recovered)
    }

    /// The next client request, the shard whose mailbox it goes to, and its kind.
    pub fn next_op(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg, &'static str) {
        if let Some(i) = self.creation.iter().position(|c| *c == SkuCreation::NotSent) {
            return self.create_sku(i);
        }
        if let Some(op) = self.wallet_next() {
            return op;
        }
        match rng.below(100) {
            0..=34 => self.create_order(rng),
            35..=43 if !self.recent.is_empty() => self.retry_create(rng),
            44..=56 if !self.orders.is_empty() => self.pay(rng),
            57..=65 if !self.orders.is_empty() => self.command(rng, OrderEventKind::Cancel, Initiator::User),
            66..=78 if !self.orders.is_empty() => self.after_payment(rng),
            79..=84 => self.adjust(rng),
            85..=87 => self.update_rules(rng),
            88..=99 => self.wallet_op(rng),
            _ => self.create_order(rng),
        }
    }

    fn create_sku(&mut self, i: usize) -> (usize, ShardMsg, &'static str) {
        self.creation[i] = SkuCreation::Waiting;
        let (sku_id, stock, limit) = self.skus[i].clone();
        let spec = SkuSpec {
            sku_id: sku_id.to_string(),
            name: format!("item {i}"),
            price: Decimal::new(100 + 75 * i as i64, 2),
            initial_stock: stock,
            rules: SaleRules { per_user_limit: limit, ..SaleRules::default() },
        };
        let (tx, rx) = oneshot::channel();
        self.waiting.push_back(Waiting::Sku(Some(i), rx));
        (
            shard_for_key(&sku_id, self.shard_count),
            ShardMsg::Sku(sku_id, SkuMsg::Create(Box::new(spec), tx.into())),
            "create_sku",
        )
    }

    fn create_order(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg, &'static str) {
        let user_id = self.users[rng.below(USERS as u64) as usize].clone();
        let lines = 1 + rng.below(3) as usize;
        let first = rng.below(SKUS as u64) as usize;
        // Distinct SKUs: consecutive ones from a random start.
        let items: Vec<(SkuId, u32)> =
            (0..lines).map(|k| (self.skus[(first + k) % SKUS].0.clone(), 1 + rng.below(3) as u32)).collect();
        self.key_seq += 1;
        let key: Arc<str> = Arc::from(format!("k{}", self.key_seq));
        if self.recent.len() == RETRIES_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back((user_id.clone(), items.clone(), key.clone()));
        self.send_create(user_id, items, key)
    }

    /// A retry after a timeout: the same user, items and key as a recent request.
    fn retry_create(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg, &'static str) {
        let i = rng.below(self.recent.len() as u64) as usize;
        let (user_id, items, key) = self.recent[i].clone();
        self.send_create(user_id, items, key)
    }

    fn send_create(
        &mut self,
        user_id: UserId,
        items: Vec<(SkuId, u32)>,
        key: Arc<str>,
    ) -> (usize, ShardMsg, &'static str) {
        let req = CreateOrder { user_id: user_id.clone(), items: items.clone(), idempotency_key: key.to_string() };
        let (tx, rx) = oneshot::channel();
        let shard = shard_for_key(&user_id, self.shard_count);
        self.waiting.push_back(Waiting::Order(Asked::Create { user_id, key, items }, None, rx));
        // No fast-path verdict: the SKU actors decide (the verdict is an optimization).
        (shard, ShardMsg::CreateOrder(req, tx.into(), None), "create_order")
    }

    /// Pay a known order; one in ten with a second payment id (the others reuse the order's
    /// usual one: duplicate callbacks).
    fn pay(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg, &'static str) {
        let (order_id, total, _) = self.pick_order(rng);
        let payment_id: Arc<str> =
            Arc::from(if rng.chance(10) { format!("pay-{order_id}-other") } else { format!("pay-{order_id}") });
        let cmd = OrderCommand {
            payment: Some((Box::from(&*payment_id), total)),
            ..OrderCommand::new(OrderEventKind::Pay, Initiator::Psp)
        };
        self.send_command(order_id, cmd, Asked::Pay { order_id, payment_id })
    }

    /// A step of a paid order's life, by whoever takes it: the shop packs, ships, delivers,
    /// grants or refuses refunds and resolves disputes; the buyer completes, asks for a refund
    /// and disputes. Nine times in ten the step suits the order's last known status (so orders
    /// do reach the end of their life, and archiving), else any step.
    fn after_payment(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg, &'static str) {
        use OrderEventKind as E;
        use OrderStatus as S;
        let order_id = self.pick_paid(rng);
        let any = [E::StartPacking, E::Ship, E::Deliver, E::Complete, E::RequestRefund, E::ConfirmRefund];
        let kind = match self.model.status_of(order_id) {
            _ if rng.chance(10) => any[rng.below(any.len() as u64) as usize],
            Some(S::Paid) => [E::StartPacking, E::Ship, E::Ship, E::RequestRefund][rng.below(4) as usize],
            Some(S::Packing) => E::Ship,
            Some(S::Shipped) => [E::Deliver, E::Deliver, E::RequestRefund][rng.below(3) as usize],
            Some(S::Delivered) => [E::Complete, E::Complete, E::RequestRefund, E::OpenDispute][rng.below(4) as usize],
            Some(S::Refunding) => [E::ConfirmRefund, E::ConfirmRefund, E::RejectRefund][rng.below(3) as usize],
            Some(S::Completed) => E::OpenDispute,
            Some(S::Disputed) => E::ResolveDispute,
            _ => E::Ship,
        };
        let by = match kind {
            E::Complete | E::RequestRefund | E::OpenDispute => Initiator::User,
            _ => Initiator::Admin,
        };
        self.command_on(rng, order_id, kind, by)
    }

    fn command(
        &mut self,
        rng: &mut SplitMix64,
        kind: OrderEventKind,
        by: Initiator,
    ) -> (usize, ShardMsg, &'static str) {
        let (order_id, _, _) = self.pick_order(rng);
        self.command_on(rng, order_id, kind, by)
    }

    fn command_on(
        &mut self,
        rng: &mut SplitMix64,
        order_id: OrderId,
        kind: OrderEventKind,
        by: Initiator,
    ) -> (usize, ShardMsg, &'static str) {
        let mut cmd = OrderCommand::new(kind, by);
        match kind {
            OrderEventKind::Ship => cmd.tracking_number = Some(Box::from(format!("T{order_id}").as_str())),
            OrderEventKind::ResolveDispute => {
                cmd.resolution =
                    Some(if rng.chance(50) { DisputeResolution::Completed } else { DisputeResolution::Refunding });
            }
            _ => {}
        }
        self.send_command(order_id, cmd, Asked::Command { order_id, kind })
    }

    fn send_command(&mut self, order_id: OrderId, cmd: OrderCommand, asked: Asked) -> (usize, ShardMsg, &'static str) {
        let (tx, rx) = oneshot::channel();
        let kind = asked.kind();
        // A refund may give a wallet payment back: the wallet model counts it as a movement.
        let req = if cmd.kind == OrderEventKind::ConfirmRefund { self.wmodel.send_refund(order_id) } else { None };
        self.waiting.push_back(Waiting::Order(asked, req, rx));
        (
            shard_of(order_id.0, self.shard_count),
            ShardMsg::Order(order_id, OrderMsg::Command(Box::new(cmd), Some(tx.into()))),
            kind,
        )
    }

    /// A restock (or, one in four, a retry of the previous adjustment: same id, SKU, delta).
    fn adjust(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg, &'static str) {
        if !rng.chance(25) {
            let (seq, _, _) = self.last_adjust;
            self.last_adjust = (seq + 1, rng.below(SKUS as u64) as usize, 1 + rng.below(8) as i64);
        }
        let (seq, sku, delta) = self.last_adjust;
        let sku_id = self.skus[sku].0.clone();
        let (tx, rx) = oneshot::channel();
        self.waiting.push_back(Waiting::Sku(None, rx));
        let msg = SkuMsg::Adjust {
            adjustment_id: Box::from(format!("adj-{seq}").as_str()),
            delta,
            reason: Box::from("restock"),
            reply: tx.into(),
        };
        (shard_for_key(&sku_id, self.shard_count), ShardMsg::Sku(sku_id, msg), "adjust_stock")
    }

    /// Pause or resume a SKU, or change its price (never its per-user limit: the model's
    /// limits stay fixed).
    fn update_rules(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg, &'static str) {
        let i = rng.below(SKUS as u64) as usize;
        let sku_id = self.skus[i].0.clone();
        // Resumes outnumber pauses four to one: a SKU is paused a fifth of the time.
        let update = match rng.below(8) {
            0 => SkuUpdate { paused: Some(true), ..SkuUpdate::default() },
            1..=4 => SkuUpdate { paused: Some(false), ..SkuUpdate::default() },
            _ => SkuUpdate { price: Some(Decimal::new(100 + rng.below(900) as i64, 2)), ..SkuUpdate::default() },
        };
        let (tx, rx) = oneshot::channel();
        self.waiting.push_back(Waiting::Sku(None, rx));
        (
            shard_for_key(&sku_id, self.shard_count),
            ShardMsg::Sku(sku_id, SkuMsg::Update(Box::new(update), tx.into())),
            "update_sku",
        )
    }

    /// An order answered paid whose life is not over (as far as the clients know), or any
    /// known order if there is none. Orders whose life ended leave the list.
    fn pick_paid(&mut self, rng: &mut SplitMix64) -> OrderId {
        use OrderStatus as S;
        while !self.paid.is_empty() {
            let i = rng.below(self.paid.len() as u64) as usize;
            let id = self.paid[i];
            match self.model.status_of(id) {
                Some(S::Canceled | S::Refunded) | None => {
                    self.paid.swap_remove(i);
                }
                Some(S::Completed) if rng.chance(70) => {
                    self.paid.swap_remove(i);
                }
                _ => return id,
            }
        }
        self.pick_order(rng).0
    }

    /// A known order: four times in five one of the newest.
    fn pick_order(&self, rng: &mut SplitMix64) -> (OrderId, Decimal, UserId) {
        let n = self.orders.len() as u64;
        let recent = n.min(ORDERS_RECENT as u64);
        let i = if rng.chance(80) { n - 1 - rng.below(recent) } else { rng.below(n) };
        self.orders[i as usize].clone()
    }

    /// Take the answers that arrived (in request order) and judge each; fold them into `trace`.
    ///
    /// # Errors
    /// A lost reply (its sender dropped unanswered while the engine runs) or an answer the
    /// reference model rules out.
    pub fn collect_replies(&mut self, trace: &mut Fnv64) -> Result<(), String> {
        let mut i = 0;
        while i < self.waiting.len() {
            let answered = match &self.waiting[i] {
                Waiting::Order(_, _, rx) => rx.try_recv().map(Answer::Order),
                Waiting::Sku(_, rx) => rx.try_recv().map(Answer::Sku),
                Waiting::Receipt(_, _, rx) => rx.try_recv().map(Answer::Receipt),
                Waiting::Wallet(_, rx) => rx.try_recv().map(Answer::Wallet),
            };
            let answer = match answered {
                Ok(a) => a,
                Err(oneshot::TryRecvError::Empty) => {
                    i += 1;
                    continue;
                }
                Err(oneshot::TryRecvError::Disconnected) => return Err("a reply was dropped without an answer".into()),
            };
            match (self.waiting.remove(i), answer) {
                (Some(Waiting::Order(asked, req, _)), Answer::Order(result)) => {
                    self.order_answer(trace, asked, req, result)?;
                }
                (Some(Waiting::Sku(creation, _)), Answer::Sku(result)) => {
                    let _ = write!(trace, "{result:?}");
                    let code = result.as_ref().map(|_| ()).map_err(|e| e.code());
                    if let (Some(i), Ok(()) | Err("sku_already_exists")) = (creation, code) {
                        self.creation[i] = SkuCreation::Done;
                    }
                    self.count("sku", code);
                }
                (Some(Waiting::Receipt(req, kind, _)), Answer::Receipt(result)) => {
                    let _ = write!(trace, "{result:?}");
                    self.count(kind, result.as_ref().map(|_| ()).map_err(|e| e.code()));
                    self.wmodel.answer_move(req, &result)?;
                }
                (Some(Waiting::Wallet(req, _)), Answer::Wallet(result)) => {
                    let _ = write!(trace, "{result:?}");
                    self.count("get_wallet", result.as_ref().map(|_| ()).map_err(|e| e.code()));
                    self.wmodel.answer_read(req, &result)?;
                }
                _ => return Err("the simulator mixed up two answers".into()),
            }
        }
        Ok(())
    }

    fn order_answer(
        &mut self,
        trace: &mut Fnv64,
        asked: Asked,
        req: Option<u64>,
        result: EngineResult<Arc<Order>>,
    ) -> Result<(), String> {
        let _ = write!(trace, "{result:?}");
        self.count(asked.kind(), result.as_ref().map(|_| ()).map_err(|e| e.code()));
        match (&asked, req) {
            (Asked::WalletPay { .. }, Some(req)) => self.wmodel.answer_pay(req, &result)?,
            (_, Some(req)) => self.wmodel.answer_refund(req, &result)?,
            (_, None) => {}
        }
        if let Ok(order) = &result {
            self.wmodel.learn_order(order)?;
        }
        match (&asked, &result) {
            (Asked::Create { .. }, Ok(order)) if !self.model.knows(order.order_id) => {
                self.orders.push((order.order_id, order.total, order.user_id.clone()));
            }
            (Asked::Pay { .. } | Asked::WalletPay { .. }, Ok(order))
                if self.model.status_of(order.order_id) == Some(OrderStatus::PendingPayment) =>
            {
                self.paid.push(order.order_id);
            }
            _ => {}
        }
        self.model.judge(asked, result)
    }

    fn count(&mut self, kind: &str, outcome: Result<(), &str>) {
        if outcome.is_ok() {
            self.replies_ok += 1;
        } else {
            self.replies_err += 1;
        }
        *self.outcomes.entry(format!("{kind}:{}", outcome.err().unwrap_or("ok"))).or_default() += 1;
    }
}
