//! etcd's operational flags: `--max-concurrent-streams` and
//! `--strict-reconfig-check`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{RangeRequest, WatchCreateRequest, WatchRequest};
use tokio_stream::wrappers::ReceiverStream;

/// Opens a watch stream on `channel` and waits for its `created` answer:
/// from then on, the stream holds one HTTP/2 stream of that connection.
async fn open_watch(
    channel: tonic::transport::Channel,
) -> (
    tokio::sync::mpsc::Sender<WatchRequest>,
    tonic::Streaming<cairn_proto::etcdserverpb::WatchResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"w".to_vec(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut responses = WatchClient::new(channel)
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(responses.message().await.unwrap().unwrap().created);
    (tx, responses)
}

/// With `--max-concurrent-streams 1`, a second request on a connection
/// whose one stream is taken by a watch waits until the watch ends; with
/// etcd's default (no limit) it is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_limits_streams_per_connection() {
    for (limit, waits) in [(1, true), (u32::MAX, false)] {
        let dir = tempfile::tempdir().unwrap();
        let member = cairn_server::embed::start(cairn_server::embed::Config {
            max_concurrent_streams: limit,
            ..common::config(dir.path())
        })
        .await
        .unwrap();
        // One connection for both calls.
        let channel = tonic::transport::Endpoint::from_shared(member.client_urls()[0].clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (watch_tx, watch) = open_watch(channel.clone()).await;
        let mut kv = KvClient::new(channel.clone());
        let mut range = tokio::spawn(async move {
            kv.range(RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .await
        });
        // Proving that something does not happen needs some time: half a
        // second, far above a local round trip.
        let early = tokio::time::timeout(Duration::from_millis(500), &mut range).await;
        assert_eq!(early.is_err(), waits, "limit {limit}: {early:?}");
        if let Ok(answered) = early {
            answered.unwrap().unwrap();
        }
        // Once the watch stream ends, its stream is free: the waiting
        // request goes through.
        drop((watch_tx, watch));
        if waits {
            tokio::time::timeout(Duration::from_secs(20), range)
                .await
                .expect("answered once the watch ended")
                .unwrap()
                .unwrap();
        }
        member.stop().await.unwrap();
    }
}
