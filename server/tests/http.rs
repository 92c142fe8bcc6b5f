//! The HTTP side of the client port: `/health` (healthy, no leader, an
//! alarm, `?exclude=`, `?serializable=true`), `/version`, and etcd's 404
//! and 405 — on the same port as gRPC, over HTTP/1.1.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use cairn_client::proto::etcdserverpb::AlarmType;
use cairn_client::Put;
use cairn_server::embed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `method path` over HTTP/1.1 on `url` (`http://host:port`): (status
/// code, lower-cased headers, body).
async fn http(url: &str, method: &str, path: &str) -> (u16, String, String) {
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn health_version_and_unknown_paths_answer_as_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let url = member.client_urls()[0].clone();

    // Healthy: 200 and etcd's body, read linearizably or not.
    for path in ["/health", "/health?serializable=true"] {
        let (status, head, body) = http(&url, "GET", path).await;
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"health":"true","reason":""}"#),
            "{path}"
        );
        assert!(
            head.contains("content-type: text/plain; charset=utf-8"),
            "{head}"
        );
        assert!(head.contains("access-control-allow-origin: *"), "{head}");
    }
    let (status, head, body) = http(&url, "GET", "/version").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(body, r#"{"etcdserver":"3.5.17","etcdcluster":"3.5.0"}"#);

    // Unknown paths and methods: Go's texts.
    assert_eq!(http(&url, "GET", "/nope").await.2, "404 page not found\n");
    let (status, head, body) = http(&url, "POST", "/health").await;
    assert_eq!((status, body.as_str()), (405, "Method Not Allowed\n"));
    assert!(head.contains("allow: get"), "{head}");

    // An alarm makes it unhealthy, unless excluded.
    let client = common::client(&member).await;
    client.put(Put::new("k", "v")).await.unwrap();
    let id = member.member().identity().member_id;
    client.alarm_activate(id, AlarmType::Nospace).await.unwrap();
    let (status, _, body) = http(&url, "GET", "/health").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n")
    );
    let (status, _, _) = http(&url, "GET", "/health?exclude=NOSPACE").await;
    assert_eq!(status, 200);
    client
        .alarm_deactivate(id, AlarmType::Nospace)
        .await
        .unwrap();
    assert_eq!(http(&url, "GET", "/health").await.0, 200);

    // gRPC still works on the same port.
    assert_eq!(
        client.get(cairn_client::Get::key("k")).await.unwrap().count,
        1
    );
    member.stop().await.unwrap();
}

#[tokio::test]
async fn health_without_a_leader_is_503() {
    // A member of a three-member cluster whose peers never start: no leader.
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.name = "a".into();
    config.listen_peer_urls = vec!["http://127.0.0.1:0".into()];
    config.initial_advertise_peer_urls = vec!["http://127.0.0.1:1".into()];
    config.initial_cluster =
        "a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=http://127.0.0.1:3".into();
    let member = embed::start(config).await.unwrap();
    let url = member.client_urls()[0].clone();
    let (status, _, body) = http(&url, "GET", "/health").await;
    assert_eq!(
        (status, body.as_str()),
        (
            503,
            "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n"
        )
    );
    member.stop().await.unwrap();
}
