//! A connection's `create_order` answers: one task per connection, not one per batch.
//!
//! The reader submits each batch to the engine (`Conn::flush_creates`) and hands its pending
//! answers to this task, in the order read. The task awaits them batch by batch, queues the
//! replies (one text per batch on TCP), then releases the in-flight permits and records the
//! metrics. Nothing is spawned and no timer is armed per batch (issue 13: at low load a batch
//! is one request, and its task and timer cost as much as parsing it).
//!
//! # The deadline, with one timer per connection
//! A batch's deadline is `request_timeout_ms` after its submission, so deadlines grow in the
//! order batches arrive here. The task keeps one timer, armed for the deadline of the batch it
//! was waiting on when it last fired. A timer armed for an earlier batch can only fire *early*
//! for a later one: it is then re-armed for the current batch's deadline. So the timer fires at
//! most about once per `request_timeout_ms` while answers are awaited, and an answer not in by
//! its batch's deadline is `overloaded` (outcome unknown), as before.

use std::pin::Pin;
use std::sync::Arc;

use surge_engine::{Order, Pending};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::{Instant, Sleep};
use tokio_util::task::TaskTracker;

use super::execute::{all_finished_at, answer_into, answer_of, deadline_passed, Outcome};
use super::Req;
use crate::limits::Replier;
use crate::protocol::ReplyShape;

/// One engine batch of a connection's `create_order` requests, waiting for its answers.
pub(super) struct Batch {
    /// Per request, in the order read: the request, its first item's SKU (for the log line),
    /// and its in-flight permit (held until its reply is queued: back-pressure).
    pub waiting: Vec<(Req, Option<String>, OwnedSemaphorePermit)>,
    /// The engine's answers, one per request, in the same order.
    pub answers: Vec<Pending<Arc<Order>>>,
    /// `request_timeout_ms` after submission: an answer not in by then is `overloaded`.
    pub deadline: Instant,
}

/// Where a connection's reader sends its batches (unbounded: the in-flight permits bound it).
pub(super) type BatchSender = mpsc::UnboundedSender<Batch>;

/// Start the answering task of connection `conn` on `tracker`.
pub(super) fn spawn(tracker: &TaskTracker, out: Replier, conn: u64, shape: ReplyShape, join: bool) -> BatchSender {
    let (tx, rx) = mpsc::unbounded_channel();
    // Armed for "now" until the first batch re-arms it (firing early is harmless, see above).
    let timer = Box::pin(tokio::time::sleep_until(Instant::now()));
    let answerer = Answerer { out, conn, shape, join, timer };
    tracker.spawn(answerer.run(rx));
    tx
}

/// The task's state: where replies go, how they look, and the connection's one timer.
struct Answerer {
    out: Replier,
    conn: u64,
    shape: ReplyShape,
    /// Queue a batch's replies as one text of lines (the TCP transport frames by line).
    join: bool,
    timer: Pin<Box<Sleep>>,
}

impl Answerer {
    /// Answer batches until the reader is gone (its sender dropped) and every batch is done.
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Batch>) {
        while let Some(batch) = rx.recv().await {
            self.answer(batch).await;
        }
    }

    /// Queue one batch's replies, in the order read, then release its permits and record it.
    /// The replies go as one queue message when the last is in (they come from one shard batch
    /// at a time anyway): on TCP one text of lines, on WebSocket one list of frames.
    async fn answer(&mut self, batch: Batch) {
        let Batch { waiting, answers, deadline } = batch;
        let mut expired = false;
        let mut joined: Vec<u8> = Vec::new();
        let mut texts = Vec::with_capacity(if self.join { 0 } else { waiting.len() });
        let mut answered = Vec::with_capacity(waiting.len());
        // The batch's permits, merged: released with one lock of the semaphore, not one per
        // request.
        let mut permits: Option<OwnedSemaphorePermit> = None;
        for ((req, sku_id, permit), pending) in waiting.into_iter().zip(answers) {
            let result = if expired { None } else { self.within(deadline, pending).await };
            expired |= result.is_none();
            let result = result.map(|r| r.map(|o| Outcome::order(o, self.shape)));
            if self.join && !joined.is_empty() {
                joined.push(b'\n');
            }
            let mut answer = match result {
                // Joined: serialized straight into the batch's text.
                Some(r) if self.join => answer_into(&mut joined, &req.id, r),
                Some(r) => answer_of(&req.id, r),
                None => deadline_passed(&req.id),
            };
            let text = std::mem::take(&mut answer.text);
            if self.join {
                joined.extend_from_slice(text.as_bytes());
            } else {
                texts.push(text);
            }
            answered.push((req, sku_id, answer));
            match &mut permits {
                Some(p) => p.merge(permit),
                None => permits = Some(permit),
            }
        }
        if !joined.is_empty() {
            self.out.send(crate::protocol::text_of(joined)).await;
        }
        if !texts.is_empty() {
            self.out.send_all(texts).await;
        }
        drop(permits);
        let now = std::time::Instant::now();
        all_finished_at(self.conn, answered.iter().map(|(req, sku_id, a)| (req, a, sku_id.as_deref())), now);
    }

    /// `pending`'s answer, or `None` once `deadline` has passed.
    async fn within(
        &mut self,
        deadline: Instant,
        mut pending: Pending<Arc<Order>>,
    ) -> Option<surge_engine::EngineResult<Arc<Order>>> {
        loop {
            tokio::select! {
                biased;
                r = &mut pending => return Some(r),
                () = self.timer.as_mut() => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    // Armed for an earlier batch: wait for this one's deadline instead.
                    self.timer.as_mut().reset(deadline);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use serde_json::json;
    use surge_engine::{CreateOrder, Decimal, Engine, EngineConfig, Event, Journal, OnDurable, SaleRules, SkuSpec};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::hub::{ConnShared, Outbound};
    use crate::limits::LimitStats;

    /// Holds every batch's `on_durable` while `hold` is up: a disk that does not answer.
    struct Holding {
        hold: Arc<AtomicBool>,
        held: Arc<Mutex<Vec<OnDurable>>>,
        position: u64,
    }

    impl Journal for Holding {
        fn submit(&mut self, _shard: usize, events: Vec<Event>, on_durable: OnDurable) {
            if !events.is_empty() {
                self.position += 1;
            }
            if self.hold.load(Ordering::SeqCst) {
                self.held.lock().expect("held").push(on_durable);
            } else {
                on_durable(Ok(()));
            }
        }

        fn position(&self) -> u64 {
            self.position
        }
    }

    async fn reply(rx: &mut mpsc::Receiver<Outbound>) -> serde_json::Value {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            // Each batch here is one request: one reply, in a list (`join` is off).
            Ok(Some(Outbound::Replies(texts))) if texts.len() == 1 => {
                serde_json::from_str(&texts[0]).expect("a JSON reply")
            }
            other => panic!("no single reply: {other:?}"),
        }
    }

    #[tokio::test]
    async fn each_batch_expires_at_its_own_deadline_and_an_answer_in_time_is_sent() {
        let (hold, held) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let (h, k) = (hold.clone(), held.clone());
        let engine = Engine::builder(EngineConfig { shard_count: 1, ..Default::default() })
            .journal(Box::new(move |_| Box::new(Holding { hold: h.clone(), held: k.clone(), position: 0 })))
            .start()
            .expect("engine");
        let sku = SkuSpec {
            sku_id: "a".into(),
            name: "A".into(),
            price: Decimal::new(500, 2),
            initial_stock: 10,
            rules: SaleRules::default(),
        };
        engine.create_sku(sku).await.expect("sku");
        let (tx, mut rx) = mpsc::channel(16);
        let out = Replier {
            out: tx,
            shared: Arc::new(ConnShared::default()),
            stats: Arc::new(LimitStats::default()),
            max_bytes: 1 << 20,
        };
        let sender = spawn(&TaskTracker::new(), out, 1, ReplyShape::Minimal, false);
        let permits = Arc::new(Semaphore::new(4));
        let batch = |name: &str, deadline: Instant| Batch {
            waiting: vec![(
                Req { id: json!(name), op_name: "create_order", t0: std::time::Instant::now() },
                None,
                permits.clone().try_acquire_owned().expect("a permit"),
            )],
            answers: engine.create_orders(vec![CreateOrder::new(name, &[("a", 1)], name)]),
            deadline,
        };

        // The disk stops answering: two batches, submitted 150 ms apart.
        hold.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        sender.send(batch("first", t0 + Duration::from_millis(300))).map_err(|_| "send").expect("first");
        tokio::time::sleep(Duration::from_millis(150)).await;
        sender.send(batch("second", t0 + Duration::from_millis(450))).map_err(|_| "send").expect("second");
        let first = reply(&mut rx).await;
        assert_eq!((first["id"].as_str(), first["error"]["code"].as_str()), (Some("first"), Some("overloaded")));
        let at = t0.elapsed();
        assert!(at >= Duration::from_millis(300) && at < Duration::from_millis(450), "first expired at {at:?}");
        // The timer armed for the first batch fired early for the second: it waits for its own.
        let second = reply(&mut rx).await;
        assert_eq!((second["id"].as_str(), second["error"]["code"].as_str()), (Some("second"), Some("overloaded")));
        assert!(t0.elapsed() >= Duration::from_millis(450), "second expired at {:?}", t0.elapsed());

        // The disk answers again: a batch answered in time gets its order.
        hold.store(false, Ordering::SeqCst);
        for on_durable in std::mem::take(&mut *held.lock().expect("held")) {
            on_durable(Ok(()));
        }
        sender.send(batch("third", Instant::now() + Duration::from_secs(5))).map_err(|_| "send").expect("third");
        let third = reply(&mut rx).await;
        assert_eq!(third["id"], "third", "{third}");
        assert!(third["result"]["order_id"].is_string(), "{third}");
        // Every permit is back once the replies are queued.
        let all = tokio::time::timeout(Duration::from_secs(5), permits.acquire_many(4)).await.expect("permits");
        assert!(all.is_ok(), "the permits' semaphore is open");
    }
}
