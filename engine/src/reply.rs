//! Where an answer goes: one caller's channel ([`Reply::One`]), or one slot of a batch
//! ([`Reply::Slot`], `Engine::create_orders`).
//!
//! A batch of N commands for one shard shares one [`BatchReply`]: the shard fills the slots of
//! a flush under one lock and wakes the caller once, when the last slot is filled, instead of N
//! channel allocations and up to N wake-ups (issue 12: a thread wake-up per order, 0.2 context
//! switches per order, was a tenth of the CPU of `examples/memory_per_order`). The price: a
//! batch's answers from one shard arrive together.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use crate::error::{EngineError, EngineResult};

/// Where a shard sends one command's answer.
pub(crate) enum Reply<T> {
    /// A caller waiting on its own channel.
    One(oneshot::Sender<EngineResult<T>>),
    /// One slot of a batch.
    Slot(SlotReply<T>),
}

impl<T> Reply<T> {
    /// Answer. A caller that stopped waiting is not an error.
    pub fn send(self, result: EngineResult<T>) {
        match self {
            Reply::One(tx) => {
                let _ = tx.send(result);
            }
            Reply::Slot(slot) => {
                let (batch, index) = slot.into_parts();
                batch.fill(std::iter::once((index, result)));
            }
        }
    }
}

impl<T> From<oneshot::Sender<EngineResult<T>>> for Reply<T> {
    fn from(tx: oneshot::Sender<EngineResult<T>>) -> Self {
        Reply::One(tx)
    }
}

/// Slot `index` of a [`BatchReply`]. Dropped without an answer (the engine stopped), it answers
/// `shutting_down`, as a dropped channel does.
pub(crate) struct SlotReply<T> {
    batch: Option<Arc<BatchReply<T>>>,
    index: u32,
}

impl<T> SlotReply<T> {
    /// The batch and the slot, leaving nothing for `Drop` to answer.
    pub fn into_parts(mut self) -> (Arc<BatchReply<T>>, u32) {
        match self.batch.take() {
            Some(batch) => (batch, self.index),
            // `batch` is only taken here, which consumes the slot.
            None => unreachable!("a slot reply is taken once"),
        }
    }
}

impl<T> Drop for SlotReply<T> {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            batch.fill(std::iter::once((self.index, Err(EngineError::ShuttingDown))));
        }
    }
}

/// The answers of one batch's commands for one shard: `len` slots, each filled once.
pub(crate) struct BatchReply<T> {
    state: Mutex<Slots<T>>,
    done: Condvar,
}

struct Slots<T> {
    results: Vec<Option<EngineResult<T>>>,
    /// Slots not yet filled.
    left: usize,
    /// Tasks polling a slot before the batch was done.
    wakers: Vec<Waker>,
    /// Threads blocked in [`BatchReply::wait`]. std's `Condvar::notify_all` makes a futex call
    /// even with nobody waiting; async callers (the gateway's every batch) never wait there, so
    /// the writer thread skips that call for them (issue 13: one wasted syscall per batch).
    blocked: usize,
}

impl<T> BatchReply<T> {
    /// A batch of `len` empty slots.
    pub fn new(len: usize) -> Arc<Self> {
        let results = (0..len).map(|_| None).collect();
        Arc::new(Self {
            state: Mutex::new(Slots { results, left: len, wakers: Vec::new(), blocked: 0 }),
            done: Condvar::new(),
        })
    }

    /// The reply for slot `index` (`index < len`).
    pub fn slot(self: &Arc<Self>, index: u32) -> SlotReply<T> {
        SlotReply { batch: Some(self.clone()), index }
    }

    fn lock(&self) -> MutexGuard<'_, Slots<T>> {
        // A panic while holding the lock left the slots as they were: still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fill slots `(index, answer)` under one lock; wake the waiters when the last is in. A
    /// slot already filled keeps its first answer.
    pub fn fill(&self, answers: impl IntoIterator<Item = (u32, EngineResult<T>)>) {
        let mut slots = self.lock();
        for (index, answer) in answers {
            if let Some(slot @ None) = slots.results.get_mut(index as usize) {
                *slot = Some(answer);
                slots.left -= 1;
            }
        }
        if slots.left == 0 {
            for w in slots.wakers.drain(..) {
                w.wake();
            }
            let blocked = slots.blocked > 0;
            drop(slots);
            if blocked {
                self.done.notify_all();
            }
        }
    }

    /// Block until the batch is done, then take slot `index`'s answer.
    pub fn wait(&self, index: u32) -> EngineResult<T> {
        let mut slots = self.lock();
        slots.blocked += 1;
        while slots.left > 0 {
            slots = self.done.wait(slots).unwrap_or_else(PoisonError::into_inner);
        }
        slots.blocked -= 1;
        take(&mut slots, index)
    }

    /// Slot `index`'s answer if the batch is done; otherwise remember `waker`.
    pub fn poll(&self, index: u32, waker: &Waker) -> Option<EngineResult<T>> {
        let mut slots = self.lock();
        if slots.left == 0 {
            return Some(take(&mut slots, index));
        }
        if !slots.wakers.iter().any(|w| w.will_wake(waker)) {
            slots.wakers.push(waker.clone());
        }
        None
    }
}

fn take<T>(slots: &mut Slots<T>, index: u32) -> EngineResult<T> {
    slots.results.get_mut(index as usize).and_then(Option::take).unwrap_or(Err(EngineError::ShuttingDown))
}

/// Fills slot answers of consecutive replies to the same batch under one lock (a shard
/// releases a flush's replies in a row; most belong to one caller's batch).
pub(crate) struct SlotFiller<T> {
    batch: Option<Arc<BatchReply<T>>>,
    answers: Vec<(u32, EngineResult<T>)>,
}

impl<T> SlotFiller<T> {
    pub fn new() -> Self {
        Self { batch: None, answers: Vec::new() }
    }

    /// Answer `reply` now (a channel) or with the next fill of its batch (a slot).
    pub fn send(&mut self, reply: Reply<T>, result: EngineResult<T>) {
        match reply {
            Reply::One(tx) => {
                let _ = tx.send(result);
            }
            Reply::Slot(slot) => {
                let (batch, index) = slot.into_parts();
                if !self.batch.as_ref().is_some_and(|b| Arc::ptr_eq(b, &batch)) {
                    self.flush();
                    self.batch = Some(batch);
                }
                self.answers.push((index, result));
            }
        }
    }

    /// Fill what is collected.
    pub fn flush(&mut self) {
        if let Some(batch) = self.batch.take() {
            batch.fill(self.answers.drain(..));
        }
    }
}

impl<T> Drop for SlotFiller<T> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_arrive_when_the_last_slot_is_filled() {
        let batch = BatchReply::<u32>::new(3);
        let slots: Vec<_> = (0..3).map(|i| batch.slot(i)).collect();
        let waiter = {
            let batch = batch.clone();
            std::thread::spawn(move || (0..3).map(|i| batch.wait(i)).collect::<Vec<_>>())
        };
        let mut filler = SlotFiller::new();
        for (i, s) in slots.into_iter().enumerate() {
            filler.send(Reply::Slot(s), Ok(i as u32 * 10));
        }
        drop(filler);
        let got = waiter.join().expect("waiter");
        assert_eq!(got.into_iter().map(|r| r.ok()).collect::<Vec<_>>(), vec![Some(0), Some(10), Some(20)]);
    }

    #[test]
    fn a_thread_blocked_before_the_last_fill_is_woken() {
        let batch = BatchReply::<u32>::new(1);
        let slot = batch.slot(0);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let batch = batch.clone();
            std::thread::spawn(move || tx.send(batch.wait(0).ok()))
        };
        // Fill only once the waiter is inside `wait`: the notify must not be skipped for it.
        while batch.lock().blocked == 0 {
            std::thread::yield_now();
        }
        Reply::Slot(slot).send(Ok(5));
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(got, Ok(Some(5)), "a blocked waiter was not woken");
        waiter.join().expect("waiter").expect("send");
    }

    #[test]
    fn a_dropped_slot_answers_shutting_down() {
        let batch = BatchReply::<u32>::new(2);
        Reply::Slot(batch.slot(0)).send(Ok(7));
        drop(batch.slot(1));
        assert_eq!(batch.wait(0).ok(), Some(7));
        assert!(matches!(batch.wait(1), Err(EngineError::ShuttingDown)));
    }
}
