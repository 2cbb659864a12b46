//! What a transport's writer sends next: replies as queued, pushes numbered with the
//! connection's `seq`, and a final error event when the connection was killed (slow consumer,
//! expired token).

use std::pin::Pin;

use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::hub::{ConnShared, Outbound};

/// Number `seq` for one push and encode it.
pub(crate) fn encode_push(seq: u64, push: &Map<String, Value>) -> String {
    let mut m = push.clone();
    m.insert("seq".into(), Value::from(seq));
    Value::Object(m).to_string()
}

/// What a writer does next.
pub(crate) enum Next {
    /// Write this push.
    Text(String),
    /// Write this reply, then tell `limits::reply_written`.
    Reply(String),
    /// Write these replies in order, each as [`Next::Reply`].
    Replies(Vec<String>),
    /// Write this final error, then close.
    Final(String),
    /// Close.
    End,
}

/// The connection's kill switch as one future for the writer's life: a `cancelled()` made per
/// message registered and removed a waiter each time (issue 13).
pub(crate) fn killed(shared: &ConnShared) -> Pin<Box<WaitForCancellationFutureOwned>> {
    Box::pin(shared.cancel.clone().cancelled_owned())
}

/// The writer's next step: the next reply/push (numbering pushes), or the kill switch. `killed`
/// is [`killed`] of the same connection. A message already queued is taken without polling a
/// future, unless the connection was killed (which goes first, as before).
pub(crate) async fn next_outbound(
    rx: &mut mpsc::Receiver<Outbound>,
    shared: &ConnShared,
    seq: &mut u64,
    killed: Pin<&mut WaitForCancellationFutureOwned>,
) -> Next {
    if !shared.is_killed() {
        if let Ok(m) = rx.try_recv() {
            return next_of(Some(m), seq);
        }
    }
    tokio::select! {
        biased;
        () = killed => final_of(shared, seq),
        m = rx.recv() => next_of(m, seq),
    }
}

/// The final error of a killed connection (or the end, when it was closed without a code).
fn final_of(shared: &ConnShared, seq: &mut u64) -> Next {
    match shared.kill_code.get() {
        Some(code) => {
            *seq += 1;
            let msg = match *code {
                "slow_consumer" => {
                    "this connection does not read what it is sent (outbound queue, max_pending_reply_bytes or \
                     write_timeout_ms exceeded) and is disconnected"
                }
                "unauthorized" => "the token expired: connect and authenticate again",
                _ => "connection closed by the server",
            };
            let v = serde_json::json!({ "event": "error", "seq": *seq, "error": { "code": code, "message": msg } });
            Next::Final(v.to_string())
        }
        None => Next::End,
    }
}

/// What to do with a queued message (`None`: the queue is closed).
fn next_of(m: Option<Outbound>, seq: &mut u64) -> Next {
    match m {
        Some(Outbound::Reply(s)) => Next::Reply(s),
        Some(Outbound::Replies(v)) => Next::Replies(v),
        Some(Outbound::Push(p)) => {
            *seq += 1;
            Next::Text(encode_push(*seq, &p))
        }
        Some(Outbound::Close) | None => Next::End,
    }
}
