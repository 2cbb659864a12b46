//! The general client's lanes: one request in flight each, closed or open loop (`lane_loop`),
//! batched in-process submission (`batch_lane_loop`), and the mixed scenario's steps. The
//! pipelined driver for `tcp://` and `ws://` targets is `pipelined.rs`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{LaneResult, Shared, LATENCY_US_MAX, MIXED_PENDING_MAX, MIXED_WATCH_MAX};
use crate::client::{Client, OrderRef, Reply};
use crate::config::Scenario;
use crate::error::LoadgenResult;

/// Mixed scenario state of one lane.
struct MixedLane {
    rng: SmallRng,
    pending: VecDeque<OrderRef>,
    recent: Vec<u64>,
    watch: Vec<u64>,
}

pub(super) async fn lane_loop(
    lane: u64,
    client: Client,
    shared: Arc<Shared>,
    mut r: LaneResult,
) -> LoadgenResult<LaneResult> {
    let mut mixed = MixedLane {
        rng: SmallRng::seed_from_u64(shared.seed ^ lane.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        pending: VecDeque::new(),
        recent: Vec::new(),
        watch: Vec::new(),
    };
    let sku0 = shared.skus.first().cloned().unwrap_or_default();
    let mut k_lane: u64 = 0;
    loop {
        let i = shared.issued.fetch_add(1, Ordering::Relaxed);
        // One clock read: the deadline check and, closed loop, the send time.
        let now = Instant::now();
        if shared.budget.is_some_and(|b| i >= b) || now >= shared.deadline {
            break;
        }
        // Open loop: the due time of this lane's k-th request.
        let sent_from = match shared.rate {
            Some(rate) => {
                let seq = k_lane * shared.lanes + lane;
                let due = shared.start + Duration::from_secs_f64(seq as f64 / rate);
                if due >= shared.deadline {
                    break;
                }
                super::pace::pace_until(due, shared.precise_pacing).await;
                due
            }
            None => now,
        };
        k_lane += 1;
        let outcome = match shared.scenario {
            Scenario::HotSku | Scenario::FlashSale => {
                let user = shared.names.user(i % shared.users);
                client.order(&user, &sku0, 1, &shared.names.key(i)).await.map(|o| o.map(|_| 1))
            }
            Scenario::Mixed => mixed_step(&client, &shared, &mut mixed, i).await,
        };
        let latency_us = sent_from.elapsed().as_micros().min(u128::from(LATENCY_US_MAX)) as u64;
        match outcome {
            Ok(Reply::Ok(units)) => {
                r.ok += 1;
                // Only a created order takes units (at least one).
                r.orders += u64::from(units > 0);
                r.units_ok += units;
            }
            Ok(Reply::Rejected(code)) => r.count_error(code, 1),
            Err(e) => {
                r.count_error(Cow::Borrowed("connection_lost"), 1);
                r.failure = Some(e.to_string());
                r.record(shared.start, sent_from, latency_us);
                shared.done.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        r.record(shared.start, sent_from, latency_us);
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    r.watch = mixed.watch;
    Ok(r)
}

/// A closed-loop lane of batched submission (hot-sku, flash-sale, in-process): claim `batch`
/// request numbers, submit them with one `Engine::create_orders`, await every answer; each
/// answer's latency is measured from the submission.
pub(super) async fn batch_lane_loop(
    engine: surge_engine::Engine,
    shared: Arc<Shared>,
    mut r: LaneResult,
) -> LoadgenResult<LaneResult> {
    let sku0 = shared.skus.first().cloned().unwrap_or_default();
    let mut user = String::new();
    loop {
        let first = shared.issued.fetch_add(shared.batch, Ordering::Relaxed);
        let end = shared.budget.map_or(first + shared.batch, |b| (first + shared.batch).min(b));
        if first >= end || Instant::now() >= shared.deadline {
            break;
        }
        let reqs = (first..end)
            .map(|i| {
                // Built in place: four allocations per request (what the request holds: user,
                // item list, SKU id, key), not six (a name and a key made, then copied).
                shared.names.user_into(i % shared.users, &mut user);
                surge_engine::CreateOrder {
                    user_id: Arc::from(user.as_str()),
                    items: vec![(Arc::from(sku0.as_str()), 1)],
                    idempotency_key: shared.names.key(i),
                }
            })
            .collect();
        let sent = Instant::now();
        for answer in engine.create_orders(reqs) {
            match answer.await {
                Ok(_) => {
                    r.ok += 1;
                    r.orders += 1;
                    r.units_ok += 1;
                }
                Err(e) => r.count_error(Cow::Borrowed(e.code()), 1),
            }
            let latency_us = sent.elapsed().as_micros().min(u128::from(LATENCY_US_MAX)) as u64;
            r.record(shared.start, sent, latency_us);
        }
        shared.done.fetch_add(end - first, Ordering::Relaxed);
    }
    Ok(r)
}

/// One step of the mixed scenario; `Ok(n)` carries the units a created order took (0 for other
/// operations).
async fn mixed_step(client: &Client, shared: &Shared, m: &mut MixedLane, i: u64) -> LoadgenResult<Reply<u64>> {
    let x: f64 = m.rng.gen();
    if x < 0.30 {
        if let Some(order) = m.pending.pop_front() {
            return Ok(client.pay(&order, &format!("pay-{}", order.order_id)).await?.map(|_| 0));
        }
    } else if x < 0.40 {
        if let Some(order) = m.pending.pop_front() {
            return Ok(client.cancel(order.order_id).await?.map(|_| 0));
        }
    } else if x < 0.50 {
        if !m.recent.is_empty() {
            let id = m.recent[m.rng.gen_range(0..m.recent.len())];
            return Ok(client.order_status(id).await?.map(|_| 0));
        }
    } else if x < 0.55 {
        let sku = &shared.skus[m.rng.gen_range(0..shared.skus.len())];
        return Ok(client.stock(sku).await?.map(|_| 0));
    }
    let user = shared.names.user(m.rng.gen_range(0..shared.users));
    let sku = &shared.skus[m.rng.gen_range(0..shared.skus.len())];
    let qty = m.rng.gen_range(1..=2u32);
    Ok(match client.order(&user, sku, qty, &shared.names.key(i)).await? {
        Reply::Ok(order) => {
            if m.recent.len() < 256 {
                m.recent.push(order.order_id);
            } else {
                let slot = m.rng.gen_range(0..m.recent.len());
                m.recent[slot] = order.order_id;
            }
            m.pending.push_back(order);
            if m.pending.len() > MIXED_PENDING_MAX {
                // Abandoned: its payment deadline cancels it and releases the stock.
                if let Some(old) = m.pending.pop_front() {
                    if m.watch.len() < MIXED_WATCH_MAX {
                        m.watch.push(old.order_id);
                    }
                }
            }
            Reply::Ok(u64::from(qty))
        }
        Reply::Rejected(c) => Reply::Rejected(c),
    })
}
