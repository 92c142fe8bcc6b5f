//! The HTTP side of the client port: `/health` (healthy, no leader, an
//! alarm, `?exclude=`, `?serializable=true`), `/livez` and `/readyz`
//! (etcd 3.6's checks, `?verbose`, `?exclude=`, each check's own path,
//! under an alarm and without a leader), `/version`, and etcd's 404 and
//! 405 — on the same port as gRPC, over HTTP/1.1.

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
    // Alive (it reads its own store), not ready (no leader to read through).
    let (livez, readyz) = tokio::join!(
        http(&url, "GET", "/livez"),
        http(&url, "GET", "/readyz?verbose")
    );
    assert_eq!((livez.0, livez.2.as_str()), (200, "ok\n"));
    assert_eq!(readyz.0, 503);
    assert_eq!(
        readyz.2,
        "[+]data_corruption ok\n[+]serializable_read ok\n\
         [-]linearizable_read failed: etcdserver: no leader\n[+]non_learner ok\n\n"
    );
    let (status, _, _) = http(&url, "GET", "/readyz?exclude=linearizable_read").await;
    assert_eq!(status, 200);
    member.stop().await.unwrap();
}

#[tokio::test]
async fn livez_and_readyz_answer_as_etcd_3_6() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let url = member.client_urls()[0].clone();

    for path in ["/livez", "/readyz"] {
        let (status, head, body) = http(&url, "GET", path).await;
        assert_eq!((status, body.as_str()), (200, "ok\n"), "{path}");
        assert!(
            head.contains("content-type: text/plain; charset=utf-8"),
            "{head}"
        );
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    }
    let (_, _, body) = http(&url, "GET", "/livez?verbose").await;
    assert_eq!(body, "[+]serializable_read ok\nok\n");
    let (_, _, body) = http(&url, "GET", "/readyz?verbose=1").await;
    assert_eq!(
        body,
        "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n\
         [+]non_learner ok\nok\n"
    );
    // Excluded checks are skipped; an unknown one is only logged.
    let (status, _, body) = http(
        &url,
        "GET",
        "/readyz?verbose&exclude=linearizable_read&exclude=no_such_check",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "[+]data_corruption ok\n[+]serializable_read ok\n[+]non_learner ok\nok\n"
    );
    // Each check under its own path; an unknown one is a 404.
    let (status, _, body) = http(&url, "GET", "/readyz/linearizable_read?verbose").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "[+]linearizable_read ok\nok\n")
    );
    assert_eq!(http(&url, "GET", "/livez/nope").await.0, 404);
    let (status, head, _) = http(&url, "POST", "/readyz").await;
    assert_eq!(status, 405);
    assert!(head.contains("allow: get"), "{head}");

    // NOSPACE fails neither (etcd's /health has ?exclude= for it).
    let client = common::client(&member).await;
    let id = member.member().identity().member_id;
    client.alarm_activate(id, AlarmType::Nospace).await.unwrap();
    assert_eq!(http(&url, "GET", "/readyz").await.0, 200);
    assert_eq!(http(&url, "GET", "/livez").await.0, 200);
    client
        .alarm_deactivate(id, AlarmType::Nospace)
        .await
        .unwrap();

    // CORRUPT: not ready (Cairn then refuses reads through the KV API, so
    // the linearizable read fails too), but alive: a liveness probe must
    // not have the member restarted over it.
    client.alarm_activate(id, AlarmType::Corrupt).await.unwrap();
    let (status, _, body) = http(&url, "GET", "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.starts_with(
            "[-]data_corruption failed: alarm activated: CORRUPT\n[+]serializable_read ok\n"
        ),
        "{body}"
    );
    let (status, _, body) = http(&url, "GET", "/readyz/data_corruption").await;
    assert_eq!(
        (status, body.as_str()),
        (
            503,
            "[-]data_corruption failed: alarm activated: CORRUPT\n\n"
        )
    );
    assert_eq!(http(&url, "GET", "/livez").await.0, 200);
    client
        .alarm_deactivate(id, AlarmType::Corrupt)
        .await
        .unwrap();
    assert_eq!(http(&url, "GET", "/readyz").await.0, 200);
    member.stop().await.unwrap();
}
