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
//!
//! One concern per file: this file holds what connections and the engine share with the hub
//! (outbound queue items, kill switch, observer, counters) and the hub task's loop (`run`);
//! `link.rs` is how connections reach it (topics, subscribe / unsubscribe, disconnects);
//! `index.rs` the subscription indexes; `fanout.rs` the pushes (order, stock, gap).

mod fanout;
mod index;
mod link;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use surge_engine::{ChangeObserver, Engine, Order, SkuId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use index::Hub;
pub use link::Topic;
pub(crate) use link::{link, Control, HubInbox, HubLink};

/// What goes out on a connection.
#[derive(Debug)]
pub enum Outbound {
    /// A reply, already encoded.
    Reply(String),
    /// Replies answered together (a batch of `create_order` on a transport that frames each
    /// reply on its own, WebSocket), in order: one queue message for them all.
    Replies(Vec<String>),
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

    /// Was the connection killed? One atomic load (`kill_code` is set before `cancel` fires),
    /// where `CancellationToken::is_cancelled` locks a mutex: this is asked per request and
    /// per reply (issue 13).
    pub fn is_killed(&self) -> bool {
        self.kill_code.get().is_some()
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

pub(crate) enum Change {
    Order(Arc<Order>),
    Stock(SkuId),
    /// Boxed: rare, and larger than the others.
    Wallet(Box<surge_engine::wallet::WalletView>),
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

    fn wallet_changed(&self, wallet: &surge_engine::wallet::WalletView) {
        self.offer(Change::Wallet(Box::new(wallet.clone())));
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
                Some(Change::Wallet(w)) => hub.wallet(&w),
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
    use tokio::sync::oneshot;

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
}
