//! Raft replication (tikv's `raft` crate, `RawNode`).
//!
//! The raft thread ([`node`]) owns the `RawNode` and runs the Ready loop;
//! [`RaftStorage`] keeps the log, hard state and conf state on the
//! [`crate::storage::Engine`] (column family `raft`), so they go through the
//! same engine (and, later, the same encryption) as everything else;
//! [`transport`] carries raft messages and snapshots between members over
//! tonic. The state machine is [`crate::machine`]: this module hands it
//! entry bytes and indexes and knows nothing of what they mean.
//!
//! - `keys`: the record layout of the `raft` column family and its codecs.
//! - `error`: this module's errors and their mapping into `raft::Error`.
//! - `storage`: [`RaftStorage`].
//! - `node`: the Ready loop thread, [`RaftHandle`], [`RaftStatus`].
//! - `transport`: [`Peers`] (sending) and [`PeerService`] (receiving).
//! - `log`: [`log::logger`], raft's slog records forwarded to `tracing`.

mod error;
mod keys;
pub mod log;
pub mod node;
mod storage;
#[cfg(test)]
mod storage_tests;
pub mod transport;
pub mod wire;

pub use error::Error;
pub use node::{Input, NodeConfig, RaftHandle, RaftStatus};
pub use storage::RaftStorage;
pub use transport::{PeerChannels, PeerHandler, PeerService, Peers};
