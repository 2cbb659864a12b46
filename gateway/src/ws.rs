//! The HTTP listener: `GET /health`, `GET /ready`, and the WebSocket gateway at `/ws`
//! (actix-web + actix-ws; one JSON object per text frame).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use serde_json::Value;

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

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.ready() {
        Some(_) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
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
    actix_web::rt::spawn(gw.tracker.track_future(run(conn, rx, session, stream)));
    response
}

async fn run(
    mut conn: Conn,
    mut rx: tokio::sync::mpsc::Receiver<crate::hub::Outbound>,
    mut session: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
) {
    let gw = conn.gw.clone();
    let shared = conn.shared.clone();
    let mut out_session = session.clone();
    let writer = actix_web::rt::spawn(async move {
        let mut seq = 0u64;
        let mut reason = None;
        loop {
            match next_outbound(&mut rx, &shared, &mut seq).await {
                Next::Text(t) => {
                    let sent = tokio::select! {
                        r = out_session.text(t) => r.is_ok(),
                        _ = shared.cancel.cancelled() => false,
                    };
                    if !sent {
                        // Killed (slow consumer): go round once more for the final error frame.
                        if shared.kill_code.get().is_some() {
                            continue;
                        }
                        break;
                    }
                }
                Next::Final(t) => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), out_session.text(t)).await;
                    reason = Some(CloseReason {
                        code: CloseCode::Policy,
                        description: shared.kill_code.get().map(|c| c.to_string()),
                    });
                    break;
                }
                Next::End => break,
            }
        }
        let _ = out_session.close(reason).await;
    });
    let idle = Duration::from_millis(gw.limits.idle_timeout_ms);
    let mut ping = tokio::time::interval(Duration::from_millis(gw.limits.ping_interval_ms));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let mut shutdown = gw.shutdown.clone();
    let cancel = conn.cancel.clone();
    let max = gw.limits.max_frame_bytes;
    loop {
        let Some(permit) = conn.next_permit(&mut shutdown).await else { break };
        let msg = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = shutdown.wait_for(|s| *s) => break,
            _ = ping.tick() => {
                if last_seen.elapsed() >= idle {
                    conn.reply_err(&Value::Null, WireError::new("idle_timeout", "no message within idle_timeout_ms")).await;
                    break;
                }
                if session.ping(b"").await.is_err() {
                    break;
                }
                continue;
            }
            m = stream.recv() => m,
        };
        last_seen = Instant::now();
        match msg {
            None | Some(Ok(AggregatedMessage::Close(_))) => break,
            Some(Ok(AggregatedMessage::Text(t))) => {
                if conn.on_text(&t, permit).await == Flow::Close {
                    break;
                }
            }
            Some(Ok(AggregatedMessage::Binary(_))) => {
                if conn.role.is_none() {
                    conn.reply_err(&Value::Null, WireError::new("unauthorized", "authenticate first")).await;
                    break;
                }
                let e =
                    WireError::new("binary_frame", "send one JSON object per text frame; binary frames are refused");
                conn.reply_err(&Value::Null, e).await;
            }
            Some(Ok(AggregatedMessage::Ping(b))) => {
                if session.pong(&b).await.is_err() {
                    break;
                }
            }
            Some(Ok(AggregatedMessage::Pong(_))) => {}
            Some(Err(ProtocolError::Overflow)) => {
                let msg = format!("a message must be at most {max} bytes; closing");
                conn.reply_err(&Value::Null, WireError::new("frame_too_large", msg)).await;
                break;
            }
            Some(Err(ProtocolError::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                if conn.role.is_none() {
                    conn.reply_err(&Value::Null, WireError::new("unauthorized", "authenticate first")).await;
                    break;
                }
                conn.reply_err(&Value::Null, WireError::new("bad_utf8", "a text frame must be valid UTF-8")).await;
            }
            Some(Err(ProtocolError::Io(e))) if e.to_string().contains("continuation size") => {
                let msg = format!("a message must be at most {max} bytes; closing");
                conn.reply_err(&Value::Null, WireError::new("frame_too_large", msg)).await;
                break;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket protocol error; closing");
                break;
            }
        }
    }
    conn.close(writer).await;
}
