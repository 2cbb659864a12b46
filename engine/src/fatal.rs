//! Fail-stop: what Surge does when an invariant breaks or storage fails.
//!
//! TigerBeetle's stance (`docs/TIGER_STYLE.md`: "assertions downgrade catastrophic correctness
//! bugs into liveness bugs") and PostgreSQL's after "fsyncgate" (a failed fsync PANICs the server
//! and recovery replays the log): a process that has seen its own state go wrong, or its log go
//! unwritten, must not keep answering. It ends, with one clear log line, and the next start's
//! recovery repairs from the durable log. A half-alive server (a dead shard thread behind a
//! `/ready` that says 200, sagas waiting forever on stock held elsewhere) is worse than a dead one.
//!
//! Input never reaches [`fail_stop`]: bad requests get typed errors. Only a broken *invariant*
//! (a bug) or a storage failure does.
//!
//! ```no_run
//! surge_engine::fatal::fail_stop("wal-writer", &"fsync failed: Input/output error");
//! ```

use std::fmt::Display;

/// Exit status of a fail-stop (`EX_SOFTWARE` from BSD's `sysexits.h`: an internal software
/// error). Supervisors (systemd, Kubernetes) restart the process; recovery then repairs.
pub const FAIL_STOP_EXIT_CODE: i32 = 70;

/// The fixed prefix of the fail-stop log line (operators and tests grep for it).
pub const FAIL_STOP_LOG_PREFIX: &str = "surge fail-stop";

/// End the process now: log `component` and `reason` at error level and on stderr (the line must
/// survive a logger that buffers), then exit with [`FAIL_STOP_EXIT_CODE`].
///
/// `std::process::exit` runs no destructors of other threads, so nothing half-done is flushed as
/// if it were whole; what is durable is what the log already holds.
pub fn fail_stop(component: &str, reason: &dyn Display) -> ! {
    tracing::error!(component, reason = %reason, "{FAIL_STOP_LOG_PREFIX}: {component}: {reason}; exiting for recovery");
    eprintln!("{FAIL_STOP_LOG_PREFIX}: {component}: {reason}; exiting for recovery");
    std::process::exit(FAIL_STOP_EXIT_CODE)
}

/// Run `body` (a thread's whole life); if it panics, [`fail_stop`] with the panic's message.
///
/// Every long-lived engine thread (shards, the WAL writer, the snapshotter) runs under this, so a
/// panic anywhere in them ends the process instead of leaving it half alive.
pub fn run_or_fail_stop<T>(component: &str, body: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-string payload".to_owned());
            fail_stop(component, &format_args!("panicked: {msg}"))
        }
    }
}
