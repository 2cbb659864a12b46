//! Errors of the persistence layer.

use surge_engine::EngineError;

/// Why opening, writing, recovering or inspecting the log failed.
#[derive(Debug, thiserror::Error)]
pub enum PersistenceError {
    /// The operating system refused a file operation.
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    /// sled refused an operation (its message is kept verbatim).
    #[error("sled: {0}")]
    Sled(String),
    /// A log record could not be decoded; recovery stops here rather than skip it.
    #[error("WAL record at LSN {lsn} cannot be decoded: {reason}")]
    Corrupt {
        /// The record's log sequence number.
        lsn: u64,
        /// What was wrong.
        reason: String,
    },
    /// One event encodes to more bytes than a WAL record may hold (a broken invariant: the
    /// engine's input limits bound every event; see `codec`'s "Record size bound").
    #[error("one WAL event encodes to {size_bytes} bytes, above the record bound of {limit_bytes} bytes")]
    RecordTooLarge {
        /// The event's encoded size.
        size_bytes: usize,
        /// [`crate::codec::RECORD_BYTES_MAX`].
        limit_bytes: usize,
    },
    /// A snapshot file could not be read or written.
    #[error("snapshot {path}: {reason}")]
    Snapshot {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A WAL write or fsync failed earlier on this handle (policy
    /// [`crate::StorageFailurePolicy::Halt`]): nothing more is written through it; drop it and
    /// open the directory again (recovery replays the log).
    #[error("storage failed earlier on this handle; reopen the data directory to recover")]
    StorageFailed,
    /// The engine refused to start (bad config) or answered with an error.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<sled::Error> for PersistenceError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => Self::Io(io),
            other => Self::Sled(other.to_string()),
        }
    }
}

/// Shorthand.
pub type PersistenceResult<T> = Result<T, PersistenceError>;
