//! The push hub: subscriptions `order:<id>`, `user:<id>`, `sku:<id>`. Subscribe and unsubscribe are
//! O(1) (subscriptions are indexed by topic and by connection); a disconnect is O(that
//! connection's topics) and travels on its own channel, so it is never dropped (`HubLink`).
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
    /// Reply bytes produced for this connection and not yet handed to its socket (see
    /// `limits.rs`).
    pub pending_reply_bytes: AtomicUsize,
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
}

/// How connections reach the hub: subscribe / unsubscribe through a bounded queue (a caller
/// waits for room and for the ack), and disconnects through their own channel, which is never
/// full, so leaving can never be dropped.
///
/// The disconnect channel is unbounded in type but bounded by construction: a connection sends
/// at most one disconnect (when it ends), each is 8 bytes, and the hub drains them before any
/// other work.
#[derive(Debug, Clone)]
pub(crate) struct HubLink {
    control: mpsc::Sender<Control>,
    disconnects: mpsc::UnboundedSender<u64>,
}

/// The hub's ends of a [`HubLink`].
pub(crate) struct HubInbox {
    pub control: mpsc::Receiver<Control>,
    pub disconnects: mpsc::UnboundedReceiver<u64>,
}

/// A link whose subscribe / unsubscribe queue holds `control_capacity` requests.
pub(crate) fn link(control_capacity: usize) -> (HubLink, HubInbox) {
    let (control, control_rx) = mpsc::channel(control_capacity.max(1));
    let (disconnects, disconnects_rx) = mpsc::unbounded_channel();
    (HubLink { control, disconnects }, HubInbox { control: control_rx, disconnects: disconnects_rx })
}

impl HubLink {
    /// Queue a subscribe / unsubscribe, waiting for room.
    ///
    /// # Errors
    /// The hub is gone (shutting down).
    pub async fn send(&self, c: Control) -> Result<(), mpsc::error::SendError<Control>> {
        self.control.send(c).await
    }

    /// Drop every subscription of `conn`. Never waits and is never dropped while the hub runs
    /// (issue 10 item 14: a full control queue used to leak the subscriptions forever).
    pub fn disconnect(&self, conn: u64) {
        let _ = self.disconnects.send(conn);
    }
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
    /// Subscription entries visited by subscribe, unsubscribe and disconnect (not by pushes):
    /// shows they cost O(1), and a disconnect O(that connection's topics).
    pub entries_visited: AtomicU64,
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

/// One subscribed connection: its sink (stored once, not per topic) and its topics.
struct Subscriber {
    sink: Sink,
    topics: HashSet<Topic>,
}

/// Every subscription is indexed both ways, so subscribe, unsubscribe and a topic's removal are
/// O(1) hash operations and a disconnect is O(that connection's topics); nothing scans a
/// topic's subscribers or all topics.
struct Hub {
    engine: Engine,
    stats: Arc<HubStats>,
    topics: HashMap<Topic, HashSet<u64>>,
    conns: HashMap<u64, Subscriber>,
    skus: HashMap<Arc<str>, SkuPush>,
    interval: Duration,
    subscriptions: usize,
}

impl Hub {
    fn new(engine: Engine, stats: Arc<HubStats>, interval: Duration) -> Self {
        let (topics, conns, skus) = (HashMap::new(), HashMap::new(), HashMap::new());
        Hub { engine, stats, topics, conns, skus, interval, subscriptions: 0 }
    }

    fn publish_count(&self) {
        self.stats.subscriptions.store(self.subscriptions, Ordering::Relaxed);
    }

    fn visited(&self, n: u64) {
        self.stats.entries_visited.fetch_add(n, Ordering::Relaxed);
    }

    fn subscribe(&mut self, conn: u64, topic: Topic, sink: Sink) {
        self.visited(1);
        let sub = self.conns.entry(conn).or_insert_with(|| Subscriber { sink, topics: HashSet::new() });
        if !sub.topics.insert(topic.clone()) {
            return;
        }
        if let Topic::Sku(s) = &topic {
            if !self.skus.contains_key(s) {
                let available = self.engine.get_sku(s).ok().map(|v| v.available);
                let state = SkuPush { last_push: None, dirty: false, last_available: available };
                self.skus.insert(s.clone(), state);
            }
        }
        self.topics.entry(topic).or_default().insert(conn);
        self.subscriptions += 1;
        self.publish_count();
    }

    fn unsubscribe(&mut self, conn: u64, topic: &Topic) {
        self.visited(1);
        let Some(sub) = self.conns.get_mut(&conn) else { return };
        if !sub.topics.remove(topic) {
            return;
        }
        if sub.topics.is_empty() {
            self.conns.remove(&conn);
        }
        self.detach(conn, topic);
        self.publish_count();
    }

    /// Remove `conn` from `topic`'s subscribers (the connection's own set is already updated).
    fn detach(&mut self, conn: u64, topic: &Topic) {
        let Some(set) = self.topics.get_mut(topic) else { return };
        if set.remove(&conn) {
            self.subscriptions -= 1;
        }
        if set.is_empty() {
            self.topics.remove(topic);
            if let Topic::Sku(s) = topic {
                self.skus.remove(s);
            }
        }
    }

    fn remove_conn(&mut self, conn: u64) {
        let Some(sub) = self.conns.remove(&conn) else { return };
        self.visited(sub.topics.len() as u64);
        for t in &sub.topics {
            self.detach(conn, t);
        }
        self.publish_count();
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::Subscribe { conn, topic, sink, ack } => {
                self.subscribe(conn, topic, sink);
                let _ = ack.send(());
            }
            Control::Unsubscribe { conn, topic, ack } => {
                self.unsubscribe(conn, &topic);
                let _ = ack.send(());
            }
        }
    }

    /// Send `push` to every listed connection once; the slow ones are killed and dropped.
    fn deliver(&mut self, targets: Vec<u64>, push: Map<String, Value>) {
        let push = Arc::new(push);
        let mut dead = Vec::new();
        for conn in targets {
            let Some(sub) = self.conns.get(&conn) else { continue };
            match sub.sink.out.try_send(Outbound::Push(push.clone())) {
                Ok(()) => {
                    self.stats.pushes.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(conn, "slow consumer disconnected");
                    sub.sink.shared.kill("slow_consumer");
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
        let by_order = self.topics.get(&Topic::Order(order.order_id.0));
        let by_user = self.topics.get(&Topic::User(order.user_id.clone()));
        let mut targets: Vec<u64> = by_order.map(|s| s.iter().copied().collect()).unwrap_or_default();
        if let Some(users) = by_user {
            // A connection watching both the order and its user gets the push once.
            targets.extend(users.iter().filter(|c| by_order.is_none_or(|o| !o.contains(c))));
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
        let Some(set) = self.topics.get(&Topic::Sku(sku.clone())) else { return };
        let targets: Vec<u64> = set.iter().copied().collect();
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
        let targets: Vec<u64> = self.conns.keys().copied().collect();
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

/// Run the hub until the change queue is closed. Disconnects go first (they only free
/// memory), then subscribe / unsubscribe, changes and the stock ticker.
pub(crate) async fn run(
    engine: Engine,
    mut changes: mpsc::Receiver<Change>,
    inbox: HubInbox,
    stats: Arc<HubStats>,
    interval: Duration,
) {
    let HubInbox { mut control, mut disconnects } = inbox;
    let mut hub = Hub::new(engine, stats, interval);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut control_open, mut disconnects_open) = (true, true);
    loop {
        tokio::select! {
            biased;
            d = disconnects.recv(), if disconnects_open => match d {
                Some(conn) => hub.remove_conn(conn),
                None => disconnects_open = false,
            },
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
        let (control_tx, control_rx) = link(16);
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
        let (control_tx, control_rx) = link(16);
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

    fn sink() -> (Sink, mpsc::Receiver<Outbound>) {
        let (out, rx) = mpsc::channel(1);
        (Sink { out, shared: Arc::new(ConnShared::default()) }, rx)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn disconnects_are_never_dropped_while_the_control_queue_is_full() {
        let parts = hub_parts(16);
        let engine = Engine::builder(EngineConfig { shard_count: 1, ..Default::default() }).start().unwrap();
        let (link, inbox) = link(1);
        let stats = parts.stats.clone();
        let hub = tokio::spawn(run(engine.clone(), parts.changes, inbox, stats.clone(), Duration::from_millis(50)));
        let (s, _rx) = sink();
        for conn in 0..300u64 {
            for topic in [Topic::User(format!("u{}", conn % 7).into()), Topic::Order(conn)] {
                let (ack, done) = oneshot::channel();
                link.send(Control::Subscribe { conn, topic, sink: s.clone(), ack }).await.unwrap();
                done.await.unwrap();
            }
        }
        assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 600);
        // Saturate the control queue (capacity 1). The hub task cannot run until we await
        // (current-thread runtime), so the queue stays full while every connection leaves.
        let (ack, _done) = oneshot::channel();
        let filler = Control::Unsubscribe { conn: 9_999, topic: Topic::Order(1), ack };
        assert!(link.control.try_send(filler).is_ok());
        let (ack, _done2) = oneshot::channel();
        let extra = Control::Unsubscribe { conn: 9_999, topic: Topic::Order(2), ack };
        assert!(link.control.try_send(extra).is_err(), "the control queue is full");
        for conn in 0..300u64 {
            link.disconnect(conn);
        }
        for _ in 0..500 {
            if stats.subscriptions.load(Ordering::Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 0, "no subscription may leak");
        hub.abort();
        engine.shutdown(Duration::from_secs(5));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn subscribe_and_unsubscribe_visit_one_entry_and_disconnect_only_its_topics() {
        let parts = hub_parts(16);
        let engine = Engine::builder(EngineConfig { shard_count: 1, ..Default::default() }).start().unwrap();
        let stats = parts.stats.clone();
        let mut hub = Hub::new(engine.clone(), stats.clone(), Duration::from_millis(100));
        let (s, _rx) = sink();
        let hot = Topic::User("hot".into());
        for conn in 0..100_000u64 {
            hub.subscribe(conn, hot.clone(), s.clone());
        }
        // Many other topics, held by one connection (a scan of all topics would show here).
        for id in 0..10_000u64 {
            hub.subscribe(1, Topic::Order(id), s.clone());
        }
        let visited = || stats.entries_visited.load(Ordering::Relaxed);
        let before = visited();
        hub.unsubscribe(50_000, &hot);
        assert_eq!(visited() - before, 1, "unsubscribe must not scan");
        let before = visited();
        hub.subscribe(200_000, hot.clone(), s.clone());
        assert_eq!(visited() - before, 1, "subscribe must not scan");
        assert_eq!(hub.topics[&hot].len(), 100_000);
        assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 110_000);
        let before = visited();
        hub.remove_conn(1);
        assert_eq!(visited() - before, 10_001, "a disconnect visits that connection's topics only");
        assert_eq!(hub.topics.len(), 1);
        assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 99_999);
        let per_topic: usize = hub.topics.values().map(HashSet::len).sum();
        assert_eq!(per_topic, 99_999, "the running count matches the index");
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
