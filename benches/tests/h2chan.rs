//! The load tool's transport (`cairn_bench::h2chan`) against an in-process
//! Cairn member, in phases: unary calls and a stream through tonic's
//! generated clients, a value larger than HTTP/2's default windows both
//! ways, a new connection after the member restarts, and a dial that
//! fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::time::{Duration, Instant};

use cairn_bench::h2chan::H2Channel;
use cairn_proto::etcdserverpb::{
    kv_client::KvClient, watch_client::WatchClient, watch_request, PutRequest, RangeRequest,
    WatchCreateRequest, WatchRequest,
};
use cairn_server::embed::{self, Config, Handle};
use cairn_tls::client::Connector;

async fn member(dir: &std::path::Path, client_url: &str) -> Handle {
    embed::start(Config {
        data_dir: dir.join("data"),
        listen_client_urls: vec![client_url.into()],
        listen_peer_urls: vec!["http://127.0.0.1:0".into()],
        ..Config::default()
    })
    .await
    .expect("member starts")
}

async fn channel(url: &str) -> H2Channel {
    H2Channel::connect(
        &url.parse().unwrap(),
        false,
        Connector::new(None, None),
        Duration::from_secs(10),
    )
    .await
    .unwrap()
}

fn put(key: &str, value: Vec<u8>) -> PutRequest {
    PutRequest {
        key: key.into(),
        value,
        ..PutRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_streams_large_values_and_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let started = member(dir.path(), "http://127.0.0.1:0").await;
    let url = started.client_urls()[0].clone();
    let ch = channel(&url).await;

    // Phase 1: a unary call and a stream (its request body piped after its
    // first message) on one connection.
    let mut watch = WatchClient::new(ch.clone());
    let (requests, receiver) = tokio::sync::mpsc::channel(4);
    requests
        .send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: b"k".to_vec(),
                    ..WatchCreateRequest::default()
                },
            )),
        })
        .await
        .unwrap();
    let mut events = watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let created = events.message().await.unwrap().unwrap();
    assert!(created.created, "{created:?}");
    let mut kv = KvClient::new(ch.clone());
    let written = kv.put(put("k", b"v1".to_vec())).await.unwrap().into_inner();
    let revision = written.header.unwrap().revision;
    let event = events.message().await.unwrap().unwrap();
    assert_eq!(event.events.len(), 1, "{event:?}");
    assert_eq!(event.events[0].kv.as_ref().unwrap().mod_revision, revision);
    drop(requests);

    // Phase 2: 1 MiB each way, past HTTP/2's default 64 KiB windows (the
    // answer's frames give their window back as they are read).
    let large: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    kv.put(put("large", large.clone())).await.unwrap();
    for _ in 0..3 {
        let read = kv
            .range(RangeRequest {
                key: b"large".to_vec(),
                ..RangeRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read.kvs[0].value, large);
    }

    // Phase 3: the member restarts on the same port; calls on the broken
    // connection fail, and a later one dials again and succeeds.
    started.stop().await.unwrap();
    let restarted = member(dir.path(), &url).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let read = loop {
        match kv
            .range(RangeRequest {
                key: b"k".to_vec(),
                ..RangeRequest::default()
            })
            .await
        {
            Ok(read) => break read.into_inner(),
            Err(status) => {
                assert!(Instant::now() < deadline, "no call succeeded: {status}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(read.kvs[0].value, b"v1");
    restarted.stop().await.unwrap();

    // Phase 4: nothing listens: the dial fails, with the cause.
    let refused = H2Channel::connect(
        &url.parse().unwrap(),
        false,
        Connector::new(None, None),
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(!refused.to_string().is_empty());
}
