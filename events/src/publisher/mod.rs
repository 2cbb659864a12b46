//! The publisher: reads the durable outbox after its cursor and publishes every entry to the
//! JetStream stream, exactly once in the stream, in log order.
//!
//! # How
//! One task on the caller's runtime (and one thread, `surge-outbox-io`, for the synchronous
//! log reads and cursor saves):
//!
//! 1. connect to NATS, retrying with capped back-off (100 ms doubling to 5 s) for as long as it
//!    takes: a NATS that is down never fails or slows the server;
//! 2. get or create the stream (`<prefix>.>`, file storage, the duplicate window);
//! 3. whenever the log's durable LSN passes what was read (polled every 2 ms: an atomic load),
//!    read up to 64 records, publish each entry with `Nats-Msg-Id` = its CloudEvents id and
//!    `Nats-Expected-Last-Msg-Id` = the previous entry's id, at most `in_flight_max` awaiting
//!    their acknowledgement;
//! 4. once every publish of a page is acknowledged, save the page's last LSN as the cursor.
//!
//! On any failure (NATS down, a publish refused or timed out after 5 s) it logs (at most one
//! line per 10 s), backs off, and publishes again from the saved cursor. JetStream drops what it
//! already holds (same `Nats-Msg-Id` within the duplicate window), and the expected-last-id
//! chain refuses a publish whose predecessor was lost, so the stream holds each event once and
//! in log order. The engine never waits for any of this: its replies are released when the log
//! is durable, whatever the publisher does.
//!
//! # Limits
//! * Exactly once holds while a re-publish comes within the duplicate window of the first
//!   (default 10 minutes): a crash, or an outage with acknowledgements lost, longer than that
//!   may store the unacknowledged tail (at most `in_flight_max` events) twice.
//! * One publisher per stream: ids restart with each data directory and node, and the
//!   expected-last-id chain assumes no one else publishes to the stream (a foreign message costs
//!   a retry, nothing more).
//! * Past `max_lag_bytes` of unpublished log, snapshots trim it and those events are never
//!   published (counted in `surge_events_dropped_records_total`).

mod io;
mod run;
mod shared;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use surge_persistence::outbox::OutboxLog;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::io::LogIo;
use self::run::Task;
pub(crate) use self::run::ACK_TIMEOUT;
use self::shared::{Backoff, ErrorLog, Shared};
use crate::config::{EventsConfig, EventsConfigError};
use crate::envelope::{Encoder, WireFormat};

/// How often the metrics gauges are refreshed.
const METRICS_INTERVAL: Duration = Duration::from_millis(500);

/// Starts publishers ([`Publisher::spawn`]).
#[derive(Debug)]
pub struct Publisher;

/// Why a publisher could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The configuration is invalid, or `nats_url` is empty.
    #[error(transparent)]
    Config(#[from] EventsConfigError),
    /// Its I/O thread could not be started.
    #[error("events: cannot start the outbox thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The publisher's state, for `/ready` and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublisherStatus {
    /// Connected to NATS now.
    pub connected: bool,
    /// Publishes acknowledged by the stream since start (re-publishes after a failure count
    /// again; the stream stores them once).
    pub published_total: u64,
    /// Events not yet acknowledged: publishes awaiting their acknowledgement plus durable log
    /// records not yet read. An estimate: a record may hold zero or several events.
    pub lag_events: u64,
    /// Age (s) of the oldest event not yet acknowledged, by the wall clock against the engine
    /// clock; 0 when `lag_events` is 0 (or while no such event has been read yet).
    pub lag_seconds: f64,
    /// The saved cursor: every event through this LSN is in the stream.
    pub cursor: u64,
    /// The log's durable LSN.
    pub durable_lsn: u64,
    /// Unpublished log records trimmed by snapshots (past `max_lag_bytes`) since start.
    pub records_dropped: u64,
}

impl Publisher {
    /// Start publishing `log` to NATS per `cfg`, on `runtime`; `wire` shapes the `data` of
    /// each event (`surge_gateway::wire::EventWire` in the server). Returns at once: the
    /// connection is made (and retried) in the background.
    ///
    /// Shut it down ([`PublisherHandle::shutdown`]) before closing the engine: it holds the
    /// log open until then.
    ///
    /// ```no_run
    /// # use serde::{Serialize, Serializer};
    /// # use surge_engine::{wallet::AccountView, Order, SkuView};
    /// # struct Wire;
    /// # impl surge_events::WireFormat for Wire {
    /// #     fn order<S: Serializer>(&self, o: &Order, s: S) -> Result<S::Ok, S::Error> { o.serialize(s) }
    /// #     fn sku<S: Serializer>(&self, k: &SkuView, s: S) -> Result<S::Ok, S::Error> { k.serialize(s) }
    /// #     fn account<S: Serializer>(&self, a: &AccountView, s: S) -> Result<S::Ok, S::Error> { a.serialize(s) }
    /// # }
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use surge_engine::EngineConfig;
    /// use surge_events::{EventsConfig, Publisher};
    /// use surge_persistence::{DurableEngine, PersistenceConfig};
    /// let events = EventsConfig { nats_url: "nats://127.0.0.1:4222".into(), ..EventsConfig::default() };
    /// let pcfg = PersistenceConfig { outbox: Some(events.retention()), ..PersistenceConfig::new("data") };
    /// let db = DurableEngine::open(pcfg, EngineConfig::default())?;
    /// let log = db.outbox().ok_or("durability none keeps no log")?;
    /// let publisher = Publisher::spawn(&events, log, Wire, &tokio::runtime::Handle::current())?;
    /// // … serve …
    /// println!("{:?}", publisher.status());
    /// publisher.shutdown(std::time::Duration::from_secs(5)).await;
    /// db.close()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`SpawnError::Config`] for an invalid configuration or an empty `nats_url`;
    /// [`SpawnError::Thread`] if the I/O thread cannot start.
    pub fn spawn<W: WireFormat>(
        cfg: &EventsConfig,
        log: OutboxLog,
        wire: W,
        runtime: &Handle,
    ) -> Result<PublisherHandle, SpawnError> {
        cfg.validate()?;
        if !cfg.enabled() {
            return Err(EventsConfigError::NoUrl.into());
        }
        crate::metrics::describe();
        let log_id = log.log_id();
        let shared = Arc::new(Shared::new(log.clone()));
        let (io, io_thread) = LogIo::start(log)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = Task {
            cfg: cfg.clone(),
            encoder: Encoder::new(&cfg.subject_prefix, &cfg.node, wire).with_log_id(log_id),
            io,
            shared: shared.clone(),
            stop: stop_rx.clone(),
            backoff: Backoff::new(),
            errors: ErrorLog::default(),
            stream_checked: false,
        };
        let task = runtime.spawn(task.run());
        let ticker = runtime.spawn(metrics_ticker(shared.clone(), stop_rx));
        Ok(PublisherHandle {
            shared,
            stop: stop_tx,
            task: Some(task),
            ticker: Some(ticker),
            io_thread: Some(io_thread),
        })
    }
}

async fn metrics_ticker(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        shared.record_metrics();
        tokio::select! {
            _ = tokio::time::sleep(METRICS_INTERVAL) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
    }
}

/// Reads a running publisher's [`PublisherStatus`] ([`PublisherHandle::status_source`]).
#[derive(Clone)]
pub struct StatusSource(Arc<Shared>);

impl StatusSource {
    /// The state now (atomics only).
    pub fn status(&self) -> PublisherStatus {
        self.0.status()
    }
}

impl std::fmt::Debug for StatusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StatusSource").field(&self.status()).finish()
    }
}

/// A running publisher. Dropping it asks the task to stop (it finishes the acknowledgements in
/// flight on its own); [`PublisherHandle::shutdown`] also waits for that.
pub struct PublisherHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
    io_thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for PublisherHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherHandle").field("status", &self.status()).finish()
    }
}

impl PublisherHandle {
    /// The state now (cheap: atomics; fit for every `/ready`).
    pub fn status(&self) -> PublisherStatus {
        self.shared.status()
    }

    /// A cloneable reader of [`PublisherHandle::status`], for whoever reports it (the
    /// gateway's `/ready`) while the handle itself stays with whoever stops it.
    pub fn status_source(&self) -> StatusSource {
        StatusSource(self.shared.clone())
    }

    /// Stop: publish nothing more, wait up to `drain_timeout` for the acknowledgements in
    /// flight (saving the cursor of each page they complete), then end the task and the I/O
    /// thread. What was not acknowledged is published again at the next start. Returns the
    /// final status.
    pub async fn shutdown(mut self, drain_timeout: Duration) -> PublisherStatus {
        self.stop.send_replace(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(drain_timeout, &mut task).await.is_err() {
                tracing::warn!(?drain_timeout, "events: publisher did not drain in time; stopped");
                task.abort();
                let _ = task.await;
            }
        }
        self.finish().await
    }

    /// Stop at once, as a crash would: nothing in flight is awaited and the cursor is not saved
    /// (what was sent is published again at the next start, and dropped by the stream as a
    /// duplicate). For tests of recovery. Returns the final status.
    pub async fn abort(mut self) -> PublisherStatus {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.finish().await
    }

    /// After the task: the ticker, the I/O thread (it ends once the task dropped its side).
    async fn finish(&mut self) -> PublisherStatus {
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.await;
        }
        if let Some(thread) = self.io_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.shared.set_client(None);
        self.shared.record_metrics();
        self.status()
    }
}

impl Drop for PublisherHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
