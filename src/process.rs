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
    fn policies_parse_by_name() {
        assert_eq!("advised".parse(), Ok(HugePagePolicy::Advised));
        assert_eq!("off".parse(), Ok(HugePagePolicy::Off));
        assert_eq!("system".parse(), Ok(HugePagePolicy::System));
        assert!("on".parse::<HugePagePolicy>().is_err());
    }
}
