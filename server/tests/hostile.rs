//! Requests an attacker (or a careless client) sends, end to end: none may
//! stop a member, and each gets etcd's answer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::Duration;

use bytes::{Buf, BufMut};
use cairn_client::{Get, Put};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::{
    watch_request::RequestUnion, CompactionRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use common::cluster::Cluster;
use common::eventually;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Code;

/// Messages as raw bytes both ways: to send what no typed client would,
/// and to receive answers a protobuf decoder with a depth limit would
/// refuse (a 50-deep TxnResponse is one level deeper than its request).
#[derive(Debug, Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn raw_client(url: &str) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc
}

async fn raw_unary(url: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = raw_client(url).await;
    grpc.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A write Txn nested `depth` levels around one put of `key`.
fn nested_put(depth: usize, key: &str) -> TxnRequest {
    let mut txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    for _ in 1..depth {
        txn = TxnRequest {
            success: vec![RequestOp {
                request: Some(Request::RequestTxn(txn)),
            }],
            ..Default::default()
        };
    }
    txn
}

/// The request that used to stop every member of a cluster for good: a
/// write Txn nested exactly 50 deep passed validation, was committed, and no
/// member could apply it (at once, nor after any restart). Now it is
/// answered as etcd answers it (applied), the cluster keeps serving, and
/// restarting every member replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_nested_50_deep_applies_and_the_cluster_keeps_serving() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    // Sent to a follower, so it travels to the leader inside raft.
    let answer = raw_unary(
        &cluster.url(follower),
        "/etcdserverpb.KV/Txn",
        nested_put(50, "deep").encode_to_vec(),
    )
    .await
    .expect("etcd applies a Txn nested 50 deep");
    assert!(!answer.is_empty());
    // One level deeper is refused up front with etcd's refusal.
    let err = raw_unary(
        &cluster.url(leader),
        "/etcdserverpb.KV/Txn",
        nested_put(51, "deeper").encode_to_vec(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.message(),
        "etcdserver: too many operations in txn request"
    );
    // A typed client can read a shallower nested answer in full.
    let mut kv = KvClient::connect(cluster.url(leader)).await.unwrap();
    let resp = kv.txn(nested_put(40, "forty")).await.unwrap().into_inner();
    assert!(resp.succeeded);
    // Every member applied both and keeps serving writes and reads.
    let c = cluster.client_all().await;
    c.put(Put::new("after", "ok")).await.unwrap();
    for i in 0..3 {
        let member = cluster.client(i).await;
        eventually(10, "every member applied the deep txn", async || {
            let got = member.get(Get::key("deep").serializable()).await;
            matches!(got, Ok(r) if r.count == 1)
        })
        .await;
        let got = member.get(Get::key("forty")).await.unwrap();
        assert_eq!(got.kvs[0].value, b"v");
    }
    // Every member replays the entry from its log after a restart.
    cluster.stop_all().await;
    for i in 0..3 {
        cluster.restart(i).await;
    }
    cluster.leader().await;
    let c = cluster.client_all().await;
    c.put(Put::new("after-restart", "ok")).await.unwrap();
    assert_eq!(c.get(Get::key("deep")).await.unwrap().count, 1);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_undecodable_requests_get_grpc_gos_codes() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let url = member.client_urls()[0].clone();
    // Larger than --max-request-bytes (1.5 MiB) + gRPC's 512 KiB margin.
    let big = PutRequest {
        key: b"big".to_vec(),
        value: vec![b'x'; 3 * 1024 * 1024],
        ..Default::default()
    }
    .encode_to_vec();
    let len = big.len();
    let err = raw_unary(&url, "/etcdserverpb.KV/Put", big)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.message(),
        format!("grpc: received message larger than max ({len} vs. 2097152)")
    );
    // Bytes that are no PutRequest.
    let err = raw_unary(&url, "/etcdserverpb.KV/Put", vec![0x0a, 0xff])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        err.message()
            .starts_with("grpc: failed to unmarshal the received message"),
        "{err:?}"
    );
    // The member is unharmed.
    let c = common::client(&member).await;
    c.put(Put::new("k", "v")).await.unwrap();
    member.stop().await.unwrap();
}

/// A message that does not decode ends a Watch or LeaseKeepAlive stream with
/// INTERNAL, as etcd's do, not with OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_stream_message_ends_the_stream_with_internal() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let url = member.client_urls()[0].clone();
    for path in [
        "/etcdserverpb.Watch/Watch",
        "/etcdserverpb.Lease/LeaseKeepAlive",
    ] {
        let mut grpc = raw_client(&url).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        // A truncated length-delimited field: undecodable as any message.
        tx.send(vec![0x0a, 0x05, b'a']).await.unwrap();
        let mut responses = grpc
            .streaming(
                tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                Raw,
            )
            .await
            .unwrap()
            .into_inner();
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match responses.message().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("the stream ends");
        let err = end.expect_err(path);
        assert_eq!(err.code(), Code::Internal, "{path}: {err:?}");
        drop(tx);
    }
    member.stop().await.unwrap();
}

async fn watch_from(url: &str, start_revision: i64) -> tonic::Streaming<WatchResponse> {
    let mut watch = WatchClient::connect(url.to_string()).await.unwrap();
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"a".to_vec(),
            start_revision,
            ..Default::default()
        })),
    };
    // Keep the request side open: the stream lives as long as it does.
    let requests = futures_stream(create);
    watch.watch(requests).await.unwrap().into_inner()
}

fn futures_stream(first: WatchRequest) -> impl tokio_stream::Stream<Item = WatchRequest> {
    use tokio_stream::StreamExt;
    tokio_stream::once(first).chain(tokio_stream::pending())
}

async fn next(stream: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a watch response")
        .unwrap()
        .unwrap()
}

/// etcd's arithmetic for a negative start revision (checked against etcd
/// 3.5.1): below the compacted revision C (-1 before any compaction) the
/// watch is created, then cancelled with `compact_revision` C; -1 on a store
/// never compacted watches from now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_start_revision_is_treated_as_etcd_treats_it() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let url = member.client_urls()[0].clone();
    let c = common::client(&member).await;
    for v in ["1", "2", "3"] {
        c.put(Put::new("a", v)).await.unwrap();
    }
    // Never compacted: -2 and below are "compacted at -1".
    for start in [-2, -100] {
        let mut w = watch_from(&url, start).await;
        assert!(next(&mut w).await.created);
        let cancel = next(&mut w).await;
        assert!(cancel.canceled, "{start}: {cancel:?}");
        assert_eq!(cancel.compact_revision, -1, "{start}");
    }
    // -1 watches from now: no replay, the next put arrives.
    let mut w = watch_from(&url, -1).await;
    assert!(next(&mut w).await.created);
    let put = c.put(Put::new("a", "4")).await.unwrap();
    let event = next(&mut w).await;
    assert_eq!(event.events.len(), 1, "{event:?}");
    assert_eq!(
        event.events[0].kv.as_ref().unwrap().mod_revision,
        put.header.unwrap().revision
    );
    // Compacted at 4: every negative start is cancelled with 4.
    let mut kv = KvClient::connect(url.clone()).await.unwrap();
    kv.compact(CompactionRequest {
        revision: 4,
        physical: true,
    })
    .await
    .unwrap();
    for start in [-1, -2] {
        let mut w = watch_from(&url, start).await;
        assert!(next(&mut w).await.created);
        let cancel = next(&mut w).await;
        assert!(cancel.canceled);
        assert_eq!(cancel.compact_revision, 4, "{start}");
    }
    member.stop().await.unwrap();
}

/// grpc's standard compression: etcd (grpc-go) accepts gzip requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_compressed_requests_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let mut kv = KvClient::connect(member.client_urls()[0].clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    kv.put(PutRequest {
        key: b"zipped".to_vec(),
        value: vec![b'z'; 10_000],
        ..Default::default()
    })
    .await
    .unwrap();
    let got = kv
        .range(RangeRequest {
            key: b"zipped".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kvs[0].value.len(), 10_000);
    member.stop().await.unwrap();
}

/// etcd's listeners take connection bursts (Go listens with the kernel's
/// maximum backlog): 2,000 connections at once to a listener that accepts
/// none yet all complete their handshake. (tokio's default, 1,024, leaves
/// the rest retrying SYNs for seconds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_take_a_burst_of_connections() {
    let listener = cairn_server::embed::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    let burst = 2000.min(somaxconn);
    let connects = (0..burst).map(|_| tokio::net::TcpStream::connect(addr));
    let streams = tokio::time::timeout(
        Duration::from_secs(30),
        common::cluster::futures_join_all(connects),
    )
    .await
    .expect("every connection completes without being accepted");
    assert_eq!(streams.len(), burst);
    assert!(streams.iter().all(Result::is_ok));
    drop(listener);
}

/// MemberAdd as etcd checks it: a voter may join a one-member cluster (how a
/// cluster grows from one), and a malformed peer URL is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_add_to_one_member_and_bad_urls() {
    use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
    use cairn_proto::etcdserverpb::MemberAddRequest;
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let url = member.client_urls()[0].clone();
    // Wait until it has published itself (a started member).
    let c = common::client(&member).await;
    c.put(Put::new("k", "v")).await.unwrap();
    let mut cluster = ClusterClient::connect(url).await.unwrap();
    eventually(10, "the member is started", async || {
        let list = cluster
            .member_list(cairn_proto::etcdserverpb::MemberListRequest::default())
            .await
            .unwrap()
            .into_inner();
        list.members.iter().all(|m| !m.name.is_empty())
    })
    .await;
    for bad in [
        "http://[::1",
        "http://127.0.0.1",
        "http://127.0.0.1:2380/path",
    ] {
        let err = cluster
            .member_add(MemberAddRequest {
                peer_ur_ls: vec![bad.into()],
                is_learner: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(err.message(), "etcdserver: given member URLs are invalid");
    }
    let added = cluster
        .member_add(MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
            is_learner: false,
        })
        .await
        .expect("etcd lets a voter join a one-member cluster")
        .into_inner();
    assert_eq!(added.members.len(), 2);
    // (The cluster now waits for its second voter, as etcd's does.)
    member.kill().await;
}

/// etcd registers grpc.health.v1.Health on its client port; it says
/// SERVING while the member serves (the full-disk test covers the failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_health_service_reports_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(member.client_urls()[0].clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let resp = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status(), ServingStatus::Serving);
    member.stop().await.unwrap();
}
