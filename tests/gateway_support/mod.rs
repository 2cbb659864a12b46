//! Helpers shared by the gateway tests: a server on loopback ports chosen by the OS, and small
//! TCP and WebSocket clients.
#![allow(dead_code)]

pub mod binary;

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use surge::gateway::{FileConfig, Server, ServerHandle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

pub const ADMIN: &str = "admin-token-for-tests";
pub const SERVICE: &str = "service-token-for-tests";
/// The HS256 secret for user JWTs (32 bytes, the minimum).
pub const JWT_SECRET: &str = "jwt-hs256-secret-for-tests-32by!";
pub const WAIT: Duration = Duration::from_secs(10);

pub fn config(dir: &std::path::Path) -> FileConfig {
    let mut cfg = FileConfig::default();
    cfg.persistence.data_dir = dir.to_path_buf();
    cfg.engine.shard_count = 2;
    cfg.server.tcp_addr = "127.0.0.1:0".into();
    cfg.server.http_addr = "127.0.0.1:0".into();
    cfg.server.http_workers = 1;
    cfg.server.shutdown_timeout_ms = 5_000;
    cfg.auth.admin_tokens = vec![ADMIN.into()];
    cfg.auth.service_tokens = vec![SERVICE.into()];
    cfg.auth.jwt_hs256_secret = JWT_SECRET.into();
    cfg
}

pub async fn start(dir: &std::path::Path) -> ServerHandle {
    Server::start(config(dir)).await.expect("server starts")
}

/// A line-oriented TCP client that keeps pushes aside.
pub struct Tcp {
    pub rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    pub wr: tokio::net::tcp::OwnedWriteHalf,
    pub pushes: VecDeque<Value>,
    next_id: u64,
}

impl Tcp {
    pub async fn connect(addr: std::net::SocketAddr) -> Tcp {
        let s = TcpStream::connect(addr).await.expect("connect");
        let (rd, wr) = s.into_split();
        Tcp { rd: BufReader::new(rd), wr, pushes: VecDeque::new(), next_id: 1000 }
    }

    pub async fn login(addr: std::net::SocketAddr, token: &str) -> Tcp {
        let mut c = Tcp::connect(addr).await;
        let r = c.call(json!({"op": "auth", "token": token})).await;
        assert_eq!(r["ok"], true, "auth: {r}");
        c
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.expect("write");
    }

    pub async fn send(&mut self, v: &Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.send_raw(line.as_bytes()).await;
    }

    /// The next line as JSON; `None` at EOF.
    pub async fn next(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.rd.read_line(&mut line)).await.expect("reply in time").ok()?;
        if n == 0 {
            return None;
        }
        Some(serde_json::from_str(&line).expect("server sends JSON lines"))
    }

    /// The next reply (pushes are kept in `pushes`).
    pub async fn reply(&mut self) -> Value {
        loop {
            let v = self.next().await.expect("a reply, not EOF");
            if v.get("event").is_some() {
                self.pushes.push_back(v);
            } else {
                return v;
            }
        }
    }

    /// Send `v` with a fresh id (unless it has one) and wait for the reply with that id.
    pub async fn call(&mut self, mut v: Value) -> Value {
        if v.get("id").is_none() {
            self.next_id += 1;
            v["id"] = json!(self.next_id);
        }
        let id = v["id"].clone();
        self.send(&v).await;
        loop {
            let r = self.reply().await;
            if r["id"] == id {
                return r;
            }
        }
    }

    pub async fn ok(&mut self, v: Value) -> Value {
        let r = self.call(v.clone()).await;
        assert_eq!(r["ok"], true, "{v} -> {r}");
        r["result"].clone()
    }

    pub async fn push(&mut self) -> Value {
        if let Some(p) = self.pushes.pop_front() {
            return p;
        }
        loop {
            let v = self.next().await.expect("a push, not EOF");
            if v.get("event").is_some() {
                return v;
            }
        }
    }

    /// True if the server closed the connection (EOF) within the wait.
    pub async fn closed(&mut self) -> bool {
        loop {
            let mut line = String::new();
            match tokio::time::timeout(WAIT, self.rd.read_line(&mut line)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

pub type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A WebSocket client.
pub struct Ws {
    pub ws: WsStream,
    next_id: u64,
}

impl Ws {
    pub async fn connect(
        addr: std::net::SocketAddr,
        bearer: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{addr}/ws").into_client_request()?;
        if let Some(t) = bearer {
            req.headers_mut().insert("Authorization", format!("Bearer {t}").parse().expect("header"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Ws { ws, next_id: 0 })
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s)).await.expect("send");
    }

    pub async fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    /// The next text frame as JSON; `None` when closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next()).await.expect("message in time");
            match m {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(t.as_str()).expect("JSON")),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    }

    pub async fn call(&mut self, mut v: Value) -> Value {
        if v.get("id").is_none() {
            self.next_id += 1;
            v["id"] = json!(self.next_id);
        }
        let id = v["id"].clone();
        self.send(&v).await;
        loop {
            let r = self.next().await.expect("reply");
            if r.get("event").is_none() && r["id"] == id {
                return r;
            }
        }
    }

    pub async fn ok(&mut self, v: Value) -> Value {
        let r = self.call(v.clone()).await;
        assert_eq!(r["ok"], true, "{v} -> {r}");
        r["result"].clone()
    }
}

/// `GET path` over HTTP/1.1; returns the status code and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await.expect("in time").expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

pub fn sku(id: &str, stock: u64, limit: Option<u32>) -> Value {
    let mut v = json!({"op": "create_sku", "sku_id": id, "name": format!("SKU {id}"), "price": "59.90", "initial_stock": stock});
    if let Some(l) = limit {
        v["per_user_limit"] = json!(l);
    }
    v
}

/// The `order_id` of an order (or push) as the wire carries it: a string of digits (JavaScript
/// numbers cannot hold ids above 2^53), parsed.
pub fn order_id(v: &Value) -> u64 {
    let s = v["order_id"].as_str().unwrap_or_else(|| panic!("order_id is a string: {v}"));
    s.parse().unwrap_or_else(|_| panic!("order_id is decimal digits: {v}"))
}

pub fn order(user: &str, sku: &str, qty: u32, key: &str) -> Value {
    json!({"op": "create_order", "user_id": user, "items": [{"sku_id": sku, "qty": qty}], "idempotency_key": key})
}
