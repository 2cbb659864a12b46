//! [`Pending`]: one answer from the engine, awaitable from async code or blocking from a thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::{EngineError, EngineResult};
use crate::reply::BatchReply;

/// An answer the engine will give: `.await` it in async code, or call [`Pending::wait`] on a
/// plain thread. Dropping it does not cancel the request (the engine still executes it).
///
/// ```
/// # use surge_engine::{Engine, EngineConfig};
/// let engine = Engine::in_memory(EngineConfig::default()).unwrap();
/// let missing = engine.adjust_stock("nope", "adj-1", 5, "restock").wait();
/// assert_eq!(missing.unwrap_err().code(), "unknown_sku");
/// ```
#[must_use = "a Pending does nothing visible unless awaited or waited on"]
pub struct Pending<T> {
    state: State<T>,
}

enum State<T> {
    Ready(Option<EngineResult<T>>),
    Waiting(oneshot::Receiver<EngineResult<T>>),
    /// Slot `.1` of a batch's answers (`Engine::create_orders`).
    Slot(Arc<BatchReply<T>>, u32),
}

impl<T> Pending<T> {
    pub(crate) fn ready(result: EngineResult<T>) -> Self {
        Self { state: State::Ready(Some(result)) }
    }

    pub(crate) fn waiting(rx: oneshot::Receiver<EngineResult<T>>) -> Self {
        Self { state: State::Waiting(rx) }
    }

    pub(crate) fn slot(batch: Arc<BatchReply<T>>, index: u32) -> Self {
        Self { state: State::Slot(batch, index) }
    }

    /// Block the current thread until the answer arrives. Do not call from async code.
    ///
    /// # Errors
    /// The engine's answer; `shutting_down` if the engine stopped before answering.
    pub fn wait(self) -> EngineResult<T> {
        match self.state {
            State::Ready(r) => r.unwrap_or(Err(EngineError::ShuttingDown)),
            State::Waiting(rx) => rx.recv().unwrap_or(Err(EngineError::ShuttingDown)),
            State::Slot(batch, index) => batch.wait(index),
        }
    }
}

impl<T> Future for Pending<T> {
    type Output = EngineResult<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.state {
            State::Ready(r) => Poll::Ready(r.take().unwrap_or(Err(EngineError::ShuttingDown))),
            State::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(r) => Poll::Ready(r.unwrap_or(Err(EngineError::ShuttingDown))),
                Poll::Pending => Poll::Pending,
            },
            State::Slot(batch, index) => match batch.poll(*index, cx.waker()) {
                Some(r) => Poll::Ready(r),
                None => Poll::Pending,
            },
        }
    }
}

impl<T> Unpin for Pending<T> {}
