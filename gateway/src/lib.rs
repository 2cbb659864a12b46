//! # surge-gateway
//!
//! The network face of Surge: `surge serve`. A TCP gateway (one JSON object per line) and a
//! WebSocket gateway (actix-web + actix-ws at `/ws`, one JSON object per text frame) share one
//! request/response schema; HTTP also answers `GET /health` and `GET /ready`. Connections
//! authenticate with a static token (role `admin` or `service`) or a user JWT (role `user`, acting
//! only as its `sub`), are rate limited and bounded (in-flight, frame size, idle time), and may
//! subscribe to `order:<id>`, `user:<id>` and `sku:<id>` pushes. Every id on the wire is a JSON
//! string ([`wire`]). See `docs/protocol.md` for the wire protocol.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = surge_gateway::FileConfig::default(); // 127.0.0.1:7878 (TCP), :7879 (HTTP/WS), ./data
//! let server = surge_gateway::Server::start(cfg).await?;
//! println!("tcp {} http {}", server.tcp_addr, server.http_addr);
//! server.shutdown().await?; // finish in-flight requests, snapshot, close
//! # Ok(()) }
//! ```

pub mod auth;
mod backend;
pub mod config;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod protocol;
mod server;
mod session;
mod tcp;
pub mod wire;
mod ws;

pub use auth::{Authenticator, Identity, Role};
pub use config::{AuthConfig, ConfigError, FileConfig, LimitsConfig, MetricsConfig, ServerConfig};
pub use server::{DevTokens, Server, ServerError, ServerHandle};
pub use surge_cluster::ClusterConfig;
