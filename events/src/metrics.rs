//! The publisher's metrics (`metrics` crate; exported by whatever recorder the process installs,
//! the gateway's Prometheus exporter in `surge serve`).

use metrics::{describe_counter, describe_gauge, Unit};

/// Metric names.
pub mod names {
    /// Counter: publishes acknowledged by the stream.
    pub const PUBLISHED: &str = "surge_events_published_total";
    /// Gauge: events not yet acknowledged (an estimate).
    pub const LAG_EVENTS: &str = "surge_events_lag_events";
    /// Gauge, seconds: age of the oldest unpublished event.
    pub const LAG_SECONDS: &str = "surge_events_lag_seconds";
    /// Counter: unpublished log records trimmed by snapshots past `max_lag_bytes`.
    pub const DROPPED_RECORDS: &str = "surge_events_dropped_records_total";
    /// Gauge, 0 or 1: connected to NATS.
    pub const CONNECTED: &str = "surge_events_connected";
}

/// Describe every metric (HELP and unit); idempotent, called by [`crate::Publisher::spawn`].
///
/// ```
/// surge_events::metrics::describe(); // a no-op until a recorder is installed
/// assert_eq!(surge_events::metrics::names::PUBLISHED, "surge_events_published_total");
/// ```
pub fn describe() {
    use names::*;
    describe_counter!(
        PUBLISHED,
        "Events acknowledged by the JetStream stream since start (a re-publish after a failure counts again; \
         the stream stores it once)."
    );
    describe_gauge!(
        LAG_EVENTS,
        "Events not yet acknowledged by the stream: publishes awaiting their ack plus durable log records \
         not yet read (an estimate: a record may hold zero or several events)."
    );
    describe_gauge!(
        LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest event not yet acknowledged by the stream (engine clock); 0 when caught up."
    );
    describe_counter!(
        DROPPED_RECORDS,
        "Unpublished log records that snapshots trimmed because the lag passed events.max_lag_bytes \
         (their events are never published)."
    );
    describe_gauge!(CONNECTED, "1 while the publisher is connected to NATS, else 0.");
}
