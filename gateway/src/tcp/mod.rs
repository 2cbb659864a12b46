//! The TCP transport: one JSON object per line (`\n`, optional `\r`), at most
//! `max_frame_bytes` per line. A connection must authenticate within `auth_timeout_ms` of
//! accept; its writer gives up on a socket that accepts nothing for `write_timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::hub::{ConnShared, Outbound};
use crate::limits::LimitStats;
use crate::protocol::WireError;
use crate::session::{next_outbound, Conn, Flow, Gateway, Next};

mod lines;
use lines::{Line, LineCodec};

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

/// Most bytes the writer gathers before it writes them (it writes sooner when nothing else is
/// queued).
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Write replies and pushes in order, coalescing those that are ready into one write. A socket
/// that accepts nothing for `write_timeout` kills the connection (`slow_consumer`).
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outbound>,
    shared: Arc<ConnShared>,
    stats: Arc<LimitStats>,
    write_timeout: Duration,
) {
    let mut killed = crate::session::killed(&shared);
    let mut buf = Vec::new();
    // Bytes of the replies in `buf`: pending (limits.rs) until handed to the socket.
    let mut reply_bytes = 0;
    let mut seq = 0u64;
    loop {
        let line = |buf: &mut Vec<u8>, text: &str| {
            buf.extend_from_slice(text.as_bytes());
            buf.push(b'\n');
            crate::limits::reply_bytes(text.len())
        };
        match next_outbound(&mut rx, &shared, &mut seq, killed.as_mut()).await {
            Next::Text(t) => {
                line(&mut buf, &t);
            }
            Next::Reply(t) => reply_bytes += line(&mut buf, &t),
            Next::Replies(ts) => reply_bytes += ts.iter().map(|t| line(&mut buf, t)).sum::<usize>(),
            Next::Final(t) => {
                line(&mut buf, &t);
                let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&buf)).await;
                buf.clear();
                break;
            }
            Next::End => break,
        }
        if rx.is_empty() && buf.len() < WRITE_BUFFER_BYTES {
            // Replies of one engine batch complete together but may reach this queue from
            // separate tasks: let them run once before paying a syscall (and a TCP segment)
            // for this one alone.
            tokio::task::yield_now().await;
        }
        if !rx.is_empty() && buf.len() < WRITE_BUFFER_BYTES {
            continue;
        }
        let wrote = write_buffer(&mut wr, &mut buf, write_timeout, killed.as_mut()).await;
        crate::limits::reply_bytes_written(&shared, std::mem::take(&mut reply_bytes));
        match wrote {
            Wrote::All => {}
            Wrote::Failed => break,
            // Killed: go round once more for the final error, after what is still unwritten.
            Wrote::TimedOut => crate::limits::write_timed_out(&shared, &stats),
            // Killed meanwhile, and the socket took nothing more within the grace.
            Wrote::Killed => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if !buf.is_empty() {
            let _ = wr.write_all(&buf).await;
        }
        let _ = wr.shutdown().await;
    })
    .await;
}

/// How writing the writer's buffer ended.
enum Wrote {
    /// Every byte went to the socket.
    All,
    /// The socket failed (the peer is gone).
    Failed,
    /// The socket took nothing for `write_timeout`.
    TimedOut,
    /// The connection was killed while the socket took nothing.
    Killed,
}

/// Write `buf` (clearing what was written). Most writes fit the socket at once: they cost one
/// `try_write`, with no future and no timer (issue 13). Otherwise wait for the socket, at most
/// `write_timeout`; once the connection is killed, the write gets a short grace so that the
/// final error can follow a whole line.
async fn write_buffer(
    wr: &mut OwnedWriteHalf,
    buf: &mut Vec<u8>,
    write_timeout: Duration,
    killed: std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFutureOwned>,
) -> Wrote {
    let mut done = 0;
    while done < buf.len() {
        match wr.try_write(&buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(_) => return Wrote::Failed,
        }
    }
    buf.drain(..done);
    if buf.is_empty() {
        return Wrote::All;
    }
    let grace = async {
        killed.await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let wrote = tokio::select! {
        r = tokio::time::timeout(write_timeout, wr.write_all(buf)) => match r {
            Ok(Ok(())) => Wrote::All,
            Ok(Err(_)) => Wrote::Failed,
            Err(_) => Wrote::TimedOut,
        },
        () = grace => Wrote::Killed,
    };
    if matches!(wrote, Wrote::All) {
        buf.clear();
    }
    wrote
}

/// What the reader waited for.
enum Read {
    /// The connection was killed or the server is stopping.
    Stop,
    /// No `auth` within `auth_timeout_ms` of accept.
    AuthTimeout,
    /// No line within `idle_timeout_ms`.
    Idle,
    /// The next line, or the end of the stream.
    Line(Option<Result<Line, std::io::Error>>),
}

/// Resolves when the connection is killed or the server stops: one future for the
/// connection's life, polled by reference, where making the two waits per request registered
/// and removed a waiter each time (issue 13).
async fn stopped(cancel: tokio_util::sync::CancellationToken, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        () = cancel.cancelled_owned() => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
}

/// Wait for the next line, the stop, the auth deadline (before `auth`) or the idle timeout.
/// `idle_timer` is the connection's one idle timer: armed for an earlier wait, it can only fire
/// early, and is then re-armed for this wait (no timer per request; issue 13).
async fn next_read<R: tokio::io::AsyncRead + Unpin>(
    lines: &mut FramedRead<R, LineCodec>,
    authenticated: bool,
    mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    mut idle_timer: std::pin::Pin<&mut tokio::time::Sleep>,
    idle: Duration,
    auth_deadline: Instant,
) -> Read {
    let since = Instant::now();
    let auth = async {
        if authenticated {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(auth_deadline).await;
    };
    tokio::pin!(auth);
    loop {
        tokio::select! {
            biased;
            () = stop.as_mut() => return Read::Stop,
            () = auth.as_mut() => return Read::AuthTimeout,
            r = lines.next() => return Read::Line(r),
            () = idle_timer.as_mut() => {
                if since.elapsed() >= idle {
                    return Read::Idle;
                }
                idle_timer.as_mut().reset(since + idle);
            }
        }
    }
}

/// Read lines until the client leaves, a limit closes the connection, or the server stops.
async fn read_loop(mut conn: Conn, rd: OwnedReadHalf, auth_deadline: Instant, writer: JoinHandle<()>) {
    let gw = conn.gw.clone();
    let max = gw.limits.max_frame_bytes;
    let idle = Duration::from_millis(gw.limits.idle_timeout_ms);
    let mut lines = FramedRead::new(rd, LineCodec::new(max));
    let stop = stopped(conn.cancel.clone(), gw.shutdown.clone());
    tokio::pin!(stop);
    let mut idle_timer = Box::pin(tokio::time::sleep(idle));
    // When the bytes of the lines in the buffer were read (requests' latency starts there).
    let mut read_at: Option<std::time::Instant> = None;
    loop {
        // Submit the `create_order` requests read so far once no complete line is left in the
        // buffer (the next one needs a read from the socket), or no in-flight slot is free
        // (waiting for one with requests held back would wait forever).
        if !lines.read_buffer().contains(&b'\n') || conn.inflight.available_permits() == 0 {
            conn.flush_creates();
        }
        // A line already in the buffer, with an in-flight slot free, needs no waiting: it is
        // taken without the select below (its futures and the clock read cost as much as
        // parsing a pipelined request; issue 13). Before `auth` the slow path runs, for its
        // deadline.
        let buffered = conn.role.is_some()
            && !conn.shared.is_killed()
            && !gw.is_shutting_down()
            && lines.read_buffer().contains(&b'\n');
        let ready = if buffered {
            conn.inflight.clone().try_acquire_owned().ok().and_then(|p| lines.next().now_or_never().map(|n| (p, n)))
        } else {
            None
        };
        // A line that was already in the buffer came with the last read: it keeps that read's
        // time (one clock read per socket read, not per pipelined line).
        let (permit, item) = match ready {
            Some((permit, next)) => (permit, Read::Line(next)),
            None => {
                read_at = None;
                let permit = match conn.inflight.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => tokio::select! {
                        biased;
                        () = stop.as_mut() => break,
                        p = conn.permit() => match p {
                            Some(p) => p,
                            None => break,
                        },
                    },
                };
                let authenticated = conn.role.is_some();
                (
                    permit,
                    next_read(&mut lines, authenticated, stop.as_mut(), idle_timer.as_mut(), idle, auth_deadline).await,
                )
            }
        };
        let next = match item {
            Read::Stop => break,
            Read::AuthTimeout => {
                auth_timed_out(&conn).await;
                break;
            }
            Read::Idle => {
                conn.reply_err(&Value::Null, WireError::new("idle_timeout", "no message within idle_timeout_ms")).await;
                break;
            }
            Read::Line(next) => next,
        };
        match next {
            None | Some(Err(_)) => break,
            Some(Ok(Line::Bytes(b))) => match std::str::from_utf8(&b) {
                Ok(t) => {
                    if t.trim().is_empty() {
                        continue;
                    }
                    let t0 = *read_at.get_or_insert_with(std::time::Instant::now);
                    if conn.on_text_read_at(t, permit, t0).await == Flow::Close {
                        break;
                    }
                }
                Err(_) => {
                    if conn.role.is_none() {
                        conn.reply_err(&Value::Null, WireError::new("unauthorized", "authenticate first")).await;
                        break;
                    }
                    conn.reply_err(&Value::Null, WireError::new("bad_utf8", "a line must be valid UTF-8")).await;
                }
            },
            Some(Ok(Line::TooLong)) => {
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
