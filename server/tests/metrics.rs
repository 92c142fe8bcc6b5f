//! `/metrics`: a three-member cluster's scrape is Prometheus text that a
//! parser accepts, and has every etcd metric of `data/etcd_metrics.txt`
//! with etcd's type, label names and buckets, and values that mean what
//! etcd's mean; `--listen-metrics-urls` serves metrics and health only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::collections::{BTreeSet, HashMap};

use cairn_client::{Delete, Get, Put, Txn};
use cairn_server::metrics::Level;
use common::cluster::Cluster;
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over HTTP/1.1 on `url`: (status, lower-cased head, body).
async fn get(url: &str, path: &str, content_type: Option<&str>) -> (u16, String, String) {
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let extra = content_type
        .map(|t| format!("Content-Type: {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head, body)
}

/// A chunked body's content.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// What a scrape says of one metric.
#[derive(Debug)]
struct Family {
    kind: &'static str,
    labels: BTreeSet<String>,
    /// A histogram's bucket bounds (without +Inf).
    buckets: Vec<f64>,
}

/// The scrape, through a Prometheus text parser: by metric name.
fn families(text: &str) -> (Scrape, HashMap<String, Family>) {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid text");
    let mut out: HashMap<String, Family> = HashMap::new();
    for sample in &scrape.samples {
        let (kind, buckets) = match &sample.value {
            Value::Counter(_) => ("counter", Vec::new()),
            Value::Gauge(_) => ("gauge", Vec::new()),
            Value::Histogram(h) => (
                "histogram",
                h.iter()
                    .map(|b| b.less_than)
                    .filter(|b| b.is_finite())
                    .collect(),
            ),
            Value::Summary(_) => ("summary", Vec::new()),
            Value::Untyped(_) => ("untyped", Vec::new()),
        };
        let family = out.entry(sample.metric.clone()).or_insert(Family {
            kind,
            labels: BTreeSet::new(),
            buckets,
        });
        family.labels.extend(sample.labels.keys().cloned());
    }
    (scrape, out)
}

/// The value of `name` whose labels include `labels`, summed over the
/// samples that match.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

async fn scrape_text(url: &str) -> String {
    let (status, head, body) = get(url, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_has_etcds_metrics_as_etcd_has_them() {
    let cluster = Cluster::start(3, |c| {
        c.metrics = Level::Extensive;
        c.listen_metrics_urls = vec!["http://127.0.0.1:0".into()];
    })
    .await;
    let leader = cluster.leader().await;
    let url = cluster.url(leader);
    let client = cluster.client(leader).await;
    for i in 0..5 {
        client.put(Put::new(format!("k{i}"), "v")).await.unwrap();
    }
    client.get(Get::key("k").prefix()).await.unwrap();
    client
        .txn(Txn::new().and_then(vec![
            cairn_client::Op::put(Put::new("t", "1")),
            cairn_client::Op::get(Get::key("t")),
        ]))
        .await
        .unwrap();
    client.delete(Delete::key("t")).await.unwrap();
    client.delete(Delete::key("k4")).await.unwrap();
    // A request the server refuses: InvalidArgument.
    assert!(client.get(Get::key("")).await.is_err());
    let mut watch = client
        .watch(cairn_client::Watch::key("k").prefix())
        .await
        .unwrap();
    // One event through the watch (etcd_debugging_mvcc_events_total).
    client.put(Put::new("k9", "v")).await.unwrap();
    watch.next().await.unwrap();
    // A lease granted, renewed once and revoked (etcd_debugging_lease_*).
    let lease = client.lease_grant(60, 0).await.unwrap().id;
    client.keep_alive_once(lease).await.unwrap();
    client.lease_revoke(lease).await.unwrap();
    // A compaction (the pause histograms).
    let revision = client
        .get(Get::key("k0"))
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    client.compact(revision, true).await.unwrap();
    // The health counters and the checks' series.
    for path in ["/health", "/livez", "/readyz"] {
        assert_eq!(get(&url, path, None).await.0, 200, "{path}");
    }
    // The prober's first round trips (every 4 s).
    common::eventually(15, "peer round trips", async || {
        let text = scrape_text(&url).await;
        let (scrape, _) = families(&text);
        value(&scrape, "etcd_network_peer_round_trip_time_seconds", &[]) >= 2.0
    })
    .await;

    let text = scrape_text(&url).await;
    let (scrape, families) = families(&text);
    let list = include_str!("data/etcd_metrics.txt");
    for line in list
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (name, kind, labels) = (fields[0], fields[1], fields[2]);
        let family = families
            .get(name)
            .unwrap_or_else(|| panic!("{name} is missing from the scrape"));
        assert_eq!(family.kind, kind, "{name}'s type");
        let want: BTreeSet<String> = labels
            .split(',')
            .filter(|l| *l != "-")
            .map(String::from)
            .collect();
        assert_eq!(family.labels, want, "{name}'s labels");
        if kind == "histogram" {
            let spec: Vec<f64> = fields[3].split(':').map(|v| v.parse().unwrap()).collect();
            let b = &family.buckets;
            assert_eq!(b.len(), spec[2] as usize, "{name}'s buckets: {b:?}");
            assert!(
                (b[0] - spec[0]).abs() < 1e-9,
                "{name}'s first bucket: {b:?}"
            );
            let last = b[b.len() - 1];
            assert!(
                (last - spec[1]).abs() < 1e-6 * spec[1],
                "{name}'s last bucket: {b:?}"
            );
        }
    }

    // Values that mean what etcd's mean.
    assert_eq!(value(&scrape, "etcd_server_has_leader", &[]), 1.0);
    assert_eq!(value(&scrape, "etcd_server_is_leader", &[]), 1.0);
    assert!(value(&scrape, "etcd_server_leader_changes_seen_total", &[]) >= 1.0);
    assert!(value(&scrape, "etcd_mvcc_put_total", &[]) >= 6.0);
    assert!(value(&scrape, "etcd_mvcc_delete_total", &[]) >= 2.0);
    assert!(value(&scrape, "etcd_mvcc_txn_total", &[]) >= 1.0);
    assert!(value(&scrape, "etcd_mvcc_range_total", &[]) >= 1.0);
    // k0..k3 and k9 are left.
    assert_eq!(value(&scrape, "etcd_debugging_mvcc_keys_total", &[]), 5.0);
    assert_eq!(value(&scrape, "etcd_debugging_mvcc_events_total", &[]), 1.0);
    assert_eq!(
        value(&scrape, "etcd_debugging_mvcc_pending_events_total", &[]),
        0.0
    );
    for lease in ["granted", "renewed", "revoked"] {
        let name = format!("etcd_debugging_lease_{lease}_total");
        assert_eq!(value(&scrape, &name, &[]), 1.0, "{name}");
    }
    assert_eq!(value(&scrape, "etcd_debugging_lease_ttl_total", &[]), 1.0);
    let pause = "etcd_debugging_mvcc_index_compaction_pause_duration_milliseconds";
    assert_eq!(value(&scrape, pause, &[]), 1.0);
    let pause = "etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds";
    assert!(value(&scrape, pause, &[]) >= 1.0);
    let applied_puts = [("op", "Put"), ("success", "true"), ("version", "v3")];
    let applied = value(&scrape, "etcd_server_apply_duration_seconds", &applied_puts);
    assert_eq!(applied, 6.0);
    let compaction = [("op", "Compaction"), ("success", "true")];
    assert_eq!(
        value(&scrape, "etcd_server_apply_duration_seconds", &compaction),
        1.0
    );
    // cairn-client sends no client-api-version: "unknown", as etcd labels it.
    let unary = [("type", "unary"), ("client_api_version", "unknown")];
    assert!(value(&scrape, "etcd_server_client_requests_total", &unary) >= 10.0);
    // The watch and the keep-alive's stream.
    let stream = [("type", "stream"), ("client_api_version", "unknown")];
    assert_eq!(
        value(&scrape, "etcd_server_client_requests_total", &stream),
        2.0
    );
    assert_eq!(
        value(&scrape, "etcd_debugging_mvcc_watcher_total", &[]),
        1.0
    );
    assert_eq!(
        value(&scrape, "etcd_debugging_mvcc_watch_stream_total", &[]),
        1.0
    );
    assert!(value(&scrape, "etcd_mvcc_db_total_size_in_bytes", &[]) > 0.0);
    assert!(value(&scrape, "etcd_disk_wal_fsync_duration_seconds", &[]) >= 5.0);
    assert!(value(&scrape, "etcd_disk_backend_commit_duration_seconds", &[]) >= 5.0);
    let committed = value(&scrape, "etcd_server_proposals_committed_total", &[]);
    assert!(committed >= 8.0, "{committed}");
    assert_eq!(value(&scrape, "etcd_server_proposals_pending", &[]), 0.0);
    assert_eq!(
        value(&scrape, "etcd_server_quota_backend_bytes", &[]),
        2147483648.0
    );
    // k0..k4 and k9.
    let put = [("grpc_method", "Put"), ("grpc_service", "etcdserverpb.KV")];
    assert_eq!(value(&scrape, "grpc_server_started_total", &put), 6.0);
    let ok = [put[0], put[1], ("grpc_code", "OK"), ("grpc_type", "unary")];
    assert_eq!(value(&scrape, "grpc_server_handled_total", &ok), 6.0);
    assert_eq!(value(&scrape, "grpc_server_msg_received_total", &put), 6.0);
    assert_eq!(value(&scrape, "grpc_server_handling_seconds", &put), 6.0);
    let refused = [("grpc_method", "Range"), ("grpc_code", "InvalidArgument")];
    assert_eq!(value(&scrape, "grpc_server_handled_total", &refused), 1.0);
    // A code never seen is there at zero, as grpc-go-prometheus has it.
    let unseen = [("grpc_method", "Compact"), ("grpc_code", "DataLoss")];
    assert_eq!(
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == "grpc_server_handled_total"
                && unseen.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .count(),
        1
    );
    let watch = [("grpc_method", "Watch"), ("grpc_type", "bidi_stream")];
    assert_eq!(value(&scrape, "grpc_server_started_total", &watch), 1.0);
    assert!(value(&scrape, "grpc_server_msg_received_total", &watch) >= 1.0);
    assert!(
        value(
            &scrape,
            "etcd_network_client_grpc_received_bytes_total",
            &[]
        ) > 0.0
    );
    assert!(value(&scrape, "etcd_network_client_grpc_sent_bytes_total", &[]) > 0.0);
    assert!(value(&scrape, "etcd_network_peer_sent_bytes_total", &[]) > 0.0);
    assert!(value(&scrape, "etcd_network_peer_received_bytes_total", &[]) > 0.0);
    assert_eq!(value(&scrape, "etcd_network_active_peers", &[]), 2.0);
    assert_eq!(value(&scrape, "etcd_server_health_success", &[]), 1.0);
    let livez = [("type", "livez"), ("name", "serializable_read")];
    assert_eq!(value(&scrape, "etcd_server_healthcheck", &livez), 1.0);
    assert!(value(&scrape, "process_resident_memory_bytes", &[]) > 0.0);
    let id = format!("{:x}", cluster.member_id(leader));
    assert_eq!(value(&scrape, "etcd_server_id", &[("server_id", &id)]), 1.0);
    assert_eq!(value(&scrape, "cairn_encryption_data_keys", &[]), 1.0);
    drop(client);

    // --listen-metrics-urls: metrics and health, nothing else.
    let metrics_url = cluster.handle(leader).metrics_urls()[0].clone();
    assert!(scrape_text(&metrics_url)
        .await
        .contains("etcd_server_has_leader 1"));
    for path in [
        "/health",
        "/livez",
        "/readyz",
        "/readyz/linearizable_read",
        "/version",
    ] {
        assert_eq!(get(&metrics_url, path, None).await.0, 200, "{path}");
    }
    let (status, head, body) = get(
        &metrics_url,
        "/etcdserverpb.KV/Range",
        Some("application/grpc"),
    )
    .await;
    assert_eq!((status, body.as_str()), (404, "404 page not found\n"));
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    assert!(cairn_client::Client::connect(metrics_url.clone())
        .await
        .unwrap()
        .get(Get::key("k0"))
        .await
        .is_err());
}
