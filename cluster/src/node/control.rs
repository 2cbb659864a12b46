//! The node's control loop (see the module docs of [`super`]): heartbeat, renewals, owners,
//! rebalancing, and the moves of partitions in and out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Held, Shared};
use crate::journal::replay_partition;
use crate::lease::LeaseError;

pub use crate::rpc::{RpcHandler, RPC_PREFIX_DEFAULT};

/// What the loop remembers between rounds.
#[derive(Default)]
pub(super) struct Rounds {
    last_renewal: Option<Instant>,
    /// Each node's heartbeat revision and when this node first saw it.
    members: HashMap<String, (u64, Instant)>,
}

/// Run rounds every `control_ms` until the node is lost.
pub(super) async fn run(shared: Arc<Shared>, mut rounds: Rounds) {
    let every = Duration::from_millis(shared.cfg.control_ms.max(1));
    while !shared.lost.borrow().to_owned() {
        tokio::time::sleep(every).await;
        round(&shared, &mut rounds).await;
    }
}

/// One round: heartbeat, renewals when due, owners, rebalance.
pub(super) async fn round(shared: &Arc<Shared>, rounds: &mut Rounds) {
    if let Err(e) = shared.leases.heartbeat().await {
        tracing::warn!(error = %e, "cluster heartbeat failed");
    }
    if !renew_if_due(shared, rounds).await {
        return;
    }
    read_owners(shared).await;
    let live = live_members(shared, rounds).await;
    rebalance(shared, rounds, &live).await;
    start_compactions(shared).await;
}

/// Snapshot every hosted partition that has had `snapshot_every_messages` appends since its
/// last snapshot, each in a task of its own (one at a time per partition).
async fn start_compactions(shared: &Arc<Shared>) {
    let every = shared.cfg.snapshot_every_messages.max(1);
    let mut held = shared.held.lock().await;
    for (p, h) in held.iter_mut() {
        let appended = shared.journals.appended(*p);
        let busy = h.compacting.as_ref().is_some_and(|t| !t.is_finished());
        if busy || appended.saturating_sub(h.snapshot_at) < every {
            continue;
        }
        h.snapshot_at = appended;
        let (shared2, p, lease) = (shared.clone(), *p, h.lease.clone());
        h.compacting = Some(tokio::spawn(async move {
            let started = Instant::now();
            // Purge only while this node's lease is still valid (its successor may replay).
            let valid = move || lease.is_valid();
            match crate::snapshot::compact(&shared2.logs, &shared2.snaps, p, 1, valid).await {
                Ok(Some(c)) => tracing::info!(
                    partition = p,
                    snapshot_seq = c.snapshot_seq,
                    replayed = c.replayed,
                    purged_below = c.purged_below,
                    ms = started.elapsed().as_millis() as u64,
                    "partition snapshot"
                ),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "partition snapshot failed; the log keeps everything")
                }
            }
        }));
    }
}

/// Renew every held lease if `lease_ms / 3` passed since the last renewal (or one is close to
/// running out). False when the node is lost.
async fn renew_if_due(shared: &Arc<Shared>, rounds: &mut Rounds) -> bool {
    let failure = shared.journals.failures().borrow().clone();
    if let Some((p, why)) = failure {
        fail(shared, &format!("the journal of partition {p} failed: {why}")).await;
        return false;
    }
    let every = Duration::from_millis(shared.cfg.lease.lease_ms / 3);
    if rounds.last_renewal.is_some_and(|t| t.elapsed() < every) {
        // Between renewals too: a node resumed after a pause stops within one round.
        let expired = shared.held.lock().await.values().any(|h| !h.lease.is_valid());
        if expired {
            fail(shared, "a lease ran out before it could be renewed").await;
            return false;
        }
        return true;
    }
    let mut held = shared.held.lock().await;
    let mut all_ok = true;
    for h in held.values_mut() {
        match shared.leases.renew(&mut h.lease).await {
            Ok(()) => {}
            Err(LeaseError::Store(e)) if h.lease.is_valid() => {
                tracing::warn!(error = %e, partition = h.lease.partition, "lease renewal failed; retrying next round");
                all_ok = false;
            }
            Err(e) => {
                drop(held);
                fail(shared, &format!("lease lost: {e}")).await;
                return false;
            }
        }
    }
    if held.values().any(|h| !h.lease.is_valid()) {
        drop(held);
        fail(shared, "a lease ran out before it could be renewed").await;
        return false;
    }
    if all_ok {
        rounds.last_renewal = Some(Instant::now());
    }
    true
}

/// Stop serving at once: a lease is lost or a journal fenced.
async fn fail(shared: &Arc<Shared>, why: &str) {
    tracing::error!(reason = why, "this node stops serving");
    let _ = shared.lost.send(true);
    let e = shared.engine.clone();
    let _ = tokio::task::spawn_blocking(move || e.shutdown(Duration::from_secs(5))).await;
}

async fn read_owners(shared: &Arc<Shared>) {
    let n = shared.cfg.partitions;
    let mut owners = Vec::with_capacity(n as usize);
    for p in 0..n {
        let owner = match shared.leases.holder(p).await {
            Ok(Some((h, revision))) if h.held => {
                shared.leases.observe(p, revision);
                Some(h.node_id)
            }
            Ok(_) => None,
            Err(_) => shared.owners.read().ok().and_then(|o| o.get(p as usize).cloned().flatten()),
        };
        owners.push(owner);
    }
    if let Ok(mut o) = shared.owners.write() {
        *o = owners;
    }
}

/// The live nodes: this one, and those whose heartbeat changed within `lease_ms`.
async fn live_members(shared: &Arc<Shared>, rounds: &mut Rounds) -> Vec<String> {
    let me = shared.cfg.lease.node_id.clone();
    let Ok(members) = shared.leases.members().await else {
        return vec![me];
    };
    let now = Instant::now();
    let lease = Duration::from_millis(shared.cfg.lease.lease_ms);
    rounds.members.retain(|id, _| members.iter().any(|(m, _)| m == id));
    let mut live = vec![me.clone()];
    for (id, revision) in members {
        let seen = rounds.members.entry(id.clone()).or_insert((revision, now));
        if seen.0 != revision {
            *seen = (revision, now);
        }
        if id != me && now.duration_since(seen.1) < lease {
            live.push(id);
        }
    }
    live.sort();
    live
}

/// Claim up to this node's share, or give one partition back to a node under its floor.
async fn rebalance(shared: &Arc<Shared>, rounds: &mut Rounds, live: &[String]) {
    let n = shared.cfg.partitions as usize;
    let me = &shared.cfg.lease.node_id;
    let (share, floor) = (n.div_ceil(live.len()), n / live.len());
    let owners = shared.owners.read().map(|o| o.clone()).unwrap_or_default();
    let mine = shared.held.lock().await.len();
    if mine < share {
        let start = start_of(me, n);
        let free: Vec<u32> = (0..n)
            .map(|i| (start + i) % n)
            .filter(|p| owners.get(*p).is_none_or(|o| o.as_ref().is_none_or(|o| !live.contains(o) || o == me)))
            .map(|p| p as u32)
            .collect();
        let mut wanted = share - mine;
        for p in free {
            let lost = *shared.lost.borrow();
            if wanted == 0 || lost {
                break;
            }
            if shared.held.lock().await.contains_key(&p) {
                continue;
            }
            if acquire(shared, p).await {
                wanted -= 1;
            }
            // A long replay must not let the held leases run out.
            renew_if_due(shared, rounds).await;
        }
        return;
    }
    let under = live.iter().any(|node| owners.iter().filter(|o| o.as_deref() == Some(node.as_str())).count() < floor);
    if mine > share || (mine > floor && under) {
        let last = shared.held.lock().await.keys().next_back().copied();
        if let Some(p) = last {
            release(shared, p).await;
        }
    }
}

/// Where this node starts looking for free partitions: spread by its id, so nodes starting
/// together do not race for the same ones.
fn start_of(node_id: &str, n: usize) -> usize {
    let h = node_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (h % n.max(1) as u64) as usize
}

/// Take partition `p` over (see the module docs of [`super`]). False if it could not be.
async fn acquire(shared: &Arc<Shared>, p: u32) -> bool {
    let lease = match shared.leases.claim(p).await {
        Ok(l) => l,
        Err(LeaseError::Held { .. } | LeaseError::Lost { .. }) => return false,
        Err(e) => {
            tracing::warn!(partition = p, error = %e, "claim failed");
            return false;
        }
    };
    let started = Instant::now();
    match load(shared, p).await {
        Ok(receivers) => {
            tracing::info!(partition = p, load_ms = started.elapsed().as_millis() as u64, "partition acquired");
            let snapshot_at = shared.journals.appended(p);
            shared.held.lock().await.insert(p, Held { lease, receivers, snapshot_at, compacting: None });
            true
        }
        Err(e) => {
            tracing::error!(partition = p, error = %e, "partition could not be taken over; giving it back");
            shared.journals.close(p).await;
            let _ = shared.leases.release(lease).await;
            false
        }
    }
}

/// Fence, replay, repair, install, receive: the part of a takeover after the lease.
async fn load(shared: &Arc<Shared>, p: u32) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    shared.journals.open(p).await.map_err(|e| e.to_string())?;
    let (state, fixes, _) = replay_partition(&shared.logs, &shared.snaps, p, shared.cfg.partitions as usize)
        .await
        .map_err(|e| e.to_string())?;
    if !fixes.is_empty() {
        shared.journals.append_events(p, fixes).await.map_err(|e| e.to_string())?;
    }
    let engine = shared.engine.clone();
    tokio::task::spawn_blocking(move || engine.install_partition(p as usize, state))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let client = &shared.client;
    let mut receivers = vec![crate::peer::serve_partition(client, &shared.cfg.peer_prefix, p, shared.engine.clone())
        .await
        .map_err(|e| e.to_string())?];
    if let Some(h) = &shared.cfg.rpc {
        let rpc = crate::rpc::serve_partition(client, &shared.cfg.rpc_prefix, p, shared.engine.clone(), h.clone());
        receivers.push(rpc.await.map_err(|e| e.to_string())?);
    }
    Ok(receivers)
}

/// Give partition `p` up: stop receiving, evict, close the journal, release the lease.
pub(super) async fn release(shared: &Arc<Shared>, p: u32) {
    let Some(h) = shared.held.lock().await.remove(&p) else { return };
    for r in &h.receivers {
        r.abort();
    }
    if let Some(c) = &h.compacting {
        c.abort();
    }
    let engine = shared.engine.clone();
    let _ = tokio::task::spawn_blocking(move || engine.evict_partition(p as usize)).await;
    shared.journals.close(p).await;
    if let Err(e) = shared.leases.release(h.lease).await {
        tracing::warn!(partition = p, error = %e, "lease release failed (it will expire)");
    }
    tracing::info!(partition = p, "partition released");
}
