//! The TCP transport: one JSON object per line (`\n`, optional `\r`), at most
//! `max_frame_bytes` per line.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, FramedRead, LinesCodec, LinesCodecError};

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
    let Some(slot) = gw.try_connection() else {
        let e = WireError::new("too_many_connections", "the server is at max_connections; retry later");
        let mut line = crate::protocol::err_reply(&Value::Null, &e);
        line.push('\n');
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line.as_bytes())).await;
        return;
    };
    crate::metrics::connection_opened("tcp");
    let (rd, wr) = stream.into_split();
    let (mut conn, mut rx) = Conn::new(gw.clone(), slot, None);
    let shared = conn.shared.clone();
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::new(wr);
        let mut seq = 0u64;
        loop {
            let (text, last) = match next_outbound(&mut rx, &shared, &mut seq).await {
                Next::Text(t) => (t, false),
                Next::Final(t) => (t, true),
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
            // A client that stops reading cannot hold the writer once we gave up on it: after a
            // kill, the line being written gets a short grace (so the final error can follow a
            // whole line), and the final error itself a bounded time.
            let done = if last {
                tokio::time::timeout(Duration::from_secs(1), ok).await.map_or(true, |r| r.is_err())
            } else {
                let grace = async {
                    shared.cancel.cancelled().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                tokio::select! {
                    r = ok => r.is_err(),
                    _ = grace => shared.kill_code.get().is_some(),
                }
            };
            if done || last {
                break;
            }
        }
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    });
    let max = gw.limits.max_frame_bytes;
    let idle = Duration::from_millis(gw.limits.idle_timeout_ms);
    let mut lines = FramedRead::new(rd, LineCodec(LinesCodec::new_with_max_length(max)));
    let mut shutdown = gw.shutdown.clone();
    let cancel = conn.cancel.clone();
    loop {
        let Some(permit) = conn.next_permit(&mut shutdown).await else { break };
        let item = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = shutdown.wait_for(|s| *s) => break,
            r = tokio::time::timeout(idle, lines.next()) => r,
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
