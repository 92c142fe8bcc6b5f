//! Cairn: an etcd v3-compatible key-value store.
//!
//! # Layout
//!
//! From the wire down:
//!
//! - [`grpc`]: tonic services (KV, Watch, Lease, Cluster, Maintenance, Auth). Validate the request, call the
//!   API of [`member`] it serves, map the error through one table, fill the header. The
//!   only module that knows tonic.
//! - [`http`]: the HTTP routes of the client port (`/health`, `/version`),
//!   served beside gRPC on the same listener.
//! - [`auth`]: authentication and RBAC: the replicated auth store (one
//!   sealed record), tokens, passwords (bcrypt) and the permission check of
//!   each request kind.
//! - [`duration`]: Go's duration syntax, as etcd's flags take it; whole
//!   milliseconds for the logs' `took_ms` fields.
//! - [`concurrency`]: etcd's mutex and election recipes over the member's own
//!   KV, Lease and Watch, behind the Lock and Election services.
//! - [`member`]: one member's internal API (etcd's `EtcdServer`), one API
//!   per service (KV, Lease, Cluster, Maintenance) over a shared
//!   [`member::Proposer`]: size limits, quota, proposing each write to raft
//!   and waiting for it to be applied, ReadIndex for linearizable reads.
//!   [`reconfig`]: etcd's `--strict-reconfig-check` rules for membership
//!   changes.
//! - [`entry`]: the data of a raft log entry, encoded and decoded in one place;
//!   a request is proposed only if its entry decodes exactly as every state
//!   machine will decode it.
//! - [`machine`]: the replicated state machine: applies raft entries (one
//!   write transaction per entry, committed with its index), the member
//!   table, alarms, snapshot data; wakes the proposer's waiter.
//! - [`apply`]: the deterministic state machine: etcd's Range/Put/DeleteRange/Txn
//!   semantics on top of the store.
//! - [`lease`]: the lessor: leases and their attached keys (changed only by
//!   applied operations), plus the leader-only expiry and checkpoint
//!   schedule; [`tasks::lease_expiry`] revokes expired leases through the
//!   write path.
//! - [`mvcc`]: revisions, the in-memory key index, history reads, compaction.
//!   Knows nothing of raft or gRPC.
//! - [`raft`]: raft replication: the Ready loop thread ([`raft::node`]), the
//!   log on the engine ([`raft::RaftStorage`]), the peer transport of raft
//!   messages and snapshots ([`raft::transport`]); the state machine behind
//!   [`raft::StateMachine`].
//! - [`peer`]: member-to-member calls outside raft (lease forwarding, the
//!   member table, HashKV), typed errors on the wire.
//! - [`snapshot`]: the `snapshot save` file format.
//! - [`offline`]: the offline tools (etcdutl's): `snapshot status` of a
//!   snapshot file, `defrag` of a stopped member's data directory.
//! - [`storage`]: the [`storage::Engine`] trait every disk write goes through;
//!   RocksDB and an in-memory engine for tests.
//! - [`embed`]: start a member from a [`config::Config`] inside any program
//!   and stop it ([`embed::Handle`]); the `cairn` binary wraps it.
//!   [`config`]: every flag with its default; [`defaults`]: etcd's defaults,
//!   which the config and the binary's flags share.
//! - [`bootstrap`]: everything before serving: listeners, member and cluster
//!   ids, opening the data directory, a new cluster's first state, joining
//!   an existing one, `snapshot restore`, and the start-up checks of
//!   [`bootstrap::recovery`] (`--experimental-initial-corrupt-check`,
//!   `--force-new-cluster`).
//! - [`tasks`]: a running member's background work under one shutdown
//!   signal (leadership, lease expiry, watch catch-up, publication,
//!   re-sealing, corruption check, auto compaction: etcd's periodic and
//!   revision modes, run by the leader through the write path).
//! - [`notify`]: systemd's readiness protocol (READY=1, STOPPING=1).
//! - [`logging`]: etcd 3.5's log lines (zap's JSON) and `--log-outputs`.
//! - [`error`]: the errors clients see, with etcd's messages.
//! - `locks`: locking that outlives a panicking holder (every lock in
//!   the crate guards whole-value operations).
//! - [`metrics`]: Prometheus metrics with etcd's names, a registry per
//!   member; [`http`] serves them at `/metrics`.

pub mod apply;
pub mod auth;
pub mod bootstrap;
pub mod concurrency;
pub mod config;
pub mod defaults;
pub mod duration;
pub mod embed;
pub mod entry;
pub mod error;
pub mod grpc;
pub mod http;
pub mod lease;
mod locks;
pub mod logging;
pub mod machine;
pub mod member;
pub mod metrics;
pub mod migrate;
pub mod mvcc;
pub mod notify;
pub mod offline;
pub mod peer;
pub mod raft;
pub mod reconfig;
pub mod snapshot;
pub mod storage;
pub mod tasks;
