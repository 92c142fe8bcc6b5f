//! Cairn: an etcd v3-compatible key-value store.
//!
//! # Layout
//!
//! From the wire down:
//!
//! - [`grpc`]: tonic services (KV, Watch, Lease, Maintenance). Validate the request, call the
//!   [`member::Member`], map the error through one table, fill the header. The
//!   only module that knows tonic.
//! - [`member`]: one member's internal API (etcd's `EtcdServer`): size limits,
//!   alarms, and running each write as one store transaction with the next
//!   applied index.
//! - [`apply`]: the deterministic state machine: etcd's Range/Put/DeleteRange/Txn
//!   semantics on top of the store.
//! - [`lease`]: the lessor: leases and their attached keys (changed only by
//!   applied operations), plus the leader-only expiry clock and the task that
//!   revokes expired leases through the write path.
//! - [`mvcc`]: revisions, the in-memory key index, history reads, compaction.
//!   Knows nothing of raft or gRPC.
//! - [`raft`]: raft replication; so far the raft log and state on the engine
//!   ([`raft::RaftStorage`]).
//! - [`storage`]: the [`storage::Engine`] trait every disk write goes through;
//!   RocksDB and an in-memory engine for tests.
//! - [`embed`]: start a member from a [`embed::Config`] inside any program; the
//!   `cairn` binary wraps it.
//! - [`error`]: the errors clients see, with etcd's messages.

pub mod apply;
pub mod embed;
pub mod error;
pub mod grpc;
pub mod lease;
pub mod machine;
pub mod member;
pub mod membership;
pub mod mvcc;
pub mod raft;
pub mod snapshot;
pub mod storage;
