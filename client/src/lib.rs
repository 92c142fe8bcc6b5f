//! Async Rust client for Cairn and any etcd v3 endpoint.
//!
//! Covers the KV service (get, put, delete, txn, compact), Watch
//! ([`Client::watch`] -> [`Watcher`]), Lease ([`Client::lease_grant`],
//! [`Client::lease_keep_alive`] -> [`KeepAlive`]), Cluster
//! ([`Client::member_list`], [`Client::member_add`], ...) and Maintenance
//! ([`Client::status`], [`Client::endpoint_status_all`], alarms,
//! [`Client::hash_kv`], [`Client::defragment`], [`Client::snapshot`], ...).
//! Requests are built with small builder values ([`Get`], [`Put`], [`Delete`],
//! [`Txn`], [`Compare`], [`Op`]); responses are the raw `etcdserverpb` messages,
//! re-exported under [`proto`].
//!
//! # Endpoints and failover
//!
//! [`Client::connect_all`] takes every member's client URL. Connections are
//! made lazily (a member that is down does not fail the connect), and calls go
//! to one *current* endpoint. etcd's clientv3 retry policy decides what
//! happens when a call fails:
//!
//! - **"Try another member"** errors are gRPC `Unavailable` (connection
//!   refused or reset, "etcdserver: no leader", "etcdserver: leader changed",
//!   "etcdserver: request timed out") and transport failures. On one, the
//!   client moves the current endpoint to the next member.
//! - **Reads** (Range, Status, MemberList, Alarm GET, LeaseTimeToLive,
//!   LeaseLeases, HashKV, Snapshot, opening watch and keep-alive streams) are
//!   then sent again to the next endpoint: up to 3 rounds over all
//!   endpoints, with 50 ms and 100 ms pauses between rounds. If every attempt
//!   fails, the last error is returned as [`Error::Status`].
//! - **Writes** (Put, DeleteRange, Txn, Compact, LeaseGrant, LeaseRevoke,
//!   Member add/remove/update/promote, MoveLeader, Defragment, Alarm
//!   activate/deactivate) are sent again only when the request surely never
//!   reached a server: the connection could not be made, or the member
//!   answered exactly "etcdserver: no leader" or "etcdserver: rpc not
//!   supported for learner", which etcd does before proposing. Any other
//!   failure leaves the outcome unknown (the write may have been applied)
//!   and is returned at once, not repeated, as [`Error::UnknownOutcome`]. So for a write, [`Error::Status`] means "not
//!   applied" and [`Error::UnknownOutcome`] means "maybe applied": check
//!   before retrying, or make the write safe to repeat with a [`Txn`] guard.
//! - **Every other gRPC error** (`InvalidArgument`, `OutOfRange` for a
//!   compacted revision, `NotFound`, `FailedPrecondition`, ...) is the
//!   server's answer and is returned at once, for reads and writes alike. A
//!   `DeadlineExceeded` or `Cancelled` from the server is not retried either;
//!   for a write it is an [`Error::UnknownOutcome`].
//!
//! A [`Watcher`] resumes from the next revision it needs on whichever member
//! is current, and a [`KeepAlive`] reopens its stream the same way.
//! [`Client::with_require_leader`] makes members without a leader refuse
//! requests and end watches (etcd's `WithRequireLeader`), so those fail over
//! too instead of being served by a member cut off from the cluster.
//!
//! # Authentication
//!
//! [`Client::with_credentials`] authenticates as a user (etcdctl's
//! `--user name:password`) and sends the token with every call; a token a
//! member refuses (expired, made by another member, or older than the last
//! change to users and roles) is renewed and the call sent again, once, as
//! etcd's clientv3 does. Clients with a TLS client certificate need no
//! credentials: the member takes the certificate's Common Name as the user.
//!
//! The client sets no deadline on calls (only a 2 s limit on connecting to
//! a member); wrap a call in `tokio::time::timeout` to bound it, and treat a
//! write that timed out like an [`Error::UnknownOutcome`].
//!
//! Operations about one member (status, hash, defragment, snapshot, move
//! leader on the leader) can be pinned with [`Client::endpoint`]`(i)`.
//!
//! ```no_run
//! use cairn_client::{Client, Compare, CompareOp, Delete, Get, Op, Put, Txn};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), cairn_client::Error> {
//! let client = Client::connect_all([
//!     "http://10.0.0.1:2379",
//!     "http://10.0.0.2:2379",
//!     "http://10.0.0.3:2379",
//! ])
//! .await?;
//!
//! client.put(Put::new("app/config", "v1")).await?;
//! let resp = client.get(Get::key("app/").prefix()).await?;
//! for kv in &resp.kvs {
//!     println!("{} = {}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value));
//! }
//!
//! // Create the lock key only if it does not exist yet.
//! let txn = Txn::new()
//!     .when(vec![Compare::version("app/lock", CompareOp::Equal, 0)])
//!     .and_then(vec![Op::put(Put::new("app/lock", "me"))])
//!     .or_else(vec![Op::get(Get::key("app/lock"))]);
//! let won = client.txn(txn).await?.succeeded;
//! println!("lock acquired: {won}");
//!
//! client.delete(Delete::key("app/").prefix()).await?;
//! let status = client.status().await?;
//! println!("server {} db {} bytes", status.version, status.db_size);
//! # Ok(())
//! # }
//! ```

mod auth;
mod client;
mod cluster;
mod error;
mod kv;
mod lease;
mod maintenance;
mod retry;
mod watch;

/// The generated etcd v3 protocol types (`etcdserverpb`, `mvccpb`, `authpb`).
pub use cairn_proto as proto;

pub use client::{Client, EndpointStatus, TlsOptions};
pub use error::Error;
pub use kv::{prefix_end, Compare, CompareOp, Delete, Get, Op, Put, SortOrder, SortTarget, Txn};
pub use lease::KeepAlive;
pub use watch::{Watch, WatchEvent, Watcher};
