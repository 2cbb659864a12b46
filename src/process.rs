//! Process-wide settings the engine runs best with.

/// What the process does with transparent huge pages (THP): the kernel's 2 MiB pages for
/// anonymous memory. `SURGE_THP` chooses (`advised`, `off`, `system`); see
/// [`apply_huge_page_policy_from_env`].
///
/// Why it matters (issue 12, `examples/memory_per_order`, 1 M orders on the 2-core machine):
/// the engine's hot path is a handful of random accesses into million-entry hash tables. With
/// 4 KiB pages nearly each one also misses the TLB, and under a hypervisor a TLB miss walks two
/// page tables. With the heap on huge pages CPU per order fell from 3.4 to 2.7 µs (medians of
/// 3). The cost: memory is faulted in 2 MiB at a time, so a process whose memory is fragmented
/// pays for compaction on its first run (4.5 µs per order on the first run after other work,
/// then 2.7 µs), and memory per live order is about 20 bytes higher (a partly used last page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugePagePolicy {
    /// Huge pages only where the allocator asks for them with `madvise(MADV_HUGEPAGE)`: the
    /// heap's arenas (mimalloc advises them), not thread stacks or other mappings. The default.
    /// `prctl(PR_SET_THP_DISABLE, 1, PR_THP_DISABLE_EXCEPT_ADVISED)`, Linux 6.18+; on older
    /// kernels the call is refused and the system's setting stays.
    Advised,
    /// No huge pages for this process and the processes it starts, as Redis does at startup
    /// (`disable-thp yes`: "latency and memory usage issues"). `prctl(PR_SET_THP_DISABLE)`,
    /// Linux 3.15+.
    Off,
    /// Leave the system's setting (`/sys/kernel/mm/transparent_hugepage/enabled`) alone.
    System,
}

impl std::str::FromStr for HugePagePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "advised" => Ok(Self::Advised),
            "off" => Ok(Self::Off),
            "system" => Ok(Self::System),
            other => Err(format!("SURGE_THP must be advised, off or system, not {other:?}")),
        }
    }
}

/// `PR_THP_DISABLE_EXCEPT_ADVISED` (Linux 6.18, `include/uapi/linux/prctl.h`; not yet in
/// `libc`).
#[cfg(target_os = "linux")]
const PR_THP_DISABLE_EXCEPT_ADVISED: libc::c_ulong = 1 << 1;

/// Apply `policy` to this process (inherited by the processes it starts).
///
/// Returns `Ok(true)` when the process's THP setting was changed, `Ok(false)` when there was
/// nothing to do (`System`, or not Linux).
///
/// ```
/// use surge::process::{apply_huge_page_policy, HugePagePolicy};
/// let _ = apply_huge_page_policy(HugePagePolicy::Advised);
/// ```
///
/// # Errors
/// The `prctl` call failed (the OS error; `EINVAL` for `Advised` before Linux 6.18).
pub fn apply_huge_page_policy(policy: HugePagePolicy) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        let flags = match policy {
            HugePagePolicy::System => return Ok(false),
            HugePagePolicy::Off => 0,
            HugePagePolicy::Advised => PR_THP_DISABLE_EXCEPT_ADVISED,
        };
        // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and touches no memory of ours.
        let rc = unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, flags, 0 as libc::c_ulong, 0 as libc::c_ulong)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = policy;
        Ok(false)
    }
}

/// [`apply_huge_page_policy`] with the policy `SURGE_THP` names (`advised` when unset); a bad
/// value or a failed call is logged as a warning, never fatal. `surge serve`, `surge bench`
/// and the examples call it first thing. Returns the policy in force.
pub fn apply_huge_page_policy_from_env() -> HugePagePolicy {
    let policy = match std::env::var("SURGE_THP") {
        Err(_) => HugePagePolicy::Advised,
        Ok(v) => v.parse().unwrap_or_else(|e: String| {
            tracing::warn!(error = %e, "using the default, advised");
            HugePagePolicy::Advised
        }),
    };
    match apply_huge_page_policy(policy) {
        Ok(_) => policy,
        Err(e) => {
            tracing::warn!(error = %e, ?policy, "could not set the transparent huge page policy; the system's stays");
            HugePagePolicy::System
        }
    }
}

/// Heap bytes to fault in per expected live order for the engine alone (an embedder, the
/// in-process bench, `examples/memory_per_order`): issue 12's bound on memory per live pending
/// order (a live order measures ~610 bytes there).
pub const PREFAULT_BYTES_PER_ORDER: u64 = 640;

/// Heap bytes to fault in per expected live order for `surge serve`. The server holds more
/// per order than the engine alone (sled's page cache of the log, up to 128 MiB, and the
/// gateway's buffers): measured at 840 bytes per order without any prefault (hot-sku `sync`,
/// 1.23 M orders, VmRSS 79 MB → 1,091 MB). With 640 bytes the heap outgrew the faulted memory
/// during a 10 s sale, and zeroing the fresh huge pages took 9% of the server's CPU (issue 13,
/// session 9: `clear_page_erms` under the gateway thread's allocations). Freed prefault pages
/// are not all reused at their size either, hence the headroom.
pub const SERVE_PREFAULT_BYTES_PER_ORDER: u64 = 1024;

/// Heap bytes to fault in per expected live order for `surge bench --target in-process`: the
/// engine's orders plus what the load generator's lanes hold and churn (requests built on one
/// thread and freed on a shard's). Measured at ~800 bytes per order without any prefault
/// (hot-sku `none`, 32 lanes × batch 256, 1.73 M orders, peak RSS 1.38 GB). With the engine's
/// 640 the run outgrew the faulted memory: the kernel's zeroing of fresh huge pages was 14% of
/// the hot SKU's shard and half of the generator's thread (issue 12, session 13), and three
/// alternated pairs gave 2.56, 2.45, 2.30 µs of CPU per order with 1024 against 3.04, 2.69,
/// 2.28 with 640.
pub const BENCH_PREFAULT_BYTES_PER_ORDER: u64 = 1024;

/// Blocks [`prefault_heap`] touches: small enough that the allocator carves them from its arenas
/// (and later serves other sizes from the same memory), not from a mapping of their own that a
/// free would unmap.
const PREFAULT_BLOCK_BYTES: usize = 32 << 10;

/// Fault in `size_bytes` of heap now, so that growing to it later takes no page faults: the
/// memory is allocated, one byte per 4 KiB page written, and freed back to the allocator, which
/// is told never to return freed memory to the OS (mimalloc's `purge_delay = -1`). Returns the
/// bytes faulted in (rounded up to whole blocks).
///
/// Why (issue 12): a process that grows to a million orders faults in ~600 MB while it serves,
/// and the kernel's zeroing of those pages (`clear_page_erms`, slower still under a hypervisor
/// backing fresh guest memory) was about a quarter of the CPU per created order. Done at start,
/// that cost moves out of the sale, as TigerBeetle allocates all its memory at startup. The
/// price: the process's resident memory is `size_bytes` from the start, and memory freed later
/// stays with the process (Redis's allocator keeps freed memory too, until `MEMORY PURGE`).
///
/// ```
/// let faulted = surge::process::prefault_heap(1 << 20);
/// assert!(faulted >= 1 << 20);
/// ```
pub fn prefault_heap(size_bytes: u64) -> u64 {
    // SAFETY: sets an allocator option (a plain integer); valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let blocks = size_bytes.div_ceil(PREFAULT_BLOCK_BYTES as u64) as usize;
    let mut held: Vec<*mut u8> = Vec::with_capacity(blocks);
    for _ in 0..blocks {
        // Straight from mimalloc (the global allocator of `surge` and the examples), whatever
        // the caller's global allocator is.
        // SAFETY: a plain allocation; a null result (out of memory) is checked before use.
        let block = unsafe { libmimalloc_sys::mi_malloc(PREFAULT_BLOCK_BYTES) }.cast::<u8>();
        if block.is_null() {
            break;
        }
        for offset in (0..PREFAULT_BLOCK_BYTES).step_by(4096) {
            // SAFETY: `offset < PREFAULT_BLOCK_BYTES`, inside the block just allocated.
            unsafe { block.add(offset).write_volatile(1) };
        }
        held.push(block);
    }
    let faulted = held.len() * PREFAULT_BLOCK_BYTES;
    for block in held {
        // SAFETY: each pointer came from `mi_malloc` above and is freed exactly once.
        unsafe { libmimalloc_sys::mi_free(block.cast()) };
    }
    // Hand the now empty pages back to the arenas (purging nothing: see above), where any
    // thread's allocation of any size can take them.
    // SAFETY: walks mimalloc's own free lists.
    unsafe { libmimalloc_sys::mi_collect(true) };
    faulted as u64
}

/// [`prefault_heap`] for `live_orders_expected` orders of `bytes_per_order` each
/// ([`PREFAULT_BYTES_PER_ORDER`] for the engine alone, [`SERVE_PREFAULT_BYTES_PER_ORDER`] for
/// `surge serve`, [`BENCH_PREFAULT_BYTES_PER_ORDER`] for the in-process bench); nothing for 0.
/// `surge serve`, `surge bench --target in-process` and `examples/memory_per_order --presize`
/// call it before the engine starts, so the engine's presized tables come from the faulted
/// memory too. Returns the bytes faulted in.
pub fn prefault_heap_for_orders(live_orders_expected: u64, bytes_per_order: u64) -> u64 {
    if live_orders_expected == 0 {
        return 0;
    }
    let started = std::time::Instant::now();
    let bytes = prefault_heap(live_orders_expected.saturating_mul(bytes_per_order));
    tracing::info!(live_orders_expected, bytes, elapsed_ms = started.elapsed().as_millis() as u64, "heap faulted in");
    bytes
}

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`, v3: the 16th option; -1 = never purge).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[cfg(test)]
mod tests {
    use super::{apply_huge_page_policy, HugePagePolicy};

    fn thp_disable_state() -> i32 {
        // SAFETY: PR_GET_THP_DISABLE takes no pointer.
        unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn each_policy_sets_the_process_state() {
        assert!(apply_huge_page_policy(HugePagePolicy::Off).expect("prctl"));
        assert_eq!(thp_disable_state(), 1);
        // Before Linux 6.18 the kernel refuses the flag: nothing to check there.
        if apply_huge_page_policy(HugePagePolicy::Advised).is_ok() {
            assert_eq!(thp_disable_state(), 3, "disabled, except where advised");
        }
        assert!(!apply_huge_page_policy(HugePagePolicy::System).expect("no call"));
    }

    #[test]
    fn prefaulted_memory_stays_with_the_process() {
        fn rss_bytes() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            kib.unwrap_or(0) * 1024
        }
        assert_eq!(super::prefault_heap_for_orders(0, super::PREFAULT_BYTES_PER_ORDER), 0);
        let before = rss_bytes();
        let faulted = super::prefault_heap(64 << 20);
        assert!(faulted >= 64 << 20);
        // The blocks came from mimalloc, freed, and stay resident (never purged).
        if cfg!(target_os = "linux") {
            let grown = rss_bytes().saturating_sub(before);
            assert!(grown >= 48 << 20, "only {grown} bytes stayed resident");
        }
    }

    #[test]
    fn policies_parse_by_name() {
        assert_eq!("advised".parse(), Ok(HugePagePolicy::Advised));
        assert_eq!("off".parse(), Ok(HugePagePolicy::Off));
        assert_eq!("system".parse(), Ok(HugePagePolicy::System));
        assert!("on".parse::<HugePagePolicy>().is_err());
    }
}
