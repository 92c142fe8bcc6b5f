//! Raft replication (tikv's `raft` crate, `RawNode`).
//!
//! The raft thread ([`node`]) owns the `RawNode` and runs the Ready loop;
//! [`RaftStorage`] keeps the log, hard state and conf state in files of
//! their own (`log_files`: tikv's raft-engine), the entries sealed by the
//! [`crate::storage::Engine`]'s encryption at rest like everything else;
//! [`transport`] carries raft messages (on raft streams) and snapshots (on
//! tonic) between members. The state machine is behind [`StateMachine`] (implemented by
//! the server's `Machine`): this module hands it entry bytes and indexes
//! and knows nothing of what they mean, nor of the errors clients see.
//!
//! - `keys`: the record layout of the log and its codecs.
//! - `log_files`: `LogFiles`, the log's files, and why apart from RocksDB.
//! - `error`: this module's errors and their mapping into `raft::Error`.
//! - `state_machine`: [`StateMachine`], what the node needs of the state.
//! - `waiters`: [`Waiters`], proposal id -> the proposer's channel.
//! - `storage`: [`RaftStorage`].
//! - `node`: the Ready loop thread, [`RaftHandle`], [`RaftStatus`]; split
//!   into the Ready steps, snapshots, conf changes and ReadIndex batching.
//! - `transport`: [`Peers`], the sending side: raft messages and snapshots
//!   only.
//! - `stream`: the raft stream, length-prefixed raft messages on a
//!   connection of their own, and [`StreamReceiver`], its receiving side.
//! - `service`: [`RaftService`], raft's gRPC calls (snapshots, the prober).
//! - `dialer`: [`Dialer`], how every peer channel connects (also used by
//!   `crate::peer`).
//! - `log`: [`log::logger`], raft's slog records forwarded to `tracing`.

mod dialer;
mod entry_cache;
mod error;
mod keys;
pub mod log;
mod log_files;
pub mod node;
#[cfg(test)]
mod node_tests;
mod service;
mod state_machine;
mod storage;
#[cfg(test)]
mod storage_tests;
pub mod stream;
pub mod transport;
mod waiters;
pub mod wire;

pub use dialer::{DialError, Dialer};
pub use error::{Error, RequestError};
pub use node::{
    inbox, Ending, Inbox, InboxReceiver, Input, NodeConfig, RaftHandle, RaftStatus, Refusal, Taken,
};
pub use service::RaftService;
pub use state_machine::{MemberChange, StateMachine};
pub use storage::RaftStorage;

/// A raft log in a fresh temporary directory, its entries sealed by
/// `engine`; the directory goes when the returned guard does (keep it past
/// the log).
#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) fn log_in_temp_dir(
    engine: std::sync::Arc<dyn crate::storage::Engine>,
) -> (RaftStorage, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = RaftStorage::open(engine, dir.path()).expect("a new raft log");
    (log, dir)
}
pub use stream::StreamReceiver;
pub use transport::{Peers, Resolver};
pub use waiters::Waiters;
