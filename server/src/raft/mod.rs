//! Raft replication (tikv's `raft` crate, `RawNode`).
//!
//! The raft thread ([`node`]) owns the `RawNode` and runs the Ready loop;
//! [`RaftStorage`] keeps the log, hard state and conf state on the
//! [`crate::storage::Engine`] (column families `raft`, the entries, and
//! `raft_state`, the rest), so they go through the
//! same engine (and the same encryption at rest) as everything else;
//! [`transport`] carries raft messages (on raft streams) and snapshots (on
//! tonic) between members. The state machine is behind [`StateMachine`] (implemented by
//! the server's `Machine`): this module hands it entry bytes and indexes
//! and knows nothing of what they mean, nor of the errors clients see.
//!
//! - `keys`: the record layout of the `raft` column family and its codecs.
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
pub use stream::StreamReceiver;
pub use transport::{Peers, Resolver};
pub use waiters::Waiters;
