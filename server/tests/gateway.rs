//! etcd's JSON API on the client port (`http/gateway`): calls and errors as
//! etcd 3.5's gateway answers them, streams, and bad input — malformed
//! JSON, wrong types, bad base64, unknown fields, oversized and deeply
//! nested bodies, a watch whose client never reads — each a clear error or
//! back-pressure, with the member still serving afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn address(member: &cairn_server::embed::Handle) -> String {
    member.client_urls()[0]
        .trim_start_matches("http://")
        .to_string()
}

/// `POST path` with `body`: (status code, lower-cased head, body).
async fn post(address: &str, path: &str, body: &[u8]) -> (u16, String, String) {
    let stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (mut reader, mut writer) = stream.into_split();
    // The server may answer (and close) before the whole body is sent (too
    // large): read while writing, and keep what was read.
    let write = async {
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(body).await;
    };
    let read = async {
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            raw.extend_from_slice(&buf[..n]);
        }
        raw
    };
    let ((), raw) = tokio::join!(write, read);
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

async fn post_json(address: &str, path: &str, body: &str) -> (u16, String) {
    let (status, _, body) = post(address, path, body.as_bytes()).await;
    (status, body)
}

fn error(code: u8, message: &str) -> String {
    format!(r#"{{"error":"{message}","code":{code},"message":"{message}"}}"#)
}

/// A stream (watch, keep-alive) with a chunked request body kept open.
struct Streamed {
    stream: TcpStream,
    read: String,
}

impl Streamed {
    async fn open(address: &str, path: &str) -> Self {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        Self {
            stream,
            read: String::new(),
        }
    }

    async fn send(&mut self, json: &str) {
        let chunk = format!("{:x}\r\n{json}\r\n", json.len());
        self.stream.write_all(chunk.as_bytes()).await.unwrap();
    }

    /// Reads until the response so far contains `needle` (10 s at most).
    async fn until(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.read.contains(needle) {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", self.read))
                .unwrap();
            assert!(n > 0, "stream ended before {needle:?}: {:?}", self.read);
            self.read.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

#[tokio::test]
async fn calls_and_errors_as_etcd_answers_them() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let a = address(&member);

    let (status, head, body) = post(&a, "/v3/kv/put", br#"{"key":"Zm9v","value":"YmFy"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(
        head.contains("grpc-metadata-content-type: application/grpc"),
        "{head}"
    );
    assert!(body.contains(r#""revision":"2""#), "{body}");
    for prefix in ["/v3", "/v3beta"] {
        let (status, body) =
            post_json(&a, &format!("{prefix}/kv/range"), r#"{"key":"Zm9v"}"#).await;
        assert_eq!(status, 200);
        assert!(
            body.ends_with(r#""kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#),
            "{body}"
        );
    }
    // etcd's validation and error table, as for gRPC.
    assert_eq!(
        post_json(&a, "/v3/kv/range", "{}").await,
        (400, error(3, "etcdserver: key is not provided"))
    );
    assert_eq!(
        post_json(&a, "/v3/kv/compaction", r#"{"revision":99}"#).await,
        (
            400,
            error(
                11,
                "etcdserver: mvcc: required revision is a future revision"
            )
        )
    );
    assert_eq!(
        post_json(&a, "/v3/lease/revoke", r#"{"ID":5}"#).await,
        (404, error(5, "etcdserver: requested lease not found"))
    );
    let (status, body) = post_json(&a, "/v3/lease/grant", r#"{"ID":"7","TTL":60}"#).await;
    assert_eq!(status, 200);
    assert!(body.ends_with(r#""ID":"7","TTL":"60"}"#), "{body}");
    let (status, body) = post_json(&a, "/v3/kv/lease/timetolive", r#"{"ID":7}"#).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""grantedTTL":"60""#), "{body}");
    let (status, body) = post_json(&a, "/v3/cluster/member/list", "").await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""name":"default""#), "{body}");
    // Methods and paths the gateway does not serve.
    let (status, head, body) = post(&a, "/v3/kv/nope", b"{}").await;
    assert_eq!((status, body.as_str()), (404, "Not Found\n"), "{head}");
    // Auth is served now (tests/auth.rs); a path it lacks is not.
    assert_eq!(post(&a, "/v3/auth/nope", b"{}").await.0, 404);
    member.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let a = address(&member);
    let cases = [
        (r#"{"key":"Zm9v""#, "unexpected EOF"),
        (
            r#"{"key" "Zm9v"}"#,
            r#"invalid character '"' after object key"#,
        ),
        (
            "nonsense",
            "invalid character 'o' in literal null (expecting 'u')",
        ),
        (r#"{"key":"Zm9"}"#, "illegal base64 data at input byte 0"),
        (
            r#"{"key":5}"#,
            "json: cannot unmarshal number into Go value of type []uint8",
        ),
        (
            r#"{"key":"Zm9v","limit":"ten"}"#,
            "invalid character 'e' in literal true (expecting 'r')",
        ),
        (
            r#"{"key":"Zm9v","serializable":1}"#,
            "json: cannot unmarshal number into Go value of type bool",
        ),
        (
            "[1,2]",
            "json: cannot unmarshal array into Go value of type map[string]json.RawMessage",
        ),
    ];
    for (body, message) in cases {
        let (status, answer) = post_json(&a, "/v3/kv/range", body).await;
        let want = format!(
            r#"{{"error":{},"code":3,"message":{}}}"#,
            quoted(message),
            quoted(message)
        );
        assert_eq!((status, answer), (400, want), "{body}");
    }
    // Unknown fields are ignored, as etcd ignores them.
    let (status, _) = post_json(
        &a,
        "/v3/kv/put",
        r#"{"key":"YQ==","future_field":[{"x":1}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    // Nesting: past JSON's depth limit, and a txn past the decoder's.
    let deep = "[".repeat(20_000);
    let (status, body) = post_json(&a, "/v3/kv/range", &deep).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("exceeded max depth"), "{body}");
    let txn = format!(
        "{}{{}}{}",
        r#"{"success":[{"request_txn":"#.repeat(150),
        "}]}".repeat(150)
    );
    assert_eq!(
        post_json(&a, "/v3/kv/txn", &txn).await,
        (
            400,
            error(3, "etcdserver: too many operations in txn request")
        )
    );
    // Oversized: a value over --max-request-bytes gets etcd's error, a
    // message over the gRPC limit grpc-go's, and a body beyond what any
    // request needs is refused before it is all read.
    let value = |n: usize| format!(r#"{{"key":"YQ==","value":"{}"}}"#, "eHh4".repeat(n / 3));
    assert_eq!(
        post_json(&a, "/v3/kv/put", &value(1_600_000)).await,
        (400, error(3, "etcdserver: request is too large"))
    );
    let (status, body) = post_json(&a, "/v3/kv/put", &value(3_000_000)).await;
    assert_eq!(status, 429);
    assert!(
        body.contains("grpc: received message larger than max (3000008 vs. 2097152)"),
        "{body}"
    );
    let (status, body) = post_json(&a, "/v3/kv/put", &value(6_000_000)).await;
    assert_eq!(
        (status, body),
        (429, error(8, "http: request body too large"))
    );
    // A stream's first request that does not decode: code Unknown, 500.
    assert_eq!(
        post_json(&a, "/v3/watch", r#"{"create_request":{"key":"!!"}}"#).await,
        (500, error(2, "illegal base64 data at input byte 0"))
    );
    // Still serving.
    assert_eq!(
        post_json(&a, "/v3/kv/range", r#"{"key":"YQ=="}"#).await.0,
        200
    );
    member.stop().await.unwrap();
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[tokio::test]
async fn watch_and_keep_alive_streams() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let a = address(&member);

    let mut watch = Streamed::open(&a, "/v3/watch").await;
    watch
        .send(r#"{"create_request":{"key":"Zm9v","prev_kv":true}}"#)
        .await;
    watch.until(r#""created":true"#).await;
    post_json(&a, "/v3/kv/put", r#"{"key":"Zm9v","value":"MQ=="}"#).await;
    watch
        .until(r#""events":[{"kv":{"key":"Zm9v","create_revision":"2""#)
        .await;
    // Several requests in one body, then a bad one: the stream stops
    // reading requests but goes on delivering, as etcd's.
    watch
        .send(r#"{"progress_request":{}} {"create_request":{"key":"YmFy"}}"#)
        .await;
    watch.until(r#""watch_id":"-1"}}"#).await;
    watch.until(r#""watch_id":"1","created":true"#).await;
    watch
        .send(r#"{"cancel_request":{"watch_id":"nope"}}"#)
        .await;
    post_json(&a, "/v3/kv/put", r#"{"key":"YmFy","value":"Mg=="}"#).await;
    watch.until(r#""watch_id":"1","events""#).await;
    drop(watch);
    let apis = member.member().clone();
    common::eventually(10, "the watchers to go", async || {
        apis.store().watch_hub().is_empty()
    })
    .await;

    post_json(&a, "/v3/lease/grant", r#"{"ID":9,"TTL":60}"#).await;
    let mut keep_alive = Streamed::open(&a, "/v3/lease/keepalive").await;
    keep_alive.send(r#"{"ID":9}{"ID":"10"}"#).await;
    keep_alive.until(r#""ID":"9","TTL":"60"}}"#).await;
    keep_alive.until(r#""ID":"10"}}"#).await;
    // The end of the body ends the stream.
    keep_alive.stream.write_all(b"0\r\n\r\n").await.unwrap();
    keep_alive.until("\r\n0\r\n\r\n").await;
    drop(keep_alive);
    member.stop().await.unwrap();
}

#[tokio::test]
async fn a_watcher_that_never_reads_is_held_back() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let a = address(&member);
    let client = common::client(&member).await;

    let mut watch = Streamed::open(&a, "/v3/watch").await;
    watch
        .send(r#"{"create_request":{"key":"AA==","range_end":"AA=="}}"#)
        .await;
    watch.until(r#""created":true"#).await;
    // ~40 MB of events towards a client that reads none of them: writes go
    // on at full speed and the watcher falls back to catching up from
    // history instead of buffering them.
    let value = vec![b'x'; 20_000];
    for i in 0..2_000 {
        client
            .put(cairn_client::Put::new(format!("k{i}"), value.clone()))
            .await
            .unwrap();
    }
    let apis = member.member().clone();
    assert!(
        apis.store().watch_hub().has_unsynced(),
        "the unread watcher stays behind"
    );
    drop(watch);
    common::eventually(10, "the watcher to go", async || {
        apis.store().watch_hub().is_empty()
    })
    .await;
    assert_eq!(
        post_json(&a, "/v3/kv/range", r#"{"key":"azE="}"#).await.0,
        200
    );
    member.stop().await.unwrap();
}
