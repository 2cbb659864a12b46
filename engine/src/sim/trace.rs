//! The last steps of a run, kept in a ring as plain data (formatting every step would cost
//! more than the step) and printed when a check fails.

/// What one step did.
#[derive(Debug, Clone, Copy)]
pub(super) enum Did {
    /// A client request into a shard's mailbox.
    Request { shard: usize, kind: &'static str },
    /// A shard ran a batch: messages handled, events journaled.
    Batch { shard: usize, handled: usize, events: usize },
    /// The writer wrote a group commit of this many batches.
    Write { batches: usize },
    /// The writer synced this many written batches (their replies released).
    Sync { batches: usize },
    /// The clock moved to this time.
    Clock { now_ms: i64 },
    /// A snapshot, taken or failed.
    Snapshot { ok: bool },
    /// Power loss.
    Crash,
    /// Cluster mode: partition `shard` lost with its node (or moved), rebuilt from its log.
    PartitionCrash { shard: usize },
    /// A storage fault: the waiting batches failed, then fail-stop.
    Fault,
    /// Recovery finished and its checks passed.
    Recover,
}

/// Steps kept for a failure report.
const RECENT_STEPS: usize = 48;

/// A ring of the last [`RECENT_STEPS`] steps.
pub(super) struct Recent {
    ring: Vec<(u64, Did)>,
    next: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Self { ring: Vec::with_capacity(RECENT_STEPS), next: 0 }
    }
}

impl Recent {
    pub fn push(&mut self, step: u64, did: Did) {
        if self.ring.len() < RECENT_STEPS {
            self.ring.push((step, did));
        } else {
            self.ring[self.next] = (step, did);
        }
        self.next = (self.next + 1) % RECENT_STEPS;
    }

    /// The kept steps, oldest first, one line each.
    pub fn lines(&self) -> Vec<String> {
        let (newer, older) = self.ring.split_at(self.next.min(self.ring.len()));
        older.iter().chain(newer).map(|(step, did)| format!("step {step}: {}", describe(did))).collect()
    }
}

fn describe(did: &Did) -> String {
    match *did {
        Did::Request { shard, kind } => format!("client sends {kind} to shard {shard}"),
        Did::Batch { shard, handled, events } => {
            format!("shard {shard} runs a batch: {handled} messages, {events} events")
        }
        Did::Write { batches } => format!("writer writes a group of {batches} batches"),
        Did::Sync { batches } => format!("writer syncs {batches} batches (replies released)"),
        Did::Clock { now_ms } => format!("clock moves to {now_ms} ms"),
        Did::Snapshot { ok } => format!("snapshot {}", if ok { "taken" } else { "failed" }),
        Did::Crash => "crash (power loss)".to_string(),
        Did::PartitionCrash { shard } => format!("partition {shard} lost with its node; rebuilt from its log"),
        Did::Fault => "storage fault: waiting batches fail, fail-stop".to_string(),
        Did::Recover => "recovered, checks passed".to_string(),
    }
}
