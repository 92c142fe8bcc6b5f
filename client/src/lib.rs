//! Async Rust client for Cairn and any etcd v3 endpoint.
//!
//! Covers the KV service (get, put, delete, txn, compact), the parts of
//! Maintenance needed day to day (status, alarms), and the Lease service
//! ([`Client::lease_grant`], [`Client::lease_keep_alive`] -> [`KeepAlive`]).
//! Requests are built with small builder values ([`Get`], [`Put`], [`Delete`],
//! [`Txn`], [`Compare`], [`Op`]); responses are the raw `etcdserverpb` messages,
//! re-exported under [`proto`].
//!
//! ```no_run
//! use cairn_client::{Client, Compare, CompareOp, Delete, Get, Op, Put, Txn};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), cairn_client::Error> {
//! let client = Client::connect("http://127.0.0.1:2379").await?;
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

mod client;
mod error;
mod kv;
mod lease;
mod watch;

/// The generated etcd v3 protocol types (`etcdserverpb`, `mvccpb`, `authpb`).
pub use cairn_proto as proto;

pub use client::Client;
pub use error::Error;
pub use kv::{prefix_end, Compare, CompareOp, Delete, Get, Op, Put, SortOrder, SortTarget, Txn};
pub use lease::KeepAlive;
pub use watch::{Watch, WatchEvent, Watcher};
