//! The outbox publisher against a real `nats-server` (started by each test on a free loopback
//! port, its store in a temp dir; the tests fail, never skip, without one on PATH), and the
//! pinned JSON shape of every kind of event.

mod harness;
#[allow(dead_code)] // the cluster helpers serve other crates' tests
mod nats;
mod outage;
mod publish;
mod restart;
mod shape;
