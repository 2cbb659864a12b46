//! The publisher task: connect, then sessions (stream, read, publish, acknowledge, save the
//! cursor) until stopped, backing off after each failure.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamError, PublishError};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream, Context};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use metrics::counter;
use surge_persistence::outbox::OutboxPage;
use tokio::sync::watch;

use super::io::{LogIo, LogIoError};
use super::shared::{Backoff, ErrorLog, Shared, UNKNOWN_MS};
use crate::config::EventsConfig;
use crate::envelope::{event_time_ms, EncodeError, Encoder, WireFormat};
use crate::metrics::names;

/// Log records read at a time (each may hold many events).
const RECORDS_PER_READ: usize = 64;
/// How often an idle publisher looks for new durable records.
const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// How long a publish waits for its acknowledgement, and a JetStream API request for its answer.
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Records read to find the oldest unpublished event's time while publishing is failing.
const PEEK_RECORDS: usize = 256;

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("stream: {0}")]
    Stream(#[from] CreateStreamError),
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Log(#[from] LogIoError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// What an in-flight slot resolves to, in publish order.
enum Done {
    /// A publish was acknowledged.
    Acked,
    /// Every publish of a page before this point was acknowledged: save this cursor.
    PageEnd(u64),
}

/// Publishes awaiting acknowledgement, and page ends, in order.
struct InFlight {
    futs: FuturesOrdered<BoxFuture<'static, Result<Done, PublishError>>>,
    /// The event time of each publish in `futs`, oldest first.
    times_ms: VecDeque<i64>,
}

impl InFlight {
    fn new() -> Self {
        Self { futs: FuturesOrdered::new(), times_ms: VecDeque::new() }
    }

    fn acks(&self) -> usize {
        self.times_ms.len()
    }

    fn push_ack(&mut self, ack: jetstream::context::PublishAckFuture, time_ms: i64) {
        self.futs.push_back(Box::pin(async move { ack.await.map(|_| Done::Acked) }));
        self.times_ms.push_back(time_ms);
    }

    fn push_page_end(&mut self, through_lsn: u64) {
        self.futs.push_back(Box::pin(std::future::ready(Ok(Done::PageEnd(through_lsn)))));
    }

    /// The next slot to resolve (in order); `None` when empty.
    async fn next(&mut self) -> Option<Result<Done, PublishError>> {
        let done = self.futs.next().await?;
        if matches!(done, Ok(Done::Acked)) {
            self.times_ms.pop_front();
        }
        Some(done)
    }
}

/// The task's state.
pub(crate) struct Task<W> {
    pub(crate) cfg: EventsConfig,
    pub(crate) encoder: Encoder<W>,
    pub(crate) io: LogIo,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) backoff: Backoff,
    pub(crate) errors: ErrorLog,
    /// The existing stream's configuration was compared with ours (once).
    pub(crate) stream_checked: bool,
}

/// Resolves once a stop is asked for (or the handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// What woke an idle session.
enum Wake {
    Slot(Option<Result<Done, PublishError>>),
    Tick,
}

impl<W: WireFormat> Task<W> {
    /// Run until stopped: connect (retrying), then sessions, backing off after each failure.
    pub(crate) async fn run(mut self) {
        let Some(client) = self.connect().await else { return };
        self.shared.set_client(Some(client.clone()));
        let js = jetstream::ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .ack_timeout(ACK_TIMEOUT)
            // Publishes abandoned by a failed session hold a permit until their ack times out:
            // room for them beside a full new session.
            .max_ack_inflight(self.cfg.in_flight_max.saturating_mul(2))
            .build(client);
        loop {
            match self.session(&js).await {
                Ok(()) => break,
                Err(e) => {
                    self.errors.warn("publishing failed", &e);
                    self.after_failure().await;
                    if self.pause().await {
                        break;
                    }
                }
            }
        }
        self.shared.set_client(None);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    /// Wait out the back-off; true if a stop came first.
    async fn pause(&mut self) -> bool {
        let delay = self.backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = stopped(&mut self.stop) => true,
        }
    }

    async fn connect(&mut self) -> Option<async_nats::Client> {
        loop {
            let attempt = tokio::select! {
                r = crate::connect::connect(&self.cfg) => r,
                _ = stopped(&mut self.stop) => return None,
            };
            match attempt {
                Ok(client) => {
                    self.errors.clear();
                    return Some(client);
                }
                Err(e) => {
                    self.errors.warn("cannot connect to NATS", &e);
                    self.note_oldest().await;
                    if self.pause().await {
                        return None;
                    }
                }
            }
        }
    }

    /// After a failure: what was read but not acknowledged is read again from the cursor.
    async fn after_failure(&mut self) {
        let cursor = self.io.cursor().await.unwrap_or_else(|_| self.shared.cursor.load(Ordering::Acquire));
        self.shared.cursor.store(cursor, Ordering::Release);
        self.shared.read_lsn.store(cursor, Ordering::Release);
        self.shared.in_flight.store(0, Ordering::Release);
        self.note_oldest().await;
    }

    /// While nothing is being published, learn the oldest unpublished event's time (for the
    /// lag in seconds) from the first records after the cursor.
    async fn note_oldest(&mut self) {
        if self.shared.oldest_ms.load(Ordering::Acquire) != UNKNOWN_MS {
            return;
        }
        let cursor = self.shared.cursor.load(Ordering::Acquire);
        if self.shared.log.durable_lsn() <= cursor {
            return;
        }
        if let Ok(page) = self.io.read_after(cursor, PEEK_RECORDS).await {
            if let Some(e) = page.entries.first() {
                self.shared.oldest_ms.store(event_time_ms(&e.item), Ordering::Release);
            }
        }
    }

    /// Get or create the stream; warn once if an existing one differs from the configuration.
    async fn ensure_stream(&mut self, js: &Context) -> Result<(), SessionError> {
        let subjects = self.cfg.stream_subjects();
        let config = stream::Config {
            name: self.cfg.stream.clone(),
            subjects: vec![subjects.clone()],
            storage: stream::StorageType::File,
            duplicate_window: self.cfg.duplicate_window(),
            ..Default::default()
        };
        let stream = js.get_or_create_stream(config).await?;
        if !std::mem::replace(&mut self.stream_checked, true) {
            let c = &stream.cached_info().config;
            if c.duplicate_window != self.cfg.duplicate_window() || !c.subjects.contains(&subjects) {
                tracing::warn!(
                    stream = %self.cfg.stream, subjects = ?c.subjects, duplicate_window = ?c.duplicate_window,
                    "events: the existing stream differs from [events] (want subjects [{subjects}], duplicate \
                     window {:?}); it is used as it is", self.cfg.duplicate_window()
                );
            }
        }
        Ok(())
    }

    /// One session: publish from the saved cursor until stopped (then drain) or a failure.
    async fn session(&mut self, js: &Context) -> Result<(), SessionError> {
        self.ensure_stream(js).await?;
        let mut read_lsn = self.io.cursor().await?;
        self.shared.cursor.store(read_lsn, Ordering::Release);
        self.shared.read_lsn.store(read_lsn, Ordering::Release);
        let mut flight = InFlight::new();
        // The id of the previous publish of this session: the next one expects it to be the
        // stream's last message (`Nats-Expected-Last-Msg-Id`), so a publish lost with a broken
        // connection fails everything after it instead of leaving a gap. Duplicates are
        // checked first by JetStream, so a re-published prefix passes.
        let mut prev_id: Option<String> = None;
        loop {
            if self.stopping() {
                self.drain(&mut flight).await;
                return Ok(());
            }
            if flight.acks() < self.cfg.in_flight_max && self.shared.log.durable_lsn() > read_lsn {
                let page = self.io.read_after(read_lsn, RECORDS_PER_READ).await?;
                if !self.publish_page(js, &page, &mut flight, &mut prev_id).await? {
                    continue; // stopping: drain what was sent
                }
                read_lsn = page.through_lsn;
                self.shared.read_lsn.store(read_lsn, Ordering::Release);
                continue;
            }
            self.publish_progress(&flight);
            let wake = tokio::select! {
                slot = flight.next(), if !flight.futs.is_empty() => Wake::Slot(slot),
                _ = tokio::time::sleep(POLL_INTERVAL) => Wake::Tick,
                _ = stopped(&mut self.stop) => Wake::Tick,
            };
            if let Wake::Slot(Some(done)) = wake {
                self.settle(done).await?;
                self.publish_progress(&flight);
            }
        }
    }

    /// Publish the page's entries, waiting for acknowledgements whenever `in_flight_max` are
    /// out; then queue its end. False if a stop interrupted it (its end is not queued).
    async fn publish_page(
        &mut self,
        js: &Context,
        page: &OutboxPage,
        flight: &mut InFlight,
        prev_id: &mut Option<String>,
    ) -> Result<bool, SessionError> {
        for entry in &page.entries {
            while flight.acks() >= self.cfg.in_flight_max {
                if let Some(done) = flight.next().await {
                    self.settle(done).await?;
                }
            }
            if self.stopping() {
                return Ok(false);
            }
            let env = self.encoder.encode(entry)?;
            let mut msg = PublishMessage::build()
                .payload(env.payload.into())
                .message_id(&env.id)
                .expected_stream(&self.cfg.stream);
            if let Some(prev) = prev_id.as_deref() {
                msg = msg.expected_last_message_id(prev);
            }
            let ack = js.send_publish(env.subject, msg).await?;
            flight.push_ack(ack, env.time_ms);
            *prev_id = Some(env.id);
            self.publish_progress(flight);
        }
        flight.push_page_end(page.through_lsn);
        Ok(true)
    }

    /// Apply one resolved slot: count an acknowledgement, or save a page's cursor.
    async fn settle(&mut self, done: Result<Done, PublishError>) -> Result<(), SessionError> {
        match done? {
            Done::Acked => {
                self.shared.published.fetch_add(1, Ordering::Relaxed);
                counter!(names::PUBLISHED).increment(1);
                self.backoff.reset();
                self.errors.clear();
            }
            Done::PageEnd(lsn) => {
                self.io.save_cursor(lsn).await?;
                self.shared.cursor.store(lsn, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Expose the in-flight count and the oldest unacknowledged event's time.
    fn publish_progress(&self, flight: &InFlight) {
        self.shared.in_flight.store(flight.acks() as u64, Ordering::Release);
        let oldest = flight.times_ms.front().copied().unwrap_or(UNKNOWN_MS);
        self.shared.oldest_ms.store(oldest, Ordering::Release);
    }

    /// Stopping: wait for what was sent (saving cursors as pages complete). A failure ends it:
    /// the rest is published again at the next start.
    async fn drain(&mut self, flight: &mut InFlight) {
        while let Some(done) = flight.next().await {
            if let Err(e) = self.settle(done).await {
                tracing::info!(error = %e, "events: stopping before every publish was acknowledged");
                break;
            }
            self.publish_progress(flight);
        }
    }
}
