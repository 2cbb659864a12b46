//! Wallets through recovery (issue 14). The engine has no public call yet that journals wallet
//! events, so these tests write them into a real data directory's log as the writer would
//! (`encode_records`, `LogStore::append`), after a `DurableEngine` run, and check that recovery
//! rebuilds exactly the wallets a fresh `WalletBook` gets from the same events: from the log
//! alone, and from a snapshot plus the records after it.

mod common;
mod wallet_story;

use std::sync::Arc;

use common::{create_skus, engine_cfg, open_db, open_store, run_workload, Ledger, Rng};
use surge_engine::wallet::{WalletBook, WalletEvent};
use surge_engine::{EngineState, Event, OrderId, SkuEvent};
use surge_persistence::codec::{encode_records, SnapshotFile};
use surge_persistence::inspect::inspect;
use surge_persistence::recovery::{recover, Recovered};
use surge_persistence::{snapshot, LogStore, PersistenceConfig, SledStore};
use wallet_story::{leg, wallet_book, wallet_records, Records, T};

/// Batch sequences above every record of the engine's own runs (theirs are far lower).
const CRAFTED_SEQ: u64 = 1_000_000;

/// Append `records` after the log's last LSN, each shard batch as the writer splits it;
/// returns the last LSN.
fn append(store: &mut SledStore, records: &Records) -> u64 {
    let mut lsn = store.last_lsn().unwrap().unwrap_or(0);
    for (shard, seq, events) in records {
        for bytes in encode_records(*shard, *seq, events).unwrap() {
            lsn += 1;
            store.append(&[(lsn, bytes)]).unwrap();
        }
    }
    store.flush(true).unwrap();
    lsn
}

/// The wallet story, renumbered above the engine's batches, with SKU adjustments mixed into
/// some of its records (so one record feeds both replay lanes).
fn crafted() -> Records {
    let mut records = wallet_records();
    for (i, (_, seq, events)) in records.iter_mut().enumerate() {
        *seq = CRAFTED_SEQ + i as u64;
        if i % 3 == 0 {
            let adjust =
                SkuEvent::Adjusted { sku_id: Arc::from("mug"), delta: 1, reason: format!("crafted {i}").into() };
            events.insert(events.len() / 2, Event::Sku(adjust));
        }
    }
    records
}

/// `base` with every event of `records` applied in order, then `fixes` (recovery's repairs).
fn replayed(base: &EngineState, records: &[(u16, u64, Vec<Event>)], fixes: &[Event]) -> EngineState {
    let mut s = base.clone();
    for e in records.iter().flat_map(|(_, _, e)| e).chain(fixes) {
        s.apply(e);
    }
    s
}

/// A fresh book with every wallet event of `records` applied, then the wallet repairs among
/// `fixes` (recovery closes the tries the log leaves open).
fn book_with(records: &Records, fixes: &[Event]) -> WalletBook {
    let mut book = wallet_book(records);
    for f in fixes {
        if let Event::Wallet(e) = f {
            book.apply(e).unwrap_or_else(|err| panic!("repair {e:?}: {err}"));
        }
    }
    book
}

fn recovered(store: &SledStore) -> Recovered {
    recover(store).unwrap_or_else(|e| panic!("recovery failed: {e}"))
}

/// A real run (SKUs, a workload, close), then the wallet story in the log: recovery from the
/// log alone, and from a snapshot of the first half plus the second half's records, both give
/// the wallets a fresh `WalletBook` gets from the story; `surge wal inspect` counts the wallet
/// events; and the `DurableEngine` opens the directory from that snapshot.
#[test]
fn wallet_events_in_the_log_recover_exactly_with_and_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PersistenceConfig::new(dir.path());
    let db = open_db(&cfg, &engine_cfg(), None).unwrap();
    create_skus(db.engine());
    let mut ledger = Ledger::default();
    run_workload(db.engine(), &mut Rng::new(14), &mut ledger, "w", 150);
    db.close().unwrap();

    let mut store = open_store(dir.path());
    let before = recovered(&store);
    assert!(before.fixes.is_empty(), "a clean close leaves nothing to repair: {:?}", before.fixes);
    assert!(before.state.wallets.users.is_empty());
    let records = crafted();
    // The first half ends with alice's `pay-3` try open: its cancel is in the second half.
    let half = records.len() / 2;
    let (first, second) = (records[..half].to_vec(), records[half..].to_vec());

    // The first half alone: recovery closes the open try (its repair, not logged here).
    let first_lsn = append(&mut store, &first);
    let at_half = recovered(&store);
    assert!(!at_half.fixes.is_empty(), "the open try is closed by reconciliation");
    assert_eq!(at_half.state.wallets, book_with(&first, &at_half.fixes));
    assert!(at_half.state == replayed(&before.state, &first, &at_half.fixes));

    // A snapshot of exactly what the first half's records make (every record up to its seq;
    // the try still open, as a snapshot holds the state between batches), then the rest.
    let state = replayed(&before.state, &first, &[]);
    assert!(state.wallets.open_tries().next().is_some());
    let snap = SnapshotFile { lsn: first_lsn, base: CRAFTED_SEQ + half as u64 - 1, cuts: vec![], state };
    let (snap_path, _) = snapshot::write(dir.path(), &snap).unwrap();
    let last_lsn = append(&mut store, &second);
    let r = recovered(&store);
    assert_eq!(r.stats.snapshot_lsn, Some(first_lsn), "recovery starts from the snapshot");
    assert_eq!(r.stats.records_replayed, second.len() as u64);
    let fresh = book_with(&records, &r.fixes);
    assert_eq!(r.state.wallets, fresh, "snapshot + replay: wallets differ from a fresh book's");
    let want = replayed(&before.state, &records, &r.fixes);
    assert!(r.state == want, "snapshot + replay differs from replaying every event");
    assert_eq!(r.state.digest(), want.digest());

    // Without it (nothing was trimmed), recovery starts from the engine's own snapshot, if its
    // close wrote one, and replays every crafted record: the same state.
    std::fs::remove_file(&snap_path).unwrap();
    let full = recovered(&store);
    assert_eq!(full.stats.records_replayed, before.stats.records_replayed + (last_lsn - before.stats.last_lsn));
    assert_eq!(full.fixes, r.fixes);
    assert_eq!(full.state.wallets, fresh, "full replay: wallets differ from a fresh book's");
    assert!(full.state == r.state, "full replay and snapshot + replay differ");
    snapshot::write(dir.path(), &snap).unwrap();
    drop(store);

    let summary = common::retry_on_lock(|| inspect(dir.path())).unwrap();
    for (name, n) in wallet_type_counts(&records) {
        assert_eq!(summary.events_by_type.get(name), Some(&n), "{name}: {:?}", summary.events_by_type);
    }
    assert_eq!(summary.snapshot_wallets, Some(snap.state.wallets.users.len()));

    // The engine opens from the snapshot and replays the rest.
    let db = open_db(&cfg, &engine_cfg(), None).unwrap();
    assert_eq!(db.recovery().snapshot_lsn, Some(first_lsn));
    assert_eq!(db.recovery().records_replayed, (records.len() - half) as u64);
    db.close().unwrap();
}

fn wallet_type_counts(records: &Records) -> std::collections::BTreeMap<&'static str, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for e in records.iter().flat_map(|(_, _, e)| e) {
        if let Event::Wallet(_) = e {
            *counts.entry(surge_persistence::codec::event_type(e)).or_default() += 1;
        }
    }
    counts
}

/// Many users' wallet events, interleaved with SKU and order events over many records (more
/// than one replay batch per lane): the parallel replay equals applying every event in order.
#[test]
fn parallel_replay_of_many_wallets_equals_a_sequential_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path());
    let mut rng = Rng::new(99);
    let (mut records, mut book) = (Records::new(), WalletBook::default());
    let mut sequential = EngineState::default();
    for seq in 0..60u64 {
        let mut events = Vec::new();
        if seq == 0 {
            let created = Event::Sku(SkuEvent::Created {
                sku_id: Arc::from("n"),
                name: Arc::from("noise"),
                price: wallet_story::dec("1.00"),
                initial_stock: 1,
                rules: Default::default(),
            });
            sequential.apply(&created);
            events.push(created);
        }
        for _ in 0..200 {
            let e = if rng.below(5) == 0 { noise(&mut rng) } else { Event::Wallet(next_wallet_event(&mut rng, &book)) };
            if let Event::Wallet(w) = &e {
                book.apply(w).unwrap();
            }
            sequential.apply(&e);
            events.push(e);
        }
        records.push(((seq % 3) as u16, seq + 1, events));
    }
    append(&mut store, &records);
    let r = recovered(&store);
    assert_eq!(r.stats.events_replayed, 60 * 200 + 1);
    book.check().unwrap();
    for f in &r.fixes {
        if let Event::Wallet(e) = f {
            book.apply(e).unwrap();
        }
    }
    assert_eq!(r.state.wallets, book, "parallel replay's wallets differ from a fresh book's");
    let want = replayed(&sequential, &[], &r.fixes);
    assert!(r.state == want, "parallel replay differs from a sequential one");
    assert_eq!(r.state.skus["n"].view().stocked_total, sequential.skus["n"].view().stocked_total);
}

/// A SKU or order event between the wallet events: a stock adjustment of SKU `n`, or a
/// transition of an order no event created (ignored by replay, as in the format fixtures).
fn noise(rng: &mut Rng) -> Event {
    let order_id = OrderId(rng.next_u64() >> 1);
    if rng.below(2) == 0 {
        Event::Sku(SkuEvent::Adjusted { sku_id: Arc::from("n"), delta: 1, reason: "noise".into() })
    } else {
        Event::Order(surge_engine::OrderEvent::Transitioned {
            order_id,
            event: surge_engine::OrderEventKind::Cancel,
            from: surge_engine::OrderStatus::PendingPayment,
            to: surge_engine::OrderStatus::Canceled,
            at_ms: T,
            by: surge_engine::Initiator::User,
            reason: None,
            payment: None,
            tracking_number: None,
        })
    }
}

/// A wallet event that applies to `book`: for one of 40 users, settle or cancel an open try,
/// refund a settled payment, freeze part of the balance, debit, or credit.
fn next_wallet_event(rng: &mut Rng, book: &WalletBook) -> WalletEvent {
    let user = format!("user-{}", rng.below(40));
    let n = rng.next_u64() % 1_000_000;
    let (user_id, at_ms) = (Arc::from(user.as_str()), T + n as i64);
    let wallet = book.get(&user);
    let cny = wallet_story::asset("CNY");
    if let Some((t, _)) = wallet.and_then(|w| w.tries.iter().next()) {
        let transfer_id = t.clone();
        return if rng.below(2) == 0 {
            WalletEvent::Settled { user_id, transfer_id, at_ms }
        } else {
            WalletEvent::Unfrozen { user_id, transfer_id, failure: None, at_ms }
        };
    }
    if let Some((order, t)) = wallet.and_then(|w| w.payments.iter().next()).filter(|_| rng.below(3) == 0) {
        return WalletEvent::Refunded { user_id, transfer_id: t.clone(), order_id: *order, at_ms };
    }
    let balance = wallet.and_then(|w| w.accounts.get(&cny)).map_or(0, |a| a.balance_minor);
    let transfer_id = format!("t-{n}-{}", rng.next_u64()).into();
    match rng.below(3) {
        0 if balance > 1 => WalletEvent::Frozen {
            user_id,
            transfer_id,
            order_id: OrderId(n + 1),
            legs: vec![leg("CNY", 1 + balance / 2)],
            at_ms,
        },
        1 if balance > 0 => WalletEvent::Debited { user_id, transfer_id, asset: cny, amount_minor: 1, at_ms },
        _ => WalletEvent::Credited { user_id, transfer_id, asset: cny, amount_minor: 1 + n % 10_000, at_ms },
    }
}
