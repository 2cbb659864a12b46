//! Latency over time: the p99 of each second of the run, so that a stall (a map resize, a slow
//! fsync, a snapshot) shows where it happened instead of vanishing into the whole run's
//! percentiles (issue 12: "a latency-over-time view, so that stalls are visible").
//!
//! Each lane keeps, per second of the run (by the request's send or due time), a coarse
//! log-scale histogram: bucket `b` counts latencies in `[2^(b/4), 2^((b+1)/4))` µs, so a bucket
//! is at most 19% wide. A full HdrHistogram per lane and second would cost megabytes per lane;
//! this costs 400 bytes per lane and second, and a p99 read to within 19% is enough to see a
//! stall.

/// Buckets per second: `2^(100/4)` µs is 33 s, above the longest latency recorded.
const BUCKETS: usize = 100;
/// Seconds tracked; later requests count toward the last one.
pub(crate) const SECONDS_MAX: usize = 3_600;

/// Per-second log-scale latency histograms of one lane (or, merged, of a run).
#[derive(Debug, Default, Clone)]
pub(crate) struct Timeline {
    seconds: Vec<[u32; BUCKETS]>,
}

fn bucket(latency_us: u64) -> usize {
    ((latency_us.max(1) as f64).log2() * 4.0) as usize
}

/// The upper bound of bucket `b`, µs.
fn upper_us(b: usize) -> u64 {
    2f64.powf((b + 1) as f64 / 4.0).ceil() as u64
}

impl Timeline {
    /// Count one latency in second `second` of the run.
    pub fn record(&mut self, second: u64, latency_us: u64) {
        let s = (second as usize).min(SECONDS_MAX - 1);
        if self.seconds.len() <= s {
            self.seconds.resize(s + 1, [0; BUCKETS]);
        }
        self.seconds[s][bucket(latency_us).min(BUCKETS - 1)] += 1;
    }

    /// Add another lane's counts.
    pub fn merge(&mut self, other: &Timeline) {
        if self.seconds.len() < other.seconds.len() {
            self.seconds.resize(other.seconds.len(), [0; BUCKETS]);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
    }

    /// The p99 of each second, µs (the upper bound of the bucket that holds it; 0 for a second
    /// without requests).
    pub fn p99_per_second_us(&self) -> Vec<u64> {
        self.seconds
            .iter()
            .map(|counts| {
                let total: u64 = counts.iter().map(|c| u64::from(*c)).sum();
                if total == 0 {
                    return 0;
                }
                // The smallest bucket with at least 99% of the second's requests at or below it.
                let want = total - total / 100;
                let mut seen = 0u64;
                for (b, c) in counts.iter().enumerate() {
                    seen += u64::from(*c);
                    if seen >= want {
                        return upper_us(b);
                    }
                }
                upper_us(BUCKETS - 1)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_shows_in_its_own_second_only() {
        let mut lane_a = Timeline::default();
        let mut lane_b = Timeline::default();
        for _ in 0..1_000 {
            lane_a.record(0, 1_000);
            lane_b.record(2, 1_000);
        }
        // Second 1: 1 000 fast requests and 50 that waited out a 400 ms stall.
        for _ in 0..1_000 {
            lane_a.record(1, 1_000);
        }
        for _ in 0..50 {
            lane_b.record(1, 400_000);
        }
        lane_a.merge(&lane_b);
        let p99 = lane_a.p99_per_second_us();
        assert_eq!(p99.len(), 3);
        assert!((1_000..=1_190).contains(&p99[0]), "{p99:?}");
        assert!((400_000..=476_000).contains(&p99[1]), "the stalled second: {p99:?}");
        assert!((1_000..=1_190).contains(&p99[2]), "{p99:?}");
    }

    #[test]
    fn empty_seconds_read_zero_and_late_seconds_are_capped() {
        let mut t = Timeline::default();
        t.record(2, 5);
        t.record(u64::MAX, 5);
        let p99 = t.p99_per_second_us();
        assert_eq!(&p99[..2], &[0, 0]);
        assert_eq!(p99.len(), SECONDS_MAX);
        assert!(p99[SECONDS_MAX - 1] >= 5);
    }
}
