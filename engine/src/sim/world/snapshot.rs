//! Snapshots in a simulated run: captured between batches, written once what they hold is
//! durable.

use super::{Bug, Did, Sim};
use crate::state::EngineState;

/// A snapshot captured between batches, waiting to be written.
pub(super) struct WaitingSnapshot {
    /// The shards' cuts (sharing chunks with the live state, as in production).
    cuts: Vec<crate::shard::ShardCut>,
    /// Their journal positions.
    positions: Vec<u64>,
    /// Write the file once this many batches are synced (`holds_through`, unless a planted bug
    /// says otherwise).
    pub(super) write_after: u64,
    /// Batches submitted before the capture: the cut holds their changes.
    holds_through: u64,
}

impl Sim {
    /// Capture every shard's state with its journal position as the cut (between batches, so
    /// they agree, as the production runtime's flush-then-capture). The file is written once
    /// every batch submitted before the capture is durable (`Engine::wait_durable`).
    pub(super) fn snapshot(&mut self) -> Result<(), String> {
        if self.snapshot_waiting.is_some() {
            return Ok(());
        }
        let cuts = self.cores.iter().map(|core| core.cut()).collect();
        let holds_through = self.submitted_total;
        let write_after = if self.bug == Bug::SnapshotBeforeDurable { 0 } else { holds_through };
        self.snapshot_waiting =
            Some(WaitingSnapshot { cuts, positions: self.positions.clone(), write_after, holds_through });
        if write_after <= self.synced_total {
            self.write_snapshot()?;
        }
        Ok(())
    }

    /// Write the waiting snapshot. The invariant is checked here, where it can break, not left
    /// to a crash that happens to land in the window: a snapshot file holds only durable changes
    /// (a batch submitted before the capture and lost in a crash would otherwise survive in the
    /// snapshot, and an archived order, dropped from memory before its archive entry was durable,
    /// would be lost; the bug this simulator found).
    pub(super) fn write_snapshot(&mut self) -> Result<(), String> {
        let Some(waiting) = self.snapshot_waiting.take() else { return Ok(()) };
        if waiting.holds_through > self.synced_total {
            return Err(format!(
                "a snapshot was written holding batches not yet durable: {} submitted before its capture, {} synced",
                waiting.holds_through, self.synced_total
            ));
        }
        let WaitingSnapshot { cuts: shard_cuts, positions: cuts, .. } = waiting;
        // Built now, after the shards went on: the cut must still be what it was when taken.
        let mut state = EngineState::default();
        for part in shard_cuts {
            state.merge(part.into_state());
        }
        let ok = self.disk.snapshot(state, cuts).is_ok();
        self.recent.push(self.step, Did::Snapshot { ok });
        if ok {
            self.counts.snapshots += 1;
        } else {
            self.counts.snapshot_faults += 1;
        }
        Ok(())
    }
}
