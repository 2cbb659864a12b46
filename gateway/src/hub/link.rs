//! How connections reach the hub: topics, subscribe / unsubscribe on a bounded queue, and
//! disconnects on their own channel (issue 10 item 14: leaving is never dropped).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Sink;

/// A parsed topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `order:<id>`.
    Order(u64),
    /// `user:<id>`.
    User(Arc<str>),
    /// `sku:<id>`.
    Sku(Arc<str>),
    /// `wallet:<user id>` (issue 14).
    Wallet(Arc<str>),
}

impl Topic {
    /// Parse `order:<u64>`, `user:<id>`, `sku:<id>` or `wallet:<user id>` (ids 1..=64 bytes).
    pub fn parse(s: &str) -> Option<Topic> {
        let (kind, id) = s.split_once(':')?;
        if id.is_empty() || id.len() > 64 {
            return None;
        }
        match kind {
            "order" => id.parse().ok().map(Topic::Order),
            "user" => Some(Topic::User(id.into())),
            "sku" => Some(Topic::Sku(id.into())),
            "wallet" => Some(Topic::Wallet(id.into())),
            _ => None,
        }
    }
}

pub(crate) enum Control {
    Subscribe { conn: u64, topic: Topic, sink: Sink, ack: oneshot::Sender<()> },
    Unsubscribe { conn: u64, topic: Topic, ack: oneshot::Sender<()> },
}

/// How connections reach the hub: subscribe / unsubscribe through a bounded queue (a caller
/// waits for room and for the ack), and disconnects through their own channel, which is never
/// full, so leaving can never be dropped.
///
/// The disconnect channel is unbounded in type but bounded by construction: a connection sends
/// at most one disconnect (when it ends), each is 8 bytes, and the hub drains them before any
/// other work.
#[derive(Debug, Clone)]
pub(crate) struct HubLink {
    control: mpsc::Sender<Control>,
    disconnects: mpsc::UnboundedSender<u64>,
}

/// The hub's ends of a [`HubLink`].
pub(crate) struct HubInbox {
    pub control: mpsc::Receiver<Control>,
    pub disconnects: mpsc::UnboundedReceiver<u64>,
}

/// A link whose subscribe / unsubscribe queue holds `control_capacity` requests.
pub(crate) fn link(control_capacity: usize) -> (HubLink, HubInbox) {
    let (control, control_rx) = mpsc::channel(control_capacity.max(1));
    let (disconnects, disconnects_rx) = mpsc::unbounded_channel();
    (HubLink { control, disconnects }, HubInbox { control: control_rx, disconnects: disconnects_rx })
}

impl HubLink {
    /// Queue a subscribe / unsubscribe, waiting for room.
    ///
    /// # Errors
    /// The hub is gone (shutting down).
    pub async fn send(&self, c: Control) -> Result<(), mpsc::error::SendError<Control>> {
        self.control.send(c).await
    }

    /// Drop every subscription of `conn`. Never waits and is never dropped while the hub runs
    /// (issue 10 item 14: a full control queue used to leak the subscriptions forever).
    pub fn disconnect(&self, conn: u64) {
        let _ = self.disconnects.send(conn);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::hub::{hub_parts, run, ConnShared, Outbound};
    use surge_engine::{Engine, EngineConfig};

    fn sink() -> (Sink, mpsc::Receiver<Outbound>) {
        let (out, rx) = mpsc::channel(1);
        (Sink { out, shared: Arc::new(ConnShared::default()) }, rx)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn disconnects_are_never_dropped_while_the_control_queue_is_full() {
        let parts = hub_parts(16);
        let engine = Engine::builder(EngineConfig { shard_count: 1, ..Default::default() }).start().unwrap();
        let (link, inbox) = link(1);
        let stats = parts.stats.clone();
        let hub = tokio::spawn(run(engine.clone(), parts.changes, inbox, stats.clone(), Duration::from_millis(50)));
        let (s, _rx) = sink();
        for conn in 0..300u64 {
            for topic in [Topic::User(format!("u{}", conn % 7).into()), Topic::Order(conn)] {
                let (ack, done) = oneshot::channel();
                link.send(Control::Subscribe { conn, topic, sink: s.clone(), ack }).await.unwrap();
                done.await.unwrap();
            }
        }
        assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 600);
        // Saturate the control queue (capacity 1). The hub task cannot run until we await
        // (current-thread runtime), so the queue stays full while every connection leaves.
        let (ack, _done) = oneshot::channel();
        let filler = Control::Unsubscribe { conn: 9_999, topic: Topic::Order(1), ack };
        assert!(link.control.try_send(filler).is_ok());
        let (ack, _done2) = oneshot::channel();
        let extra = Control::Unsubscribe { conn: 9_999, topic: Topic::Order(2), ack };
        assert!(link.control.try_send(extra).is_err(), "the control queue is full");
        for conn in 0..300u64 {
            link.disconnect(conn);
        }
        for _ in 0..500 {
            if stats.subscriptions.load(Ordering::Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 0, "no subscription may leak");
        hub.abort();
        engine.shutdown(Duration::from_secs(5));
    }

    #[test]
    fn topics_parse() {
        assert_eq!(Topic::parse("order:42"), Some(Topic::Order(42)));
        assert_eq!(Topic::parse("user:alice"), Some(Topic::User("alice".into())));
        assert_eq!(Topic::parse("sku:A"), Some(Topic::Sku("A".into())));
        assert_eq!(Topic::parse("wallet:alice"), Some(Topic::Wallet("alice".into())));
        assert_eq!(Topic::parse("order:x"), None);
        assert_eq!(Topic::parse("sku:"), None);
        assert_eq!(Topic::parse("weather:today"), None);
    }
}
