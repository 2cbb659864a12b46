//! `surge bench` against the peers of `benches/compare/run.sh`, started by the test on loopback:
//!
//! * Redis (`redis-server` from PATH, no persistence, a temporary `--dir`): the Lua stock
//!   script sells exactly the stock in a flash sale, every other buyer is told `sold_out`, the
//!   verification passes, and a second run (fresh run id, a new key) re-sets the stock and
//!   passes again; the server's own keys are checked independently.
//! * PostgreSQL (Debian's `/usr/lib/postgresql/*/bin`, else `initdb`/`postgres` on PATH; run
//!   as the `postgres` user when the tests run as root): a throw-away cluster in a temporary
//!   directory, trust auth, loopback on a free port (never the packaged cluster's 5432); the
//!   conditional `UPDATE` sells exactly the stock, twice; the table is checked with `psql`.
//!
//! A missing binary skips the test with a loud message on stderr, unless
//! `SURGE_REQUIRE_PEERS=1`, which makes it a failure (CI installs the packages and sets it).
//! Every server is killed and its directory removed when the test ends, also on panic.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use surge_loadgen::{BenchArgs, Report, Scenario};

const USERS: u64 = 1_000;
const STOCK: u64 = 25;
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// `true` (go ahead) when the peer is there; otherwise fail under `SURGE_REQUIRE_PEERS=1`, or
/// say loudly that the test is skipped.
fn require(found: bool, what: &str) -> bool {
    if found {
        return true;
    }
    if std::env::var("SURGE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
        panic!("{what} not installed, and SURGE_REQUIRE_PEERS=1 requires it");
    }
    eprintln!();
    eprintln!("************************************************************************");
    eprintln!("** skipped: {what} not installed (set SURGE_REQUIRE_PEERS=1 to require)");
    eprintln!("************************************************************************");
    false
}

/// An executable named `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A loopback port that was free a moment ago (the server start is retried if it is taken).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn flash_sale(target: &str) -> Report {
    let mut args = BenchArgs::new(Scenario::FlashSale, target);
    args.users = Some(USERS);
    args.stock = STOCK;
    args.connections = 4;
    args.pipeline = 4;
    args.quiet = true;
    surge_loadgen::run(&args).unwrap_or_else(|e| panic!("flash-sale against {target}: {e}"))
}

fn assert_flash_sale(r: &Report, kind: &str) {
    assert_eq!(r.target_kind, kind);
    assert_eq!(r.requests, USERS, "{r:?}");
    assert_eq!(r.ok, STOCK, "exactly the stock is sold: {r:?}");
    assert_eq!(r.errors.get("sold_out").copied(), Some(USERS - STOCK), "{:?}", r.errors);
    assert_eq!(r.errors.len(), 1, "only sold_out: {:?}", r.errors);
    assert!(r.first_failure.is_none(), "{:?}", r.first_failure);
    let v = r.verify.as_ref().expect("verify");
    assert!(v.passed, "verify: {v:?}");
    assert_eq!((v.stock, v.orders_ok, v.units_ok), (STOCK, STOCK, STOCK), "{v:?}");
    assert_eq!((v.oversold, v.remaining_stock), (0, 0), "{v:?}");
    assert_eq!(v.held, 0, "peers keep no reserved/sold counter");
    assert_eq!((v.audit_passed, v.expired_seen), (None, None));
    let l = r.latency_us;
    assert!(l.p50 > 0 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, "{l:?}");
}

/// A child process that is stopped on drop: first `signal`, then SIGKILL after a grace period.
struct ServerProcess {
    child: Child,
    name: &'static str,
    signal: libc::c_int,
}

impl ServerProcess {
    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)) | Err(_))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.exited() {
            return;
        }
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, self.signal) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on signal {}: killing it", self.name, self.signal);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// One request in RESP, one reply line (enough for `+PONG`, `:n` and short bulk strings).
fn redis_call(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    // A bulk string is "$len\r\nbody\r\n": read two lines for it, one otherwise.
    let mut lines_left = 1;
    while lines_left > 0 {
        if s.read(&mut byte)? == 0 {
            break;
        }
        buf.push(byte[0]);
        if buf.ends_with(b"\r\n") {
            if buf.first() == Some(&b'$') && lines_left == 1 && buf.iter().filter(|&&b| b == b'\n').count() == 1 {
                lines_left = 2;
            }
            lines_left -= 1;
        }
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_owned())
}

/// A `redis-server` on a free loopback port, without persistence, in its own directory.
struct Redis {
    port: u16,
    // Declared first: dropped (stopped) before the directory is removed.
    _process: ServerProcess,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start(bin: &Path) -> Redis {
        let dir = tempfile::Builder::new().prefix("surge-test-redis-").tempdir().unwrap();
        for _attempt in 0..3 {
            let port = free_port();
            let child = Command::new(bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--protected-mode", "yes"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path())
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let mut process = ServerProcess { child, name: "redis-server", signal: libc::SIGKILL };
            let started = Instant::now();
            while started.elapsed() < START_TIMEOUT && !process.exited() {
                if redis_call(port, &["PING"]).is_ok_and(|r| r == "+PONG") {
                    return Redis { port, _process: process, _dir: dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Exited (port taken since we looked?) or never answered: try another port.
        }
        panic!("redis-server did not start on loopback");
    }
}

#[test]
fn flash_sale_against_redis_sells_exactly_the_stock_twice() {
    let bin = on_path("redis-server");
    if !require(bin.is_some(), "redis-server") {
        return;
    }
    let redis = Redis::start(&bin.unwrap());
    let target = format!("redis://127.0.0.1:{}", redis.port);

    let first = flash_sale(&target);
    assert_flash_sale(&first, "redis");
    // Runs against the same server use fresh keys, with the stock set again.
    std::thread::sleep(Duration::from_millis(2)); // run ids are milliseconds
    let second = flash_sale(&target);
    assert_flash_sale(&second, "redis");

    // Redis itself: two stock keys (one per run), both at 0.
    let keys = redis_call(
        redis.port,
        &[
            "EVAL",
            "local ks = redis.call('KEYS', 'surge_bench:stock:*') local s = 0 \
             for _, k in ipairs(ks) do s = s + tonumber(redis.call('GET', k)) end \
             return #ks .. ':' .. s",
            "0",
        ],
    )
    .expect("EVAL");
    assert!(keys.ends_with("\r\n2:0"), "two stock keys left at 0 units: {keys:?}");

    // The full-order script (idempotency key, per-user count, order hash, deadline): the same
    // sale, and Redis holds one order hash per unit sold.
    std::thread::sleep(Duration::from_millis(2));
    let mut args = BenchArgs::new(Scenario::FlashSale, &target);
    args.users = Some(USERS);
    args.stock = STOCK;
    args.connections = 4;
    args.pipeline = 4;
    args.quiet = true;
    args.redis_script = surge_loadgen::RedisScript::FullOrder;
    let full = surge_loadgen::run(&args).expect("flash-sale with the full-order script");
    assert_flash_sale(&full, "redis");
    let orders =
        redis_call(redis.port, &["EVAL", "return tostring(#redis.call('KEYS', 'order:[0-9]*'))", "0"]).expect("EVAL");
    assert!(orders.ends_with(&format!("\r\n{STOCK}")), "one order hash per unit: {orders:?}");
}

#[test]
fn redis_connection_refused_is_a_connect_error() {
    // Needs no server: nothing listens on a port that was just free.
    let mut args = BenchArgs::new(Scenario::FlashSale, &format!("redis://127.0.0.1:{}", free_port()));
    args.connections = 1;
    args.users = Some(10);
    args.quiet = true;
    match surge_loadgen::run(&args) {
        Err(surge_loadgen::LoadgenError::Connect { .. }) => {}
        other => panic!("expected a Connect error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// `initdb`, `postgres` and `psql` of one installation.
struct PgBin {
    dir: PathBuf,
}

impl PgBin {
    /// Debian's newest `/usr/lib/postgresql/<major>/bin`, else the directory of `postgres` on
    /// PATH (it must also hold `initdb` and `psql`).
    fn find() -> Option<PgBin> {
        let complete = |d: &Path| ["initdb", "postgres", "psql"].iter().all(|b| is_executable(&d.join(b)));
        let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
            .filter(|(_, d)| complete(d))
            .collect();
        debian.sort();
        if let Some((_, dir)) = debian.pop() {
            return Some(PgBin { dir });
        }
        let dir = on_path("postgres")?.parent()?.to_path_buf();
        complete(&dir).then_some(PgBin { dir })
    }

    fn cmd(&self, name: &str, as_user: Option<(u32, u32)>) -> Command {
        let mut c = Command::new(self.dir.join(name));
        if let Some((uid, gid)) = as_user {
            c.uid(uid).gid(gid);
        }
        c.stdin(Stdio::null());
        c
    }
}

/// PostgreSQL refuses to run as root: as root, run it as the `postgres` user (uid, gid).
/// `Err` when that user does not exist.
fn pg_user() -> Result<Option<(u32, u32)>, ()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: a NUL-terminated name; the returned record is read at once (tests do not call
    // getpw* concurrently).
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if pw.is_null() {
        return Err(());
    }
    // SAFETY: non-null result of getpwnam.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

/// A throw-away cluster: `initdb` in a temporary directory, `postgres` on a free loopback port.
struct Postgres {
    port: u16,
    bin: PgBin,
    user: Option<(u32, u32)>,
    // Declared before the directory: stopped first.
    _process: ServerProcess,
    dir: tempfile::TempDir,
}

impl Postgres {
    fn start(bin: PgBin, user: Option<(u32, u32)>) -> Postgres {
        let dir = tempfile::Builder::new().prefix("surge-test-pg-").tempdir().unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the temp dir to postgres");
        }
        let data = dir.path().join("data");
        let out = bin
            .cmd("initdb", user)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .current_dir(dir.path())
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));

        for _attempt in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
            let child = bin
                .cmd("postgres", user)
                .arg("-D")
                .arg(&data)
                .args(["-c", "listen_addresses=127.0.0.1", "-c", &format!("port={port}")])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", dir.path().display()))
                // A test cluster: nothing here needs to survive a crash.
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                .args(["-c", "max_connections=20", "-c", "shared_buffers=16MB"])
                .current_dir(dir.path())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn postgres");
            // SIGQUIT: immediate shutdown (the postmaster takes its backends with it).
            let mut process = ServerProcess { child, name: "postgres", signal: libc::SIGQUIT };
            let started = Instant::now();
            while started.elapsed() < START_TIMEOUT && !process.exited() {
                if pg_ready(&data) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Postgres { port, bin, user, _process: process, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!(
                "postgres did not come up on port {port}: {}",
                std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
            );
        }
        panic!("postgres did not start on loopback");
    }

    /// One query through `psql` over TCP, unaligned and tuples only.
    fn psql(&self, sql: &str) -> String {
        let out = self
            .bin
            .cmd("psql", self.user)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-v", "ON_ERROR_STOP=1", "-qAtX", "-c", sql])
            .current_dir(self.dir.path())
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// The postmaster writes `ready` as the status line of `postmaster.pid` once it accepts
/// connections.
fn pg_ready(data: &Path) -> bool {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .is_ok_and(|s| s.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
}

#[test]
fn flash_sale_against_postgres_sells_exactly_the_stock_twice() {
    let bin = PgBin::find();
    if !require(bin.is_some(), "PostgreSQL (initdb, postgres, psql)") {
        return;
    }
    let user = pg_user();
    if !require(user.is_ok(), "the 'postgres' user (PostgreSQL refuses to run as root)") {
        return;
    }
    let pg = Postgres::start(bin.unwrap(), user.unwrap());
    let target = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);

    let first = flash_sale(&target);
    assert_flash_sale(&first, "postgres");
    std::thread::sleep(Duration::from_millis(2)); // run ids are milliseconds
    let second = flash_sale(&target);
    assert_flash_sale(&second, "postgres");

    // PostgreSQL itself: one row per run, both at 0, and the CHECK was never needed.
    assert_eq!(pg.psql("SELECT count(*), sum(stock) FROM surge_bench_stock"), "2|0");
    assert_eq!(pg.psql("SELECT count(*) FROM surge_bench_stock WHERE id LIKE 'bench-%-0'"), "2");
}
