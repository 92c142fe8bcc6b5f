//! Member-to-member calls outside raft, on the peer port: the lease
//! requests a follower forwards to the leader (only the leader keeps lease
//! expiries), the member table a joining member asks for, and HashKV for
//! the corruption checks.
//!
//! Raft's own traffic (messages, snapshots) is `crate::raft::transport`:
//! raft streams and a separate gRPC service on the same port; this module
//! shares its [`crate::raft::Dialer`], and serves the port ([`port`]). A refusal crosses the wire typed: [`Error`] is
//! mapped to a status with a `cairnpb.PeerError` in its details, and back,
//! in one place (`error.rs`); nothing reads a status message to know what
//! went wrong.
//!
//! - `error`: [`Error`], its wire mapping, and its mapping to `EtcdError`.
//! - `client`: [`PeerChannels`] (lease forwarding), [`fetch_members`],
//!   [`hash_kv`].
//! - `renewals`: lease renewals on one stream per leader, both sides.
//! - `service`: [`PeerHandler`] (what a member answers) and [`PeerService`].
//! - `port`: the peer port, raft streams and gRPC told apart by their first
//!   bytes.

mod client;
mod error;
pub mod port;
mod renewals;
mod service;

pub use client::{fetch_members, hash_kv, PeerChannels};
pub use error::Error;
pub use service::{PeerHandler, PeerService};
