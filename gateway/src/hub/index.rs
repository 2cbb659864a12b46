//! The subscription indexes, both ways (topic → connection ids, connection → sink + topics):
//! subscribe and unsubscribe are O(1), a disconnect is O(that connection's topics) (issue 10
//! item 14).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use surge_engine::Engine;

use super::fanout::SkuPush;
use super::{Control, HubStats, Sink, Topic};

/// One subscribed connection: its sink (stored once, not per topic) and its topics.
pub(super) struct Subscriber {
    pub(super) sink: Sink,
    pub(super) topics: HashSet<Topic>,
}

/// Every subscription is indexed both ways, so subscribe, unsubscribe and a topic's removal are
/// O(1) hash operations and a disconnect is O(that connection's topics); nothing scans a
/// topic's subscribers or all topics.
pub(super) struct Hub {
    pub(super) engine: Engine,
    pub(super) stats: Arc<HubStats>,
    /// topic → the connections subscribed to it.
    pub(super) topics: HashMap<Topic, HashSet<u64>>,
    /// connection → its sink and topics.
    pub(super) conns: HashMap<u64, Subscriber>,
    /// Per subscribed SKU: when its last stock push went out (coalescing).
    pub(super) skus: HashMap<Arc<str>, SkuPush>,
    /// `sku_push_interval_ms`.
    pub(super) interval: Duration,
    /// Live subscriptions (published to `HubStats::subscriptions`).
    subscriptions: usize,
}

impl Hub {
    pub(super) fn new(engine: Engine, stats: Arc<HubStats>, interval: Duration) -> Self {
        let (topics, conns, skus) = (HashMap::new(), HashMap::new(), HashMap::new());
        Hub { engine, stats, topics, conns, skus, interval, subscriptions: 0 }
    }

    fn publish_count(&self) {
        self.stats.subscriptions.store(self.subscriptions, Ordering::Relaxed);
    }

    fn visited(&self, n: u64) {
        self.stats.entries_visited.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn subscribe(&mut self, conn: u64, topic: Topic, sink: Sink) {
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

    pub(super) fn unsubscribe(&mut self, conn: u64, topic: &Topic) {
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

    pub(super) fn remove_conn(&mut self, conn: u64) {
        let Some(sub) = self.conns.remove(&conn) else { return };
        self.visited(sub.topics.len() as u64);
        for t in &sub.topics {
            self.detach(conn, t);
        }
        self.publish_count();
    }

    pub(super) fn control(&mut self, c: Control) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{hub_parts, ConnShared, Outbound};
    use surge_engine::EngineConfig;
    use tokio::sync::mpsc;

    fn sink() -> (Sink, mpsc::Receiver<Outbound>) {
        let (out, rx) = mpsc::channel(1);
        (Sink { out, shared: Arc::new(ConnShared::default()) }, rx)
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
}
