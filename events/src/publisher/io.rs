//! The publisher's reads and cursor saves, on a thread of their own: [`OutboxLog`] is
//! synchronous (sled), and a read of many records must not hold a runtime worker.

use std::sync::mpsc;
use std::thread::JoinHandle;

use surge_persistence::outbox::{OutboxLog, OutboxPage};
use surge_persistence::{PersistenceError, PersistenceResult};
use tokio::sync::oneshot;

enum Request {
    Read { after_lsn: u64, records_max: usize, reply: oneshot::Sender<PersistenceResult<OutboxPage>> },
    Save { lsn: u64, reply: oneshot::Sender<PersistenceResult<()>> },
    Cursor { reply: oneshot::Sender<u64> },
}

/// Why a log request failed: the log's own error, or the I/O thread is gone (it ends only when
/// every [`LogIo`] is dropped, or if a read panicked).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogIoError {
    /// The outbox log failed.
    #[error("outbox log: {0}")]
    Log(#[from] PersistenceError),
    /// The I/O thread ended.
    #[error("outbox log thread ended")]
    Gone,
}

/// The async side: each call sends one request to the thread and awaits its answer.
pub(crate) struct LogIo {
    tx: mpsc::Sender<Request>,
}

impl LogIo {
    /// Start the thread `surge-outbox-io` on `log`; it ends when the returned `LogIo` is dropped.
    ///
    /// # Errors
    /// The thread could not be started.
    pub(crate) fn start(log: OutboxLog) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new().name("surge-outbox-io".into()).spawn(move || {
            // A reply whose receiver is gone (the task was aborted) is simply dropped.
            while let Ok(req) = rx.recv() {
                match req {
                    Request::Read { after_lsn, records_max, reply } => {
                        let _ = reply.send(log.read_after(after_lsn, records_max));
                    }
                    Request::Save { lsn, reply } => {
                        let _ = reply.send(log.save_cursor(lsn));
                    }
                    Request::Cursor { reply } => {
                        let _ = reply.send(log.cursor());
                    }
                }
            }
        })?;
        Ok((Self { tx }, thread))
    }

    /// [`OutboxLog::read_after`].
    pub(crate) async fn read_after(&self, after_lsn: u64, records_max: usize) -> Result<OutboxPage, LogIoError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Read { after_lsn, records_max, reply }).map_err(|_| LogIoError::Gone)?;
        Ok(rx.await.map_err(|_| LogIoError::Gone)??)
    }

    /// [`OutboxLog::save_cursor`].
    pub(crate) async fn save_cursor(&self, lsn: u64) -> Result<(), LogIoError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Save { lsn, reply }).map_err(|_| LogIoError::Gone)?;
        Ok(rx.await.map_err(|_| LogIoError::Gone)??)
    }

    /// [`OutboxLog::cursor`].
    pub(crate) async fn cursor(&self) -> Result<u64, LogIoError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Cursor { reply }).map_err(|_| LogIoError::Gone)?;
        rx.await.map_err(|_| LogIoError::Gone)
    }
}
