//! Planted bugs that act on a batch's journal events (the others act where they live: the
//! world's queues, the snapshot, recovery).

use crate::event::Event;
use crate::wallet::WalletEvent;

/// [`super::Bug::TccAcrossBatches`]: the TCC's wallet half of this batch (tries, confirms,
/// cancels) is held back for the shard's next batch, and what the previous batch held goes
/// first in this one. Nothing changes in the shard's memory: only the log splits the TCC.
pub(super) fn tcc_across_batches(held: &mut Vec<Event>, events: &mut Vec<Event>) {
    let mut now = std::mem::take(held);
    for e in events.drain(..) {
        let tcc = matches!(
            e,
            Event::Wallet(WalletEvent::Frozen { .. } | WalletEvent::Settled { .. } | WalletEvent::Unfrozen { .. })
        );
        if tcc {
            held.push(e);
        } else {
            now.push(e);
        }
    }
    *events = now;
}
