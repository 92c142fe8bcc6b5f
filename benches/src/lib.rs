//! cairn-bench: etcd's `tools/benchmark` workloads, rebuilt in Rust, against
//! any etcd v3 endpoint list (Cairn or etcd alike), with etcd's flags,
//! request shapes and report.
//!
//! ```text
//! cairn-bench --endpoints=127.0.0.1:2379 --conns=100 --clients=1000 \
//!     put --key-size=8 --val-size=256 --total=100000 --key-space-size=100000
//! ```
//!
//! The pieces:
//!
//! - [`cli`]: the flags (etcd's names and defaults) and [`cli::Cli`].
//! - [`keys`]: Go's `PutVarint` key generation.
//! - [`conn`]: `--conns` connections, each round-robin over the endpoints
//!   (over TLS with `--cacert`/`--cert`/`--key`);
//!   client i uses connection i % conns.
//! - [`h2chan`]: the calls' transport, HTTP/2 without tonic's `Channel`
//!   (the tool shares the cores with what it measures).
//! - [`limiter`]: the shared `--rate` token bucket.
//! - [`report`]: etcd's report (summary, 11-bucket histogram, percentiles,
//!   error distribution, `--sample` series) and the one-line JSON form.
//! - The workloads: closed-loop clients pull requests, made in order by
//!   one generator (as etcd's goroutines do), from a queue as deep as
//!   `--clients`.
//!
//! [`run`] runs the command line's workload and returns its reports; the
//! binary prints them.

pub mod cli;
pub mod conn;
pub mod h2chan;
pub mod keys;
pub mod limiter;
pub mod progress;
pub mod report;
pub mod rng;
mod workload;

pub use cli::Cli;
pub use report::{Report, Stats};

/// Why a benchmark could not run (bad flags, no connection, a failed set-up
/// request, a broken watch stream). Failed requests during a run are not
/// errors: they go to the report's error distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Locks `m`, poisoned or not: what the tool keeps under its locks (the
/// next request, the rate limit's schedule, a list of updates) is changed
/// whole or not at all, so a task that panicked holding one left nothing
/// half done.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the workload of `cli` and returns its reports: one for most
/// workloads, two for `txn-mixed` (`txn-mixed-read`, `txn-mixed-write`),
/// `watch` (`watch-create`, then `watch`: the events) and `watch-latency`
/// (`watch-latency-put`, then `watch-latency`: the events). Prints nothing
/// on stdout; a progress bar goes to stderr when it is a terminal.
pub async fn run(cli: &Cli) -> Result<Vec<Report>, Error> {
    workload::run(cli).await
}
