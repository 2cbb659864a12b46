//! Errors of the load generator. Business rejections (`sold_out`, …) are not errors: they are
//! counted by code in the [`Report`](crate::Report). These are the failures that stop a run.

/// Why a benchmark could not run, or ended early.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// The command line or settings make no sense (e.g. `mixed` against Redis, a `--rate` of 0,
    /// an unparsable `--target`).
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    /// The target could not be reached or refused the connection (address, reason).
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// The target as given on the command line.
        target: String,
        /// What the client library or the socket said.
        reason: String,
    },
    /// Setting up the scenario (creating the SKU, loading the Lua script, the table) failed.
    #[error("setup failed: {0}")]
    Setup(String),
    /// The target answered something the client cannot read, or the connection broke.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The in-process engine or its data directory failed to open or close.
    #[error("engine: {0}")]
    Engine(String),
}

/// `Result` with [`LoadgenError`].
pub type LoadgenResult<T> = Result<T, LoadgenError>;
