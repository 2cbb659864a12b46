//! Process-wide settings the engine runs best with.

/// Turn off transparent huge pages (THP) for this process and the processes it starts, as
/// Redis does at startup (`disable-thp yes`, its default since 6.2: "latency and memory usage
/// issues with Redis").
///
/// Why: with THP set to `always`, every first touch of fresh heap memory faults in and zeroes a
/// whole 2 MiB page. The engine grows its heap by a few hundred bytes per live order, so a
/// flash sale spends its time in the kernel's `clear_page_erms`: on the 2-core test machine
/// that was 30% of all samples of `examples/memory_per_order` and 1.1 µs of CPU per order
/// (5.4 µs with THP, 4.3 µs without; issue 12). With 4 KiB pages the kernel zeroes only what is
/// used, in small steps that do not stall a shard.
///
/// Linux only (`prctl(PR_SET_THP_DISABLE)`, Linux 3.15+); elsewhere it does nothing and
/// returns `Ok(false)`. Returns `Ok(true)` when THP is now off for this process. An embedding
/// application calls it once at startup if it wants the same; `surge serve`, `surge bench` and
/// the examples call it unless `SURGE_KEEP_THP=1`.
///
/// ```
/// let _ = surge::process::disable_transparent_huge_pages();
/// ```
///
/// # Errors
/// The `prctl` call failed (the OS error).
pub fn disable_transparent_huge_pages() -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and touches no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(false)
    }
}

/// [`disable_transparent_huge_pages`] unless the environment says `SURGE_KEEP_THP=1`; a
/// failure is logged as a warning, never fatal. Returns whether THP is off.
pub fn disable_transparent_huge_pages_unless_kept() -> bool {
    if std::env::var("SURGE_KEEP_THP").is_ok_and(|v| v == "1") {
        return false;
    }
    match disable_transparent_huge_pages() {
        Ok(off) => off,
        Err(e) => {
            tracing::warn!(error = %e, "could not turn off transparent huge pages");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn thp_is_off_after_the_call() {
        assert!(super::disable_transparent_huge_pages().expect("prctl"));
        // SAFETY: PR_GET_THP_DISABLE takes no pointer.
        let state = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(state, 1);
    }
}
