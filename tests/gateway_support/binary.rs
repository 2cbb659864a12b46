//! The real `surge serve` binary as a child process, and a TCP client that survives its
//! `kill -9` (the events and cluster end-to-end tests).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::{http_get, order, ADMIN, SERVICE};

/// A `surge serve` child process on free loopback ports; killed (SIGKILL) on drop.
pub struct Serve {
    pub child: Child,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
}

impl Serve {
    /// Spawn `surge serve` on `data_dir` with `args` and `envs` (tokens [`ADMIN`], [`SERVICE`]).
    pub fn spawn(data_dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_surge"))
            .args(["serve", "--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("SURGE_ADMIN_TOKEN", ADMIN)
            .env("SURGE_SERVICE_TOKEN", SERVICE)
            .env("SURGE_CONFIG", concat!(env!("CARGO_MANIFEST_DIR"), "/config/surge.toml"))
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("SURGE_TEST_STDERR").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("spawn surge serve")
    }

    /// Spawn and wait until it serves (it prints its addresses then).
    pub fn start(data_dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::serving(Self::spawn(data_dir, args, envs))
    }

    /// Wait until `child` serves: read its addresses from its stdout.
    pub fn serving(mut child: Child) -> Self {
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut tcp, mut http) = (None, None);
        for line in lines.by_ref() {
            let line = line.expect("read stdout");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first() {
                Some(&"tcp") => tcp = words.get(1).and_then(|a| a.parse().ok()),
                Some(&"http") => {
                    http = words.get(1).and_then(|u| u.strip_prefix("http://")?.strip_suffix("/health")?.parse().ok());
                }
                _ => {}
            }
            if line.contains("tokens") {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, tcp: tcp.expect("tcp address"), http: http.expect("http address") }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `/ready`'s `events`, once the publisher is connected and caught up (lag 0, cursor at
    /// the durable LSN).
    pub async fn caught_up(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = http_get(self.http, "/ready").await;
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let e = &v["events"];
            if e["connected"] == true && e["lag_events"] == 0 && e["cursor"] == e["durable_lsn"] {
                return e.clone();
            }
            assert!(Instant::now() < deadline, "the event stream did not catch up: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A TCP client that tolerates the server dying: `None` once the connection is gone.
pub struct Client {
    rd: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    pub async fn login(addr: SocketAddr, token: &str) -> Self {
        let (rd, wr) = tokio::net::TcpStream::connect(addr).await.expect("connect").into_split();
        let mut c = Self { rd: tokio::io::BufReader::new(rd), wr };
        let r = c.call(json!({"op": "auth", "token": token})).await.expect("auth reply");
        assert_eq!(r["ok"], true, "{r}");
        c
    }

    pub async fn call(&mut self, v: Value) -> Option<Value> {
        let mut line = serde_json::to_string(&v).ok()?;
        line.push('\n');
        self.wr.write_all(line.as_bytes()).await.ok()?;
        let mut reply = String::new();
        match tokio::time::timeout(Duration::from_secs(20), self.rd.read_line(&mut reply)).await {
            Ok(Ok(n)) if n > 0 => serde_json::from_str(&reply).ok(),
            _ => None,
        }
    }

    /// `v`, sent again with the same idempotency key or payment id while the answer is
    /// `unavailable` (a cluster's partition moving) or no answer comes (a node died with the
    /// request), as a client of a cluster must: up to `limit`. `None` if never answered.
    pub async fn call_retrying(&mut self, v: Value, limit: Duration) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.call(v.clone()).await;
            let retry_ms = match &r {
                Some(r) if r["error"]["code"] == "unavailable" => r["error"]["retry_after_ms"].as_u64().unwrap_or(100),
                Some(r) => return Some(r.clone()),
                None => 100,
            };
            if Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(retry_ms)).await;
        }
    }

    /// `create_order` then `pay`: the acknowledged (order id, statuses) in order.
    pub async fn buy(&mut self, user: &str, key: &str, pay: bool) -> Option<(String, Vec<&'static str>)> {
        let r = self.call(order(user, "tee", 1, key)).await?;
        assert_eq!(r["ok"], true, "{r}");
        let (id, total) = (r["result"]["order_id"].as_str()?.to_string(), r["result"]["total"].clone());
        let mut acked = vec!["created"];
        if pay {
            let p = json!({"op": "pay", "order_id": id, "payment_id": format!("psp-{key}"), "amount": total});
            match self.call(p).await {
                Some(r) if r["ok"] == true => acked.push("paid"),
                Some(r) => panic!("pay refused: {r}"),
                None => return Some((id, acked)),
            }
        }
        Some((id, acked))
    }
}
