//! # surge-events
//!
//! Surge's event stream (issue 15): the transactional outbox that the engine journals in its
//! write-ahead log ([`surge_persistence::outbox`]), published to a NATS JetStream stream as
//! CloudEvents 1.0, exactly once in the stream and in log order.
//!
//! * [`EventsConfig`]: the `[events]` table (off while `nats_url` is empty).
//! * [`Encoder`]: an outbox entry as subject, id and CloudEvents JSON ([`envelope`] lists the
//!   subjects and the escaping of ids in them).
//! * [`Publisher`]: the background publisher with bounded in-flight acknowledgements and a
//!   durable cursor; [`PublisherHandle::status`] for `/ready`; metrics in [`metrics`].
//! * [`tail`]: print the stream as JSON lines (`surge events tail`).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use surge_events::{tail, EventsConfig, TailOptions};
//! let cfg = EventsConfig { nats_url: "nats://127.0.0.1:4222".into(), ..EventsConfig::default() };
//! cfg.validate()?;
//! tail(&cfg, &TailOptions { from_start: true, ..TailOptions::default() }, &mut std::io::stdout()).await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod config;
pub mod connect;
pub mod envelope;
pub mod metrics;
mod publisher;
mod tail;

pub use config::{EventsConfig, EventsConfigError};
pub use connect::ConnectError;
pub use envelope::{subject_token, EncodeError, Encoder, Envelope, WireFormat};
pub use publisher::{Publisher, PublisherHandle, PublisherStatus, SpawnError, StatusSource};
pub use tail::{tail, TailError, TailOptions};
