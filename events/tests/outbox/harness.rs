//! A durable engine with the outbox on, its publisher, and readers and checks of the stream;
//! the real `nats-server` is [`super::nats::NatsServer`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use surge_engine::{CreateOrder, Decimal, EngineConfig, Order, OrderId, SaleRules, SkuSpec, TransitionOptions};
use surge_events::{EventsConfig, Publisher, PublisherHandle, PublisherStatus};
use surge_gateway::wire::EventWire;
use surge_persistence::outbox::OutboxRetention;
use surge_persistence::{Durability, DurableEngine, PersistenceConfig};

/// The node name every test publishes as.
pub const NODE: &str = "test-node";

/// A multi-threaded runtime for the publisher (the test thread drives the engine); also routes
/// the publisher's log lines to the test's output (shown when a test fails).
pub fn runtime() -> tokio::runtime::Runtime {
    let _ = tracing_subscriber::fmt().with_test_writer().with_max_level(tracing::Level::INFO).try_init();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// `[events]` for `url`.
pub fn events_cfg(url: &str) -> EventsConfig {
    EventsConfig { nats_url: url.into(), node: NODE.into(), in_flight_max: 64, ..EventsConfig::default() }
}

/// A durable engine (sync durability) on `dir` with the outbox on.
pub fn open_db(dir: &Path, max_lag_bytes: u64) -> DurableEngine {
    let cfg = PersistenceConfig {
        durability: Durability::Sync,
        outbox: Some(OutboxRetention { max_lag_bytes }),
        ..PersistenceConfig::new(dir)
    };
    DurableEngine::open(cfg, EngineConfig::default()).expect("open the engine")
}

/// A publisher of `db`'s outbox on `rt`.
pub fn publisher(cfg: &EventsConfig, db: &DurableEngine, rt: &tokio::runtime::Runtime) -> PublisherHandle {
    let log = db.outbox().expect("the outbox is on");
    Publisher::spawn(cfg, log, EventWire, rt.handle()).expect("spawn the publisher")
}

/// Wait until every durable event is acknowledged and the cursor saved.
pub fn wait_caught_up(p: &PublisherHandle, timeout: Duration) -> PublisherStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let s = p.status();
        if s.lag_events == 0 && s.cursor >= s.durable_lsn {
            return s;
        }
        assert!(Instant::now() < deadline, "the publisher did not catch up in {timeout:?}: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Create a SKU.
pub fn sku(db: &DurableEngine, id: &str, stock: u64) {
    let spec = SkuSpec {
        sku_id: id.into(),
        name: format!("SKU {id}"),
        price: Decimal::new(990, 2),
        initial_stock: stock,
        rules: SaleRules::default(),
    };
    db.engine().create_sku(spec).wait().expect("create_sku");
}

/// Create an order of one unit of `sku`.
pub fn order(db: &DurableEngine, user: &str, sku: &str, key: &str) -> Arc<Order> {
    db.engine().create_order(CreateOrder::new(user, &[(sku, 1)], key)).wait().expect("create_order")
}

/// Pay `o` in full.
pub fn pay(db: &DurableEngine, o: &Order) -> Arc<Order> {
    let id = format!("pay-{}", o.order_id.0);
    db.engine().pay(o.order_id, &id, o.total, TransitionOptions::default()).wait().expect("pay")
}

/// A message of the stream.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Stream sequence.
    pub seq: u64,
    /// NATS subject.
    pub subject: String,
    /// `Nats-Msg-Id`.
    pub msg_id: String,
    /// The payload.
    pub json: serde_json::Value,
}

/// Every message of `stream`, in stream order.
pub async fn read_stream(url: &str, stream: &str) -> Vec<Stored> {
    let client = async_nats::connect(url).await.expect("connect to read the stream");
    let js = jetstream::new(client);
    let mut st = js.get_stream(stream).await.expect("the stream exists");
    let last = st.info().await.expect("stream info").state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    let config = consumer::pull::OrderedConfig { deliver_policy: consumer::DeliverPolicy::All, ..Default::default() };
    let mut msgs = st.create_consumer(config).await.expect("consumer").messages().await.expect("messages");
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), msgs.next()).await {
        let m = m.expect("message");
        let seq = m.info().expect("message info").stream_sequence;
        let msg_id = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str().to_owned());
        let json = serde_json::from_slice(&m.payload).expect("JSON payload");
        out.push(Stored { seq, subject: m.subject.to_string(), msg_id: msg_id.expect("Nats-Msg-Id"), json });
        if seq >= last {
            break;
        }
    }
    assert_eq!(out.last().map(|s| s.seq), Some(last), "read the whole stream");
    out
}

/// `<log id>-<lsn>-<index>`: the LSN and index as numbers (one log per test).
fn lsn_index(id: &str) -> (u64, u32) {
    let mut parts = id.split('-');
    let (log, l, i) = (parts.next(), parts.next(), parts.next());
    assert!(log.is_some_and(|x| x.len() == 16) && parts.next().is_none(), "id is <log id>-<lsn>-<index>: {id}");
    (l.and_then(|l| l.parse().ok()).expect("lsn"), i.and_then(|i| i.parse().ok()).expect("index"))
}

/// Each id once, equal to its `Nats-Msg-Id`, and in log order along the stream.
pub fn check_exactly_once_in_log_order(stored: &[Stored]) {
    let mut prev: Option<(u64, u32)> = None;
    for s in stored {
        assert_eq!(s.json["id"], s.msg_id.as_str(), "CloudEvents id = Nats-Msg-Id");
        let at = lsn_index(&s.msg_id);
        if let Some(p) = prev {
            assert!(at > p, "stream seq {}: id {} after {:?}: duplicated or out of log order", s.seq, s.msg_id, p);
        }
        prev = Some(at);
    }
}

/// Every order of `ids` appears once per status change, in order, with the right fields.
pub fn check_orders(stored: &[Stored], db: &DurableEngine, ids: &[OrderId]) {
    let mut by_order: HashMap<&str, Vec<&Stored>> = HashMap::new();
    for s in stored.iter().filter(|s| s.subject.starts_with("surge.order.")) {
        by_order.entry(s.json["subject"].as_str().expect("subject")).or_default().push(s);
    }
    for id in ids {
        let o = db.engine().get_order(*id).expect("get_order");
        let key = id.0.to_string();
        let got = by_order.remove(key.as_str()).unwrap_or_default();
        let want: Vec<String> = std::iter::once("surge.order.created".to_owned())
            .chain(o.history.iter().skip(1).map(|h| format!("surge.order.{}", h.to.as_str())))
            .collect();
        let subjects: Vec<&str> = got.iter().map(|s| s.subject.as_str()).collect();
        assert_eq!(subjects, want, "order {key}: one event per status change, in order");
        for (s, h) in got.iter().zip(o.history.iter()) {
            let at_ms = if h.from.is_none() { o.created_at_ms } else { h.at_ms };
            check_envelope(s, &key, at_ms);
            assert_eq!(s.json["data"]["order_id"], key.as_str(), "data is the wire order");
            assert_eq!(s.json["data"]["status"], h.to.as_str());
        }
    }
}

/// The CloudEvents attributes of one message.
pub fn check_envelope(s: &Stored, subject: &str, at_ms: i64) {
    let j = &s.json;
    assert_eq!(j["specversion"], "1.0");
    assert_eq!(j["source"], format!("surge/{NODE}"));
    assert_eq!(j["datacontenttype"], "application/json");
    assert_eq!(j["subject"], subject);
    if s.subject.starts_with("surge.order.") {
        assert_eq!(j["type"], s.subject.as_str());
    }
    assert_eq!(j["time"].as_str(), surge_events::envelope::rfc3339_ms(at_ms).as_deref());
    assert!(j["data"].is_object());
}

/// Copy a closed data directory (the state a crash would leave, cursor included).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A `nats-server`, a runtime, a temp dir, an engine on it with the outbox on (`max_lag_bytes`),
/// `[events]` for the server, and a publisher: what most tests start with. Destructure it (keep
/// `dir` bound: dropping it removes the directory).
pub struct Rig {
    pub nats: crate::nats::NatsServer,
    pub rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
    pub db: DurableEngine,
    pub cfg: EventsConfig,
    pub p: PublisherHandle,
}

impl Rig {
    pub fn start(max_lag_bytes: u64) -> Self {
        let nats = crate::nats::NatsServer::start();
        let rt = runtime();
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open_db(dir.path(), max_lag_bytes);
        let cfg = events_cfg(&nats.url());
        let p = publisher(&cfg, &db, &rt);
        Self { nats, rt, dir, db, cfg, p }
    }
}

/// The stream holds every event once, in log order, and every change of the orders `ids`; then
/// stop the publisher and close the engine. Returns what the stream holds.
pub fn check_stream_and_close(
    rt: &tokio::runtime::Runtime,
    url: &str,
    cfg: &EventsConfig,
    (db, p): (DurableEngine, PublisherHandle),
    ids: &[OrderId],
) -> Vec<Stored> {
    let stored = rt.block_on(read_stream(url, &cfg.stream));
    check_exactly_once_in_log_order(&stored);
    check_orders(&stored, &db, ids);
    rt.block_on(p.shutdown(Duration::from_secs(5)));
    db.close().expect("close");
    stored
}
