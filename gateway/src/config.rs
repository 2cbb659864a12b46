//! Server settings: the `[server]`, `[limits]`, `[auth]` and `[metrics]` tables of `config/surge.toml`, and
//! the whole file ([`FileConfig`]) with its `SURGE_<TABLE>_<KEY>` environment overrides.

use std::path::Path;

use serde::{Deserialize, Serialize};
use surge_engine::config::DURATION_MS_MAX;
use surge_engine::EngineConfig;
use surge_persistence::PersistenceConfig;

/// Largest count or size any `[limits]` value may take (frames, connections, queues, in-flight
/// requests, rates, `max_pending_reply_bytes`): 2^30, far above any real setting and far below
/// tokio's semaphore and channel limits (`usize::MAX >> 3` permits), so a typo is refused at
/// start instead of panicking when the first connection arrives.
pub const LIMIT_COUNT_MAX: u64 = 1 << 30;

/// Where the server listens and how long it may take to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// TCP gateway (one JSON object per line). Port 0 picks a free port.
    pub tcp_addr: String,
    /// HTTP listener: `GET /health`, `GET /ready`, and the WebSocket gateway at `/ws`.
    pub http_addr: String,
    /// HTTP worker threads (WebSocket connections live on them); 0 = one per core.
    pub http_workers: usize,
    /// Graceful shutdown: how long in-flight requests may take to finish before connections are
    /// dropped (the snapshot is written after that).
    pub shutdown_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            tcp_addr: "127.0.0.1:7878".into(),
            http_addr: "127.0.0.1:7879".into(),
            http_workers: 0,
            shutdown_timeout_ms: 10_000,
        }
    }
}

/// The Prometheus exporter: `GET /metrics` (any path answers the exposition) on its own listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve metrics at all.
    pub enabled: bool,
    /// Listener address. Loopback by default; port 0 picks a free port.
    pub addr: String,
    /// How often engine, WAL, hub and process counters are copied into the exposition.
    pub sample_interval_ms: u64,
    /// SKUs with their own `sku` label on the stock gauges; the rest are summed under
    /// `sku="_other"` (bounds the number of series).
    pub sku_label_max: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, addr: "127.0.0.1:9898".into(), sample_interval_ms: 1_000, sku_label_max: 100 }
    }
}

/// Protection limits; every one has a sane default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest TCP line / WebSocket message in bytes; beyond it: `frame_too_large`, then close.
    pub max_frame_bytes: usize,
    /// Requests a connection may have in flight; beyond it the server stops reading that
    /// connection (back-pressure) until a reply goes out.
    pub max_in_flight: usize,
    /// Open connections (TCP + WebSocket); beyond it new ones are refused.
    pub max_connections: usize,
    /// A connection that sends nothing (not even a pong or `ping` op) for this long is closed.
    pub idle_timeout_ms: u64,
    /// How often the server pings WebSocket clients.
    pub ping_interval_ms: u64,
    /// Requests per second one connection may send (sustained)…
    pub per_connection_rps: u32,
    /// … and its burst.
    pub per_connection_burst: u32,
    /// Requests per second per `user_id` (create_order, list_orders), across connections…
    pub per_user_rps: u32,
    /// … and its burst.
    pub per_user_burst: u32,
    /// A request not answered by the engine within this time gets `overloaded` (outcome
    /// unknown: retry with the same idempotency key / payment id).
    pub request_timeout_ms: u64,
    /// Outbound messages (replies + pushes) queued per connection; a subscriber whose queue is
    /// full gets `slow_consumer` and is disconnected.
    pub outbound_queue: usize,
    /// Stock pushes per SKU are coalesced to at most one per this interval (100 ms = 10/s).
    pub sku_push_interval_ms: u64,
    /// Changes waiting for the push hub; beyond it changes are dropped (counted) rather than
    /// slowing the engine.
    pub hub_queue: usize,
    /// A connection must authenticate within this time from accept (TCP) or upgrade
    /// (WebSocket), else it gets `unauthorized` and is closed. Blank lines, partial lines and
    /// WebSocket pings / pongs do not extend it (issue 10 item 12: an unauthenticated
    /// connection must not hold a slot).
    pub auth_timeout_ms: u64,
    /// Bytes of replies a connection may have waiting to be written to its socket (queued, or
    /// produced and waiting for room in the queue). Beyond it the client is not reading: it gets
    /// `slow_consumer` and is closed. One reply is always allowed, however large, so a single
    /// large `list_orders` never closes a reading client.
    pub max_pending_reply_bytes: usize,
    /// A connection whose socket accepts nothing for this long (one reply or push not written,
    /// one WebSocket frame not taken) gets `slow_consumer` and is closed.
    pub write_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_in_flight: 128,
            max_connections: 10_000,
            idle_timeout_ms: 120_000,
            ping_interval_ms: 30_000,
            per_connection_rps: 20_000,
            per_connection_burst: 40_000,
            per_user_rps: 20,
            per_user_burst: 40,
            request_timeout_ms: 5_000,
            outbound_queue: 4_096,
            sku_push_interval_ms: 100,
            hub_queue: 65_536,
            auth_timeout_ms: 5_000,
            max_pending_reply_bytes: 1024 * 1024,
            write_timeout_ms: 10_000,
        }
    }
}

/// Authentication (issue 10). Roles: `admin` and `service` by static token, `user` by JWT.
///
/// Empty token lists (and no `SURGE_ADMIN_TOKEN` / `SURGE_SERVICE_TOKEN` / `SURGE_CLIENT_TOKEN`):
/// `surge serve` generates a dev token per role at start, and (if no JWT key is set) a dev HS256
/// secret with an example user JWT, and prints them. Empty strings mean "not set" (so that the
/// `SURGE_AUTH_<KEY>` environment overrides can reach every key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Tokens with role `admin` (SKUs, stock, fulfilment, refunds, disputes; and everything
    /// `service` may do). At least 8 bytes each.
    pub admin_tokens: Vec<String>,
    /// Tokens with role `service` (the shop's backend: orders for any user, `pay`, queries,
    /// subscriptions). At least 8 bytes each.
    pub service_tokens: Vec<String>,
    /// Deprecated name of `service_tokens` (the old role `client`): still accepted, as role
    /// `service`, with a warning at start.
    pub client_tokens: Vec<String>,
    /// HS256 secret for user JWTs (at least 32 bytes; RFC 7518 §3.2). Env
    /// `SURGE_AUTH_JWT_HS256_SECRET`. Empty: HS256 is not accepted.
    pub jwt_hs256_secret: String,
    /// PEM file with the public key for user JWTs (EdDSA: Ed25519 `PUBLIC KEY`; RS256: RSA
    /// `PUBLIC KEY` or `RSA PUBLIC KEY`). Empty: no public-key algorithm is accepted.
    pub jwt_public_key_pem_file: String,
    /// The algorithm of `jwt_public_key_pem_file`: `EdDSA` or `RS256`.
    pub jwt_public_key_algorithm: String,
    /// Required `aud` of user JWTs. Empty: `aud` is not checked.
    pub jwt_audience: String,
    /// Required `iss` of user JWTs. Empty: `iss` is not checked.
    pub jwt_issuer: String,
    /// Clock-skew leeway on `exp` / `nbf`, in ms (applied in whole seconds, as JWT times are
    /// seconds). Also how long after `exp` a user connection is closed. At most 300000.
    pub jwt_leeway_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            admin_tokens: Vec::new(),
            service_tokens: Vec::new(),
            client_tokens: Vec::new(),
            jwt_hs256_secret: String::new(),
            jwt_public_key_pem_file: String::new(),
            jwt_public_key_algorithm: "EdDSA".into(),
            jwt_audience: String::new(),
            jwt_issuer: String::new(),
            jwt_leeway_ms: 30_000,
        }
    }
}

impl AuthConfig {
    /// True when neither static tokens nor a JWT key are configured (dev mode).
    pub fn has_no_tokens(&self) -> bool {
        self.admin_tokens.is_empty() && self.service_tokens.is_empty() && self.client_tokens.is_empty()
    }

    /// True when a JWT key (HS256 secret or public key file) is configured.
    pub fn has_jwt_key(&self) -> bool {
        !self.jwt_hs256_secret.is_empty() || !self.jwt_public_key_pem_file.is_empty()
    }
}

impl std::fmt::Debug for AuthConfig {
    // Never print a token or the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("admin_tokens", &self.admin_tokens.len())
            .field("service_tokens", &self.service_tokens.len())
            .field("client_tokens", &self.client_tokens.len())
            .field("jwt_hs256_secret", &!self.jwt_hs256_secret.is_empty())
            .field("jwt_public_key_pem_file", &self.jwt_public_key_pem_file)
            .field("jwt_public_key_algorithm", &self.jwt_public_key_algorithm)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_leeway_ms", &self.jwt_leeway_ms)
            .finish()
    }
}

/// Everything `surge serve` reads: the whole `config/surge.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `[engine]`.
    pub engine: EngineConfig,
    /// `[persistence]`.
    pub persistence: PersistenceConfig,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[events]`: the outbox published to NATS JetStream (issue 15; off while `nats_url` is
    /// empty). See `docs/events.md`.
    pub events: surge_events::EventsConfig,
    /// `[cluster]`: nodes on a NATS JetStream cluster (issue 16; off while `nats_urls` is
    /// empty, and then `[persistence]` is the single node's sled WAL).
    pub cluster: surge_cluster::ClusterConfig,
}

/// A configuration problem (unreadable file, bad key, bad value).
#[derive(Debug, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

impl FileConfig {
    /// Parse a TOML document (unknown keys are refused).
    ///
    /// # Errors
    /// The TOML does not parse or names an unknown key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// Read `path`, or, when `None`, `config/surge.toml` if it exists (else the defaults); then
    /// apply `SURGE_<TABLE>_<KEY>` environment overrides (e.g. `SURGE_LIMITS_MAX_IN_FLIGHT=64`,
    /// `SURGE_PERSISTENCE_DURABILITY=os`, `SURGE_AUTH_JWT_HS256_SECRET=…`) and
    /// `SURGE_ADMIN_TOKEN` / `SURGE_SERVICE_TOKEN` / `SURGE_CLIENT_TOKEN` (deprecated).
    ///
    /// # Errors
    /// Unreadable or invalid file; an override that does not fit its key.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError(format!("{}: {e}", p.display())))?,
            None => std::fs::read_to_string("config/surge.toml").unwrap_or_default(),
        };
        let mut cfg = Self::from_toml(&text)?;
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    /// Apply `SURGE_<TABLE>_<KEY>` overrides read through `get` (testable without touching the
    /// process environment).
    ///
    /// # Errors
    /// An override whose value does not fit its key.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mut tree = toml::Value::try_from(&*self).map_err(|e| ConfigError(e.to_string()))?;
        let mut changed = false;
        if let Some(tables) = tree.as_table_mut() {
            for (table, value) in tables.iter_mut() {
                let Some(keys) = value.as_table_mut() else { continue };
                for (key, v) in keys.iter_mut() {
                    let var = format!("SURGE_{}_{}", table.to_uppercase(), key.to_uppercase());
                    let Some(raw) = get(&var) else { continue };
                    *v = match v {
                        toml::Value::Integer(_) => toml::Value::Integer(
                            raw.trim().parse().map_err(|_| ConfigError(format!("{var}: expected an integer")))?,
                        ),
                        toml::Value::Boolean(_) => toml::Value::Boolean(
                            raw.trim().parse().map_err(|_| ConfigError(format!("{var}: expected true or false")))?,
                        ),
                        toml::Value::Array(_) => toml::Value::Array(
                            raw.split(',')
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(|s| toml::Value::String(s.to_owned()))
                                .collect(),
                        ),
                        _ => toml::Value::String(raw),
                    };
                    changed = true;
                }
            }
        }
        if changed {
            *self = tree.try_into().map_err(|e: toml::de::Error| ConfigError(e.to_string()))?;
        }
        if let Some(t) = get("SURGE_ADMIN_TOKEN").filter(|t| !t.is_empty()) {
            self.auth.admin_tokens = vec![t];
        }
        if let Some(t) = get("SURGE_SERVICE_TOKEN").filter(|t| !t.is_empty()) {
            self.auth.service_tokens = vec![t];
        }
        if let Some(t) = get("SURGE_CLIENT_TOKEN").filter(|t| !t.is_empty()) {
            self.auth.client_tokens = vec![t];
        }
        Ok(())
    }

    /// Check the values that would make the server unusable.
    ///
    /// # Errors
    /// The first bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.engine.validate().map_err(|e| ConfigError(e.to_string()))?;
        let l = &self.limits;
        let positive = [
            ("max_frame_bytes", l.max_frame_bytes as u64),
            ("max_in_flight", l.max_in_flight as u64),
            ("max_connections", l.max_connections as u64),
            ("idle_timeout_ms", l.idle_timeout_ms),
            ("ping_interval_ms", l.ping_interval_ms),
            ("per_connection_rps", l.per_connection_rps.into()),
            ("per_connection_burst", l.per_connection_burst.into()),
            ("per_user_rps", l.per_user_rps.into()),
            ("per_user_burst", l.per_user_burst.into()),
            ("request_timeout_ms", l.request_timeout_ms),
            ("outbound_queue", l.outbound_queue as u64),
            ("sku_push_interval_ms", l.sku_push_interval_ms),
            ("hub_queue", l.hub_queue as u64),
            ("auth_timeout_ms", l.auth_timeout_ms),
            ("max_pending_reply_bytes", l.max_pending_reply_bytes as u64),
            ("write_timeout_ms", l.write_timeout_ms),
        ];
        if let Some((k, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError(format!("limits.{k} must be positive")));
        }
        // Upper bounds: a value that does not fit must stop the start, never panic later (an
        // `Instant + Duration` past the clock's range, a semaphore or channel beyond tokio's
        // permit limit). Durations share the engine's bound; counts and sizes get generous ones.
        if let Some((k, v)) = positive.iter().find(|(k, v)| k.ends_with("_ms") && *v > DURATION_MS_MAX) {
            return Err(ConfigError(format!("limits.{k} = {v} must be at most {DURATION_MS_MAX} (100 years)")));
        }
        if let Some((k, v)) = positive.iter().find(|(k, v)| !k.ends_with("_ms") && *v > LIMIT_COUNT_MAX) {
            return Err(ConfigError(format!("limits.{k} = {v} must be at most {LIMIT_COUNT_MAX}")));
        }
        if self.metrics.sample_interval_ms > DURATION_MS_MAX {
            return Err(ConfigError(format!("metrics.sample_interval_ms must be at most {DURATION_MS_MAX}")));
        }
        if l.outbound_queue <= l.max_in_flight {
            return Err(ConfigError("limits.outbound_queue must exceed limits.max_in_flight".into()));
        }
        if self.metrics.enabled && self.metrics.sample_interval_ms == 0 {
            return Err(ConfigError("metrics.sample_interval_ms must be positive".into()));
        }
        let a = &self.auth;
        if a.admin_tokens.iter().chain(&a.service_tokens).chain(&a.client_tokens).any(|t| t.len() < 8) {
            return Err(ConfigError("auth tokens must be at least 8 bytes".into()));
        }
        if a.jwt_leeway_ms > 300_000 {
            return Err(ConfigError("auth.jwt_leeway_ms must be at most 300000 (5 minutes)".into()));
        }
        // Loads the keys: a bad secret, PEM file or algorithm name stops the start.
        crate::auth::JwtVerifier::from_config(a)?;
        self.events.validate().map_err(|e| ConfigError(e.to_string()))?;
        self.cluster.validate().map_err(ConfigError)?;
        if self.cluster.enabled() && self.events.enabled() {
            return Err(ConfigError(
                "events are not published in cluster mode yet: leave events.nats_url empty".into(),
            ));
        }
        if self.events.enabled() && self.persistence.durability == surge_persistence::Durability::None {
            return Err(ConfigError(
                "events.nats_url needs the write-ahead log: persistence.durability must be sync or os, not none".into(),
            ));
        }
        Ok(())
    }

    /// The persistence settings to open the data directory with: `[persistence]`, and the
    /// outbox's retention when `[events]` is on (the shards then journal what it publishes).
    pub fn persistence_with_outbox(&self) -> PersistenceConfig {
        PersistenceConfig { outbox: self.events.enabled().then(|| self.events.retention()), ..self.persistence.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10, item 3: values that do not fit are refused at start, naming the key; before the
    /// bounds, `auth_timeout_ms = u64::MAX` passed validation and panicked at the first
    /// connection (`Instant + Duration` overflow), and `max_in_flight` above tokio's permit limit
    /// panicked in `Semaphore::new`.
    #[test]
    fn limits_that_do_not_fit_are_refused_naming_the_key() {
        assert!(FileConfig::default().validate().is_ok());
        type Setter = fn(&mut LimitsConfig);
        let too_big: [(&str, Setter); 4] = [
            ("auth_timeout_ms", |l| l.auth_timeout_ms = u64::MAX),
            ("write_timeout_ms", |l| l.write_timeout_ms = DURATION_MS_MAX + 1),
            ("max_in_flight", |l| l.max_in_flight = usize::MAX),
            ("max_pending_reply_bytes", |l| l.max_pending_reply_bytes = usize::MAX),
        ];
        for (key, set) in too_big {
            let mut cfg = FileConfig::default();
            set(&mut cfg.limits);
            let err = cfg.validate().expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let mut cfg = FileConfig::default();
        cfg.metrics.sample_interval_ms = u64::MAX;
        assert!(cfg.validate().expect_err("sample interval").to_string().contains("sample_interval_ms"));
    }

    /// `[events]` is checked at start, turns the outbox on, and refuses a log-less durability.
    #[test]
    fn events_need_a_log_and_turn_the_outbox_on() {
        let mut cfg = FileConfig::default();
        assert_eq!(cfg.persistence_with_outbox().outbox, None, "off by default");
        cfg.events.nats_url = "nats://127.0.0.1:4222".into();
        cfg.validate().unwrap();
        assert_eq!(cfg.persistence_with_outbox().outbox, Some(cfg.events.retention()));
        cfg.persistence.durability = surge_persistence::Durability::None;
        assert!(cfg.validate().expect_err("durability none").to_string().contains("durability"));
        cfg.persistence.durability = surge_persistence::Durability::Sync;
        cfg.events.stream = "a.b".into();
        assert!(cfg.validate().expect_err("bad stream").to_string().contains("events.stream"));
        let env = |k: &str| (k == "SURGE_EVENTS_NATS_URL").then(|| "nats://10.0.0.1:4222".to_string());
        let mut cfg = FileConfig::default();
        cfg.apply_env(env).unwrap();
        assert_eq!(cfg.events.nats_url, "nats://10.0.0.1:4222", "SURGE_EVENTS_NATS_URL reaches [events]");
    }
}
