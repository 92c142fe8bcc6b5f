//! The command line's parsing: etcd's defaults and forms.

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
        (r.key.as_deref(), r.end, r.total, r.rate),
        (Some("foo"), None, 10000, 0)
    );
    assert_eq!(r.consistency, Consistency::L);
    assert_eq!((r.key_space_size, r.key_size), (None, 8));

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
    assert_eq!(l.key_space_size, 1);

    let Command::Kube(k) = parse(&["kube"]).command else {
        panic!("kube")
    };
    assert_eq!(
        (k.keys, k.prefix.as_str(), k.val_size, k.total, k.list_every),
        (10000, "/registry/pods/default/", 1024, 20000, 100)
    );
    assert_eq!(
        (k.page_size, k.progress_interval, k.rate),
        (500, Duration::from_secs(1), 0)
    );

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
fn cairns_additions() {
    // range over a key space needs no KEY; without either it is refused.
    let Command::Range(r) = parse(&["range", "--key-space-size", "1000", "--key-size=4"]).command
    else {
        panic!("range")
    };
    assert_eq!((r.key, r.key_space_size, r.key_size), (None, Some(1000), 4));
    assert!(Cli::try_parse_from(["cairn-bench", "range"]).is_err());
    let Command::WatchLatency(l) = parse(&["watch-latency", "--key-space-size=100"]).command else {
        panic!("watch-latency")
    };
    assert_eq!(l.key_space_size, 100);
    let Command::Kube(k) = parse(&[
        "kube",
        "--keys=20",
        "--list-every=0",
        "--progress-interval=0",
    ])
    .command
    else {
        panic!("kube")
    };
    assert_eq!(
        (k.keys, k.list_every, k.progress_interval),
        (20, 0, Duration::ZERO)
    );
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
