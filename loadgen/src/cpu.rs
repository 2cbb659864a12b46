//! CPU time of this process, for a run's CPU per request.
//!
//! In-process, the engine's shard threads and the load generator share the process, so the
//! figure is the engine and its caller together (what an embedding application pays per
//! order); against a server, it is the load generator's own cost (issue 13: at most 2 µs of
//! its own CPU per request). Measured with `getrusage(RUSAGE_SELF)`: user plus system time of
//! every thread, to the microsecond.

/// User + system CPU time of the whole process so far, in seconds; `None` where the platform
/// does not say (`getrusage` failed).
///
/// ```
/// let before = surge_loadgen::cpu::process_cpu_s().unwrap();
/// let mut x = 0u64;
/// for i in 0..1_000_000u64 { x = x.wrapping_add(std::hint::black_box(i)); }
/// assert!(surge_loadgen::cpu::process_cpu_s().unwrap() >= before);
/// # let _ = x;
/// ```
pub fn process_cpu_s() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; RUSAGE_SELF takes no other pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `getrusage` returned 0, so it filled the struct (and it was zeroed before).
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(usage.ru_utime) + secs(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_busy_thread_shows_in_the_process_time() {
        let before = super::process_cpu_s().expect("getrusage");
        let busy = std::thread::spawn(|| {
            let started = std::time::Instant::now();
            let mut x = 0u64;
            while started.elapsed() < std::time::Duration::from_millis(50) {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            x
        });
        let _ = busy.join();
        let used = super::process_cpu_s().expect("getrusage") - before;
        // 50 ms of spinning on another thread; the kernel's accounting may lag by a tick.
        assert!(used >= 0.03, "only {used} s of CPU seen");
    }
}
