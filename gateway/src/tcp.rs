//! The TCP transport: one JSON object per line (`\n`, optional `\r`), at most
//! `max_frame_bytes` per line. A connection must authenticate within `auth_timeout_ms` of
//! accept; its writer gives up on a socket that accepts nothing for `write_timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, FramedRead, LinesCodec, LinesCodecError};

use crate::hub::{ConnShared, Outbound};
use crate::limits::LimitStats;
use crate::protocol::WireError;
use crate::session::{next_outbound, Conn, Flow, Gateway, Next};

/// One decoded line, or why there is none: errors are items, so the stream survives them.
enum Line {
    Text(String),
    BadUtf8,
    TooLong,
    Io,
}

/// `LinesCodec` with a maximum length, whose errors become items (a framed stream ends at its
/// first error; invalid UTF-8 must not end the connection).
struct LineCodec(LinesCodec);

impl Decoder for LineCodec {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        match self.0.decode(buf) {
            Ok(Some(s)) => Ok(Some(Line::Text(s))),
            Ok(None) => Ok(None),
            Err(LinesCodecError::MaxLineLengthExceeded) => Ok(Some(Line::TooLong)),
            Err(LinesCodecError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => Ok(Some(Line::BadUtf8)),
            Err(LinesCodecError::Io(_)) => Ok(Some(Line::Io)),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        match self.0.decode_eof(buf) {
            Ok(Some(s)) => Ok(Some(Line::Text(s))),
            Ok(None) => Ok(None),
            Err(LinesCodecError::MaxLineLengthExceeded) => Ok(Some(Line::TooLong)),
            Err(LinesCodecError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => Ok(Some(Line::BadUtf8)),
            Err(LinesCodecError::Io(_)) => Ok(Some(Line::Io)),
        }
    }
}

/// Accept until shutdown; each connection runs on its own task.
pub(crate) async fn accept_loop(gw: Arc<Gateway>, listener: TcpListener) {
    let mut shutdown = gw.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gw2 = gw.clone();
        gw.tracker.spawn(async move {
            tracing::debug!(%peer, "tcp connection");
            serve(gw2, stream).await;
        });
    }
}

async fn serve(gw: Arc<Gateway>, mut stream: TcpStream) {
    // The authentication deadline runs from accept, not from the last byte received.
    let auth_deadline = Instant::now() + Duration::from_millis(gw.limits.auth_timeout_ms);
    let Some(slot) = gw.try_connection() else {
        let e = WireError::new("too_many_connections", "the server is at max_connections; retry later");
        let mut line = crate::protocol::err_reply(&Value::Null, &e);
        line.push('\n');
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line.as_bytes())).await;
        return;
    };
    crate::metrics::connection_opened("tcp");
    let (rd, wr) = stream.into_split();
    let (mut conn, rx) = Conn::new(gw.clone(), slot, None);
    // One line per reply: a batch's replies may go to the writer as one text.
    conn.join_replies = true;
    let write_timeout = Duration::from_millis(gw.limits.write_timeout_ms);
    let writer = tokio::spawn(write_loop(wr, rx, conn.shared.clone(), gw.limit_stats.clone(), write_timeout));
    read_loop(conn, rd, auth_deadline, writer).await;
}

/// Write replies and pushes in order, coalescing those that are ready into one flush. A socket
/// that accepts nothing for `write_timeout` kills the connection (`slow_consumer`).
async fn write_loop(
    wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outbound>,
    shared: Arc<ConnShared>,
    stats: Arc<LimitStats>,
    write_timeout: Duration,
) {
    let mut w = BufWriter::new(wr);
    let mut seq = 0u64;
    loop {
        let (text, reply, last) = match next_outbound(&mut rx, &shared, &mut seq).await {
            Next::Text(t) => (t, false, false),
            Next::Reply(t) => (t, true, false),
            Next::Final(t) => (t, false, true),
            Next::End => break,
        };
        let ok = async {
            w.write_all(text.as_bytes()).await?;
            w.write_all(b"\n").await?;
            if rx.is_empty() && !last {
                // Replies of one engine batch complete together but reach this queue from
                // separate tasks: let them run once before paying a syscall (and a TCP
                // segment) for this one alone.
                tokio::task::yield_now().await;
            }
            if rx.is_empty() || last {
                w.flush().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        // A client that stops reading cannot hold the writer: a write that makes no progress
        // for write_timeout kills the connection; after a kill, the line being written gets a
        // short grace (so the final error can follow a whole line), and the final error itself
        // a bounded time.
        let done = if last {
            tokio::time::timeout(Duration::from_secs(1), ok).await.map_or(true, |r| r.is_err())
        } else {
            let grace = async {
                shared.cancel.cancelled().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            tokio::select! {
                r = tokio::time::timeout(write_timeout, ok) => match r {
                    Ok(r) => r.is_err(),
                    Err(_) => {
                        crate::limits::write_timed_out(&shared, &stats);
                        false // go round once more for the final error
                    }
                },
                _ = grace => shared.kill_code.get().is_some(),
            }
        };
        if reply {
            crate::limits::reply_written(&shared, text.len());
        }
        if done || last {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    })
    .await;
}

/// Read lines until the client leaves, a limit closes the connection, or the server stops.
async fn read_loop(mut conn: Conn, rd: OwnedReadHalf, auth_deadline: Instant, writer: JoinHandle<()>) {
    let gw = conn.gw.clone();
    let max = gw.limits.max_frame_bytes;
    let idle = Duration::from_millis(gw.limits.idle_timeout_ms);
    let mut lines = FramedRead::new(rd, LineCodec(LinesCodec::new_with_max_length(max)));
    let mut shutdown = gw.shutdown.clone();
    let cancel = conn.cancel.clone();
    loop {
        // Submit the `create_order` requests read so far once no complete line is left in the
        // buffer (the next one needs a read from the socket), or no in-flight slot is free
        // (waiting for one with requests held back would wait forever).
        if !lines.read_buffer().contains(&b'\n') || conn.inflight.available_permits() == 0 {
            conn.flush_creates();
        }
        // A line already in the buffer, with an in-flight slot free, needs no waiting: it is
        // taken without the select below (its futures, the clock read and the idle timer cost
        // as much as parsing a pipelined request; issue 13). Before `auth` the slow path runs,
        // for its deadline.
        let buffered = conn.role.is_some()
            && !cancel.is_cancelled()
            && !gw.is_shutting_down()
            && lines.read_buffer().contains(&b'\n');
        let ready = if buffered {
            conn.inflight.clone().try_acquire_owned().ok().and_then(|p| lines.next().now_or_never().map(|n| (p, n)))
        } else {
            None
        };
        let (permit, item) = match ready {
            Some((permit, next)) => (permit, Some(Ok(next))),
            None => {
                let Some(permit) = conn.next_permit(&mut shutdown).await else { break };
                let item = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    _ = shutdown.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep_until(auth_deadline), if conn.role.is_none() => None,
                    r = tokio::time::timeout(idle, lines.next()) => Some(r),
                };
                (permit, item)
            }
        };
        let Some(item) = item else {
            auth_timed_out(&conn).await;
            break;
        };
        match item {
            Err(_) => {
                conn.reply_err(&Value::Null, WireError::new("idle_timeout", "no message within idle_timeout_ms")).await;
                break;
            }
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Line::Io))) => break,
            Ok(Some(Ok(Line::Text(t)))) => {
                if t.trim().is_empty() {
                    continue;
                }
                if conn.on_text(&t, permit).await == Flow::Close {
                    break;
                }
            }
            Ok(Some(Ok(Line::BadUtf8))) => {
                if conn.role.is_none() {
                    conn.reply_err(&Value::Null, WireError::new("unauthorized", "authenticate first")).await;
                    break;
                }
                conn.reply_err(&Value::Null, WireError::new("bad_utf8", "a line must be valid UTF-8")).await;
            }
            Ok(Some(Ok(Line::TooLong))) => {
                let msg = format!("a line must be at most {max} bytes; closing");
                conn.reply_err(&Value::Null, WireError::new("frame_too_large", msg)).await;
                break;
            }
        }
    }
    conn.close(writer).await;
}

/// The connection did not authenticate within `auth_timeout_ms`: a final `unauthorized`.
pub(crate) async fn auth_timed_out(conn: &Conn) {
    conn.gw.limit_stats.closed_auth_timeout.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::metrics::connection_closed("auth_timeout");
    crate::metrics::auth_failed();
    tracing::info!(conn = conn.id, "no auth within auth_timeout_ms; closing");
    let e = WireError::new("unauthorized", "no auth within auth_timeout_ms; closing");
    conn.reply_err(&Value::Null, e).await;
}
