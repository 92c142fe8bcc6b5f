//! Every workload, briefly, against an in-process Cairn member: the reports
//! count every request asked for, and none failed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::path::Path;
use std::process::Command as Process;

use cairn_bench::cli::Cli;
use cairn_bench::Report;
use cairn_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use cairn_server::embed::{self, Config, Handle};
use clap::Parser;

/// A member on `dir`, on free loopback ports.
async fn member(dir: &Path) -> Handle {
    embed::start(Config {
        data_dir: dir.join("data"),
        listen_client_urls: vec!["http://127.0.0.1:0".into()],
        listen_peer_urls: vec!["http://127.0.0.1:0".into()],
        ..Config::default()
    })
    .await
    .expect("member starts")
}

/// Runs `cairn-bench --endpoints=<member> args...` through the library.
async fn bench(member: &Handle, args: &[&str]) -> Vec<Report> {
    let endpoint = format!("--endpoints={}", member.client_urls()[0]);
    let mut argv = vec!["cairn-bench", endpoint.as_str()];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).unwrap();
    cairn_bench::run(&cli).await.unwrap()
}

/// The one report of a single-report workload, checked: `total` requests,
/// no error, and figures that add up.
fn single(reports: &[Report], workload: &str, total: u64) -> Report {
    assert_eq!(reports.len(), 1, "{workload}: one report");
    check(&reports[0], workload, total);
    reports[0].clone()
}

fn check(report: &Report, workload: &str, total: u64) {
    let s = &report.stats;
    assert_eq!(report.workload, workload);
    assert_eq!(s.error_count(), 0, "{workload}: errors {:?}", s.errors);
    assert_eq!(s.count(), total, "{workload}: requests");
    if total > 0 {
        assert!(s.fastest > 0.0 && s.fastest <= s.average && s.average <= s.slowest);
        assert!(s.rps > 0.0);
        let histogram = s.histogram();
        assert_eq!(histogram.len(), 11);
        assert_eq!(histogram.iter().map(|b| b.1).sum::<u64>(), total);
        assert_eq!(histogram[10].0, s.slowest);
    }
    let json = report.to_json();
    assert!(
        json.starts_with(&format!("{{\"workload\":\"{workload}\",")),
        "{json}"
    );
    assert!(
        json.contains(&format!("\"total\":{total},\"errors\":0,")),
        "{json}"
    );
}

/// How many keys the member holds.
async fn key_count(member: &Handle) -> i64 {
    let mut kv = KvClient::connect(member.client_urls()[0].clone())
        .await
        .unwrap();
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        count_only: true,
        ..RangeRequest::default()
    };
    kv.range(all).await.unwrap().into_inner().count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let m = member(dir.path()).await;
    let reports = bench(
        &m,
        &[
            "--clients=4",
            "--conns=2",
            "put",
            "--total=200",
            "--key-space-size=50",
            "--sequential-keys",
            "--val-size=16",
        ],
    )
    .await;
    let put = single(&reports, "put", 200);
    assert!(put.to_text(false).contains("\nSummary:\n  Total:\t"));
    // Keys 0..49 as 8-byte varint keys: 50 distinct keys.
    assert_eq!(key_count(&m).await, 50);

    // Random keys within a space of 5 (and a rate limit: 20 at 400/s take
    // at least 19 intervals).
    let reports = bench(
        &m,
        &[
            "put",
            "--total=20",
            "--key-space-size=5",
            "--rate=400",
            "--key-size=4",
        ],
    )
    .await;
    let limited = single(&reports, "put", 20);
    assert!(limited.stats.total.as_secs_f64() >= 19.0 / 400.0);
    assert!(key_count(&m).await <= 55);

    let reports = bench(&m, &["--clients=3", "range", "foo", "--total=100"]).await;
    single(&reports, "range", 100);
    let reports = bench(
        &m,
        &[
            "range",
            "\u{0}",
            "\u{1}",
            "--total=50",
            "--consistency=s",
            "--sample",
        ],
    )
    .await;
    let range = single(&reports, "range", 50);
    assert!(range.stats.series.is_some());
    assert!(range.to_text(false).contains("Sample in one second"));

    // Cairn's range over the key space put wrote: no KEY.
    let reports = bench(&m, &["range", "--key-space-size=50", "--total=40"]).await;
    single(&reports, "range", 40);
    m.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_shaped_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let m = member(dir.path()).await;
    // 40 objects; 60 operations, every 10th a whole list of 7-key pages
    // (each must see all 40, or the run fails); the watch must deliver
    // every update (or the run fails).
    let reports = bench(
        &m,
        &[
            "--clients=4",
            "--conns=2",
            "kube",
            "--keys=40",
            "--total=60",
            "--list-every=10",
            "--page-size=7",
            "--val-size=64",
            "--progress-interval=10ms",
        ],
    )
    .await;
    let names: Vec<&str> = reports.iter().map(|r| r.workload.as_str()).collect();
    assert_eq!(names, ["kube-update", "kube-list", "kube-watch", "kube"]);
    for r in &reports {
        assert_eq!(
            r.stats.error_count(),
            0,
            "{}: {:?}",
            r.workload,
            r.stats.errors
        );
    }
    assert_eq!(reports[0].stats.count(), 54);
    assert_eq!(reports[1].stats.count(), 6);
    assert_eq!(reports[3].stats.count(), 60);
    // One event per update that won its compare (the rest re-read the key).
    let events = reports[2].stats.count();
    assert!(events > 0 && events <= 54, "{events} events");
    assert_eq!(key_count(&m).await, 40);
    m.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_put_and_txn_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let m = member(dir.path()).await;
    let reports = bench(
        &m,
        &[
            "--clients=3",
            "txn-put",
            "--total=30",
            "--txn-ops=3",
            "--key-space-size=9",
        ],
    )
    .await;
    single(&reports, "txn-put", 30);
    assert_eq!(key_count(&m).await, 9);

    let reports = bench(
        &m,
        &[
            "--clients=4",
            "--conns=2",
            "txn-mixed",
            "--total=100",
            "--key-space-size=10",
            "--consistency=s",
        ],
    )
    .await;
    assert_eq!(reports.len(), 2);
    let (read, write) = (&reports[0], &reports[1]);
    let (reads, writes) = (read.stats.count(), write.stats.count());
    assert_eq!(reads + writes, 100);
    check(read, "txn-mixed-read", reads);
    check(write, "txn-mixed-write", writes);
    assert!(read
        .to_text(false)
        .starts_with(&format!("Total Read Ops: {reads}\nDetails:")));
    m.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let m = member(dir.path()).await;
    // 10 watchers over 3 keys (4, 3, 3); 6 puts over the keys in turn:
    // 4+3+3+4+3+3 = 20 events.
    let reports = bench(
        &m,
        &[
            "--clients=2",
            "watch",
            "--streams=2",
            "--watch-per-stream=5",
            "--watched-key-total=3",
            "--key-space-size=3",
            "--sequential-keys",
            "--put-total=6",
        ],
    )
    .await;
    assert_eq!(reports.len(), 2);
    check(&reports[0], "watch-create", 10);
    check(&reports[1], "watch", 20);

    let reports = bench(
        &m,
        &[
            "--clients=2",
            "watch-latency",
            "--streams=2",
            "--watchers-per-stream=3",
            "--put-total=5",
            "--put-rate=0",
        ],
    )
    .await;
    assert_eq!(reports.len(), 2);
    check(&reports[0], "watch-latency-put", 5);
    let events = &reports[1];
    assert_eq!(events.workload, "watch-latency");
    assert_eq!(events.stats.count(), 30);
    assert_eq!(events.stats.error_count(), 0);

    // Cairn's watchers over a key space: 7 watchers over 3 keys (3, 2, 2),
    // 8 puts over the keys in turn (3, 3, 2): 3*3 + 2*3 + 2*2 = 19 events.
    let reports = bench(
        &m,
        &[
            "watch-latency",
            "--streams=1",
            "--watchers-per-stream=7",
            "--key-space-size=3",
            "--put-total=8",
            "--put-rate=0",
        ],
    )
    .await;
    check(&reports[0], "watch-latency-put", 8);
    assert_eq!(reports[1].stats.count(), 19);
    assert_eq!(reports[1].stats.error_count(), 0);

    let reports = bench(
        &m,
        &["watch-get", "--watchers=50", "--streams=2", "--events=4"],
    )
    .await;
    assert_eq!(reports.len(), 1);
    let gets = &reports[0];
    assert_eq!(gets.workload, "watch-get");
    assert_eq!(gets.stats.error_count(), 0, "{:?}", gets.stats.errors);
    m.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keepalive() {
    let dir = tempfile::tempdir().unwrap();
    let m = member(dir.path()).await;
    let reports = bench(&m, &["--clients=3", "lease-keepalive", "--total=30"]).await;
    single(&reports, "lease-keepalive", 30);
    m.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_one_json_line_per_report() {
    let dir = tempfile::tempdir().unwrap();
    let m = member(dir.path()).await;
    let endpoint = format!("--endpoints={}", m.client_urls()[0]);
    let bin = env!("CARGO_BIN_EXE_cairn-bench");
    let run = |args: &[&str]| {
        let mut argv = vec![endpoint.as_str()];
        argv.extend_from_slice(args);
        let out = Process::new(bin).args(&argv).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let stdout = tokio::task::block_in_place(|| run(&["put", "--total=50", "--json"]));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0].starts_with(r#"{"workload":"put","endpoints":["#));
    assert!(lines[0].contains(r#""clients":1,"conns":1,"total":50,"errors":0,"#));
    assert!(lines[0].ends_with('}'));

    let stdout = tokio::task::block_in_place(|| run(&["--json", "txn-mixed", "--total=20"]));
    let names: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('"').nth(3).unwrap())
        .collect();
    assert_eq!(names, ["txn-mixed-read", "txn-mixed-write"]);

    let stdout = tokio::task::block_in_place(|| run(&["range", "k", "--total=20"]));
    assert!(
        stdout.starts_with("bench with linearizable range\n\nSummary:\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\nResponse time histogram:\n"));
    assert!(stdout.contains("\nLatency distribution:\n  10% in "));

    // A bad flag value is refused before anything runs.
    let out = Process::new(bin)
        .args([endpoint.as_str(), "put", "--key-space-size=0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected positive --key-space-size"));
    m.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_flags_reach_a_member_requiring_client_certificates() {
    use cairn_tls::pki::{write, write_issued, Ca, Leaf};
    // A member serving https, requiring certificates of our CA.
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("bench-ca").unwrap();
    let ca_file = dir.path().join("ca.pem");
    write(&ca_file, ca.cert_pem(), false).unwrap();
    let issue = |name: &str, serial| {
        let leaf = Leaf::new(name, &["127.0.0.1", "localhost"], serial);
        write_issued(dir.path(), name, &ca.issue(&leaf).unwrap()).unwrap()
    };
    let (server_cert, server_key) = issue("server", 2);
    let (client_cert, client_key) = issue("client", 3);
    let mut config = Config {
        data_dir: dir.path().join("data"),
        listen_client_urls: vec!["https://127.0.0.1:0".into()],
        listen_peer_urls: vec!["http://127.0.0.1:0".into()],
        ..Config::default()
    };
    config.tls.client.cert_file = Some(server_cert);
    config.tls.client.key_file = Some(server_key);
    config.tls.client.client_cert_auth = true;
    config.tls.client.trusted_ca_file = Some(ca_file.clone());
    let m = embed::start(config).await.expect("member starts");
    let url = m.client_urls()[0].clone();
    assert!(url.starts_with("https://"), "{url}");

    let flags = |with_cert: bool, endpoint: &str| {
        let mut argv = vec![
            "cairn-bench".to_string(),
            format!("--endpoints={endpoint}"),
            format!("--cacert={}", ca_file.display()),
        ];
        if with_cert {
            argv.push(format!("--cert={}", client_cert.display()));
            argv.push(format!("--key={}", client_key.display()));
        }
        argv.extend(["--clients=2", "put", "--total=20"].map(String::from));
        Cli::try_parse_from(argv).unwrap()
    };
    // The https:// URL, and the same address without a scheme (TLS because
    // TLS flags were given, as in clientv3).
    let reports = cairn_bench::run(&flags(true, &url)).await.unwrap();
    single(&reports, "put", 20);
    let bare = url.trim_start_matches("https://");
    let reports = cairn_bench::run(&flags(true, bare)).await.unwrap();
    single(&reports, "put", 20);

    // Without a client certificate the member refuses the handshake (under
    // TLS 1.3 the client learns it only at its first request): every
    // request fails, none is counted as served.
    let refused = cairn_bench::run(&flags(false, &url)).await.unwrap();
    assert_eq!(refused.len(), 1);
    let stats = &refused[0].stats;
    assert_eq!(
        (stats.successes(), stats.error_count()),
        (0, 20),
        "{stats:?}"
    );
    // An https:// endpoint without TLS flags, and a certificate without its
    // key, are refused up front.
    let cli = Cli::try_parse_from(["cairn-bench", &format!("--endpoints={url}"), "put"]).unwrap();
    let no_tls = cairn_bench::run(&cli).await.unwrap_err();
    assert!(no_tls.to_string().contains("needs --cacert"), "{no_tls}");
    let cli = Cli::try_parse_from([
        "cairn-bench",
        &format!("--endpoints={url}"),
        &format!("--cacert={}", ca_file.display()),
        &format!("--cert={}", client_cert.display()),
        "put",
    ])
    .unwrap();
    let half = cairn_bench::run(&cli).await.unwrap_err();
    assert!(half.to_string().starts_with("bad TLS settings: "), "{half}");
    m.stop().await.unwrap();
}
