//! Moving from etcd to Cairn and back, keeping every revision.
//!
//! - [`from_etcd`] (`cairn migrate from-etcd --snapshot FILE` plus the
//!   member flags of `cairn snapshot restore`): an etcd database file (from
//!   `etcdctl snapshot save`, `etcdutl`, or a stopped member's
//!   `member/snap/db`) becomes a new Cairn data directory, sealed under the
//!   member's master key, with etcd's history as it is: revisions,
//!   tombstones, compacted revision, leases, auth ([`import`]).
//! - [`to_etcd`] (`cairn migrate to-etcd --data-dir DIR --out FILE
//!   --plaintext`): a stopped member's data becomes an etcd snapshot file
//!   for `etcdutl snapshot restore` ([`export`]).
//! - `cairn migrate verify` (the binary's `verify.rs`): two live stores
//!   compared through the etcd API at one revision, for the cut-over.
//!
//! The bbolt format is `cairn-bbolt`'s; etcd's schema (bucket names, key
//! encodings, the snapshot digest) is [`etcd`]'s. No Go code or tool runs.

pub mod etcd;
pub mod export;
pub mod import;

use std::path::PathBuf;

pub use export::{to_etcd, ExportReport, PLAINTEXT_REFUSAL};
pub use import::{from_etcd, read_etcd, ImportReport, Imported};

/// Errors of a migration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SHA-256 `etcdctl snapshot save` appends does not match.
    #[error(
        "snapshot file integrity check failed: the SHA-256 that `etcdctl snapshot save` \
         appends does not match the database (a truncated or damaged file)"
    )]
    Digest,
    /// The file is not a bbolt database, or is truncated or damaged.
    #[error(transparent)]
    Bbolt(#[from] cairn_bbolt::Error),
    /// The file's size fits neither a member's database nor a snapshot
    /// with its digest: a snapshot cut inside its digest, say.
    #[error(
        "truncated or damaged etcd file: its {len} bytes are neither whole pages of {page_size} \
         bytes (a member's member/snap/db) nor 32 bytes more than a multiple of 512 (a snapshot \
         with its SHA-256)"
    )]
    Size {
        /// The file's length.
        len: usize,
        /// Its bbolt page size.
        page_size: usize,
    },
    /// A bbolt database, but not etcd's.
    #[error("not an etcd database: {0}")]
    NotEtcd(String),
    /// A record that does not hold what etcd's schema says.
    #[error("damaged etcd data: {what}: {reason}")]
    Record {
        /// Which record.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The new data directory could not be written.
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::Error),
    /// The data directory to export could not be opened.
    #[error(transparent)]
    Offline(#[from] crate::offline::Error),
    /// The data directory to export could not be read.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    /// An export without the caller's consent to plain text.
    #[error("{}", PLAINTEXT_REFUSAL)]
    PlaintextRefused,
    /// The output file exists (never overwritten).
    #[error("{} already exists (it is never overwritten)", .0.display())]
    OutputExists(PathBuf),
    /// The output file could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests;
