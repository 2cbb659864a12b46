//! The simulator's dice: a seeded PRNG (splitmix64) and the fault rates it rolls against.

use std::io;

/// How often each storage fault happens, as a probability per operation in `0.0..=1.0`
/// (values outside are clamped). All zero by default: a perfect disk.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// A write (log append, archive put, meta put, trim, snapshot file) fails with an I/O
    /// error (`EIO`) and writes nothing.
    pub write_error: f64,
    /// A write fails with "no space left on device" (`ENOSPC`: the kind of OS error 28) and
    /// writes nothing.
    pub no_space: f64,
    /// An fsync (a log flush with `sync == true`, a snapshot file's fsync) fails; what was
    /// written stays unsynced (a later crash may lose it: PostgreSQL's "fsyncgate").
    pub fsync_error: f64,
    /// An operation takes [`FaultRates::latency_spike_us`] longer (simulated time only).
    pub latency_spike: f64,
    /// The extra simulated time of a latency spike, in microseconds.
    pub latency_spike_us: u64,
}

impl FaultRates {
    /// Every fault at `rate` (latency spikes of 50 ms): a convenience for simulations.
    ///
    /// ```
    /// let r = surge_persistence::sim::FaultRates::uniform(0.01);
    /// assert_eq!(r.fsync_error, 0.01);
    /// ```
    pub fn uniform(rate: f64) -> Self {
        Self { write_error: rate, no_space: rate, fsync_error: rate, latency_spike: rate, latency_spike_us: 50_000 }
    }
}

/// A small deterministic PRNG (splitmix64, Steele et al. 2014): the same seed gives the same
/// sequence on every platform, with no dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p` (clamped to `0.0..=1.0`); draws once whatever `p` is, so
    /// changing one rate does not shift the rest of the sequence.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        let x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p.clamp(0.0, 1.0)
    }

    /// Uniform in `0..n`; 0 when `n == 0`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }
}

/// The error a simulated write fault returns.
pub(crate) fn write_error(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error (EIO) on {what}"))
}

/// The error a simulated full disk returns.
pub(crate) fn no_space(what: &str) -> io::Error {
    // ENOSPC is 28 on Linux and macOS; its kind is `StorageFull` (named only from Rust 1.83, above
    // the workspace's MSRV).
    let kind = io::Error::from_raw_os_error(28).kind();
    io::Error::new(kind, format!("simulated no space left on device (ENOSPC) on {what}"))
}

/// The error a simulated failed fsync returns.
pub(crate) fn fsync_error(what: &str) -> io::Error {
    io::Error::other(format!("simulated fsync failure (EIO) on {what}"))
}
