//! A NATS connection from [`EventsConfig`]: servers, credentials, TLS.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ConnectOptions};

use crate::config::{EventsConfig, EventsConfigError};

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration is invalid or publishing is off.
    #[error(transparent)]
    Config(#[from] EventsConfigError),
    /// The credentials file could not be read.
    #[error("events.creds_file {path:?}: {source}")]
    Creds {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server refused or could not be reached.
    #[error("nats: {0}")]
    Nats(#[from] async_nats::ConnectError),
}

/// Connect once to the servers of `cfg.nats_url`, named `surge-events/<node>` (as the server's
/// `connz` shows it). The client then reconnects by itself, forever, after a lost connection.
///
/// ```no_run
/// # async fn f() -> Result<(), surge_events::ConnectError> {
/// let cfg = surge_events::EventsConfig { nats_url: "nats://127.0.0.1:4222".into(), ..Default::default() };
/// let client = surge_events::connect::connect(&cfg).await?;
/// let jetstream = async_nats::jetstream::new(client);
/// # let _ = jetstream; Ok(()) }
/// ```
///
/// # Errors
/// [`ConnectError`]: bad configuration, unreadable credentials, or no server answered within
/// [`CONNECT_TIMEOUT`].
pub async fn connect(cfg: &EventsConfig) -> Result<Client, ConnectError> {
    cfg.validate()?;
    let addrs = cfg.server_addrs()?;
    Ok(options(cfg).await?.connect(addrs).await?)
}

async fn options(cfg: &EventsConfig) -> Result<ConnectOptions, ConnectError> {
    let mut o = if cfg.creds_file.is_empty() {
        ConnectOptions::new()
    } else {
        ConnectOptions::with_credentials_file(&cfg.creds_file)
            .await
            .map_err(|source| ConnectError::Creds { path: cfg.creds_file.clone(), source })?
    };
    if !cfg.user.is_empty() {
        o = o.user_and_password(cfg.user.clone(), cfg.password.clone());
    }
    if !cfg.token.is_empty() {
        o = o.token(cfg.token.clone());
    }
    if cfg.tls_required {
        o = o.require_tls(true);
    }
    if !cfg.tls_ca_file.is_empty() {
        o = o.add_root_certificates(PathBuf::from(&cfg.tls_ca_file));
    }
    if !cfg.tls_client_cert_file.is_empty() {
        o = o.add_client_certificate(PathBuf::from(&cfg.tls_client_cert_file), PathBuf::from(&cfg.tls_client_key_file));
    }
    Ok(o.name(format!("surge-events/{}", cfg.node)).connection_timeout(CONNECT_TIMEOUT))
}
