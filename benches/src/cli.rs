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
    /// The key (or range start).
    pub key: String,
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
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let mut all = vec!["cairn-bench"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_are_etcds() {
        let cli = parse(&["put"]);
        assert_eq!(cli.global.endpoints, ["127.0.0.1:2379"]);
        assert_eq!((cli.global.conns, cli.global.clients), (1, 1));
        assert!(!cli.global.precise && !cli.global.sample && !cli.global.json);
        let Command::Put(p) = cli.command else {
            panic!("put")
        };
        assert_eq!(
            (p.key_size, p.val_size, p.rate, p.total, p.key_space_size),
            (8, 8, 0, 10000, 1)
        );
        assert!(!p.sequential_keys);
        assert_eq!(p.compact_interval, Duration::ZERO);
        assert_eq!(p.compact_index_delta, 1000);

        let Command::Range(r) = parse(&["range", "foo"]).command else {
            panic!("range")
        };
        assert_eq!(
            (r.key.as_str(), r.end, r.total, r.rate),
            ("foo", None, 10000, 0)
        );
        assert_eq!(r.consistency, Consistency::L);

        let Command::TxnPut(t) = parse(&["txn-put"]).command else {
            panic!("txn-put")
        };
        assert_eq!(
            (
                t.key_size,
                t.val_size,
                t.txn_ops,
                t.rate,
                t.total,
                t.key_space_size
            ),
            (8, 8, 1, 0, 10000, 1)
        );

        let Command::TxnMixed(m) = parse(&["txn-mixed"]).command else {
            panic!("txn-mixed")
        };
        assert_eq!(
            (m.total, m.limit, m.key_space_size, m.rw_ratio),
            (10000, 1000, 1, 1.0)
        );
        assert_eq!((m.end_key.as_str(), m.consistency), ("", Consistency::L));

        let Command::Watch(w) = parse(&["watch"]).command else {
            panic!("watch")
        };
        assert_eq!(
            (
                w.streams,
                w.watch_per_stream,
                w.watched_key_total,
                w.put_rate,
                w.put_total
            ),
            (10, 100, 1, 0, 1000)
        );
        assert_eq!(
            (w.key_size, w.key_space_size, w.sequential_keys),
            (32, 1, false)
        );

        let Command::WatchLatency(l) = parse(&["watch-latency"]).command else {
            panic!("watch-latency")
        };
        assert_eq!(
            (
                l.streams,
                l.watchers_per_stream,
                l.put_total,
                l.put_rate,
                l.key_size,
                l.val_size
            ),
            (10, 10, 1000, 100, 32, 32)
        );
        assert!(!l.prevkv);

        let Command::WatchGet(g) = parse(&["watch-get"]).command else {
            panic!("watch-get")
        };
        assert_eq!((g.watchers, g.streams, g.events), (10000, 1, 8));

        let Command::LeaseKeepalive(k) = parse(&["lease-keepalive"]).command else {
            panic!("lease-keepalive")
        };
        assert_eq!(k.total, 10000);
    }

    #[test]
    fn etcd_style_command_lines() {
        let cli = parse(&[
            "--endpoints=10.0.0.1:2379,10.0.0.2:2379",
            "--conns=100",
            "--clients=1000",
            "put",
            "--key-size=8",
            "--sequential-keys",
            "--total=100000",
            "--val-size=256",
            "--compact-interval=1m30s",
        ]);
        assert_eq!(cli.global.endpoints, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!((cli.global.conns, cli.global.clients), (100, 1000));
        let Command::Put(p) = cli.command else {
            panic!("put")
        };
        assert!(p.sequential_keys);
        assert_eq!((p.total, p.val_size), (100000, 256));
        assert_eq!(p.compact_interval, Duration::from_secs(90));

        // Global flags after the subcommand, Go's bool forms, --consistency.
        let cli = parse(&[
            "range",
            "k",
            "z",
            "--consistency=s",
            "--precise=true",
            "--json",
            "--sample=false",
        ]);
        assert!(cli.global.precise && cli.global.json && !cli.global.sample);
        assert_eq!(
            cli.command.preamble().unwrap(),
            "bench with serializable range"
        );
        let Command::Range(r) = cli.command else {
            panic!("range")
        };
        assert_eq!(r.end.as_deref(), Some("z"));
        assert!(Cli::try_parse_from(["cairn-bench", "range", "k", "--consistency=x"]).is_err());
        // watch-latency takes 3.4/3.5's --total too.
        let Command::WatchLatency(l) = parse(&["watch-latency", "--total", "5"]).command else {
            panic!("watch-latency")
        };
        assert_eq!(l.put_total, 5);
    }

    #[test]
    fn tls_flags() {
        // No TLS flag: no TLS.
        assert_eq!(parse(&["put"]).global.tls_options(), None);

        // etcd's --cacert/--cert/--key, before or after the subcommand.
        let cli = parse(&[
            "--endpoints=https://127.0.0.1:2379",
            "--cacert=ca.pem",
            "put",
            "--cert",
            "client.pem",
            "--key=client-key.pem",
        ]);
        assert_eq!(
            cli.global.tls_options(),
            Some(ClientOptions {
                ca_file: Some("ca.pem".into()),
                cert_file: Some("client.pem".into()),
                key_file: Some("client-key.pem".into()),
                insecure_skip_verify: false,
            })
        );

        // A CA alone (server TLS, no client certificate).
        let only_ca = parse(&["--cacert", "ca.pem", "range", "k"]).global;
        assert_eq!(
            only_ca.tls_options(),
            Some(ClientOptions {
                ca_file: Some("ca.pem".into()),
                ..ClientOptions::default()
            })
        );

        // --insecure-skip-tls-verify, in Go's bool forms.
        for flag in [
            "--insecure-skip-tls-verify",
            "--insecure-skip-tls-verify=true",
        ] {
            let options = parse(&[flag, "put"]).global.tls_options().unwrap();
            assert!(options.insecure_skip_verify && options.ca_file.is_none());
        }
        assert_eq!(
            parse(&["--insecure-skip-tls-verify=false", "put"])
                .global
                .tls_options(),
            None
        );
        assert!(Cli::try_parse_from(["cairn-bench", "--cacert", "put"]).is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("3 days").is_err());
    }
}
