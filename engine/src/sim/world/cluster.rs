//! The simulator's cluster mode ([`super::SimConfig::cluster`], issue 16): links between
//! partitions that lose and duplicate messages, and crashes that take one partition, which is
//! then rebuilt from its own log alone, as a node taking it over does.

use std::sync::Arc;

use super::{check, Did, Sim};
use crate::cluster::PeerMsg;
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::shard::{CoreParts, ShardCore, ShardMsg};
use crate::state::EngineState;

/// A message between partitions is lost one time in this many.
const LINK_LOSS_ONE_IN: u64 = 40;
/// A message between partitions arrives twice one time in this many.
const LINK_DUP_ONE_IN: u64 = 40;
/// At a quiet point: at least this many rounds of moving the clock past `saga_timeout_ms`
/// (and the fallback of a lost verdict), so given-up steps and reservation checks resolve what
/// messages were lost...
const SETTLE_ROUNDS: usize = 4;
/// ...and at most this many while a step still waits or the audit finds a holding its order
/// does not claim (each round resends the step and asks about the holding again; each message
/// and its answer may be lost again, one time in 20 together). Past it, the audit's finding is
/// the violation.
const SETTLE_ROUNDS_MAX: usize = 40;
/// Each round moves the clock this many `saga_timeout_ms` (past the checks' fallback of 6).
const SETTLE_TIMEOUTS: i64 = 7;

impl Sim {
    /// What the link delivers of `msg`: nothing (lost), once, or twice (a retry whose first
    /// attempt arrived after all). Duplicates go through the wire form, as between nodes.
    pub(super) fn link_copies(&mut self, msg: ShardMsg) -> Vec<ShardMsg> {
        if self.rng.below(LINK_LOSS_ONE_IN) == 0 {
            self.trace.u64(0xE0_0000);
            return Vec::new();
        }
        if self.rng.below(LINK_DUP_ONE_IN) == 0 {
            return match PeerMsg::from_shard(msg) {
                Ok(p) => vec![p.clone().into_shard(), p.into_shard()],
                Err(m) => vec![m],
            };
        }
        vec![msg]
    }

    /// One partition's node dies (or the partition moves): what its appends acknowledged has
    /// landed and its messages left (a sync first); its clients' queued requests, its unwritten
    /// batches, its steps under way and the messages on their way to it are lost (their callers
    /// hear `unavailable`: outcome unknown); then it is rebuilt from its log.
    pub(super) fn partition_crash(&mut self) -> Result<(), String> {
        self.sync()?;
        let n = self.cores.len();
        let p = self.rng.below(n as u64) as usize;
        self.counts.crashes += 1;
        self.trace.u64(0xC1_0000 + p as u64);
        self.recent.push(self.step, Did::PartitionCrash { shard: p });
        let unavailable = EngineError::Unavailable { retry_after_ms: 100 };
        for m in self.inbox[p].drain(..) {
            // Only requests reach a mailbox; nothing else has a caller to answer.
            let _ = crate::shard::refuse(m);
        }
        let (lost, kept): (Vec<_>, Vec<_>) = self.submitted.drain(..).partition(|b| b.shard == p);
        self.submitted = kept.into();
        for b in lost {
            if let Some(d) = b.on_durable {
                d.complete(&self.read, None, Err(unavailable.clone()));
            }
        }
        for from in 0..n {
            self.links[from * n + p].clear();
        }
        self.cores[p].abandon_in_flight(unavailable.clone());
        if let Some(b) = self.cores[p].end_batch().batch {
            b.on_durable.complete(&self.read, None, Err(unavailable));
        }
        self.collect()?;
        self.recover_partition(p)
    }

    /// Rebuild partition `p` from its log alone and reconcile it on its own; its repairs are
    /// durable before it serves. Its new core mints ids with another node id (a new owner never
    /// mints an id its predecessor used for a saga that never became durable).
    fn recover_partition(&mut self, p: usize) -> Result<(), String> {
        let n = self.cores.len();
        let mut state = EngineState::default();
        for e in &self.plog[p] {
            state.apply(e);
        }
        let fixes = state.reconcile_partition(p, n);
        self.counts.events += fixes.len() as u64;
        self.plog[p].extend(fixes);
        self.read.forget_shard(p, n);
        let node_id = u16::try_from(self.counts.crashes % 1_024).unwrap_or(0);
        let config = Arc::new(EngineConfig { node_id, ..EngineConfig::clone(&self.config) });
        let parts = CoreParts {
            id: p,
            read: self.read.clone(),
            initial: state,
            archive_enabled: false,
            archive: None,
            counters: Arc::default(),
            assets: Arc::new(crate::wallet::Assets::new(&config.assets).map_err(|e| e.to_string())?),
            config,
        };
        self.cores[p] = ShardCore::new(parts, n).map_err(|e| e.to_string())?;
        check::shard_skus(&self.cores[p])?;
        check::after_recovery(&self.cores, &*self.disk, &self.workload)?;
        self.recent.push(self.step, Did::Recover);
        Ok(())
    }

    /// Settle a cluster: step until quiet, or until only sagas wait (their messages may be
    /// lost); then move the clock past `saga_timeout_ms` and tick every partition, so steps give
    /// up or resend and reservations are checked; a few rounds. Still waiting after them is a
    /// violation.
    pub(super) fn settle_cluster(&mut self) -> Result<(), String> {
        let jump = (self.config.saga_timeout_ms as i64).saturating_mul(SETTLE_TIMEOUTS);
        for round in 0..SETTLE_ROUNDS_MAX {
            if round >= SETTLE_ROUNDS && self.is_quiet() && check::full_audit(&self.cores, &self.workload).is_ok() {
                break;
            }
            self.step_until_quiet_or_stuck()?;
            self.now_ms = self.now_ms.saturating_add(jump);
            self.trace.u64(self.now_ms as u64);
            self.recent.push(self.step, Did::Clock { now_ms: self.now_ms });
            // Every partition ticks at the new time, and again while checks are due (each tick
            // fires at most `timers_per_tick_max`).
            for s in 0..self.cores.len() {
                self.run_batch(s)?;
            }
            while let Some(s) = (0..self.cores.len()).find(|s| self.cores[*s].verification_due(self.now_ms)) {
                self.run_batch(s)?;
                self.step_until_quiet_or_stuck()?;
            }
        }
        self.step_until_quiet_or_stuck()?;
        if !self.is_quiet() {
            let waiting: Vec<String> = self.cores.iter().flat_map(ShardCore::flights).collect();
            return Err(format!(
                "after {SETTLE_ROUNDS_MAX} rounds of saga_timeout_ms, steps still wait (now {}): {}",
                self.now_ms,
                waiting.join("; ")
            ));
        }
        Ok(())
    }

    fn step_until_quiet_or_stuck(&mut self) -> Result<(), String> {
        while !self.is_quiet() && !self.only_sagas_left() {
            self.step_system(false)?;
        }
        Ok(())
    }
}
