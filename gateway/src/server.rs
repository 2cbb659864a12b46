//! Starting and stopping the server: recovery, listeners, hub, graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use surge_engine::Engine;
use surge_persistence::{DurableEngine, RecoveryStats};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::auth::{generate_token, jwt::dev_user_jwt, Authenticator};
use crate::backend::Backend;
use crate::config::FileConfig;
use crate::hub::{self, HubStats};
use crate::session::Gateway;
use crate::ws::AppState;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Binding a listener failed.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// Opening (recovering) the data directory failed.
    #[error("open data directory: {0}")]
    Open(#[from] surge_persistence::PersistenceError),
    /// The final snapshot failed (the WAL still has everything).
    #[error("close: {0}")]
    Close(String),
    /// Joining the cluster failed (`[cluster]`): NATS unreachable, a partition log that does
    /// not decode.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The event stream's publisher could not start (`[events]`).
    #[error(transparent)]
    Events(#[from] surge_events::SpawnError),
}

/// Credentials `surge serve` generated because none were configured (print them, marked
/// dev-only; they are not stored anywhere and change at every start).
#[derive(Clone, PartialEq, Eq)]
pub struct DevTokens {
    /// A token with role `admin`.
    pub admin: String,
    /// A token with role `service`.
    pub service: String,
    /// The HS256 secret for user JWTs (`None` when a JWT key was configured).
    pub jwt_hs256_secret: Option<String>,
    /// An example user JWT (`sub` [`DevTokens::USER_ID`], valid 24 h) signed with that secret.
    pub user_jwt: Option<String>,
}

impl DevTokens {
    /// The `sub` of the example user JWT.
    pub const USER_ID: &'static str = "dev-user";

    /// Generate dev credentials into `auth` (which has no tokens): an admin and a service
    /// token, and, unless a JWT key is configured, an HS256 secret and an example user JWT.
    fn generate(auth: &mut crate::config::AuthConfig) -> Self {
        let t = DevTokens {
            admin: generate_token("adm"),
            service: generate_token("svc"),
            jwt_hs256_secret: None,
            user_jwt: None,
        };
        auth.admin_tokens.push(t.admin.clone());
        auth.service_tokens.push(t.service.clone());
        if auth.has_jwt_key() {
            return t;
        }
        let secret = format!("{}{}", generate_token("jwt"), generate_token(""));
        auth.jwt_hs256_secret = secret.clone();
        let user_jwt = dev_user_jwt(&secret, Self::USER_ID, 24 * 3_600);
        DevTokens { jwt_hs256_secret: Some(secret), user_jwt, ..t }
    }
}

impl std::fmt::Debug for DevTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevTokens(..)")
    }
}

/// The server.
pub struct Server;

/// A running server: its addresses, and how to stop it.
pub struct ServerHandle {
    /// Where the TCP gateway listens.
    pub tcp_addr: SocketAddr,
    /// Where HTTP (`/health`, `/ready`, `/ws`) listens.
    pub http_addr: SocketAddr,
    /// Tokens generated at start because none were configured.
    pub dev_tokens: Option<DevTokens>,
    /// What recovery did.
    pub recovery: RecoveryStats,
    /// Where the Prometheus exporter listens (`None`: disabled, or it could not bind; see the
    /// logs).
    pub metrics_addr: Option<SocketAddr>,
    gateway: Arc<Gateway>,
    db: Option<Backend>,
    /// The event stream's publisher (`[events]` on); stopped before the data directory closes.
    publisher: Option<surge_events::PublisherHandle>,
    shutdown_tx: watch::Sender<bool>,
    http: actix_web::dev::ServerHandle,
    http_task: JoinHandle<std::io::Result<()>>,
    tcp_task: JoinHandle<()>,
    hub_task: JoinHandle<()>,
    control: Option<hub::HubLink>,
    hub_stats: Arc<HubStats>,
    shutdown_timeout: Duration,
}

impl Server {
    /// Validate `cfg`, bind both listeners, open (recover) the data directory, and serve.
    /// Generates dev tokens when `cfg.auth` has none. Must be called inside a multi-threaded
    /// tokio runtime.
    ///
    /// # Errors
    /// Invalid config; a listener cannot bind; the data directory cannot be opened.
    pub async fn start(mut cfg: FileConfig) -> Result<ServerHandle, ServerError> {
        let dev_tokens = cfg.auth.has_no_tokens().then(|| DevTokens::generate(&mut cfg.auth));
        cfg.validate()?;
        if !cfg.auth.client_tokens.is_empty() {
            tracing::warn!(
                "[auth] client_tokens / SURGE_CLIENT_TOKEN are deprecated: they work as role service; \
                 rename them to service_tokens / SURGE_SERVICE_TOKEN"
            );
        }
        let auth = Authenticator::new(&cfg.auth)?;
        let bind_err = |addr: &str| {
            let addr = addr.to_owned();
            move |source| ServerError::Bind { addr, source }
        };
        let tcp = tokio::net::TcpListener::bind(&cfg.server.tcp_addr).await.map_err(bind_err(&cfg.server.tcp_addr))?;
        let tcp_addr = tcp.local_addr().map_err(bind_err(&cfg.server.tcp_addr))?;
        let std_http = std::net::TcpListener::bind(&cfg.server.http_addr).map_err(bind_err(&cfg.server.http_addr))?;
        let http_addr = std_http.local_addr().map_err(bind_err(&cfg.server.http_addr))?;

        // HTTP first, so /health answers during recovery (and /ready says not yet).
        let state = AppState::default();
        let app_state = actix_web::web::Data::new(state.clone());
        let workers = if cfg.server.http_workers == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            cfg.server.http_workers
        };
        let shutdown_timeout = Duration::from_millis(cfg.server.shutdown_timeout_ms);
        let http = actix_web::HttpServer::new(move || {
            actix_web::App::new().app_data(app_state.clone()).configure(crate::ws::routes)
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(shutdown_timeout.as_secs().max(1))
        .listen(std_http)
        .map_err(bind_err(&cfg.server.http_addr))?
        .run();
        let http_handle = http.handle();
        let http_task = tokio::spawn(http);

        // Metrics are not part of the order path's promise: an exporter that cannot start is
        // logged loudly, and the server serves without it.
        let metrics_addr = if cfg.metrics.enabled {
            match crate::metrics::install(&cfg.metrics) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    tracing::error!(error = %e, "metrics exporter not started; serving without /metrics");
                    None
                }
            }
        } else {
            None
        };

        let parts = hub::hub_parts(cfg.limits.hub_queue);
        let observer: Arc<dyn surge_engine::ChangeObserver> = parts.observer.clone();
        let db = match Backend::open(&cfg, observer).await {
            Ok(db) => db,
            Err(e) => {
                http_handle.stop(false).await;
                return Err(e);
            }
        };
        let publisher = match db.local().map_or(Ok(None), |local| start_publisher(&cfg, local)) {
            Ok(p) => p,
            Err(e) => {
                http_handle.stop(false).await;
                return Err(e);
            }
        };
        let engine: Engine = db.engine().clone();
        let recovery = db.recovery();
        crate::metrics::recovery(&recovery);

        let (control_tx, control_rx) = hub::link(1_024);
        let hub_task = tokio::spawn(hub::run(
            engine.clone(),
            parts.changes,
            control_rx,
            parts.stats.clone(),
            Duration::from_millis(cfg.limits.sku_push_interval_ms),
        ));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let gateway = Arc::new(Gateway {
            engine,
            auth,
            user_limiter: Gateway::user_quota(&cfg.limits),
            limits: cfg.limits.clone(),
            control: control_tx.clone(),
            limit_stats: Arc::default(),
            next_conn: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            shutdown: shutdown_rx,
            tracker: TaskTracker::new(),
            ready: AtomicBool::new(false),
            clock: governor::clock::DefaultClock::default(),
            events: publisher.as_ref().map(surge_events::PublisherHandle::status_source),
            cluster: db.cluster_route(),
        });
        db.attach(&gateway);
        if metrics_addr.is_some() {
            let sampler = crate::metrics::Sampler::new(
                gateway.engine.clone(),
                db.wal_stats(),
                parts.stats.clone(),
                cfg.metrics.sku_label_max,
            );
            let interval = Duration::from_millis(cfg.metrics.sample_interval_ms.max(1));
            tokio::spawn(crate::metrics::run_sampler(sampler, interval, gateway.shutdown.clone()));
        }
        let _ = state.gateway.set(gateway.clone());
        gateway.ready.store(true, Ordering::Release);
        let tcp_task = tokio::spawn(crate::tcp::accept_loop(gateway.clone(), tcp));
        match metrics_addr {
            Some(metrics_addr) => tracing::info!(%tcp_addr, %http_addr, %metrics_addr, "surge gateway listening"),
            None => tracing::info!(%tcp_addr, %http_addr, "surge gateway listening"),
        }
        Ok(ServerHandle {
            tcp_addr,
            http_addr,
            dev_tokens,
            recovery,
            metrics_addr,
            gateway,
            db: Some(db),
            publisher,
            shutdown_tx,
            http: http_handle,
            http_task,
            tcp_task,
            hub_task,
            control: Some(control_tx),
            hub_stats: parts.stats,
            shutdown_timeout,
        })
    }
}

/// Start the event stream's publisher when `[events]` is on (the outbox is then on too: see
/// `FileConfig::persistence_with_outbox`).
fn start_publisher(cfg: &FileConfig, db: &DurableEngine) -> Result<Option<surge_events::PublisherHandle>, ServerError> {
    if !cfg.events.enabled() {
        return Ok(None);
    }
    // `validate` refused durability none, the one mode without a log.
    let Some(log) = db.outbox() else { return Ok(None) };
    let runtime = tokio::runtime::Handle::current();
    let publisher = surge_events::Publisher::spawn(&cfg.events, log, crate::wire::EventWire, &runtime)?;
    tracing::info!(stream = %cfg.events.stream, cursor = publisher.status().cursor, "publishing events to NATS JetStream");
    Ok(Some(publisher))
}

impl ServerHandle {
    /// The event stream publisher's status, when `[events]` is on.
    pub fn events_status(&self) -> Option<surge_events::PublisherStatus> {
        self.gateway.events.as_ref().map(surge_events::StatusSource::status)
    }

    /// The engine behind the gateway.
    pub fn engine(&self) -> &Engine {
        &self.gateway.engine
    }

    /// Open connections (TCP + WebSocket).
    pub fn connections(&self) -> usize {
        self.gateway.connections.load(Ordering::Relaxed)
    }

    /// Connection-limit counters (peak pending reply bytes, connections closed at a limit;
    /// issue 10 item 12).
    ///
    /// ```no_run
    /// # async fn f(server: surge_gateway::ServerHandle) {
    /// use std::sync::atomic::Ordering;
    /// let peak = server.limit_stats().pending_reply_bytes_peak.load(Ordering::Relaxed);
    /// println!("the most unwritten reply bytes one connection held: {peak}");
    /// # }
    /// ```
    pub fn limit_stats(&self) -> &crate::limits::LimitStats {
        &self.gateway.limit_stats
    }

    /// Push hub counters (dropped changes, slow consumers, pushes).
    pub fn hub_stats(&self) -> &Arc<HubStats> {
        &self.hub_stats
    }

    /// Graceful shutdown: stop accepting, let connections finish their in-flight requests
    /// (bounded by `shutdown_timeout_ms`), then snapshot and close the data directory.
    ///
    /// # Errors
    /// The final snapshot failed (nothing is lost: the WAL holds every acknowledged change).
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        self.gateway.ready.store(false, Ordering::Release);
        let _ = self.shutdown_tx.send(true);
        let tracker = self.gateway.tracker.clone();
        tracker.close();
        let http = self.http.clone();
        let stop_http = tokio::spawn(async move { http.stop(true).await });
        let _ = (&mut self.tcp_task).await;
        if tokio::time::timeout(self.shutdown_timeout, tracker.wait()).await.is_err() {
            tracing::warn!(left = tracker.len(), "connections did not finish in time; dropping them");
        }
        if tokio::time::timeout(self.shutdown_timeout, stop_http).await.is_err() {
            tracing::warn!("HTTP server did not stop in time");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.http_task).await;
        self.control.take();
        self.hub_task.abort();
        if let Some(p) = self.publisher.take() {
            // What is not acknowledged now is published at the next start (deduplicated).
            let status = p.shutdown(self.shutdown_timeout).await;
            tracing::info!(cursor = status.cursor, lag_events = status.lag_events, "event publisher stopped");
        }
        if let Some(db) = self.db.take() {
            db.close().await?;
        }
        tracing::info!("stopped: snapshot written, data directory closed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::config::AuthConfig;

    #[test]
    fn dev_credentials_cover_every_role() {
        let mut auth = AuthConfig::default();
        let t = DevTokens::generate(&mut auth);
        let cfg = FileConfig { auth, ..Default::default() };
        cfg.validate().expect("generated credentials are valid config");
        let a = Authenticator::new(&cfg.auth).unwrap();
        assert_eq!(a.token(&t.admin).map(|i| i.role), Some(Role::Admin));
        assert_eq!(a.token(&t.service).map(|i| i.role), Some(Role::Service));
        let user = a.jwt(t.user_jwt.as_deref().expect("an example user JWT")).unwrap();
        assert_eq!((user.role, user.user_id.as_deref()), (Role::User, Some(DevTokens::USER_ID)));
        assert!(t.jwt_hs256_secret.is_some_and(|s| s.len() >= 32));
    }

    #[test]
    fn a_configured_jwt_key_is_not_replaced_by_a_dev_secret() {
        let mut auth = AuthConfig { jwt_hs256_secret: "k".repeat(32), ..Default::default() };
        let t = DevTokens::generate(&mut auth);
        assert_eq!((t.jwt_hs256_secret, t.user_jwt), (None, None));
        assert_eq!(auth.jwt_hs256_secret, "k".repeat(32));
    }
}
