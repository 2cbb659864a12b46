//! The HTTP listener: `GET /health`, `GET /ready`, and the WebSocket gateway at `/ws`
//! (actix-web + actix-ws; one JSON object per text frame). A WebSocket connection without a
//! bearer token must authenticate within `auth_timeout_ms` of the upgrade (pings and pongs do
//! not extend it); its writer gives up on a client that takes no frame for `write_timeout_ms`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::hub::{ConnShared, Outbound};
use crate::limits::LimitStats;
use crate::protocol::WireError;
use crate::session::{next_outbound, Conn, Flow, Gateway, Next};

/// Shared with the HTTP workers; the gateway is set once recovery is done.
#[derive(Clone, Default)]
pub(crate) struct AppState {
    pub gateway: Arc<OnceLock<Arc<Gateway>>>,
}

impl AppState {
    fn ready(&self) -> Option<&Arc<Gateway>> {
        self.gateway.get().filter(|g| g.ready.load(std::sync::atomic::Ordering::Acquire) && !g.is_shutting_down())
    }
}

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health)).route("/ready", web::get().to(ready)).route("/ws", web::get().to(ws));
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// `{"status":"ready"}` (200) or `{"status":"not_ready"}` (503); with `[events]` on, also
/// `"events"`: the publisher's status (connected, cursor, durable LSN, lag). A lagging event
/// stream does not make the server unready: readiness is about serving orders (issue 15).
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.ready() {
        Some(gw) => match &gw.events {
            Some(events) => {
                HttpResponse::Ok().json(serde_json::json!({ "status": "ready", "events": events.status() }))
            }
            None => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        },
        None => HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "not_ready" })),
    }
}

fn http_error(status: actix_web::http::StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "ok": false, "error": { "code": code, "message": message } }))
}

async fn ws(req: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    use actix_web::http::StatusCode;
    let Some(gw) = state.ready().cloned() else {
        return http_error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "not ready or shutting down");
    };
    // A static token (admin, service) or a user JWT.
    let identity = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(h) => {
            let token = h.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")).map(str::trim).unwrap_or("");
            match gw.auth.bearer(token) {
                Ok(identity) => Some(identity),
                Err(e) => {
                    tracing::info!("websocket: invalid bearer credential");
                    crate::metrics::auth_failed();
                    return http_error(StatusCode::UNAUTHORIZED, "unauthorized", &e.0);
                }
            }
        }
    };
    // The authentication deadline runs from the upgrade, not from the last frame received.
    let auth_deadline = Instant::now() + Duration::from_millis(gw.limits.auth_timeout_ms);
    let Some(slot) = gw.try_connection() else {
        return http_error(StatusCode::SERVICE_UNAVAILABLE, "too_many_connections", "max_connections reached");
    };
    let (response, session, stream) = match actix_ws::handle(&req, body) {
        Ok(parts) => parts,
        Err(e) => return e.error_response(),
    };
    let max = gw.limits.max_frame_bytes;
    let stream = stream.max_frame_size(max).aggregate_continuations().max_continuation_size(max);
    crate::metrics::connection_opened("ws");
    let (conn, rx) = Conn::new(gw.clone(), slot, identity);
    let write_timeout = Duration::from_millis(gw.limits.write_timeout_ms);
    let writer = actix_web::rt::spawn(write_loop(
        session.clone(),
        rx,
        conn.shared.clone(),
        gw.limit_stats.clone(),
        write_timeout,
    ));
    actix_web::rt::spawn(gw.tracker.track_future(read_loop(conn, session, stream, auth_deadline, writer)));
    response
}

/// Send replies and pushes as text frames, in order. A frame actix-ws does not take within
/// `write_timeout` (its queue of 32 frames stays full: the client does not read) kills the
/// connection (`slow_consumer`).
async fn write_loop(
    mut session: actix_ws::Session,
    mut rx: mpsc::Receiver<Outbound>,
    shared: Arc<ConnShared>,
    stats: Arc<LimitStats>,
    write_timeout: Duration,
) {
    let mut seq = 0u64;
    let mut reason = None;
    let mut killed = crate::session::killed(&shared);
    let mut frames = Frames { session: &mut session, shared: &shared, stats: &stats, write_timeout };
    loop {
        let go_on = match next_outbound(&mut rx, &shared, &mut seq, killed.as_mut()).await {
            Next::Text(t) => frames.send(t, false, killed.as_mut()).await,
            Next::Reply(t) => frames.send(t, true, killed.as_mut()).await,
            Next::Replies(ts) => {
                let mut go_on = true;
                for t in ts {
                    // After a failed send the rest are still counted as written (dropped).
                    if !go_on {
                        crate::limits::reply_written(&shared, t.len());
                        continue;
                    }
                    go_on = frames.send(t, true, killed.as_mut()).await;
                }
                go_on
            }
            Next::Final(t) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), frames.session.text(t)).await;
                reason = Some(CloseReason {
                    code: CloseCode::Policy,
                    description: shared.kill_code.get().map(|c| c.to_string()),
                });
                break;
            }
            Next::End => break,
        };
        if !go_on {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), session.close(reason)).await;
}

/// Where a writer sends its text frames, and what bounds them.
struct Frames<'a> {
    session: &'a mut actix_ws::Session,
    shared: &'a ConnShared,
    stats: &'a LimitStats,
    write_timeout: Duration,
}

impl Frames<'_> {
    /// Send `t` as one text frame within `write_timeout` (a `reply` is then no longer pending);
    /// `false` when the writer should stop. A killed connection (slow consumer) goes on, for
    /// the final error frame.
    async fn send(
        &mut self,
        t: String,
        reply: bool,
        killed: std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFutureOwned>,
    ) -> bool {
        let len = t.len();
        let sent = tokio::select! {
            r = tokio::time::timeout(self.write_timeout, self.session.text(t)) => match r {
                Ok(r) => r.is_ok(),
                Err(_) => {
                    crate::limits::write_timed_out(self.shared, self.stats);
                    false
                }
            },
            () = killed => false,
        };
        if reply {
            crate::limits::reply_written(self.shared, len);
        }
        sent || self.shared.kill_code.get().is_some()
    }
}

/// Read frames until the client leaves, a limit closes the connection, or the server stops.
async fn read_loop(
    mut conn: Conn,
    mut session: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
    auth_deadline: Instant,
    writer: actix_web::rt::task::JoinHandle<()>,
) {
    let gw = conn.gw.clone();
    let idle = Duration::from_millis(gw.limits.idle_timeout_ms);
    let write_timeout = Duration::from_millis(gw.limits.write_timeout_ms);
    let mut ping = tokio::time::interval(Duration::from_millis(gw.limits.ping_interval_ms));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let mut shutdown = gw.shutdown.clone();
    let cancel = conn.cancel.clone();
    loop {
        let Some(permit) = conn.next_permit(&mut shutdown).await else { break };
        let msg = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = shutdown.wait_for(|s| *s) => break,
            _ = tokio::time::sleep_until(auth_deadline), if conn.role.is_none() => {
                crate::tcp::auth_timed_out(&conn).await;
                break;
            }
            _ = ping.tick() => {
                if last_seen.elapsed() >= idle {
                    conn.reply_err(&Value::Null, WireError::new("idle_timeout", "no message within idle_timeout_ms")).await;
                    break;
                }
                // A client that does not read cannot stall the reader on a full frame queue.
                if !matches!(tokio::time::timeout(write_timeout, session.ping(b"")).await, Ok(Ok(()))) {
                    break;
                }
                continue;
            }
            m = stream.recv() => m,
        };
        last_seen = Instant::now();
        let mut flow = on_message(&mut conn, &mut session, msg, permit, write_timeout).await;
        // Frames already received join the same batch (as TCP's buffered lines): their
        // `create_order` requests reach the engine together once none is left to take without
        // waiting (or no in-flight slot is free).
        while flow == Flow::Continue && conn.role.is_some() && !conn.shared.is_killed() {
            let Ok(permit) = conn.inflight.clone().try_acquire_owned() else { break };
            let Some(msg) = stream.recv().now_or_never() else { break };
            flow = on_message(&mut conn, &mut session, msg, permit, write_timeout).await;
        }
        conn.flush_creates();
        if flow == Flow::Close {
            break;
        }
    }
    conn.close(writer).await;
}

/// Handle one frame (or stream error).
async fn on_message(
    conn: &mut Conn,
    session: &mut actix_ws::Session,
    msg: Option<Result<AggregatedMessage, ProtocolError>>,
    permit: tokio::sync::OwnedSemaphorePermit,
    write_timeout: Duration,
) -> Flow {
    let max = conn.gw.limits.max_frame_bytes;
    let too_large = || WireError::new("frame_too_large", format!("a message must be at most {max} bytes; closing"));
    match msg {
        None | Some(Ok(AggregatedMessage::Close(_))) => Flow::Close,
        Some(Ok(AggregatedMessage::Text(t))) => conn.on_text(&t, permit).await,
        Some(Ok(AggregatedMessage::Binary(_))) => {
            if conn.role.is_none() {
                conn.reply_err(&Value::Null, WireError::new("unauthorized", "authenticate first")).await;
                return Flow::Close;
            }
            let e = WireError::new("binary_frame", "send one JSON object per text frame; binary frames are refused");
            conn.reply_err(&Value::Null, e).await;
            Flow::Continue
        }
        Some(Ok(AggregatedMessage::Ping(b))) => match tokio::time::timeout(write_timeout, session.pong(&b)).await {
            Ok(Ok(())) => Flow::Continue,
            _ => Flow::Close,
        },
        Some(Ok(AggregatedMessage::Pong(_))) => Flow::Continue,
        Some(Err(ProtocolError::Overflow)) => {
            conn.reply_err(&Value::Null, too_large()).await;
            Flow::Close
        }
        Some(Err(ProtocolError::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
            if conn.role.is_none() {
                conn.reply_err(&Value::Null, WireError::new("unauthorized", "authenticate first")).await;
                return Flow::Close;
            }
            conn.reply_err(&Value::Null, WireError::new("bad_utf8", "a text frame must be valid UTF-8")).await;
            Flow::Continue
        }
        Some(Err(ProtocolError::Io(e))) if e.to_string().contains("continuation size") => {
            conn.reply_err(&Value::Null, too_large()).await;
            Flow::Close
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "websocket protocol error; closing");
            Flow::Close
        }
    }
}
