//! The pipelined connection driver for a Surge server over TCP (issue 13: the load generator at
//! about 2 µs of its own CPU per request, so that it can measure a fast server).
//!
//! The general client ([`crate::client::lines::LineClient`]) runs one task per lane, formats
//! each request with `format!`, parks a oneshot channel in a locked map, hands lines to a
//! writer task and parses every reply into a struct of strings: about 4–10 µs per request of
//! its own. For the closed-loop `hot-sku` and `flash-sale` shapes this driver does the same
//! work in one task per connection: it keeps `pipeline` requests in flight, encodes them into
//! one buffer (one write per refill), reads replies in bulk and *scans* each line for its
//! `"id"`, `"ok"` and error `"code"` (replies are matched by id, never parsed into a tree).
//! The requests and the bookkeeping (counts, errors, latency per answer) are the same as the
//! lane loop's, so the two report the same figures.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::{LaneResult, Shared, LATENCY_US_MAX};
use crate::error::{LoadgenError, LoadgenResult};

/// Longest reply line kept while waiting for its end (the server's frame limit is 64 KiB).
const LINE_BYTES_MAX: usize = 1 << 20;

/// What one reply line says, as far as the benchmark needs.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Scanned<'a> {
    pub id: u64,
    /// `None`: ok; `Some(code)`: rejected with that error code.
    pub error: Option<&'a str>,
}

/// Scan a reply line for its numeric `id`, whether it is `ok`, and the error `code`; `None`
/// for a push (`{"event":…}`) or a line without a numeric id.
pub(super) fn scan(line: &[u8]) -> Option<Scanned<'_>> {
    let text = std::str::from_utf8(line).ok()?;
    let id_at = text.find("\"id\":")? + 5;
    let digits = text[id_at..].trim_start();
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    let id = digits[..end].parse().ok()?;
    if text.contains("\"ok\":true") {
        return Some(Scanned { id, error: None });
    }
    let code_at = text.find("\"code\":\"")? + 8;
    let code = &text[code_at..];
    Some(Scanned { id, error: Some(&code[..code.find('"')?]) })
}

/// An error code as the report keeps it (the usual ones without an allocation).
fn code_of(c: &str) -> Cow<'static, str> {
    match c {
        "sold_out" => Cow::Borrowed("sold_out"),
        "purchase_limit_exceeded" => Cow::Borrowed("purchase_limit_exceeded"),
        "rate_limited" => Cow::Borrowed("rate_limited"),
        "overloaded" => Cow::Borrowed("overloaded"),
        other => Cow::Owned(other.to_owned()),
    }
}

/// Where the driver's connection goes: a TCP address (`host:port`) or a WebSocket URL.
#[derive(Clone)]
pub(super) enum Endpoint {
    Tcp(String),
    Ws(String),
}

/// One connection's loop (connection `slot` of `slots`): authenticate, then keep up to
/// `pipeline` `create_order` requests in flight until the budget or the deadline ([`drive`]).
pub(super) async fn pipelined_lane(
    endpoint: Endpoint,
    token: String,
    minimal: bool,
    (pipeline, slot, slots): (usize, u64, u64),
    shared: Arc<Shared>,
) -> LoadgenResult<LaneResult> {
    let shape = if minimal { r#","reply":"minimal""# } else { "" };
    let token_json = serde_json::to_string(&token).unwrap_or_default();
    let auth = format!("{{\"id\":0,\"op\":\"auth\",\"token\":{token_json}{shape}}}");
    match endpoint {
        Endpoint::Tcp(addr) => {
            let target = format!("tcp://{addr}");
            let err = |e: std::io::Error| LoadgenError::Connect { target: target.clone(), reason: e.to_string() };
            let stream = TcpStream::connect(&addr).await.map_err(err)?;
            stream.set_nodelay(true).map_err(err)?;
            let mut wire = TcpWire { stream, inbox: Vec::with_capacity(64 * 1024), scanned_to: 0, out: Vec::new() };
            authenticate(&mut wire, &auth, &target).await?;
            drive(&mut wire, pipeline, (slot, slots), &shared).await
        }
        Endpoint::Ws(url) => {
            let err = |e: tokio_tungstenite::tungstenite::Error| LoadgenError::Connect {
                target: url.clone(),
                reason: e.to_string(),
            };
            let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.map_err(err)?;
            if let tokio_tungstenite::MaybeTlsStream::Plain(s) = ws.get_ref() {
                let _ = s.set_nodelay(true);
            }
            let mut wire = WsWire { ws, unsent: 0 };
            authenticate(&mut wire, &auth, &url).await?;
            drive(&mut wire, pipeline, (slot, slots), &shared).await
        }
    }
}

/// Send `auth` and wait for its answer.
async fn authenticate(wire: &mut impl Wire, auth: &str, target: &str) -> LoadgenResult<()> {
    wire.push(auth.as_bytes()).await?;
    wire.flush().await?;
    let mut answer = None;
    while answer.is_none() {
        wire.read(&mut |line| answer = Some(scan(line).is_some_and(|s| s.error.is_none()))).await?;
    }
    match answer {
        Some(true) => Ok(()),
        _ => Err(LoadgenError::Connect { target: target.to_owned(), reason: "auth refused".into() }),
    }
}

/// A connection as the driver uses it: queue request texts, send them, read replies.
trait Wire {
    /// Queue one request (one JSON object, no newline).
    async fn push(&mut self, request: &[u8]) -> LoadgenResult<()>;
    /// Send what is queued.
    async fn flush(&mut self) -> LoadgenResult<()>;
    /// Wait for more input, then hand every complete reply to `on_reply`.
    async fn read(&mut self, on_reply: &mut (dyn FnMut(&[u8]) + Send)) -> LoadgenResult<()>;
}

fn lost(e: impl std::fmt::Display) -> LoadgenError {
    LoadgenError::Protocol(format!("connection lost ({e})"))
}

/// TCP: lines in one buffer, one write per flush; replies split at newlines.
struct TcpWire {
    stream: TcpStream,
    inbox: Vec<u8>,
    /// Bytes of `inbox` before this are consumed.
    scanned_to: usize,
    out: Vec<u8>,
}

impl Wire for TcpWire {
    async fn push(&mut self, request: &[u8]) -> LoadgenResult<()> {
        self.out.extend_from_slice(request);
        self.out.push(b'\n');
        Ok(())
    }

    async fn flush(&mut self) -> LoadgenResult<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await.map_err(lost)?;
            self.out.clear();
        }
        Ok(())
    }

    async fn read(&mut self, on_reply: &mut (dyn FnMut(&[u8]) + Send)) -> LoadgenResult<()> {
        if self.scanned_to > 0 {
            self.inbox.drain(..self.scanned_to);
            self.scanned_to = 0;
        }
        if self.inbox.len() > LINE_BYTES_MAX {
            return Err(LoadgenError::Protocol("a reply line longer than 1 MiB".into()));
        }
        if self.stream.read_buf(&mut self.inbox).await.map_err(lost)? == 0 {
            return Err(lost("closed by the server"));
        }
        while let Some(end) = self.inbox[self.scanned_to..].iter().position(|b| *b == b'\n') {
            on_reply(&self.inbox[self.scanned_to..self.scanned_to + end]);
            self.scanned_to += end + 1;
        }
        Ok(())
    }
}

/// WebSocket: one text frame per request, fed without flushing until `flush`; one reply per
/// frame.
struct WsWire {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    unsent: usize,
}

impl Wire for WsWire {
    async fn push(&mut self, request: &[u8]) -> LoadgenResult<()> {
        let text = String::from_utf8_lossy(request).into_owned();
        self.ws.feed(Message::text(text)).await.map_err(lost)?;
        self.unsent += 1;
        Ok(())
    }

    async fn flush(&mut self) -> LoadgenResult<()> {
        if self.unsent > 0 {
            self.ws.flush().await.map_err(lost)?;
            self.unsent = 0;
        }
        Ok(())
    }

    async fn read(&mut self, on_reply: &mut (dyn FnMut(&[u8]) + Send)) -> LoadgenResult<()> {
        // One frame waited for, then every frame already here.
        let mut next = Some(self.ws.next().await);
        while let Some(frame) = next {
            match frame {
                Some(Ok(Message::Text(t))) => on_reply(t.as_bytes()),
                Some(Ok(Message::Close(_))) | None => return Err(lost("closed by the server")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(lost(e)),
            }
            next = self.ws.next().now_or_never();
        }
        Ok(())
    }
}

/// The loop: refill the pipeline (one send), read, account every complete reply. Closed loop:
/// a request goes as soon as one is answered. Open loop (`--rate`): this connection (`slot` of
/// `slots`) sends its k-th request at its due time, `start + (k × slots + slot) / rate`, and its
/// latency is measured from that time, so a stall is charged to every request due during it
/// (coordinated omission corrected, as the lane loop does); at most `pipeline` are in flight.
async fn drive(
    wire: &mut impl Wire,
    pipeline: usize,
    (slot, slots): (u64, u64),
    shared: &Shared,
) -> LoadgenResult<LaneResult> {
    let mut r = LaneResult::empty()?;
    let sku = shared.skus.first().cloned().unwrap_or_default();
    let mut sent_at: HashMap<u64, Instant> = HashMap::with_capacity(pipeline * 2);
    let mut request = Vec::with_capacity(192);
    let (mut next_id, mut k) = (1u64, 0u64);
    let mut done = false;
    loop {
        let mut next_due = None;
        while !done && sent_at.len() < pipeline {
            let now = Instant::now();
            let due = match shared.rate {
                Some(rate) => shared.start + Duration::from_secs_f64((k * slots + slot) as f64 / rate),
                None => now,
            };
            if due >= shared.deadline || now >= shared.deadline {
                done = true;
                break;
            }
            if due > now {
                next_due = Some(due);
                break;
            }
            let i = shared.issued.fetch_add(1, Ordering::Relaxed);
            if shared.budget.is_some_and(|b| i >= b) {
                done = true;
                break;
            }
            request.clear();
            encode(&mut request, next_id, &shared.names.run_id, i % shared.users, i, &sku);
            wire.push(&request).await?;
            sent_at.insert(next_id, due);
            next_id += 1;
            k += 1;
        }
        wire.flush().await?;
        if sent_at.is_empty() {
            match next_due {
                Some(due) => {
                    super::pace::pace_until(due, shared.precise_pacing).await;
                    continue;
                }
                None => return Ok(r),
            }
        }
        let mut on_reply = |line: &[u8]| {
            let Some(s) = scan(line) else { return };
            let Some(sent) = sent_at.remove(&s.id) else { return };
            match s.error {
                None => {
                    // hot-sku and flash-sale order one unit.
                    r.ok += 1;
                    r.orders += 1;
                    r.units_ok += 1;
                }
                Some(code) => r.count_error(code_of(code), 1),
            }
            let latency_us = sent.elapsed().as_micros().min(u128::from(LATENCY_US_MAX)) as u64;
            r.record(shared.start, sent, latency_us);
            shared.done.fetch_add(1, Ordering::Relaxed);
        };
        let read = wire.read(&mut on_reply);
        let outcome = match next_due {
            Some(due) => tokio::select! {
                r = read => r,
                () = super::pace::pace_until(due, shared.precise_pacing) => Ok(()),
            },
            None => read.await,
        };
        if let Err(e) = outcome {
            let lost = sent_at.len() as u64;
            r.count_error(Cow::Borrowed("connection_lost"), lost);
            r.failure = Some(e.to_string());
            return Ok(r);
        }
    }
}

/// Append request `id` (no newline): user `u<run>-<user>` orders one unit of `sku` with key
/// `k<i>`, as the lane loop's requests (names from [`super::Names`]; none needs JSON escaping).
fn encode(out: &mut Vec<u8>, id: u64, run_id: &str, user: u64, i: u64, sku: &str) {
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"id":{id},"op":"create_order","user_id":"u{run_id}-{user}","items":[{{"sku_id":"{sku}","qty":1}}],"idempotency_key":"k{i}"}}"#
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_scanned_for_id_outcome_and_code() {
        let ok =
            br#"{"id":42,"ok":true,"result":{"order_id":"7","status":"pending_payment","version":1,"total":"1.00"}}"#;
        assert_eq!(scan(ok), Some(Scanned { id: 42, error: None }));
        let no = br#"{"id":43,"ok":false,"error":{"code":"sold_out","message":"sku x is sold out","sku_id":"x"}}"#;
        assert_eq!(scan(no), Some(Scanned { id: 43, error: Some("sold_out") }));
        let sorted = br#"{"error":{"code":"rate_limited","message":"m","retry_after_ms":5},"id":44,"ok":false}"#;
        assert_eq!(scan(sorted), Some(Scanned { id: 44, error: Some("rate_limited") }));
        assert_eq!(scan(br#"{"event":"order","seq":1}"#), None, "a push");
        assert_eq!(scan(br#"{"id":"s","ok":true}"#), None, "not one of ours");
    }

    #[test]
    fn requests_are_the_lane_loops() {
        let mut out = Vec::new();
        encode(&mut out, 9, "r1", 3, 12, "bench-r1-0");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], 9);
        assert_eq!(v["user_id"], "ur1-3");
        assert_eq!(v["idempotency_key"], "k12");
        assert_eq!(v["items"][0]["sku_id"], "bench-r1-0");
        assert_eq!(out.last(), Some(&b'}'), "one object, framed by the transport");
    }
}
