//! Raft replication (tikv's `raft` crate, `RawNode`).
//!
//! What exists so far is the bottom layer: [`RaftStorage`], raft's
//! [`::raft::Storage`] over the [`crate::storage::Engine`] (column family
//! `raft`), so the log, the hard state and the conf state survive a restart and
//! go through the same engine (and, later, the same encryption) as everything
//! else. Still to come: the Ready loop, the peer transport, ReadIndex reads and
//! snapshots over the wire.
//!
//! - `keys`: the record layout of the `raft` column family and its codecs.
//! - `error`: this module's errors and their mapping into `raft::Error`.
//! - `storage`: [`RaftStorage`].
//! - `log`: [`log::logger`], raft's slog records forwarded to `tracing`.

mod error;
mod keys;
pub mod log;
pub mod node;
mod storage;
#[cfg(test)]
mod storage_tests;
pub mod transport;

pub use error::Error;
pub use node::{Input, NodeConfig, RaftHandle, RaftStatus};
pub use storage::RaftStorage;
pub use transport::{forward_lease, LeaseAuthority, PeerService, Peers};
