//! The command line: etcd's `benchmark` flags, names and defaults.
//!
//! Boolean flags take Go's forms too (`--precise`, `--precise=true`,
//! `--precise=false`), durations Go's syntax (`5m`, `1m30s`, `500ms`, `0`).

use std::path::PathBuf;
use std::time::Duration;

use cairn_tls::client::ClientOptions;
use clap::{ArgAction, Args, Parser, Subcommand};

/// etcd's `tools/benchmark` workloads against any etcd v3 endpoint list.
#[derive(Debug, Clone, Parser)]
#[command(name = "cairn-bench", version, about, long_about = None)]
pub struct Cli {
    /// Flags of every workload.
    #[command(flatten)]
    pub global: Global,
    /// The workload.
    #[command(subcommand)]
    pub command: Command,
}

/// etcd's root flags (plus `--json`).
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// gRPC endpoints (comma-separated).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Total number of gRPC connections.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Total number of gRPC clients.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Use full floating point precision (Go's %g).
    #[arg(long, global = true, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub precise: bool,
    /// Sample requests for every second (adds etcd's per-second table).
    #[arg(long, global = true, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub sample: bool,
    /// Dial timeout for client connections (0 = none).
    #[arg(long = "dial-timeout", global = true, default_value = "0", value_parser = parse_duration)]
    pub dial_timeout: Duration,
    /// Print each report as one line of JSON on stdout instead of etcd's text.
    #[arg(long, global = true, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub json: bool,
    /// Verify certificates of HTTPS-enabled servers using this CA bundle.
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Identify HTTPS client using this SSL certificate file.
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Identify HTTPS client using this SSL key file.
    // Its own id: `range`'s positional KEY is the id `key`.
    #[arg(long = "key", id = "key_file", global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Accept any server certificate (etcdctl's flag; etcd's benchmark has
    /// no such flag).
    #[arg(long = "insecure-skip-tls-verify", global = true, num_args = 0..=1,
          require_equals = true, default_value_t = false,
          default_missing_value = "true", action = ArgAction::Set)]
    pub insecure_skip_tls_verify: bool,
    /// Authenticate as this user: name:password (etcd's flag; no prompt).
    #[arg(long, global = true, value_name = "NAME:PASSWORD", value_parser = crate::conn::parse_user)]
    pub user: Option<crate::conn::UserPassword>,
}

impl Global {
    /// The TLS of the connections, if any TLS flag was given. As etcd's
    /// clientv3 with TLS configured, endpoints without a scheme are then
    /// dialled over TLS (see [`crate::conn`]).
    pub fn tls_options(&self) -> Option<ClientOptions> {
        let any = self.cacert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.insecure_skip_tls_verify;
        any.then(|| ClientOptions {
            ca_file: self.cacert.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            insecure_skip_verify: self.insecure_skip_tls_verify,
        })
    }
}

/// The workloads.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Benchmark put.
    Put(PutArgs),
    /// Benchmark range.
    Range(RangeArgs),
    /// Benchmark txn-put.
    TxnPut(TxnPutArgs),
    /// Benchmark a mixed load of txn-put and txn-range.
    TxnMixed(TxnMixedArgs),
    /// Benchmark watch: watch creation, then events from concurrent puts.
    Watch(WatchArgs),
    /// Benchmark watch latency: from a put to its events at every watcher.
    WatchLatency(WatchLatencyArgs),
    /// Benchmark serializable gets while many unsynced watchers catch up.
    WatchGet(WatchGetArgs),
    /// Benchmark lease keepalive.
    LeaseKeepalive(LeaseKeepaliveArgs),
    /// Benchmark Kubernetes-shaped traffic (Cairn's addition): optimistic
    /// updates, paginated lists of a prefix, a watch of the prefix.
    Kube(KubeArgs),
}

impl Command {
    /// The subcommand's name.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Put(_) => "put",
            Command::Range(_) => "range",
            Command::TxnPut(_) => "txn-put",
            Command::TxnMixed(_) => "txn-mixed",
            Command::Watch(_) => "watch",
            Command::WatchLatency(_) => "watch-latency",
            Command::WatchGet(_) => "watch-get",
            Command::LeaseKeepalive(_) => "lease-keepalive",
            Command::Kube(_) => "kube",
        }
    }

    /// The line etcd prints before running (`bench with linearizable
    /// range`), if any.
    pub fn preamble(&self) -> Option<String> {
        let consistency = match self {
            Command::Range(a) => &a.consistency,
            Command::TxnMixed(a) => &a.consistency,
            _ => return None,
        };
        Some(match consistency {
            Consistency::L => "bench with linearizable range".into(),
            Consistency::S => "bench with serializable range".into(),
        })
    }
}

/// `--consistency`: linearizable (`l`) or serializable (`s`) reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    /// Linearizable.
    #[value(name = "l")]
    L,
    /// Serializable.
    #[value(name = "s")]
    S,
}

/// `put`.
#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// Key size of put request.
    #[arg(long = "key-size", default_value_t = 8)]
    pub key_size: usize,
    /// Value size of put request.
    #[arg(long = "val-size", default_value_t = 8)]
    pub val_size: usize,
    /// Maximum puts per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Total number of put requests.
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
    /// Maximum possible keys.
    #[arg(long = "key-space-size", default_value_t = 1)]
    pub key_space_size: usize,
    /// Use sequential keys.
    #[arg(long = "sequential-keys", num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub sequential_keys: bool,
    /// Interval to compact the database (0 = never), e.g. 5m.
    #[arg(long = "compact-interval", default_value = "0", value_parser = parse_duration)]
    pub compact_interval: Duration,
    /// Delta between current revision and compact revision.
    #[arg(long = "compact-index-delta", default_value_t = 1000)]
    pub compact_index_delta: i64,
}

/// `range KEY [END]`.
#[derive(Debug, Clone, Args)]
pub struct RangeArgs {
    /// The key (or range start); not needed with `--key-space-size`.
    #[arg(required_unless_present = "key_space_size")]
    pub key: Option<String>,
    /// The range end (exclusive); a single key without it.
    pub end: Option<String>,
    /// Maximum range requests per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Total number of range requests.
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
    /// Linearizable (l) or Serializable (s).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Cairn's addition: instead of KEY, each get reads one random key of
    /// the N that `put --sequential-keys --key-space-size N` writes (so a
    /// read row can measure a store of N keys, not one hot key).
    #[arg(long = "key-space-size")]
    pub key_space_size: Option<usize>,
    /// Key size of those keys (as put's `--key-size`).
    #[arg(long = "key-size", default_value_t = 8)]
    pub key_size: usize,
}

/// `txn-put`.
#[derive(Debug, Clone, Args)]
pub struct TxnPutArgs {
    /// Key size of txn put.
    #[arg(long = "key-size", default_value_t = 8)]
    pub key_size: usize,
    /// Value size of txn put.
    #[arg(long = "val-size", default_value_t = 8)]
    pub val_size: usize,
    /// Number of puts per txn.
    #[arg(long = "txn-ops", default_value_t = 1)]
    pub txn_ops: usize,
    /// Maximum txns per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Total number of txn requests.
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
    /// Maximum possible keys.
    #[arg(long = "key-space-size", default_value_t = 1)]
    pub key_space_size: usize,
}

/// `txn-mixed`.
#[derive(Debug, Clone, Args)]
pub struct TxnMixedArgs {
    /// Accepted and ignored, as etcd does (its usage line names them).
    #[arg(hide = true)]
    pub ignored: Vec<String>,
    /// Key size of mixed txn.
    #[arg(long = "key-size", default_value_t = 8)]
    pub key_size: usize,
    /// Value size of mixed txn.
    #[arg(long = "val-size", default_value_t = 8)]
    pub val_size: usize,
    /// Maximum txns per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Total number of txn requests.
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
    /// Read operation range end key (as in etcd, overridden by the prefix
    /// option its reads also set: every read is a full range with --limit).
    #[arg(long = "end-key", default_value = "")]
    pub end_key: String,
    /// Read operation range result limit.
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    /// Maximum possible keys.
    #[arg(long = "key-space-size", default_value_t = 1)]
    pub key_space_size: usize,
    /// Linearizable (l) or Serializable (s).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Read/write ops ratio.
    #[arg(long = "rw-ratio", default_value_t = 1.0)]
    pub rw_ratio: f64,
}

/// `watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Total watch streams.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Total watchers per stream.
    #[arg(long = "watch-per-stream", default_value_t = 100)]
    pub watch_per_stream: usize,
    /// Total number of keys to be watched.
    #[arg(long = "watched-key-total", default_value_t = 1)]
    pub watched_key_total: usize,
    /// Number of keys to put per second (0 is no limit).
    #[arg(long = "put-rate", default_value_t = 0)]
    pub put_rate: u64,
    /// Number of put requests.
    #[arg(long = "put-total", default_value_t = 1000)]
    pub put_total: usize,
    /// Key size of watch request.
    #[arg(long = "key-size", default_value_t = 32)]
    pub key_size: usize,
    /// Maximum possible keys.
    #[arg(long = "key-space-size", default_value_t = 1)]
    pub key_space_size: usize,
    /// Use sequential keys.
    #[arg(long = "sequential-keys", num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub sequential_keys: bool,
}

/// `watch-latency`.
#[derive(Debug, Clone, Args)]
pub struct WatchLatencyArgs {
    /// Total watch streams.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Total watchers per stream.
    #[arg(long = "watchers-per-stream", default_value_t = 10)]
    pub watchers_per_stream: usize,
    /// PrevKV enabled on watch requests.
    #[arg(long, num_args = 0..=1, require_equals = true,
          default_value_t = false, default_missing_value = "true", action = ArgAction::Set)]
    pub prevkv: bool,
    /// Total number of put requests (`--total` in etcd 3.4/3.5).
    #[arg(long = "put-total", alias = "total", default_value_t = 1000)]
    pub put_total: usize,
    /// Number of keys to put per second (0 is no limit).
    #[arg(long = "put-rate", default_value_t = 100)]
    pub put_rate: u64,
    /// Key size of watch response.
    #[arg(long = "key-size", default_value_t = 32)]
    pub key_size: usize,
    /// Value size of watch response.
    #[arg(long = "val-size", default_value_t = 32)]
    pub val_size: usize,
    /// Cairn's addition: the watchers spread over this many keys (watcher w
    /// watches key w % N) and the puts go round-robin over them, so each put
    /// reaches 1/N of the watchers: many watchers without every put
    /// fanning out to all of them. 1 is etcd's workload (one key).
    #[arg(long = "key-space-size", default_value_t = 1)]
    pub key_space_size: usize,
}

/// `watch-get`.
#[derive(Debug, Clone, Args)]
pub struct WatchGetArgs {
    /// Total number of watchers.
    #[arg(long, default_value_t = 10000)]
    pub watchers: usize,
    /// Total number of watcher streams.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Number of events per watcher.
    #[arg(long, default_value_t = 8)]
    pub events: usize,
}

/// `lease-keepalive`.
#[derive(Debug, Clone, Args)]
pub struct LeaseKeepaliveArgs {
    /// Total number of lease keepalive requests.
    #[arg(long, default_value_t = 10000)]
    pub total: usize,
}

/// `kube`: Kubernetes-shaped traffic on `--keys` objects under `--prefix`
/// (created before the measured part), as kube-apiserver drives etcd:
/// optimistic updates (`Txn[mod_revision == r] -> Put else Get`), every
/// `--list-every`th operation a paginated list of the whole prefix at one
/// revision (`--page-size` keys a page), and one watch of the prefix with a
/// progress request every `--progress-interval`.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Objects under the prefix.
    #[arg(long, default_value_t = 10000)]
    pub keys: usize,
    /// The prefix (a resource's directory in kube-apiserver's layout).
    #[arg(long, default_value = "/registry/pods/default/")]
    pub prefix: String,
    /// Value size of the objects.
    #[arg(long = "val-size", default_value_t = 1024)]
    pub val_size: usize,
    /// Total operations (updates and whole lists).
    #[arg(long, default_value_t = 20000)]
    pub total: usize,
    /// One operation in this many is a whole paginated list (0: none).
    #[arg(long = "list-every", default_value_t = 100)]
    pub list_every: usize,
    /// Keys per page of a list (kube-apiserver's default limit).
    #[arg(long = "page-size", default_value_t = 500)]
    pub page_size: i64,
    /// How often the watcher asks for a progress notification (0: never).
    #[arg(long = "progress-interval", default_value = "1s", value_parser = parse_duration)]
    pub progress_interval: Duration,
    /// Maximum operations per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

/// Go's `time.ParseDuration` for non-negative durations: `0`, or numbers
/// (decimals allowed) each with a unit among ns, us, µs, ms, s, m, h, in
/// sequence (`1h30m`, `1.5s`, `500ms`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}");
    let s = text.trim().strip_prefix('+').unwrap_or(text.trim());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += number * nanos_per;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests;
