//! Prometheus metrics: the exporter (`metrics-exporter-prometheus`, HTTP listener only), every
//! metric's name, HELP and buckets, the recording helpers the sessions call, and the sampler
//! task that copies engine, WAL, hub and process counters into gauges and counters.
//!
//! Conventions: `surge_` prefix, base units (seconds, bytes), `_total` counters, `_seconds`
//! histograms with explicit buckets (never summaries), every metric described. Label values
//! come from closed sets (op names, error codes, statuses, shard numbers) or from SKU ids capped
//! by `metrics.sku_label_max`; an order id or a user id never becomes a label.
//!
//! The `metrics` recorder is process-global: the first server in a process installs it and its
//! listener; later servers in the same process (tests) record into the same registry.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use surge_engine::Engine;
use surge_persistence::{RecoveryStats, WalStats};

use crate::config::MetricsConfig;
use crate::hub::HubStats;

/// Metric names (one place, so the dashboard, the docs and the tests agree).
pub mod names {
    /// Counter `{op, code}`.
    pub const REQUESTS: &str = "surge_requests_total";
    /// Histogram `{op}`, seconds.
    pub const REQUEST_DURATION: &str = "surge_request_duration_seconds";
    /// Counter.
    pub const ORDERS_CREATED: &str = "surge_orders_created_total";
    /// Counter `{reason}`.
    pub const ORDERS_REJECTED: &str = "surge_orders_rejected_total";
    /// Counter `{from, to}`.
    pub const ORDER_TRANSITIONS: &str = "surge_order_transitions_total";
    /// Gauge.
    pub const ORDERS_LIVE: &str = "surge_orders_live";
    /// Gauge `{sku, state}`.
    pub const SKU_STOCK: &str = "surge_sku_stock_units";
    /// Gauge.
    pub const SKUS: &str = "surge_skus";
    /// Gauge `{shard}`.
    pub const SHARD_MAILBOX_DEPTH: &str = "surge_shard_mailbox_depth";
    /// Gauge `{shard}`.
    pub const SHARD_INTERNAL_DEPTH: &str = "surge_shard_internal_queue_depth";
    /// Counter `{shard}`.
    pub const SHARD_MESSAGES: &str = "surge_shard_messages_handled_total";
    /// Counter.
    pub const WAL_BATCHES: &str = "surge_wal_batches_total";
    /// Counter.
    pub const WAL_EVENTS: &str = "surge_wal_events_total";
    /// Counter.
    pub const WAL_BYTES: &str = "surge_wal_bytes_total";
    /// Counter.
    pub const WAL_FAILURES: &str = "surge_wal_write_failures_total";
    /// Gauge.
    pub const WAL_DURABLE_LSN: &str = "surge_wal_durable_lsn";
    /// Histogram, seconds.
    pub const WAL_FLUSH: &str = "surge_wal_flush_duration_seconds";
    /// Histogram, shard batches per group commit.
    pub const WAL_BATCH_SIZE: &str = "surge_wal_batch_size";
    /// Histogram, `create_order` requests per engine batch a connection submits.
    pub const CREATE_BATCH_SIZE: &str = "surge_create_batch_size";
    /// Gauge, seconds.
    pub const RECOVERY_DURATION: &str = "surge_recovery_duration_seconds";
    /// Gauge.
    pub const RECOVERY_EVENTS: &str = "surge_recovery_events_replayed";
    /// Gauge.
    pub const RECOVERY_RECORDS: &str = "surge_recovery_records_replayed";
    /// Gauge.
    pub const RECOVERY_FIXES: &str = "surge_recovery_fixes";
    /// Gauge.
    pub const CONNECTIONS: &str = "surge_gateway_connections";
    /// Counter `{transport}`.
    pub const CONNECTIONS_OPENED: &str = "surge_gateway_connections_opened_total";
    /// Counter.
    pub const CONNECTIONS_REFUSED: &str = "surge_gateway_connections_refused_total";
    /// Counter.
    pub const AUTH_FAILURES: &str = "surge_gateway_auth_failures_total";
    /// Counter `{reason}`.
    pub const CONNECTIONS_CLOSED_BY_LIMIT: &str = "surge_gateway_connections_closed_by_limit_total";
    /// Counter `{scope}`.
    pub const RATE_LIMITED: &str = "surge_gateway_rate_limited_total";
    /// Counter `{cause}`.
    pub const OVERLOADED: &str = "surge_gateway_overloaded_total";
    /// Gauge.
    pub const SUBSCRIPTIONS: &str = "surge_hub_subscriptions";
    /// Counter.
    pub const PUSHES: &str = "surge_hub_pushes_total";
    /// Counter.
    pub const HUB_DROPPED: &str = "surge_hub_dropped_changes_total";
    /// Counter.
    pub const SLOW_CONSUMERS: &str = "surge_hub_slow_consumers_total";
    /// Prefix of the process metrics (`surge_process_cpu_seconds_total`, …).
    pub const PROCESS_PREFIX: &str = "surge_";
    /// The `sku` label value that aggregates SKUs beyond `metrics.sku_label_max`.
    pub const OTHER_SKUS: &str = "_other";
}

use names::*;

/// Request latency buckets (seconds): 100 µs to 5 s; durable replies wait for an fsync.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Group-commit size buckets (shard batches per commit).
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0, 16384.0];

/// Where the exporter of this process listens, once installed.
static INSTALLED: Mutex<Option<SocketAddr>> = Mutex::new(None);

/// Install the recorder and the HTTP listener (once per process), describe every metric.
/// Returns the listener's address. A second call in the same process returns the first
/// address (the recorder is global).
///
/// # Errors
/// The address does not parse or cannot be bound, or another recorder is installed.
pub(crate) fn install(cfg: &MetricsConfig) -> Result<SocketAddr, String> {
    let mut installed = INSTALLED.lock().map_err(|_| "metrics install lock poisoned".to_owned())?;
    if let Some(addr) = *installed {
        return Ok(addr);
    }
    let mut addr = cfg
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("metrics.addr {}: {e}", cfg.addr))?
        .next()
        .ok_or_else(|| format!("metrics.addr {}: no address", cfg.addr))?;
    if addr.port() == 0 {
        // The exporter binds by address; learn a free port first (tests).
        let probe = std::net::TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        addr = probe.local_addr().map_err(|e| format!("bind {addr}: {e}"))?;
    }
    let builder = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(WAL_BATCH_SIZE.to_owned()), BATCH_SIZE_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(CREATE_BATCH_SIZE.to_owned()), BATCH_SIZE_BUCKETS))
        .map_err(|e| e.to_string())?;
    // The exporter runs on its own thread and runtime, so it outlives the runtime that started
    // the first server (tests start several).
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("surge-metrics".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return drop(tx.send(Err(e.to_string()))),
            };
            let built = {
                let _g = rt.enter();
                builder.build()
            };
            let exporter = match built {
                Ok((recorder, exporter)) => match metrics::set_global_recorder(recorder) {
                    Ok(()) => exporter,
                    Err(e) => return drop(tx.send(Err(format!("metrics recorder: {e}")))),
                },
                Err(e) => return drop(tx.send(Err(format!("metrics listener on {addr}: {e}")))),
            };
            let _ = tx.send(Ok(()));
            if let Err(e) = rt.block_on(exporter) {
                tracing::error!(error = ?e, "metrics exporter stopped");
            }
        })
        .map_err(|e| format!("spawn metrics thread: {e}"))?;
    rx.recv().map_err(|_| "metrics thread exited".to_owned())??;
    describe();
    zero_series();
    *installed = Some(addr);
    RECORDER_READY.store(true, Ordering::Release);
    Ok(addr)
}

/// HELP text for every metric (promtool requires it).
fn describe() {
    describe_counter!(REQUESTS, "Requests answered, by op and result code (ok or the error code).");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from reading a request to queuing its reply, by op (durable writes include the WAL flush)."
    );
    describe_counter!(ORDERS_CREATED, "Orders created (every reservation granted), since start.");
    describe_counter!(ORDERS_REJECTED, "create_order requests answered with an error, by reason (the error code).");
    describe_counter!(ORDER_TRANSITIONS, "Order state transitions taken since start, by from and to status.");
    describe_gauge!(ORDERS_LIVE, "Orders held in memory (not yet archived), all statuses.");
    describe_gauge!(
        SKU_STOCK,
        "Stock units by SKU and state (available, reserved, sold); SKUs beyond metrics.sku_label_max are summed \
         under sku=\"_other\"."
    );
    describe_gauge!(SKUS, "SKUs known to the engine.");
    describe_gauge!(SHARD_MAILBOX_DEPTH, "Requests waiting in a shard's bounded mailbox (full means overloaded).");
    describe_gauge!(SHARD_INTERNAL_DEPTH, "Messages from other shards waiting in a shard's internal queue.");
    describe_counter!(SHARD_MESSAGES, "Messages a shard has handled since start.");
    describe_counter!(WAL_BATCHES, "WAL group commits (one sled batch and flush each).");
    describe_counter!(WAL_EVENTS, "Events written to the WAL.");
    describe_counter!(WAL_BYTES, Unit::Bytes, "WAL record bytes written.");
    describe_counter!(WAL_FAILURES, "Failed WAL write or flush attempts (writes are refused while failing).");
    describe_gauge!(WAL_DURABLE_LSN, "Highest WAL log sequence number known durable.");
    describe_histogram!(WAL_FLUSH, Unit::Seconds, "WAL group-commit flush (and fsync in sync mode) duration.");
    describe_histogram!(WAL_BATCH_SIZE, "Shard batches per WAL group commit.");
    describe_histogram!(
        CREATE_BATCH_SIZE,
        "create_order requests a connection submitted to the engine as one batch (those read in one wake-up)."
    );
    describe_gauge!(RECOVERY_DURATION, Unit::Seconds, "Wall time of the recovery at start.");
    describe_gauge!(RECOVERY_EVENTS, "Events replayed from the WAL by the recovery at start.");
    describe_gauge!(RECOVERY_RECORDS, "WAL records replayed by the recovery at start.");
    describe_gauge!(RECOVERY_FIXES, "Repair events (orphan reservations released, ...) written by the recovery.");
    describe_gauge!(CONNECTIONS, "Open gateway connections (TCP and WebSocket).");
    describe_counter!(CONNECTIONS_OPENED, "Gateway connections accepted, by transport (tcp, ws).");
    describe_counter!(CONNECTIONS_REFUSED, "Connections refused because max_connections were open.");
    describe_counter!(AUTH_FAILURES, "Failed authentications (bad or missing token).");
    describe_counter!(
        CONNECTIONS_CLOSED_BY_LIMIT,
        "Connections the server closed, by reason (auth_timeout: no auth within auth_timeout_ms; \
         pending_replies: max_pending_reply_bytes exceeded; write_timeout: the socket accepted nothing for \
         write_timeout_ms)."
    );
    describe_counter!(RATE_LIMITED, "Requests answered rate_limited, by scope (connection, user).");
    describe_counter!(
        OVERLOADED,
        "Requests answered overloaded, by cause (mailbox: a shard mailbox was full; deadline: \
         request_timeout_ms passed)."
    );
    describe_gauge!(SUBSCRIPTIONS, "Live push subscriptions.");
    describe_counter!(PUSHES, "Pushes queued to subscribers.");
    describe_counter!(HUB_DROPPED, "Changes the push hub dropped because its queue was full.");
    describe_counter!(SLOW_CONSUMERS, "Subscribers disconnected as slow consumers.");
    metrics_process::Collector::new(PROCESS_PREFIX).describe();
}

/// Series that only move on rare events start at 0, so `rate()` and alerts see them at once.
fn zero_series() {
    for cause in ["mailbox", "deadline"] {
        counter!(OVERLOADED, "cause" => cause).absolute(0);
    }
    for scope in ["connection", "user"] {
        counter!(RATE_LIMITED, "scope" => scope).absolute(0);
    }
    for transport in ["tcp", "ws"] {
        counter!(CONNECTIONS_OPENED, "transport" => transport).absolute(0);
    }
    counter!(AUTH_FAILURES).absolute(0);
    for reason in ["auth_timeout", "pending_replies", "write_timeout"] {
        counter!(CONNECTIONS_CLOSED_BY_LIMIT, "reason" => reason).absolute(0);
    }
    counter!(CONNECTIONS_REFUSED).absolute(0);
    gauge!(CONNECTIONS).increment(0.0);
}

// ---- recording (gateway hot path: a registry lookup and an atomic add each) -------------------

/// The label value for a request's op: a known op name, `auth`, or `unknown`.
pub(crate) fn op_label(op: &str) -> &'static str {
    if op == "auth" {
        return "auth";
    }
    crate::protocol::OPS.iter().find(|(o, _)| *o == op).map_or("unknown", |(o, _)| *o)
}

/// The handles one (op, code) pair of [`request`] records to.
struct RequestHandles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
    /// `create_order` refused: counted by reason too.
    rejected: Option<metrics::Counter>,
}

/// Whether the recorder is installed: handles taken before would be no-ops for ever.
static RECORDER_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

thread_local! {
    /// [`request`]'s handles per (op, code), resolved once per thread instead of a registry
    /// lookup (a hash of the name and labels, and a lock) per request (issue 13). Keyed by the
    /// labels' addresses: both are `&'static str` from closed sets, so the map stays small
    /// (and aHash, not std's SipHash: the keys are ours, not a client's).
    static REQUEST_HANDLES: std::cell::RefCell<ahash::AHashMap<(usize, usize), RequestHandles>> =
        std::cell::RefCell::default();
}

/// One answered request.
pub(crate) fn request(op: &'static str, code: &'static str, elapsed: Duration) {
    requests(op, code, elapsed, 1);
}

/// `n` requests answered alike (same op and code) after the same `elapsed`: a batch of
/// pipelined requests read together and answered together (one handle lookup for them all).
pub(crate) fn requests(op: &'static str, code: &'static str, elapsed: Duration, n: u64) {
    if !RECORDER_READY.load(Ordering::Acquire) {
        return request_handles(op, code).record(elapsed, n);
    }
    REQUEST_HANDLES.with(|cache| {
        let mut cache = cache.borrow_mut();
        let key = (op.as_ptr() as usize, code.as_ptr() as usize);
        cache.entry(key).or_insert_with(|| request_handles(op, code)).record(elapsed, n);
    });
}

fn request_handles(op: &'static str, code: &'static str) -> RequestHandles {
    RequestHandles {
        requests: counter!(REQUESTS, "op" => op, "code" => code),
        duration: histogram!(REQUEST_DURATION, "op" => op),
        rejected: (op == "create_order" && code != "ok").then(|| counter!(ORDERS_REJECTED, "reason" => code)),
    }
}

impl RequestHandles {
    fn record(&self, elapsed: Duration, n: u64) {
        self.requests.increment(n);
        self.duration.record_many(elapsed.as_secs_f64(), usize::try_from(n).unwrap_or(usize::MAX));
        if let Some(r) = &self.rejected {
            r.increment(n);
        }
    }
}

/// A connection submitted `n` `create_order` requests as one engine batch.
pub(crate) fn create_batch(n: usize) {
    histogram!(CREATE_BATCH_SIZE).record(n as f64);
}

/// A request answered `overloaded`: `cause` is `mailbox` or `deadline`.
pub(crate) fn overloaded(cause: &'static str) {
    counter!(OVERLOADED, "cause" => cause).increment(1);
}

/// A request answered `rate_limited`: `scope` is `connection` or `user`.
pub(crate) fn rate_limited(scope: &'static str) {
    counter!(RATE_LIMITED, "scope" => scope).increment(1);
}

/// A failed authentication.
pub(crate) fn auth_failed() {
    counter!(AUTH_FAILURES).increment(1);
}

/// A connection took a slot (`opened`) or gave it back.
pub(crate) fn connection(open: bool) {
    if open {
        gauge!(CONNECTIONS).increment(1.0);
    } else {
        gauge!(CONNECTIONS).decrement(1.0);
    }
}

/// A connection accepted on `transport` (`tcp`, `ws`).
pub(crate) fn connection_opened(transport: &'static str) {
    counter!(CONNECTIONS_OPENED, "transport" => transport).increment(1);
}

/// The server closed a connection at a limit (`auth_timeout`, `pending_replies`,
/// `write_timeout`).
pub(crate) fn connection_closed(reason: &'static str) {
    counter!(CONNECTIONS_CLOSED_BY_LIMIT, "reason" => reason).increment(1);
}

/// A connection refused at max_connections.
pub(crate) fn connection_refused() {
    counter!(CONNECTIONS_REFUSED).increment(1);
}

/// What recovery did at start.
pub(crate) fn recovery(r: &RecoveryStats) {
    gauge!(RECOVERY_DURATION).set(r.duration.as_secs_f64());
    gauge!(RECOVERY_EVENTS).set(r.events_replayed as f64);
    gauge!(RECOVERY_RECORDS).set(r.records_replayed as f64);
    gauge!(RECOVERY_FIXES).set(r.fixes as f64);
}

// ---- sampling ---------------------------------------------------------------------------------

/// Copies counters kept elsewhere (engine, WAL writer, hub, process) into the registry.
pub(crate) struct Sampler {
    pub engine: Engine,
    pub wal: Arc<WalStats>,
    pub hub: Arc<HubStats>,
    pub sku_label_max: usize,
    labelled: HashSet<Arc<str>>,
    flush_prev: Option<Histogram<u64>>,
    batch_prev: Option<Histogram<u64>>,
    process: metrics_process::Collector,
}

impl Sampler {
    pub(crate) fn new(engine: Engine, wal: Arc<WalStats>, hub: Arc<HubStats>, sku_label_max: usize) -> Self {
        Self {
            engine,
            wal,
            hub,
            sku_label_max,
            labelled: HashSet::new(),
            flush_prev: None,
            batch_prev: None,
            process: metrics_process::Collector::new(PROCESS_PREFIX),
        }
    }

    /// Take one sample of everything.
    pub(crate) fn sample(&mut self) {
        self.engine_stats();
        self.stock();
        self.wal_stats();
        self.hub_stats();
        self.process.collect();
    }

    fn engine_stats(&self) {
        let stats = self.engine.stats();
        for (i, s) in stats.shards.iter().enumerate() {
            let shard = i.to_string();
            gauge!(SHARD_MAILBOX_DEPTH, "shard" => shard.clone()).set(s.mailbox_depth as f64);
            gauge!(SHARD_INTERNAL_DEPTH, "shard" => shard.clone()).set(s.internal_depth as f64);
            counter!(SHARD_MESSAGES, "shard" => shard).absolute(s.messages_handled);
        }
        counter!(ORDERS_CREATED).absolute(stats.orders_created());
        for t in &stats.transitions {
            counter!(ORDER_TRANSITIONS, "from" => t.from.as_str(), "to" => t.to.as_str()).absolute(t.count);
        }
        gauge!(ORDERS_LIVE).set(self.engine.order_count() as f64);
    }

    /// Per-SKU stock: the first `sku_label_max` SKUs seen keep their own label for the life of
    /// the process; the rest are summed under `sku="_other"`.
    fn stock(&mut self) {
        let skus = self.engine.list_skus();
        gauge!(SKUS).set(skus.len() as f64);
        let mut other = [0u64; 3];
        let mut any_other = false;
        for v in &skus {
            let id: &str = &v.sku_id;
            let own = self.labelled.contains(id)
                || (self.labelled.len() < self.sku_label_max && id != OTHER_SKUS && {
                    self.labelled.insert(v.sku_id.clone());
                    true
                });
            if own {
                let sku = v.sku_id.to_string();
                gauge!(SKU_STOCK, "sku" => sku.clone(), "state" => "available").set(v.available as f64);
                gauge!(SKU_STOCK, "sku" => sku.clone(), "state" => "reserved").set(v.reserved as f64);
                gauge!(SKU_STOCK, "sku" => sku, "state" => "sold").set(v.sold as f64);
            } else {
                any_other = true;
                other[0] += v.available;
                other[1] += v.reserved;
                other[2] += v.sold;
            }
        }
        if any_other {
            for (state, n) in ["available", "reserved", "sold"].iter().zip(other) {
                gauge!(SKU_STOCK, "sku" => OTHER_SKUS, "state" => *state).set(n as f64);
            }
        }
    }

    fn wal_stats(&mut self) {
        let w = &self.wal;
        counter!(WAL_BATCHES).absolute(w.batches.load(Ordering::Relaxed));
        counter!(WAL_EVENTS).absolute(w.events.load(Ordering::Relaxed));
        counter!(WAL_BYTES).absolute(w.bytes.load(Ordering::Relaxed));
        counter!(WAL_FAILURES).absolute(w.failures.load(Ordering::Relaxed));
        gauge!(WAL_DURABLE_LSN).set(w.durable_lsn.load(Ordering::Acquire) as f64);
        // The writer keeps cumulative HDR histograms; export what was added since the last
        // sample. The lock is the writer's (once per group commit), never a shard's.
        let flush = w.flush_latency_us.lock().ok().map(|h| h.clone());
        let batch = w.group_size.lock().ok().map(|h| h.clone());
        if let Some(cur) = flush {
            let h = histogram!(WAL_FLUSH);
            for (v, n) in delta(&mut self.flush_prev, cur) {
                h.record_many(v as f64 / 1e6, n as usize);
            }
        }
        if let Some(cur) = batch {
            let h = histogram!(WAL_BATCH_SIZE);
            for (v, n) in delta(&mut self.batch_prev, cur) {
                h.record_many(v as f64, n as usize);
            }
        }
    }

    fn hub_stats(&self) {
        let h = &self.hub;
        gauge!(SUBSCRIPTIONS).set(h.subscriptions.load(Ordering::Relaxed) as f64);
        counter!(PUSHES).absolute(h.pushes.load(Ordering::Relaxed));
        counter!(HUB_DROPPED).absolute(h.dropped_changes.load(Ordering::Relaxed));
        counter!(SLOW_CONSUMERS).absolute(h.slow_consumers.load(Ordering::Relaxed));
    }
}

/// The (value, count) pairs recorded in `cur` since `prev`; `prev` becomes `cur`.
fn delta(prev: &mut Option<Histogram<u64>>, cur: Histogram<u64>) -> Vec<(u64, u64)> {
    let mut d = cur.clone();
    let fresh = match prev.as_ref() {
        // A reset histogram (fewer values than before) counts from zero again.
        Some(p) if p.len() <= cur.len() => d.subtract(p).is_ok(),
        _ => true,
    };
    if !fresh {
        d = cur.clone();
    }
    *prev = Some(cur);
    d.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}

/// Sample every `interval` until `stop` turns true (and once more then).
pub(crate) async fn run_sampler(
    mut sampler: Sampler,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {
                sampler.sample();
                return;
            }
            _ = ticker.tick() => {
                // list_skus and the process reading are blocking work, but short.
                sampler.sample();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_delta_exports_only_new_values() {
        let mut prev = None;
        let mut h = crate::metrics::tests::hist();
        h.record(100).unwrap();
        h.record(100).unwrap();
        let d = delta(&mut prev, h.clone());
        assert_eq!(d.iter().map(|(_, n)| n).sum::<u64>(), 2);
        h.record(5_000).unwrap();
        let d = delta(&mut prev, h.clone());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1, 1);
        assert!((4_990..=5_010).contains(&d[0].0), "{d:?}");
        assert!(delta(&mut prev, h.clone()).is_empty(), "nothing new, nothing exported");
        h.reset();
        h.record(7).unwrap();
        assert_eq!(delta(&mut prev, h).iter().map(|(_, n)| n).sum::<u64>(), 1, "a reset counts afresh");
    }

    pub(super) fn hist() -> Histogram<u64> {
        Histogram::new(3).unwrap()
    }
}
