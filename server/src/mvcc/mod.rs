//! Multi-version concurrency control: the store's history of every key.
//!
//! This module knows nothing about raft or gRPC. It offers:
//! - [`Store::range`]: reads at any revision between the compacted one and the current one;
//! - [`Store::write`]: a [`WriteTxn`] whose changes share one main revision
//!   (sub revisions number them), committed together with an applied index;
//! - [`Store::compact`]: forgets history below a revision.
//!
//! Layout on the [`Engine`](crate::storage::Engine): column family `kv` maps a
//! record key (see [`Revision::record_key`]) to an encoded `mvccpb.KeyValue`;
//! deletions are tombstone records holding only the key. The ordered index of
//! user keys ([`TreeIndex`], built from [`KeyIndex`]es) lives in memory only
//! and is rebuilt from the records at start-up. A paginated list's pages
//! take their counts from the page before (`page_counts`).

mod index;
mod key_index;
mod load;
mod page_counts;
mod range;
mod revision;
mod store;
mod watch;
mod write_txn;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_tests;

pub use index::{KeyRange, TreeIndex};
pub use key_index::{KeyAt, KeyIndex, KeyMark};
pub use load::IndexBuilder;
pub use range::Records;
pub use revision::Revision;
pub use store::{
    CompactionJob, RangeOptions, RangeResult, Store, META_APPLIED_INDEX, META_FINISHED_COMPACT,
    META_SCHEDULED_COMPACT,
};
pub use watch::{
    EventMetrics, StreamKey, SyncOutcome, WatchCounts, WatchHub, WatchMessage, WatchSpec,
    WatcherKey,
};
pub use write_txn::WriteTxn;

/// Errors of the MVCC layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested revision is below the compacted revision.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is above the current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    /// A stored record could not be decoded or is missing.
    #[error("mvcc: corrupt {what}: {reason}")]
    Corrupt {
        /// Which record or value.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The engine failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
}
