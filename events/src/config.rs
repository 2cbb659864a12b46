//! `[events]`: where the outbox is published and how to reach it ([`EventsConfig`]).
//!
//! Empty strings mean "not set" (as in the gateway's `[auth]`), so that every key, `nats_url`
//! included, can be set by a `SURGE_EVENTS_<KEY>` environment override.

use std::time::Duration;

use async_nats::ServerAddr;
use serde::{Deserialize, Serialize};
use surge_persistence::outbox::OutboxRetention;

/// Default stream name.
pub const STREAM_DEFAULT: &str = "SURGE_EVENTS";
/// Default subject prefix.
pub const SUBJECT_PREFIX_DEFAULT: &str = "surge";
/// Default node name (the `source` of every event is `surge/<node>`).
pub const NODE_DEFAULT: &str = "surge-1";
/// Largest `duplicate_window_ms`: 7 days (the stream keeps every id of the window in memory).
pub const DUPLICATE_WINDOW_MS_MAX: u64 = 7 * 24 * 3_600_000;
/// Largest `in_flight_max`.
pub const IN_FLIGHT_MAX_MAX: usize = 65_536;
/// Longest `node` (bytes).
pub const NODE_BYTES_MAX: usize = 64;

/// The `[events]` table: publishing the transactional outbox to NATS JetStream (issue 15).
/// Off while `nats_url` is empty (the default).
///
/// ```
/// use surge_events::EventsConfig;
/// let cfg: EventsConfig = toml::from_str(r#"nats_url = "nats://127.0.0.1:4222""#).unwrap();
/// assert!(cfg.enabled());
/// assert_eq!(cfg.stream, "SURGE_EVENTS");
/// assert_eq!(cfg.duplicate_window_ms, 600_000);
/// cfg.validate().unwrap();
/// assert!(!EventsConfig::default().enabled());
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// NATS server URL(s), comma-separated (`nats://host:4222`, `tls://host:4222`). Empty: the
    /// outbox is not published (default). Env `SURGE_EVENTS_NATS_URL`.
    pub nats_url: String,
    /// The JetStream stream, created if missing (file storage, subjects `<subject_prefix>.>`,
    /// duplicate window `duplicate_window_ms`); an existing stream is used as it is. Default
    /// `SURGE_EVENTS`.
    pub stream: String,
    /// First token(s) of every subject (`surge.order.paid`). Default `surge`.
    pub subject_prefix: String,
    /// This node's name: every event's `source` is `surge/<node>`. Default `surge-1`, the same
    /// on every host and restart, so a node's events keep their source when it moves; give each
    /// node its own name (and its own stream: event ids restart with each data directory).
    /// ASCII letters, digits, `-`, `_` and `.`, at most 64 bytes.
    pub node: String,
    /// Unpublished log that snapshots keep (bytes, default 1 GiB); past it the oldest
    /// unpublished records are trimmed and counted as dropped (the engine never waits for NATS).
    pub max_lag_bytes: u64,
    /// The stream's duplicate window (ms, default 10 minutes): a re-publish within it is
    /// dropped by JetStream, so a restart or a NATS outage shorter than this duplicates nothing.
    pub duplicate_window_ms: u64,
    /// Publishes awaiting their acknowledgement at most (default 256).
    pub in_flight_max: usize,
    /// NATS credentials file (`.creds`: user JWT and NKey seed). Empty: none.
    pub creds_file: String,
    /// User name (with `password`). Empty: none.
    pub user: String,
    /// Password of `user`.
    pub password: String,
    /// Authentication token. Empty: none.
    pub token: String,
    /// Refuse to connect without TLS.
    pub tls_required: bool,
    /// PEM file of the CA(s) that signed the server's certificate. Empty: the system roots.
    pub tls_ca_file: String,
    /// PEM client certificate (mutual TLS, with `tls_client_key_file`). Empty: none.
    pub tls_client_cert_file: String,
    /// PEM private key of `tls_client_cert_file`.
    pub tls_client_key_file: String,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            nats_url: String::new(),
            stream: STREAM_DEFAULT.into(),
            subject_prefix: SUBJECT_PREFIX_DEFAULT.into(),
            node: NODE_DEFAULT.into(),
            max_lag_bytes: 1 << 30,
            duplicate_window_ms: 600_000,
            in_flight_max: 256,
            creds_file: String::new(),
            user: String::new(),
            password: String::new(),
            token: String::new(),
            tls_required: false,
            tls_ca_file: String::new(),
            tls_client_cert_file: String::new(),
            tls_client_key_file: String::new(),
        }
    }
}

impl std::fmt::Debug for EventsConfig {
    // Never print a password or a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsConfig")
            .field("nats_url", &self.nats_url)
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("node", &self.node)
            .field("max_lag_bytes", &self.max_lag_bytes)
            .field("duplicate_window_ms", &self.duplicate_window_ms)
            .field("in_flight_max", &self.in_flight_max)
            .field("creds_file", &self.creds_file)
            .field("user", &self.user)
            .field("password", &!self.password.is_empty())
            .field("token", &!self.token.is_empty())
            .field("tls_required", &self.tls_required)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_client_cert_file", &self.tls_client_cert_file)
            .field("tls_client_key_file", &self.tls_client_key_file)
            .finish()
    }
}

/// A value of `[events]` that cannot work; each names its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsConfigError {
    /// `nats_url` is empty where publishing was asked for.
    #[error("events.nats_url is empty")]
    NoUrl,
    /// A URL of `nats_url` does not parse.
    #[error("events.nats_url: {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// `stream` is empty or holds whitespace, `.`, `*`, `>`, `/` or `\`.
    #[error("events.stream {0:?}: must be non-empty, without whitespace, '.', '*', '>', '/' or '\\'")]
    BadStream(String),
    /// `subject_prefix` is not a plain subject (empty token, wildcard, whitespace, leading `$`).
    #[error("events.subject_prefix {0:?}: must be dot-separated non-empty tokens of printable ASCII, without '*', '>' or a leading '$'")]
    BadSubjectPrefix(String),
    /// `node` is empty, too long, or holds other than ASCII letters, digits, `-`, `_`, `.`.
    #[error("events.node {0:?}: 1 to 64 ASCII letters, digits, '-', '_' or '.'")]
    BadNode(String),
    /// A number is out of its range.
    #[error("events.{key} = {value}: must be in {min}..={max}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// Its value.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// Two ways of authenticating were given, or half of one.
    #[error("events: {0}")]
    BadAuth(&'static str),
    /// A TLS client certificate without its key, or the reverse.
    #[error("events: tls_client_cert_file and tls_client_key_file go together")]
    HalfClientCert,
}

impl EventsConfig {
    /// Publishing is on (`nats_url` is set).
    pub fn enabled(&self) -> bool {
        !self.nats_url.trim().is_empty()
    }

    /// The duplicate window.
    pub fn duplicate_window(&self) -> Duration {
        Duration::from_millis(self.duplicate_window_ms)
    }

    /// What snapshots keep for the publisher: set it as `PersistenceConfig::outbox` (when
    /// [`EventsConfig::enabled`]), so the engine journals the outbox at all.
    pub fn retention(&self) -> OutboxRetention {
        OutboxRetention { max_lag_bytes: self.max_lag_bytes }
    }

    /// The subjects the stream binds: `<subject_prefix>.>`.
    pub fn stream_subjects(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// Check every value (whether or not publishing is on, so a typo fails the start).
    ///
    /// # Errors
    /// The first bad value, as an [`EventsConfigError`] naming its key.
    pub fn validate(&self) -> Result<(), EventsConfigError> {
        if self.enabled() {
            self.server_addrs()?;
        }
        if self.stream.is_empty() || self.stream.bytes().any(|b| b.is_ascii_whitespace() || b".*>/\\".contains(&b)) {
            return Err(EventsConfigError::BadStream(self.stream.clone()));
        }
        if !valid_prefix(&self.subject_prefix) {
            return Err(EventsConfigError::BadSubjectPrefix(self.subject_prefix.clone()));
        }
        let node_ok = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
        if self.node.is_empty() || self.node.len() > NODE_BYTES_MAX || !self.node.bytes().all(node_ok) {
            return Err(EventsConfigError::BadNode(self.node.clone()));
        }
        range("max_lag_bytes", self.max_lag_bytes, 1, u64::MAX)?;
        range("duplicate_window_ms", self.duplicate_window_ms, 1_000, DUPLICATE_WINDOW_MS_MAX)?;
        range("in_flight_max", self.in_flight_max as u64, 1, IN_FLIGHT_MAX_MAX as u64)?;
        self.validate_auth()
    }

    fn validate_auth(&self) -> Result<(), EventsConfigError> {
        let password_auth = !self.user.is_empty() || !self.password.is_empty();
        if password_auth && (self.user.is_empty() || self.password.is_empty()) {
            return Err(EventsConfigError::BadAuth("user and password go together"));
        }
        let ways = [!self.creds_file.is_empty(), password_auth, !self.token.is_empty()];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err(EventsConfigError::BadAuth("set one of creds_file, user/password, token"));
        }
        if self.tls_client_cert_file.is_empty() != self.tls_client_key_file.is_empty() {
            return Err(EventsConfigError::HalfClientCert);
        }
        Ok(())
    }

    /// The servers of `nats_url`, parsed.
    ///
    /// # Errors
    /// [`EventsConfigError::NoUrl`] when empty; [`EventsConfigError::BadUrl`] for a URL that does
    /// not parse.
    pub fn server_addrs(&self) -> Result<Vec<ServerAddr>, EventsConfigError> {
        let urls: Vec<&str> = self.nats_url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        if urls.is_empty() {
            return Err(EventsConfigError::NoUrl);
        }
        urls.into_iter()
            .map(|u| {
                u.parse::<ServerAddr>()
                    .map_err(|e| EventsConfigError::BadUrl { url: u.to_owned(), reason: e.to_string() })
            })
            .collect()
    }
}

fn range(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), EventsConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(EventsConfigError::OutOfRange { key, value, min, max })
    }
}

/// A publishable subject prefix: non-empty tokens of printable ASCII, no wildcard, no `$` first
/// (JetStream's and the system's own subjects).
fn valid_prefix(p: &str) -> bool {
    !p.starts_with('$')
        && p.split('.').all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> EventsConfig {
        EventsConfig { nats_url: "nats://127.0.0.1:4222".into(), ..EventsConfig::default() }
    }

    #[test]
    fn defaults_are_off_and_valid() {
        let cfg = EventsConfig::default();
        assert!(!cfg.enabled());
        cfg.validate().unwrap();
        assert_eq!(cfg.stream_subjects(), "surge.>");
        assert_eq!(cfg.max_lag_bytes, 1 << 30);
        assert_eq!(cfg.in_flight_max, 256);
        assert_eq!(cfg.node, "surge-1");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<EventsConfig>("nats = \"x\"").is_err());
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |f: fn(&mut EventsConfig)| {
            let mut c = on();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(matches!(bad(|c| c.stream = "A.B".into()), EventsConfigError::BadStream(_)));
        assert!(matches!(bad(|c| c.stream = String::new()), EventsConfigError::BadStream(_)));
        assert!(matches!(bad(|c| c.subject_prefix = "a..b".into()), EventsConfigError::BadSubjectPrefix(_)));
        assert!(matches!(bad(|c| c.subject_prefix = "a.*".into()), EventsConfigError::BadSubjectPrefix(_)));
        assert!(matches!(bad(|c| c.subject_prefix = "$JS".into()), EventsConfigError::BadSubjectPrefix(_)));
        assert!(matches!(bad(|c| c.subject_prefix = "a b".into()), EventsConfigError::BadSubjectPrefix(_)));
        assert!(matches!(bad(|c| c.node = "a/b".into()), EventsConfigError::BadNode(_)));
        assert!(matches!(bad(|c| c.node = "n".repeat(65)), EventsConfigError::BadNode(_)));
        let e = bad(|c| c.in_flight_max = 0);
        assert!(matches!(e, EventsConfigError::OutOfRange { key: "in_flight_max", .. }), "{e}");
        let e = bad(|c| c.duplicate_window_ms = 10);
        assert!(matches!(e, EventsConfigError::OutOfRange { key: "duplicate_window_ms", .. }), "{e}");
        assert!(matches!(bad(|c| c.max_lag_bytes = 0), EventsConfigError::OutOfRange { .. }));
        assert!(matches!(bad(|c| c.user = "u".into()), EventsConfigError::BadAuth(_)));
        assert!(matches!(
            bad(|c| {
                c.token = "t".into();
                c.creds_file = "x.creds".into();
            }),
            EventsConfigError::BadAuth(_)
        ));
        assert_eq!(bad(|c| c.tls_client_cert_file = "c.pem".into()), EventsConfigError::HalfClientCert);
        assert!(matches!(bad(|c| c.nats_url = "nats://h:notaport".into()), EventsConfigError::BadUrl { .. }));
    }

    #[test]
    fn several_urls_parse() {
        let cfg = EventsConfig { nats_url: "nats://a:4222, tls://b:4223".into(), ..on() };
        assert_eq!(cfg.server_addrs().unwrap().len(), 2);
        assert_eq!(EventsConfig::default().server_addrs().unwrap_err(), EventsConfigError::NoUrl);
    }

    #[test]
    fn debug_hides_secrets() {
        let cfg = EventsConfig { user: "u".into(), password: "hunter2".into(), token: String::new(), ..on() };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
