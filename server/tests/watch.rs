//! The Watch service through cairn-client and raw gRPC against an in-process member.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::Duration;

use cairn_client::proto::etcdserverpb::watch_client::WatchClient;
use cairn_client::proto::etcdserverpb::watch_request::RequestUnion;
use cairn_client::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use cairn_client::proto::mvccpb::event::EventType;
use cairn_client::{Delete, Error, Op, Put, Txn, Watch, WatchEvent, Watcher};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Next events (skipping progress), with a deadline so a bug fails instead of hanging.
async fn next_events(w: &mut Watcher) -> Vec<(i64, String, i32)> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), w.next())
            .await
            .expect("an event in time")
            .unwrap();
        if let WatchEvent::Events { events, .. } = ev {
            return events
                .into_iter()
                .map(|e| {
                    let kv = e.kv.unwrap();
                    (
                        kv.mod_revision,
                        String::from_utf8(kv.key).unwrap(),
                        e.r#type,
                    )
                })
                .collect();
        }
    }
}

const PUT: i32 = EventType::Put as i32;
const DEL: i32 = EventType::Delete as i32;

#[tokio::test]
async fn events_are_ordered_and_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    let mut w = c
        .watch(Watch::key("app/").prefix().prev_kv())
        .await
        .unwrap();
    c.put(Put::new("app/a", "1")).await.unwrap(); // 2
    c.put(Put::new("other", "x")).await.unwrap(); // 3
    c.txn(Txn::new().and_then(vec![
        Op::put(Put::new("app/b", "1")),
        Op::put(Put::new("app/a", "2")),
    ]))
    .await
    .unwrap(); // 4
    c.delete(Delete::key("app/").prefix()).await.unwrap(); // 5
    assert_eq!(next_events(&mut w).await, vec![(2, "app/a".into(), PUT)]);
    assert_eq!(
        next_events(&mut w).await,
        vec![(4, "app/b".into(), PUT), (4, "app/a".into(), PUT)]
    );
    assert_eq!(
        next_events(&mut w).await,
        vec![(5, "app/a".into(), DEL), (5, "app/b".into(), DEL)]
    );
    assert_eq!(w.next_revision(), 6);
    member.stop().await.unwrap();
}

#[tokio::test]
async fn replay_from_a_past_revision_and_compaction_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    for i in 0..5 {
        c.put(Put::new("k", format!("{i}"))).await.unwrap(); // 2..=6
    }
    let mut w = c
        .watch(Watch::key("k").start_revision(3).prev_kv())
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        got.extend(next_events(&mut w).await.into_iter().map(|e| e.0));
    }
    assert_eq!(got, vec![3, 4, 5, 6]);
    c.compact(5, true).await.unwrap();
    // As etcd: the watch is created, then canceled with the compacted revision
    // (and, as etcd, no revision in that response's header).
    let (tx, mut rx) = raw(&member.client_urls()[0]).await;
    tx.send(create(WatchCreateRequest {
        key: b"k".to_vec(),
        start_revision: 4,
        ..Default::default()
    }))
    .await
    .unwrap();
    assert!(recv(&mut rx).await.created);
    let r = recv(&mut rx).await;
    assert_eq!(
        (r.canceled, r.compact_revision, r.header.unwrap().revision),
        (true, 5, 0)
    );
    let mut w = c.watch(Watch::key("k").start_revision(4)).await.unwrap();
    match w.next().await {
        Err(Error::Compacted { compact_revision }) => assert_eq!(compact_revision, 5),
        other => panic!("expected a compaction error, got {other:?}"),
    }
    member.stop().await.unwrap();
}

/// etcd's documented recovery from a compaction: watch again from the
/// `compact_revision` the cancel carried. That watch is served (it used to
/// be cancelled again with the same revision, so such clients looped), and
/// Cairn delivers the revision whole, deletions included.
#[tokio::test]
async fn a_watch_resumed_from_compact_revision_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    c.put(Put::new("k", "1")).await.unwrap(); // 2
    c.put(Put::new("gone", "x")).await.unwrap(); // 3
    let txn = Txn::new().and_then(vec![
        Op::put(Put::new("k", "2")),
        Op::delete(Delete::key("gone")),
    ]); // 4
    c.txn(txn).await.unwrap();
    c.put(Put::new("k", "3")).await.unwrap(); // 5
    c.compact(4, true).await.unwrap();

    // Raw stream: cancelled below C with compact_revision C; served at C.
    let (tx, mut rx) = raw(&member.client_urls()[0]).await;
    tx.send(create(WatchCreateRequest {
        key: b"\0".to_vec(),
        range_end: b"\0".to_vec(),
        start_revision: 3,
        ..Default::default()
    }))
    .await
    .unwrap();
    assert!(recv(&mut rx).await.created);
    let cancel = recv(&mut rx).await;
    assert_eq!((cancel.canceled, cancel.compact_revision), (true, 4));
    tx.send(create(WatchCreateRequest {
        key: b"\0".to_vec(),
        range_end: b"\0".to_vec(),
        start_revision: cancel.compact_revision,
        ..Default::default()
    }))
    .await
    .unwrap();
    let created = recv(&mut rx).await;
    assert!(created.created && !created.canceled, "{created:?}");
    let mut got = Vec::new();
    while got.len() < 3 {
        let r = recv(&mut rx).await;
        assert!(!r.canceled, "{r:?}");
        got.extend(
            r.events
                .iter()
                .map(|e| (e.kv.as_ref().unwrap().mod_revision, e.r#type)),
        );
    }
    assert_eq!(got, vec![(4, PUT), (4, DEL), (5, PUT)]);

    // cairn-client: Compacted, then a watcher from that revision works.
    let mut w = c.watch(Watch::key("k").start_revision(2)).await.unwrap();
    let compact_revision = match w.next().await {
        Err(Error::Compacted { compact_revision }) => compact_revision,
        other => panic!("expected a compaction error, got {other:?}"),
    };
    assert_eq!(compact_revision, 4);
    let mut w = c
        .watch(Watch::key("k").start_revision(compact_revision))
        .await
        .unwrap();
    let mut revs = Vec::new();
    while revs.len() < 2 {
        revs.extend(next_events(&mut w).await.into_iter().map(|e| e.0));
    }
    assert_eq!(revs, vec![4, 5]);
    member.stop().await.unwrap();
}

#[tokio::test]
async fn watcher_resumes_across_a_restart_without_missing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let url = member.client_urls()[0].clone();
    let c = common::client(&member).await;
    let mut w = c.watch(Watch::key("k").prefix()).await.unwrap();
    c.put(Put::new("k1", "a")).await.unwrap(); // 2
    assert_eq!(next_events(&mut w).await, vec![(2, "k1".into(), PUT)]);
    member.stop().await.unwrap();

    // Same port, same data: written while the watcher was disconnected.
    let mut config = common::config(dir.path());
    config.listen_client_urls = vec![url];
    let member = cairn_server::embed::start(config).await.unwrap();
    let c2 = common::client(&member).await;
    c2.put(Put::new("k2", "b")).await.unwrap(); // 3
    c2.put(Put::new("k3", "c")).await.unwrap(); // 4
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(next_events(&mut w).await);
    }
    assert_eq!(got, vec![(3, "k2".into(), PUT), (4, "k3".into(), PUT)]);
    member.stop().await.unwrap();
}

/// A raw stream, for protocol details the client hides.
async fn raw(url: &str) -> (mpsc::Sender<WatchRequest>, tonic::Streaming<WatchResponse>) {
    let mut client = WatchClient::connect(url.to_string()).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    let responses = client
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, responses)
}

fn create(req: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(req)),
    }
}

async fn recv(s: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn protocol_ids_progress_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    let (tx, mut rx) = raw(&member.client_urls()[0]).await;

    // Auto ids start at 0; a chosen id is kept; a duplicate is refused.
    tx.send(create(WatchCreateRequest {
        key: b"a".to_vec(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let r = recv(&mut rx).await;
    assert!(
        (r.created, r.watch_id, r.canceled) == (true, 0, false),
        "{r:?}"
    );
    tx.send(create(WatchCreateRequest {
        key: b"b".to_vec(),
        watch_id: 7,
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(recv(&mut rx).await.watch_id, 7);
    tx.send(create(WatchCreateRequest {
        key: b"c".to_vec(),
        watch_id: 7,
        ..Default::default()
    }))
    .await
    .unwrap();
    let r = recv(&mut rx).await;
    assert_eq!((r.watch_id, r.created, r.canceled), (-1, true, true));
    assert_eq!(
        r.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    tx.send(create(WatchCreateRequest {
        key: b"b".to_vec(),
        range_end: b"a".to_vec(),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(
        recv(&mut rx).await.cancel_reason,
        "mvcc: watcher range is empty"
    );
    // A negative start revision below the compacted one (-1 before any
    // compaction), as etcd: created, then cancelled with compact_revision.
    tx.send(create(WatchCreateRequest {
        key: b"a".to_vec(),
        start_revision: -2,
        ..Default::default()
    }))
    .await
    .unwrap();
    let created = recv(&mut rx).await;
    assert!(created.created && !created.canceled);
    let cancel = recv(&mut rx).await;
    assert_eq!(
        (cancel.watch_id, cancel.canceled, cancel.compact_revision),
        (created.watch_id, true, -1)
    );

    // Events carry the watcher's id and the revision in the header.
    c.put(Put::new("b", "1")).await.unwrap(); // 2
    let r = recv(&mut rx).await;
    assert_eq!(
        (r.watch_id, r.header.unwrap().revision, r.events.len()),
        (7, 2, 1)
    );

    // Stream-wide progress: id -1 at the current revision.
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(Default::default())),
    })
    .await
    .unwrap();
    let r = recv(&mut rx).await;
    assert_eq!(
        (r.watch_id, r.header.unwrap().revision, r.events.len()),
        (-1, 2, 0)
    );

    // Cancel answers with canceled; an unknown id gets no answer.
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(
            cairn_client::proto::etcdserverpb::WatchCancelRequest { watch_id: 7 },
        )),
    })
    .await
    .unwrap();
    let r = recv(&mut rx).await;
    assert_eq!((r.watch_id, r.canceled), (7, true));
    c.put(Put::new("b", "2")).await.unwrap();
    c.put(Put::new("a", "1")).await.unwrap();
    let r = recv(&mut rx).await;
    assert_eq!(
        (r.watch_id, r.events.len()),
        (0, 1),
        "no event for the canceled watcher"
    );
    member.stop().await.unwrap();
}

#[tokio::test]
async fn large_responses_are_fragmented_and_reassembled() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.max_request_bytes = 64 * 1024;
    let member = cairn_server::embed::start(config).await.unwrap();
    let c = common::client(&member).await;
    // 8 keys of 16 KiB: replayed from revision 2, one response of ~128 KiB,
    // twice the limit.
    for i in 0..8 {
        c.put(Put::new(format!("big/{i}"), vec![b'x'; 16 * 1024]))
            .await
            .unwrap();
    }

    let (tx, mut rx) = raw(&member.client_urls()[0]).await;
    tx.send(create(WatchCreateRequest {
        key: b"big/".to_vec(),
        range_end: b"big0".to_vec(),
        start_revision: 2,
        fragment: true,
        ..Default::default()
    }))
    .await
    .unwrap();
    assert!(recv(&mut rx).await.created);
    let mut parts = Vec::new();
    loop {
        let r = recv(&mut rx).await;
        let more = r.fragment;
        parts.push(r);
        if !more {
            break;
        }
    }
    assert!(parts.len() > 1, "fragmented");
    assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), 8);

    let mut w = c
        .watch(Watch::key("big/").prefix().start_revision(2).fragment())
        .await
        .unwrap();
    assert_eq!(
        next_events(&mut w).await.len(),
        8,
        "the client reassembles fragments"
    );
    member.stop().await.unwrap();
}

#[tokio::test]
async fn periodic_progress_notifications_are_bookmarks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.watch_progress_notify_interval = Duration::from_millis(50);
    let member = cairn_server::embed::start(config).await.unwrap();
    let c = common::client(&member).await;
    c.put(Put::new("other", "x")).await.unwrap(); // 2
    let mut w = c.watch(Watch::key("k").progress_notify()).await.unwrap();
    c.put(Put::new("other", "y")).await.unwrap(); // 3: not watched, still covered by progress
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ev = tokio::time::timeout_at(deadline, w.next())
            .await
            .expect("a progress notification")
            .unwrap();
        if let WatchEvent::Progress { revision } = ev {
            if revision == 3 {
                break;
            }
            assert!(
                revision == 2,
                "progress never goes past the store: {revision}"
            );
        }
    }
    assert_eq!(w.next_revision(), 4);
    member.stop().await.unwrap();
}

#[tokio::test]
async fn closed_streams_and_cancelled_watchers_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let hub_len = || member.member().store().watch_hub().len();
    let (tx, mut rx) = raw(&member.client_urls()[0]).await;
    for i in 0..2000 {
        tx.send(create(WatchCreateRequest {
            key: format!("k{i}").into_bytes(),
            start_revision: 1,
            ..Default::default()
        }))
        .await
        .unwrap();
        let id = recv(&mut rx).await.watch_id;
        tx.send(WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(
                cairn_client::proto::etcdserverpb::WatchCancelRequest { watch_id: id },
            )),
        })
        .await
        .unwrap();
        assert!(recv(&mut rx).await.canceled);
    }
    assert_eq!(hub_len(), 0);
    // Watchers left open are removed when their stream goes away.
    for i in 0..100 {
        tx.send(create(WatchCreateRequest {
            key: format!("o{i}").into_bytes(),
            ..Default::default()
        }))
        .await
        .unwrap();
        assert!(recv(&mut rx).await.created);
    }
    assert_eq!(hub_len(), 100);
    drop(tx);
    drop(rx);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while hub_len() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} watchers left after the stream closed",
            hub_len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    member.stop().await.unwrap();
}

/// A watch "from now" is due every commit after the revision its created
/// response names — also one that lands while that response waits for room
/// towards a client that is slow to read (etcd starts it at the header's
/// revision + 1). The stream's queue of responses is filled by creates that
/// nobody reads, so the next create waits with its header taken while a put
/// commits.
#[tokio::test]
async fn a_watch_from_now_is_due_what_commits_after_its_header() {
    use cairn_server::auth::Caller;
    use cairn_server::grpc::WatchService;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let member = common::start(dir.path()).await;
    let c = common::client(&member).await;
    c.put(Put::new("k", "before")).await.unwrap();
    let service = WatchService::new(Arc::clone(member.member().kv()), Duration::from_secs(3600));
    let creates = 64;
    let (req_tx, req_rx) = mpsc::channel(creates);
    let mut responses = service.open(ReceiverStream::new(req_rx), false, Caller::Anonymous);
    for _ in 0..creates {
        let req = create(WatchCreateRequest {
            key: b"k".to_vec(),
            ..WatchCreateRequest::default()
        });
        req_tx.send(Ok(req)).await.unwrap();
    }
    // Until the queue towards the client is full (then the stream is
    // blocked in a create, after its header).
    common::eventually(20, "a full response queue", async || {
        tokio::task::yield_now().await;
        let queue = responses.as_ref();
        queue.len() == queue.max_capacity()
    })
    .await;
    let put = c.put(Put::new("k", "during")).await.unwrap();
    let put_rev = put.header.unwrap().revision;

    use tokio_stream::StreamExt;
    let mut created_before = Vec::new();
    let mut due = std::collections::HashSet::new();
    let mut seen = 0;
    while seen < creates || !due.is_empty() {
        let resp = tokio::time::timeout(Duration::from_secs(20), responses.next())
            .await
            .expect("a response in time")
            .expect("the stream open")
            .expect("no error");
        if resp.created {
            seen += 1;
            let header = resp.header.unwrap().revision;
            if header < put_rev {
                created_before.push(resp.watch_id);
                due.insert(resp.watch_id);
            }
        } else {
            let revisions: Vec<i64> = resp
                .events
                .iter()
                .map(|e| e.kv.as_ref().unwrap().mod_revision)
                .collect();
            assert_eq!(revisions, vec![put_rev], "watch {}", resp.watch_id);
            assert!(due.remove(&resp.watch_id), "watch {}", resp.watch_id);
        }
    }
    // The put landed while creates were still queued: some were created
    // before it, one of them while its response waited, and some after.
    assert!(!created_before.is_empty() && created_before.len() < creates);
}
