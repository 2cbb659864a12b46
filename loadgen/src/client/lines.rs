//! A pipelining client of Surge's JSON protocol, over TCP (one object per line) or WebSocket
//! (one object per text frame); see `docs/protocol.md`.
//!
//! Many lanes share one connection: each request gets a fresh numeric `id`, a oneshot sender
//! is parked under that id, and the reader task hands each reply to its sender. A writer task
//! coalesces whatever requests are waiting into one socket write (or one WebSocket flush), as a
//! real pipelining client does. Pushes (`{"event": …}`) are ignored: the benchmark subscribes
//! to nothing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::{OrderRef, Reply, StockView};
use crate::error::{LoadgenError, LoadgenResult};

/// A reply that takes longer than this is a failure of the run, not a latency sample.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests queued for the writer task per connection (bounded: lanes wait when it is full).
const WRITE_QUEUE_CAPACITY: usize = 1024;
/// Bytes coalesced into one write at most.
const WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;
/// Longest reply line read (the server's own frame limit is 64 KiB by default).
const LINE_BYTES_MAX: usize = 1 << 20;

/// The fields of a reply the load generator reads; the rest of an `ORDER` or `SKU` is skipped.
#[derive(Debug, Deserialize)]
struct WireReply {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    result: Option<WireResult>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Debug, Default, Deserialize)]
struct WireResult {
    #[serde(default, deserialize_with = "id_str")]
    order_id: Option<u64>,
    #[serde(default)]
    total: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    available: Option<u64>,
    #[serde(default)]
    reserved: Option<u64>,
    #[serde(default)]
    sold: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct WireError {
    code: String,
}

/// An id as the server sends it: a JSON string of digits (ids exceed 2^53; see
/// `docs/protocol.md`, "Ids are strings"), or a number from servers before that rule.
fn id_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(u64),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::N(n)) => Ok(Some(n)),
        Some(Raw::S(s)) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

type PendingMap = Mutex<HashMap<u64, oneshot::Sender<WireReply>>>;

/// One connection to a Surge server, shared by the lanes of that connection.
pub(crate) struct LineClient {
    tx: mpsc::Sender<String>,
    pending: Arc<PendingMap>,
    closed: Arc<AtomicBool>,
    next_id: AtomicU64,
}

/// Intern the error codes the benchmark expects, so a rejection costs no allocation.
fn code(c: String) -> Cow<'static, str> {
    const KNOWN: [&str; 10] = [
        "sold_out",
        "purchase_limit_exceeded",
        "order_not_payable",
        "already_paid",
        "rate_limited",
        "overloaded",
        "version_conflict",
        "unknown_order",
        "storage_unavailable",
        "invalid_state_transition",
    ];
    match KNOWN.iter().find(|k| **k == c) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(c),
    }
}

fn js(s: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

fn lost(what: &str) -> LoadgenError {
    LoadgenError::Protocol(format!("connection lost ({what})"))
}

impl LineClient {
    /// Connect over TCP to `addr` (`host:port`) and authenticate with `token`.
    pub async fn connect_tcp(addr: &str, token: Option<&str>, minimal: bool) -> LoadgenResult<Arc<LineClient>> {
        let err = |e: std::io::Error| LoadgenError::Connect { target: format!("tcp://{addr}"), reason: e.to_string() };
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(err)?;
        stream.set_nodelay(true).map_err(err)?;
        let (rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<String>(WRITE_QUEUE_CAPACITY);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(WRITE_BATCH_BYTES_MAX);
            while let Some(line) = rx.recv().await {
                buf.extend_from_slice(line.as_bytes());
                while buf.len() < WRITE_BATCH_BYTES_MAX {
                    match rx.try_recv() {
                        Ok(more) => buf.extend_from_slice(more.as_bytes()),
                        Err(_) => break,
                    }
                }
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
                buf.clear();
            }
        });
        let client = Arc::new(LineClient::new(tx));
        let (pending, closed) = (client.pending.clone(), client.closed.clone());
        tokio::spawn(async move {
            let mut rd = BufReader::with_capacity(64 * 1024, rd);
            let mut line = Vec::with_capacity(1024);
            loop {
                line.clear();
                match (&mut rd).take(LINE_BYTES_MAX as u64).read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => deliver(&pending, &line),
                }
            }
            close(&pending, &closed);
        });
        client.auth(token, &format!("tcp://{addr}"), minimal).await?;
        Ok(client)
    }

    /// Connect to a WebSocket URL (`ws://host:port/ws`) and authenticate with `token`.
    pub async fn connect_ws(url: &str, token: Option<&str>, minimal: bool) -> LoadgenResult<Arc<LineClient>> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| LoadgenError::Connect { target: url.to_owned(), reason: e.to_string() })?;
        if let tokio_tungstenite::MaybeTlsStream::Plain(s) = ws.get_ref() {
            let _ = s.set_nodelay(true);
        }
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::channel::<String>(WRITE_QUEUE_CAPACITY);
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if sink.feed(Message::text(line)).await.is_err() {
                    return;
                }
                let mut bytes = 0;
                while bytes < WRITE_BATCH_BYTES_MAX {
                    match rx.try_recv() {
                        Ok(more) => {
                            bytes += more.len();
                            if sink.feed(Message::text(more)).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        });
        let client = Arc::new(LineClient::new(tx));
        let (pending, closed) = (client.pending.clone(), client.closed.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::Text(t) => deliver(&pending, t.as_bytes()),
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            close(&pending, &closed);
        });
        client.auth(token, url, minimal).await?;
        Ok(client)
    }

    fn new(tx: mpsc::Sender<String>) -> LineClient {
        LineClient {
            tx,
            pending: Arc::new(Mutex::new(HashMap::new())),
            closed: Arc::new(AtomicBool::new(false)),
            next_id: AtomicU64::new(1),
        }
    }

    /// Authenticate; `minimal` asks for `"reply":"minimal"` (order id, status, version and
    /// total: all the load generator reads of an order).
    async fn auth(&self, token: Option<&str>, target: &str, minimal: bool) -> LoadgenResult<()> {
        let Some(token) = token else {
            return Err(LoadgenError::Connect {
                target: target.to_owned(),
                reason: "a Surge server needs --token (or SURGE_ADMIN_TOKEN): an admin token".into(),
            });
        };
        let shape = if minimal { r#","reply":"minimal""# } else { "" };
        let r = self.call(&format!(r#""op":"auth","token":{}{shape}"#, js(token))).await?;
        match r.ok {
            Some(true) => Ok(()),
            _ => Err(LoadgenError::Connect {
                target: target.to_owned(),
                reason: format!("auth refused: {}", r.error.map_or_else(|| "no reason".into(), |e| e.code)),
            }),
        }
    }

    /// Send `{"id":N,<body>}` and wait for the reply with id N.
    async fn call(&self, body: &str) -> LoadgenResult<WireReply> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().map_err(|_| lost("poisoned"))?;
            if self.closed.load(Ordering::Acquire) {
                return Err(lost("closed by the server"));
            }
            pending.insert(id, tx);
        }
        self.tx.send(format!("{{\"id\":{id},{body}}}\n")).await.map_err(|_| lost("writer stopped"))?;
        match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(lost("closed by the server")),
            Err(_) => Err(LoadgenError::Protocol(format!("no reply in {} s", REPLY_TIMEOUT.as_secs()))),
        }
    }

    /// `call`, then split the reply into a business outcome.
    async fn outcome(&self, body: &str) -> LoadgenResult<Reply<WireResult>> {
        let r = self.call(body).await?;
        match (r.ok, r.error) {
            (Some(true), _) => Ok(Reply::Ok(r.result.unwrap_or_default())),
            (_, Some(e)) => Ok(Reply::Rejected(code(e.code))),
            _ => Err(LoadgenError::Protocol("a reply with neither result nor error".into())),
        }
    }

    pub async fn create_sku(&self, sku_id: &str, stock: u64, per_user_limit: Option<u32>) -> LoadgenResult<()> {
        let limit = per_user_limit.map_or_else(|| "null".to_owned(), |l| l.to_string());
        let body = format!(
            r#""op":"create_sku","sku_id":{},"name":{},"price":"1.00","initial_stock":{stock},"per_user_limit":{limit}"#,
            js(sku_id),
            js(&format!("bench {sku_id}"))
        );
        match self.outcome(&body).await? {
            Reply::Ok(_) => Ok(()),
            Reply::Rejected(c) => Err(LoadgenError::Setup(format!("create_sku {sku_id}: {c}"))),
        }
    }

    pub async fn create_order(&self, user: &str, sku: &str, qty: u32, key: &str) -> LoadgenResult<Reply<OrderRef>> {
        let body = format!(
            r#""op":"create_order","user_id":{},"items":[{{"sku_id":{},"qty":{qty}}}],"idempotency_key":{}"#,
            js(user),
            js(sku),
            js(key)
        );
        let reply = self.outcome(&body).await?;
        Ok(reply.map(|r| OrderRef { order_id: r.order_id.unwrap_or(0), total: r.total.unwrap_or_default() }))
    }

    pub async fn pay(&self, order: &OrderRef, payment_id: &str) -> LoadgenResult<Reply<()>> {
        let body = format!(
            r#""op":"pay","order_id":"{}","payment_id":{},"amount":{}"#,
            order.order_id,
            js(payment_id),
            js(&order.total)
        );
        Ok(self.outcome(&body).await?.map(|_| ()))
    }

    pub async fn cancel(&self, order_id: u64) -> LoadgenResult<Reply<()>> {
        Ok(self.outcome(&format!(r#""op":"cancel_order","order_id":"{order_id}""#)).await?.map(|_| ()))
    }

    pub async fn get_order(&self, order_id: u64) -> LoadgenResult<Reply<String>> {
        Ok(self
            .outcome(&format!(r#""op":"get_order","order_id":"{order_id}""#))
            .await?
            .map(|r| r.status.unwrap_or_default()))
    }

    pub async fn get_sku(&self, sku_id: &str) -> LoadgenResult<Reply<StockView>> {
        Ok(self.outcome(&format!(r#""op":"get_sku","sku_id":{}"#, js(sku_id))).await?.map(|r| StockView {
            available: r.available.unwrap_or(0),
            reserved: r.reserved.unwrap_or(0),
            sold: r.sold.unwrap_or(0),
        }))
    }
}

/// Hand a reply line to the lane waiting for its id; pushes and unreadable lines are skipped.
fn deliver(pending: &PendingMap, line: &[u8]) {
    let Ok(reply) = serde_json::from_slice::<WireReply>(line) else { return };
    let Some(id) = reply.id else { return };
    let tx = pending.lock().ok().and_then(|mut p| p.remove(&id));
    if let Some(tx) = tx {
        let _ = tx.send(reply);
    }
}

/// The connection is gone: every waiting lane gets an error, and new calls fail at once.
fn close(pending: &PendingMap, closed: &AtomicBool) {
    if let Ok(mut p) = pending.lock() {
        closed.store(true, Ordering::Release);
        p.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_are_read_from_strings_and_old_numbers() {
        let big = r#"{"id":1,"ok":true,"result":{"order_id":"9007199254740993","total":"1.00"}}"#;
        let r: WireReply = serde_json::from_str(big).unwrap();
        assert_eq!(r.result.unwrap().order_id, Some(9_007_199_254_740_993), "2^53 + 1 exactly");
        let old: WireReply = serde_json::from_str(r#"{"id":2,"ok":true,"result":{"order_id":7}}"#).unwrap();
        assert_eq!(old.result.unwrap().order_id, Some(7));
        let none: WireReply = serde_json::from_str(r#"{"id":3,"ok":true,"result":{"available":1}}"#).unwrap();
        assert_eq!(none.result.unwrap().order_id, None);
    }
}
