//! The simulated clients: what they ask (create SKUs first, then multi-SKU orders, retries with
//! the same idempotency key, payments and duplicate payment callbacks, cancels, restocks) and
//! what they check in the answers they get.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use rust_decimal::Decimal;

use super::prng::{Fnv64, SplitMix64};
use super::{ShardMsg, SkuMsg};
use crate::domain::{CreateOrder, Initiator, Order, OrderId, OrderStatus, SaleRules, SkuId, SkuSpec, SkuView, UserId};
use crate::error::EngineResult;
use crate::order::OrderCommand;
use crate::routing::shard_for_key;
use crate::shard::OrderMsg;
use crate::snowflake::shard_of;
use crate::state_machine::OrderEventKind;

const SKUS: usize = 6;
const USERS: usize = 200;
/// Payments and cancels mostly pick among the newest orders (where they can still act).
const ORDERS_RECENT: usize = 48;
/// Recent create requests kept for retries.
const RETRIES_KEPT: usize = 64;

/// A create request as sent: (user, items, idempotency key).
type CreateRequest = (UserId, Vec<(SkuId, u32)>, Arc<str>);

/// What a client asked, to judge the answer.
enum Asked {
    Create { user_id: UserId, key: Arc<str> },
    Pay,
    Cancel,
}

/// A request whose answer has not arrived.
enum Waiting {
    Order(Asked, oneshot::Receiver<EngineResult<Arc<Order>>>),
    Sku(oneshot::Receiver<EngineResult<SkuView>>),
}

pub(super) struct Workload {
    shard_count: usize,
    /// (SKU id, initial stock, per-user limit).
    skus: Vec<(SkuId, u64, Option<u32>)>,
    skus_created: usize,
    users: Vec<UserId>,
    key_seq: u64,
    /// The last adjustment (id number, SKU, delta), for retries.
    last_adjust: (u64, usize, i64),
    /// Recent create requests (user, items, key), for retries.
    recent: VecDeque<CreateRequest>,
    /// Orders the clients know, with their totals.
    orders: Vec<(OrderId, Decimal)>,
    /// The order each (user, idempotency key) created: a second one is a violation.
    by_key: HashMap<(UserId, Arc<str>), OrderId>,
    waiting: VecDeque<Waiting>,
    /// Per-user limits by SKU (for the audit's check).
    pub limits: HashMap<SkuId, u32>,
    pub replies_ok: u64,
    pub replies_err: u64,
    /// Answers by request kind and outcome (`create:ok`, `pay:order_not_payable`, ...).
    pub outcomes: BTreeMap<String, u64>,
}

impl Workload {
    pub fn new(rng: &mut SplitMix64, shard_count: usize) -> Self {
        let skus: Vec<_> = (0..SKUS)
            .map(|i| {
                let limit = if i % 2 == 0 { Some(2 + rng.below(3) as u32) } else { None };
                (SkuId::from(format!("sku-{i}")), 30 + rng.below(90), limit)
            })
            .collect();
        let limits = skus.iter().filter_map(|(id, _, l)| l.map(|l| (id.clone(), l))).collect();
        Self {
            shard_count,
            skus,
            skus_created: 0,
            users: (0..USERS).map(|i| UserId::from(format!("user-{i}"))).collect(),
            key_seq: 0,
            last_adjust: (0, 0, 1),
            recent: VecDeque::new(),
            orders: Vec::new(),
            by_key: HashMap::new(),
            waiting: VecDeque::new(),
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

    /// The next client request and the shard whose mailbox it goes to.
    pub fn next_op(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg) {
        if self.skus_created < self.skus.len() {
            let i = self.skus_created;
            self.skus_created += 1;
            return self.create_sku(i);
        }
        match rng.below(100) {
            0..=44 => self.create_order(rng),
            45..=54 if !self.recent.is_empty() => self.retry_create(rng),
            55..=74 if !self.orders.is_empty() => self.pay(rng),
            75..=89 if !self.orders.is_empty() => self.cancel(rng),
            90..=97 => self.adjust(rng),
            _ => self.create_order(rng),
        }
    }

    fn create_sku(&mut self, i: usize) -> (usize, ShardMsg) {
        let (sku_id, stock, limit) = self.skus[i].clone();
        let spec = SkuSpec {
            sku_id: sku_id.to_string(),
            name: format!("item {i}"),
            price: Decimal::new(100 + 75 * i as i64, 2),
            initial_stock: stock,
            rules: SaleRules { per_user_limit: limit, ..SaleRules::default() },
        };
        let (tx, rx) = oneshot::channel();
        self.waiting.push_back(Waiting::Sku(rx));
        (shard_for_key(&sku_id, self.shard_count), ShardMsg::Sku(sku_id, SkuMsg::Create(spec, tx)))
    }

    fn create_order(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg) {
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
    fn retry_create(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg) {
        let i = rng.below(self.recent.len() as u64) as usize;
        let (user_id, items, key) = self.recent[i].clone();
        self.send_create(user_id, items, key)
    }

    fn send_create(&mut self, user_id: UserId, items: Vec<(SkuId, u32)>, key: Arc<str>) -> (usize, ShardMsg) {
        let req = CreateOrder { user_id: user_id.clone(), items, idempotency_key: key.to_string() };
        let (tx, rx) = oneshot::channel();
        let shard = shard_for_key(&user_id, self.shard_count);
        self.waiting.push_back(Waiting::Order(Asked::Create { user_id, key }, rx));
        // No fast-path verdict: the SKU actors decide (the verdict is an optimization).
        (shard, ShardMsg::CreateOrder(req, tx, None))
    }

    /// Pay a known order; one in five reuses the order's usual payment id (a duplicate
    /// callback), one in ten pays with a second payment id.
    fn pay(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg) {
        let (order_id, total) = self.pick_order(rng);
        let payment_id = if rng.chance(10) { format!("pay-{order_id}-other") } else { format!("pay-{order_id}") };
        let cmd = OrderCommand {
            payment: Some((Box::from(payment_id.as_str()), total)),
            ..OrderCommand::new(OrderEventKind::Pay, Initiator::Psp)
        };
        self.send_command(order_id, cmd, Asked::Pay)
    }

    fn cancel(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg) {
        let (order_id, _) = self.pick_order(rng);
        self.send_command(order_id, OrderCommand::new(OrderEventKind::Cancel, Initiator::User), Asked::Cancel)
    }

    fn send_command(&mut self, order_id: OrderId, cmd: OrderCommand, asked: Asked) -> (usize, ShardMsg) {
        let (tx, rx) = oneshot::channel();
        self.waiting.push_back(Waiting::Order(asked, rx));
        (shard_of(order_id.0, self.shard_count), ShardMsg::Order(order_id, OrderMsg::Command(cmd, Some(tx))))
    }

    /// A restock (or, one in four, a retry of the previous adjustment: same id, SKU, delta).
    fn adjust(&mut self, rng: &mut SplitMix64) -> (usize, ShardMsg) {
        if !rng.chance(25) {
            let (seq, _, _) = self.last_adjust;
            self.last_adjust = (seq + 1, rng.below(SKUS as u64) as usize, 1 + rng.below(8) as i64);
        }
        let (seq, sku, delta) = self.last_adjust;
        let sku_id = self.skus[sku].0.clone();
        let (tx, rx) = oneshot::channel();
        self.waiting.push_back(Waiting::Sku(rx));
        let msg = SkuMsg::Adjust {
            adjustment_id: Box::from(format!("adj-{seq}").as_str()),
            delta,
            reason: Box::from("restock"),
            reply: tx,
        };
        (shard_for_key(&sku_id, self.shard_count), ShardMsg::Sku(sku_id, msg))
    }

    /// A known order: four times in five one of the newest.
    fn pick_order(&self, rng: &mut SplitMix64) -> (OrderId, Decimal) {
        let n = self.orders.len() as u64;
        let recent = n.min(ORDERS_RECENT as u64);
        let i = if rng.chance(80) { n - 1 - rng.below(recent) } else { rng.below(n) };
        self.orders[i as usize]
    }

    /// Take the answers that arrived (in request order) and check each; fold them into `trace`.
    ///
    /// # Errors
    /// A lost reply (its sender dropped unanswered) or an answer that contradicts an earlier
    /// one.
    pub fn collect_replies(&mut self, trace: &mut Fnv64) -> Result<(), String> {
        let mut i = 0;
        while i < self.waiting.len() {
            let answered = match &self.waiting[i] {
                Waiting::Order(_, rx) => match rx.try_recv() {
                    Ok(r) => Some(Ok(r)),
                    Err(oneshot::TryRecvError::Empty) => None,
                    Err(oneshot::TryRecvError::Disconnected) => Some(Err(())),
                },
                Waiting::Sku(rx) => match rx.try_recv() {
                    Ok(r) => {
                        let _ = write!(trace, "{r:?}");
                        self.count("sku", r.as_ref().map(|_| ()).map_err(|e| e.code()));
                        self.waiting.remove(i);
                        continue;
                    }
                    Err(oneshot::TryRecvError::Empty) => None,
                    Err(oneshot::TryRecvError::Disconnected) => Some(Err(())),
                },
            };
            match answered {
                None => i += 1,
                Some(Err(())) => return Err("a reply was dropped without an answer".into()),
                Some(Ok(result)) => {
                    let Some(Waiting::Order(asked, _)) = self.waiting.remove(i) else { continue };
                    let _ = write!(trace, "{result:?}");
                    self.judge(asked, result)?;
                }
            }
        }
        Ok(())
    }

    fn count(&mut self, kind: &str, outcome: Result<(), &str>) {
        if outcome.is_ok() {
            self.replies_ok += 1;
        } else {
            self.replies_err += 1;
        }
        *self.outcomes.entry(format!("{kind}:{}", outcome.err().unwrap_or("ok"))).or_default() += 1;
    }

    /// Check an order answer against what was asked and answered before.
    fn judge(&mut self, asked: Asked, result: EngineResult<Arc<Order>>) -> Result<(), String> {
        let kind = match asked {
            Asked::Create { .. } => "create",
            Asked::Pay => "pay",
            Asked::Cancel => "cancel",
        };
        self.count(kind, result.as_ref().map(|_| ()).map_err(|e| e.code()));
        let Ok(order) = result else { return Ok(()) };
        match asked {
            Asked::Create { user_id, key } => {
                if order.user_id != user_id || *order.idempotency_key != *key {
                    return Err(format!("create for ({user_id}, {key}) answered order {}", order.order_id));
                }
                match self.by_key.insert((user_id.clone(), key.clone()), order.order_id) {
                    Some(first) if first != order.order_id => {
                        return Err(format!(
                            "two orders for user {user_id} and key {key}: {first} and {}",
                            order.order_id
                        ))
                    }
                    Some(_) => {}
                    None => self.orders.push((order.order_id, order.total)),
                }
            }
            Asked::Pay if order.payment.is_none() => {
                return Err(format!("pay answered order {} without a payment", order.order_id));
            }
            Asked::Cancel if order.status != OrderStatus::Canceled => {
                return Err(format!("cancel answered order {} in {}", order.order_id, order.status));
            }
            Asked::Pay | Asked::Cancel => {}
        }
        Ok(())
    }
}
