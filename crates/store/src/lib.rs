//! The call log: every call through the gateway, with its exact cost.
//!
//! Writes leave the request path through a bounded channel to a writer thread that inserts in batches,
//! one transaction per batch, into SQLite in WAL mode. A full queue never blocks a request: the record is
//! dropped, counted in `leanlm_call_log_dropped_total` and logged. Dropping every [`CallLog`] handle and
//! joining the [`LogWriter`] flushes what is queued.

mod record;
mod sqlite;
mod writer;

pub use record::{
    AuditRow, CallFilter, CallRecord, CallStats, CallStatus, CallSummary, OnlineCounts, OnlineScore, PolicyMatch,
    PolicyRow, PolicyTag, SemanticEntry, SemanticEvidence, SeriesBy, SeriesPoint, ServedInstead, Span, SpendBy,
    SpendRow, StageRecord, TaskLookup, TaskRef, TaskRow, ValidationRow,
};
pub use sqlite::Store;
pub use writer::{CallLog, LogWriter, QueueLimits, spawn_writer};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported store URL `{0}`: use sqlite://PATH (PostgreSQL support comes with multi-instance deployments)"
    )]
    UnsupportedUrl(String),
    #[error("opening the store at {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("migrating the store to schema version {version}: {source}")]
    Migrate { version: usize, source: rusqlite::Error },
    #[error("the store's schema version {found} is newer than this LeanLM understands ({supported}); upgrade LeanLM")]
    TooNew { found: usize, supported: usize },
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}
