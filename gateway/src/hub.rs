//! The push hub: subscriptions `order:<id>`, `user:<id>`, `sku:<id>`.
//!
//! The engine calls [`HubObserver`] from its threads after a change is durable; the observer
//! only `try_send`s into a bounded queue (a full queue drops the change and counts it: the
//! engine never waits). One hub task owns every subscription (no lock) and fans pushes out to
//! the connections' bounded outbound queues with `try_send`; a connection whose queue is full is
//! a slow consumer: it gets a final `slow_consumer` error and is disconnected.
//! Stock pushes are coalesced per SKU to one per `sku_push_interval_ms`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use surge_engine::{ChangeObserver, Engine, Order, SkuId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What goes out on a connection.
#[derive(Debug)]
pub enum Outbound {
    /// A reply, already encoded.
    Reply(String),
    /// A push; the connection's writer adds `seq`.
    Push(Arc<Map<String, Value>>),
    /// Everything before this is written: close the connection.
    Close,
}

/// State a connection shares with the hub: how to kill it.
#[derive(Debug, Default)]
pub struct ConnShared {
    /// Set when the connection must close with a final error.
    pub kill_code: std::sync::OnceLock<&'static str>,
    /// Stops the connection's reader and writer.
    pub cancel: CancellationToken,
}

impl ConnShared {
    /// Ask the connection to close with a final error `code`.
    pub fn kill(&self, code: &'static str) {
        let _ = self.kill_code.set(code);
        self.cancel.cancel();
    }
}

/// A connection as the hub sees it.
#[derive(Debug, Clone)]
pub struct Sink {
    /// The connection's outbound queue.
    pub out: mpsc::Sender<Outbound>,
    /// Its kill switch.
    pub shared: Arc<ConnShared>,
}

/// A parsed topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `order:<id>`.
    Order(u64),
    /// `user:<id>`.
    User(Arc<str>),
    /// `sku:<id>`.
    Sku(Arc<str>),
}

impl Topic {
    /// Parse `order:<u64>`, `user:<id>` or `sku:<id>` (ids 1..=64 bytes).
    pub fn parse(s: &str) -> Option<Topic> {
        let (kind, id) = s.split_once(':')?;
        if id.is_empty() || id.len() > 64 {
            return None;
        }
        match kind {
            "order" => id.parse().ok().map(Topic::Order),
            "user" => Some(Topic::User(id.into())),
            "sku" => Some(Topic::Sku(id.into())),
            _ => None,
        }
    }
}

pub(crate) enum Control {
    Subscribe { conn: u64, topic: Topic, sink: Sink, ack: oneshot::Sender<()> },
    Unsubscribe { conn: u64, topic: Topic, ack: oneshot::Sender<()> },
    Disconnect { conn: u64 },
}

pub(crate) enum Change {
    Order(Arc<Order>),
    Stock(SkuId),
}

/// Counters of the hub.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Changes dropped because the hub's queue was full.
    pub dropped_changes: AtomicU64,
    /// Connections disconnected as slow consumers.
    pub slow_consumers: AtomicU64,
    /// Pushes queued to connections.
    pub pushes: AtomicU64,
    /// Live subscriptions (the observer skips all work while this is 0).
    pub subscriptions: AtomicUsize,
    /// Set when a change was dropped; the hub then tells every subscriber with a `gap` push.
    pub lagged: std::sync::atomic::AtomicBool,
    /// `gap` pushes sent.
    pub gaps: AtomicU64,
}

/// The engine side of the hub: never blocks.
pub struct HubObserver {
    tx: mpsc::Sender<Change>,
    stats: Arc<HubStats>,
}

impl HubObserver {
    fn offer(&self, c: Change) {
        if self.stats.subscriptions.load(Ordering::Relaxed) == 0 {
            return;
        }
        if self.tx.try_send(c).is_err() {
            self.stats.dropped_changes.fetch_add(1, Ordering::Relaxed);
            self.stats.lagged.store(true, Ordering::Relaxed);
        }
    }
}

impl ChangeObserver for HubObserver {
    fn order_changed(&self, order: &Arc<Order>) {
        self.offer(Change::Order(order.clone()));
    }

    fn stock_changed(&self, sku_id: &SkuId) {
        self.offer(Change::Stock(sku_id.clone()));
    }
}

/// Handle to start the hub task once the engine exists.
pub(crate) struct HubParts {
    pub observer: Arc<HubObserver>,
    pub changes: mpsc::Receiver<Change>,
    pub stats: Arc<HubStats>,
}

pub(crate) fn hub_parts(capacity: usize) -> HubParts {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let stats = Arc::new(HubStats::default());
    HubParts { observer: Arc::new(HubObserver { tx, stats: stats.clone() }), changes: rx, stats }
}

struct SkuPush {
    last_push: Option<Instant>,
    dirty: bool,
    last_available: Option<u64>,
}

struct Hub {
    engine: Engine,
    stats: Arc<HubStats>,
    topics: HashMap<Topic, HashMap<u64, Sink>>,
    by_conn: HashMap<u64, HashSet<Topic>>,
    skus: HashMap<Arc<str>, SkuPush>,
    interval: Duration,
}

impl Hub {
    fn count(&self) {
        let n = self.topics.values().map(HashMap::len).sum();
        self.stats.subscriptions.store(n, Ordering::Relaxed);
    }

    fn remove_conn(&mut self, conn: u64) {
        if let Some(topics) = self.by_conn.remove(&conn) {
            for t in topics {
                if let Some(m) = self.topics.get_mut(&t) {
                    m.remove(&conn);
                    if m.is_empty() {
                        self.topics.remove(&t);
                        if let Topic::Sku(s) = &t {
                            self.skus.remove(s);
                        }
                    }
                }
            }
        }
        self.count();
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::Subscribe { conn, topic, sink, ack } => {
                if let Topic::Sku(s) = &topic {
                    let available = self.engine.get_sku(s).ok().map(|v| v.available);
                    self.skus.entry(s.clone()).or_insert(SkuPush {
                        last_push: None,
                        dirty: false,
                        last_available: available,
                    });
                }
                self.topics.entry(topic.clone()).or_default().insert(conn, sink);
                self.by_conn.entry(conn).or_default().insert(topic);
                self.count();
                let _ = ack.send(());
            }
            Control::Unsubscribe { conn, topic, ack } => {
                if let Some(m) = self.topics.get_mut(&topic) {
                    m.remove(&conn);
                    if m.is_empty() {
                        self.topics.remove(&topic);
                        if let Topic::Sku(s) = &topic {
                            self.skus.remove(s);
                        }
                    }
                }
                if let Some(set) = self.by_conn.get_mut(&conn) {
                    set.remove(&topic);
                }
                self.count();
                let _ = ack.send(());
            }
            Control::Disconnect { conn } => self.remove_conn(conn),
        }
    }

    /// Send `push` to every listed connection once; returns the slow ones.
    fn deliver(&mut self, targets: HashMap<u64, Sink>, push: Map<String, Value>) {
        let push = Arc::new(push);
        let mut dead = Vec::new();
        for (conn, sink) in targets {
            match sink.out.try_send(Outbound::Push(push.clone())) {
                Ok(()) => {
                    self.stats.pushes.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(conn, "slow consumer disconnected");
                    sink.shared.kill("slow_consumer");
                    dead.push(conn);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => dead.push(conn),
            }
        }
        for conn in dead {
            self.remove_conn(conn);
        }
    }

    fn order(&mut self, order: Arc<Order>) {
        let mut targets: HashMap<u64, Sink> = HashMap::new();
        for t in [Topic::Order(order.order_id.0), Topic::User(order.user_id.clone())] {
            if let Some(m) = self.topics.get(&t) {
                for (c, s) in m {
                    targets.entry(*c).or_insert_with(|| s.clone());
                }
            }
        }
        if targets.is_empty() {
            return;
        }
        let mut push = Map::new();
        push.insert("event".into(), Value::String("order_status".into()));
        push.insert("order_id".into(), Value::String(order.order_id.0.to_string()));
        push.insert("user_id".into(), Value::String(order.user_id.to_string()));
        push.insert("status".into(), Value::String(order.status.as_str().into()));
        push.insert("version".into(), Value::from(order.version));
        push.insert("order".into(), crate::wire::order_value(&order));
        self.deliver(targets, push);
    }

    fn stock(&mut self, sku: SkuId, now: Instant) {
        let interval = self.interval;
        let Some(state) = self.skus.get_mut(&*sku) else { return };
        if state.last_push.is_some_and(|t| now.duration_since(t) < interval) {
            state.dirty = true;
            return;
        }
        self.push_stock(sku, now);
    }

    fn push_stock(&mut self, sku: Arc<str>, now: Instant) {
        let Ok(view) = self.engine.get_sku(&sku) else { return };
        let Some(state) = self.skus.get_mut(&sku) else { return };
        let change = match (state.last_available, view.available) {
            (Some(a), 0) if a > 0 => "sold_out",
            (None, 0) => "sold_out",
            (Some(0), n) if n > 0 => "back_in_stock",
            _ => "level",
        };
        state.last_available = Some(view.available);
        state.last_push = Some(now);
        state.dirty = false;
        let Some(targets) = self.topics.get(&Topic::Sku(sku.clone())).cloned() else { return };
        let mut push = Map::new();
        push.insert("event".into(), Value::String("stock".into()));
        push.insert("sku_id".into(), Value::String(sku.to_string()));
        push.insert("change".into(), Value::String(change.into()));
        push.insert("available".into(), Value::from(view.available));
        push.insert("reserved".into(), Value::from(view.reserved));
        push.insert("sold".into(), Value::from(view.sold));
        push.insert("stocked_total".into(), Value::from(view.stocked_total));
        push.insert("sold_out".into(), Value::Bool(view.available == 0));
        self.deliver(targets, push);
    }

    /// Changes were dropped (the hub's queue was full): every subscriber may have missed a push,
    /// so each gets one `gap` push telling it to re-read what it watches.
    fn announce_gap(&mut self) {
        let mut targets: HashMap<u64, Sink> = HashMap::new();
        for m in self.topics.values() {
            for (c, s) in m {
                targets.entry(*c).or_insert_with(|| s.clone());
            }
        }
        if targets.is_empty() {
            return;
        }
        self.stats.gaps.fetch_add(1, Ordering::Relaxed);
        let mut push = Map::new();
        push.insert("event".into(), Value::String("gap".into()));
        push.insert(
            "message".into(),
            Value::String("pushes were dropped under load; re-read your subscriptions' state".into()),
        );
        self.deliver(targets, push);
    }

    fn tick(&mut self, now: Instant) {
        if self.stats.lagged.swap(false, Ordering::Relaxed) {
            self.announce_gap();
        }
        let due: Vec<Arc<str>> = self
            .skus
            .iter()
            .filter(|(_, s)| s.dirty && s.last_push.is_none_or(|t| now.duration_since(t) >= self.interval))
            .map(|(k, _)| k.clone())
            .collect();
        for sku in due {
            self.push_stock(sku, now);
        }
    }
}

/// Run the hub until every control sender is gone and the change queue is closed.
pub(crate) async fn run(
    engine: Engine,
    mut changes: mpsc::Receiver<Change>,
    mut control: mpsc::Receiver<Control>,
    stats: Arc<HubStats>,
    interval: Duration,
) {
    let mut hub =
        Hub { engine, stats, topics: HashMap::new(), by_conn: HashMap::new(), skus: HashMap::new(), interval };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut control_open = true;
    loop {
        tokio::select! {
            c = control.recv(), if control_open => match c {
                Some(c) => hub.control(c),
                None => control_open = false,
            },
            ch = changes.recv() => match ch {
                Some(Change::Order(o)) => hub.order(o),
                Some(Change::Stock(s)) => hub.stock(s, Instant::now()),
                None => return,
            },
            _ = ticker.tick() => hub.tick(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_engine::{CreateOrder, EngineConfig, SaleRules, SkuSpec};

    #[tokio::test]
    async fn a_full_subscriber_queue_disconnects_that_subscriber_only() {
        let parts = hub_parts(1_024);
        let engine = Engine::builder(EngineConfig { shard_count: 1, ..Default::default() })
            .observer(parts.observer.clone())
            .start()
            .unwrap();
        let (control_tx, control_rx) = mpsc::channel(16);
        let stats = parts.stats.clone();
        let hub =
            tokio::spawn(run(engine.clone(), parts.changes, control_rx, stats.clone(), Duration::from_millis(100)));
        let (slow_out, _slow_rx) = mpsc::channel(1); // never read
        let (fast_out, mut fast_rx) = mpsc::channel(64);
        let slow = Sink { out: slow_out, shared: Arc::new(ConnShared::default()) };
        let fast = Sink { out: fast_out, shared: Arc::new(ConnShared::default()) };
        for (conn, sink) in [(1, slow.clone()), (2, fast.clone())] {
            let (ack, done) = oneshot::channel();
            control_tx.send(Control::Subscribe { conn, topic: Topic::User("u".into()), sink, ack }).await.unwrap();
            done.await.unwrap();
        }
        let spec = SkuSpec {
            sku_id: "A".into(),
            name: "A".into(),
            price: surge_engine::Decimal::ONE,
            initial_stock: 10,
            rules: SaleRules::default(),
        };
        engine.create_sku(spec).await.unwrap();
        for k in ["k1", "k2", "k3"] {
            engine.create_order(CreateOrder::new("u", &[("A", 1)], k)).await.unwrap();
        }
        for _ in 0..3 {
            let p = tokio::time::timeout(Duration::from_secs(5), fast_rx.recv()).await.unwrap().unwrap();
            assert!(matches!(p, Outbound::Push(ref m) if m["event"] == "order_status"));
        }
        assert!(slow.shared.cancel.is_cancelled(), "the slow subscriber is cut off");
        assert_eq!(slow.shared.kill_code.get(), Some(&"slow_consumer"));
        assert!(!fast.shared.cancel.is_cancelled(), "the others keep their pushes");
        assert_eq!(stats.slow_consumers.load(Ordering::Relaxed), 1);
        hub.abort();
        engine.shutdown(Duration::from_secs(5));
    }

    #[tokio::test]
    async fn dropped_changes_are_announced_with_a_gap_push() {
        let parts = hub_parts(1);
        let engine = Engine::builder(EngineConfig { shard_count: 1, ..Default::default() }).start().unwrap();
        let (control_tx, control_rx) = mpsc::channel(16);
        let stats = parts.stats.clone();
        let observer = parts.observer.clone();
        let hub =
            tokio::spawn(run(engine.clone(), parts.changes, control_rx, stats.clone(), Duration::from_millis(20)));
        let (out, mut rx) = mpsc::channel(64);
        let sink = Sink { out, shared: Arc::new(ConnShared::default()) };
        let (ack, done) = oneshot::channel();
        control_tx.send(Control::Subscribe { conn: 1, topic: Topic::User("u".into()), sink, ack }).await.unwrap();
        done.await.unwrap();
        let spec = SkuSpec {
            sku_id: "A".into(),
            name: "A".into(),
            price: surge_engine::Decimal::ONE,
            initial_stock: 10,
            rules: SaleRules::default(),
        };
        engine.create_sku(spec).await.unwrap();
        let order = engine.create_order(CreateOrder::new("u", &[("A", 1)], "k")).await.unwrap();
        // The hub task cannot run between these calls (current-thread runtime): the queue of
        // one overflows, as it would if the engine outran the hub.
        for _ in 0..5 {
            observer.order_changed(&order);
        }
        assert!(stats.dropped_changes.load(Ordering::Relaxed) >= 4);
        let mut saw_gap = false;
        while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            if matches!(p, Outbound::Push(ref m) if m["event"] == "gap") {
                saw_gap = true;
                break;
            }
        }
        assert!(saw_gap, "a subscriber must learn that pushes were dropped");
        assert_eq!(stats.gaps.load(Ordering::Relaxed), 1);
        hub.abort();
        engine.shutdown(Duration::from_secs(5));
    }

    #[test]
    fn topics_parse() {
        assert_eq!(Topic::parse("order:42"), Some(Topic::Order(42)));
        assert_eq!(Topic::parse("user:alice"), Some(Topic::User("alice".into())));
        assert_eq!(Topic::parse("sku:A"), Some(Topic::Sku("A".into())));
        assert_eq!(Topic::parse("order:x"), None);
        assert_eq!(Topic::parse("sku:"), None);
        assert_eq!(Topic::parse("weather:today"), None);
    }
}
