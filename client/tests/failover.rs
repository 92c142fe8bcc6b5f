//! Failover against tiny in-process KV servers on loopback: one that always
//! answers a fixed response, ones that always fail with a chosen status, and
//! an endpoint that refuses connections. Each server counts its calls, so the
//! tests check not only what the client returns but which members it asked
//! and how often (a write with an unknown outcome must be sent exactly once).
//! At the end, two scripted Watch servers check that a watcher resumes on
//! the next member from the revision it needs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cairn_client::proto::etcdserverpb::kv_server::{Kv, KvServer};
use cairn_client::proto::etcdserverpb::watch_request::RequestUnion;
use cairn_client::proto::etcdserverpb::watch_server::{Watch as WatchService, WatchServer};
use cairn_client::proto::etcdserverpb::{
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, WatchRequest,
    WatchResponse,
};
use cairn_client::proto::mvccpb::{Event, KeyValue};
use cairn_client::{Client, Error, Get, Put, Watch, WatchEvent};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codegen::BoxStream;
use tonic::{Code, Request, Response, Status, Streaming};

const NO_LEADER: &str = "etcdserver: no leader";
const TIMED_OUT: &str = "etcdserver: request timed out";
const LEADER_CHANGED: &str = "etcdserver: leader changed";

/// What one fake member saw.
#[derive(Debug, Default)]
struct Seen {
    /// Range calls received.
    ranges: AtomicUsize,
    /// Put calls received.
    puts: AtomicUsize,
    /// Whether any request carried `hasleader: true`.
    require_leader: AtomicBool,
}

impl Seen {
    fn ranges(&self) -> usize {
        self.ranges.load(Ordering::SeqCst)
    }
    fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }
}

/// A member that answers every Range and Put the same way.
struct FakeKv {
    /// `None`: answer with a fixed response; `Some`: fail with this status.
    fail: Option<(Code, &'static str)>,
    /// Counters the test reads.
    seen: Arc<Seen>,
}

impl FakeKv {
    fn note<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if req.metadata().get("hasleader").is_some_and(|v| v == "true") {
            self.seen.require_leader.store(true, Ordering::SeqCst);
        }
        match self.fail {
            Some((code, message)) => Err(Status::new(code, message)),
            None => Ok(()),
        }
    }
}

fn header() -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision: 42,
        ..ResponseHeader::default()
    })
}

#[tonic::async_trait]
impl Kv for FakeKv {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        self.seen.ranges.fetch_add(1, Ordering::SeqCst);
        self.note(&req)?;
        Ok(Response::new(RangeResponse {
            header: header(),
            kvs: vec![KeyValue {
                key: req.into_inner().key,
                value: b"from the good member".to_vec(),
                ..KeyValue::default()
            }],
            count: 1,
            ..RangeResponse::default()
        }))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.seen.puts.fetch_add(1, Ordering::SeqCst);
        self.note(&req)?;
        Ok(Response::new(PutResponse {
            header: header(),
            prev_kv: None,
        }))
    }
}

/// Starts a fake member; returns its URL and its counters.
async fn member(fail: Option<(Code, &'static str)>) -> (String, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let kv = KvServer::new(FakeKv {
        fail,
        seen: seen.clone(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(kv)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, seen)
}

/// An endpoint nobody listens on: bind a port, then free it.
fn refused() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn code_and_message(err: &Error) -> (Code, String) {
    let status = err.status().expect("a gRPC status");
    (status.code(), status.message().to_string())
}

#[tokio::test]
async fn get_fails_over_to_the_member_that_answers() {
    let (no_leader, bad) = member(Some((Code::Unavailable, NO_LEADER))).await;
    let (good, ok) = member(None).await;
    let client = Client::connect_all([refused(), no_leader, good])
        .await
        .unwrap();

    let resp = client.get(Get::key("k")).await.unwrap();
    assert_eq!(resp.kvs[0].value, b"from the good member");
    assert_eq!(resp.header.unwrap().revision, 42);
    assert_eq!((bad.ranges(), ok.ranges()), (1, 1));
    assert_eq!(client.current_endpoint(), 2);

    // The next call starts at the member that answered.
    client.get(Get::key("k")).await.unwrap();
    assert_eq!((bad.ranges(), ok.ranges()), (1, 2));
}

#[tokio::test]
async fn get_fails_over_past_a_member_whose_outcome_would_be_unknown() {
    // A read may be repeated even after "request timed out".
    let (slow, bad) = member(Some((Code::Unavailable, TIMED_OUT))).await;
    let (good, ok) = member(None).await;
    let client = Client::connect_all([slow, good]).await.unwrap();
    client.get(Get::key("k")).await.unwrap();
    assert_eq!((bad.ranges(), ok.ranges()), (1, 1));
}

#[tokio::test]
async fn put_fails_over_past_no_leader_and_refused() {
    let (no_leader, bad) = member(Some((Code::Unavailable, NO_LEADER))).await;
    let (good, ok) = member(None).await;
    let client = Client::connect_all([no_leader, refused(), good])
        .await
        .unwrap();

    let resp = client.put(Put::new("k", "v")).await.unwrap();
    assert_eq!(resp.header.unwrap().revision, 42);
    assert_eq!((bad.puts(), ok.puts()), (1, 1), "each member asked once");
    assert_eq!(client.current_endpoint(), 2);
}

#[tokio::test]
async fn put_with_an_unknown_outcome_is_not_repeated() {
    for message in [TIMED_OUT, LEADER_CHANGED] {
        let (unsure, bad) = member(Some((Code::Unavailable, message))).await;
        let (good, ok) = member(None).await;
        let client = Client::connect_all([unsure, good]).await.unwrap();

        match client.put(Put::new("k", "v")).await {
            Err(Error::UnknownOutcome { source }) => {
                assert_eq!(
                    (source.code(), source.message()),
                    (Code::Unavailable, message)
                )
            }
            other => panic!("{message}: expected UnknownOutcome, got {other:?}"),
        }
        assert_eq!((bad.puts(), ok.puts()), (1, 0), "{message}: sent once");

        // The client did move on, so the next call reaches the good member.
        assert_eq!(client.current_endpoint(), 1, "{message}");
        client.put(Put::new("k", "v2")).await.unwrap();
        assert_eq!((bad.puts(), ok.puts()), (1, 1), "{message}");
    }
}

#[tokio::test]
async fn invalid_argument_is_not_retried() {
    let (invalid, bad) = member(Some((
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    )))
    .await;
    let (good, ok) = member(None).await;
    let client = Client::connect_all([invalid, good]).await.unwrap();

    let err = client.put(Put::new("k", "v")).await.unwrap_err();
    assert!(matches!(err, Error::Status(_)), "{err:?}");
    assert_eq!(
        code_and_message(&err),
        (
            Code::InvalidArgument,
            "etcdserver: key is not provided".into()
        )
    );
    let err = client.get(Get::key("k")).await.unwrap_err();
    assert_eq!(code_and_message(&err).0, Code::InvalidArgument);

    assert_eq!((bad.puts(), bad.ranges()), (1, 1));
    assert_eq!((ok.puts(), ok.ranges()), (0, 0));
    assert_eq!(
        client.current_endpoint(),
        0,
        "an answer is no reason to move"
    );
}

#[tokio::test]
async fn when_no_member_answers_calls_give_up_after_three_rounds() {
    // Real time: the two pauses between rounds add 150 ms; nothing here
    // depends on how long anything takes.
    let (no_leader, bad) = member(Some((Code::Unavailable, NO_LEADER))).await;
    let client = Client::connect_all([refused(), no_leader]).await.unwrap();

    let err = client.get(Get::key("k")).await.unwrap_err();
    assert_eq!(
        code_and_message(&err),
        (Code::Unavailable, NO_LEADER.into())
    );
    assert_eq!(bad.ranges(), 3, "once per round");

    // A write that no member accepted was never applied: a plain status.
    let err = client.put(Put::new("k", "v")).await.unwrap_err();
    assert!(matches!(err, Error::Status(_)), "{err:?}");
    assert_eq!(bad.puts(), 3);
}

#[tokio::test]
async fn require_leader_reaches_the_server() {
    let (good, ok) = member(None).await;
    let client = Client::connect(good).await.unwrap();
    client.get(Get::key("k")).await.unwrap();
    assert!(!ok.require_leader.load(Ordering::SeqCst));
    let leader = client.with_require_leader(true);
    leader.put(Put::new("k", "v")).await.unwrap();
    assert!(ok.require_leader.load(Ordering::SeqCst));
}

#[tokio::test]
async fn endpoint_status_all_asks_each_endpoint_once() {
    // The fakes serve only KV, so their Status answer is Unimplemented: it
    // must be reported for that endpoint, not failed over.
    let (good, _ok) = member(None).await;
    let dead = refused();
    let client = Client::connect_all([dead.clone(), good.clone()])
        .await
        .unwrap();
    let all = client.endpoint_status_all().await;
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].endpoint.as_str(), all[1].endpoint.as_str()),
        (dead.as_str(), good.as_str())
    );
    let codes: Vec<Code> = all
        .iter()
        .map(|s| code_and_message(s.status.as_ref().unwrap_err()).0)
        .collect();
    assert_eq!(codes, vec![Code::Unavailable, Code::Unimplemented]);
    assert_eq!(
        code_and_message(&client.status_of(1).await.unwrap_err()).0,
        Code::Unimplemented
    );
    assert!(matches!(
        client.status_of(2).await,
        Err(Error::NoSuchEndpoint { index: 2, count: 2 })
    ));
}

/// A Watch member: answers a create with `created`, then one put event at
/// the create's start revision (11 when it is 0, "now" being 10), then
/// either ends the stream with "etcdserver: no leader" or keeps it open.
struct FakeWatch {
    /// End each stream with "no leader" after its event.
    lose_leader: bool,
    /// `(start_revision, had hasleader metadata)` of every create received.
    creates: Arc<Mutex<Vec<(i64, bool)>>>,
}

#[tonic::async_trait]
impl WatchService for FakeWatch {
    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<BoxStream<WatchResponse>>, Status> {
        let has_leader = req.metadata().get("hasleader").is_some_and(|v| v == "true");
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let (creates, lose_leader) = (self.creates.clone(), self.lose_leader);
        tokio::spawn(async move {
            let Ok(Some(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create)),
            })) = incoming.message().await
            else {
                return;
            };
            creates
                .lock()
                .unwrap()
                .push((create.start_revision, has_leader));
            let rev = if create.start_revision > 0 {
                create.start_revision
            } else {
                11
            };
            // "Now" is revision 10 for a watch from now on (so the event at
            // 11 is news), and the start revision for a resumed one.
            let header = |revision| {
                Some(ResponseHeader {
                    revision,
                    ..ResponseHeader::default()
                })
            };
            let created = WatchResponse {
                header: header(if create.start_revision > 0 { rev } else { 10 }),
                created: true,
                ..WatchResponse::default()
            };
            let event = WatchResponse {
                header: header(rev),
                events: vec![Event {
                    r#type: 0,
                    kv: Some(KeyValue {
                        key: create.key,
                        mod_revision: rev,
                        ..KeyValue::default()
                    }),
                    prev_kv: None,
                }],
                ..WatchResponse::default()
            };
            let _ = tx.send(Ok(created)).await;
            let _ = tx.send(Ok(event)).await;
            if lose_leader {
                let _ = tx.send(Err(Status::unavailable(NO_LEADER))).await;
                return;
            }
            // Keep the stream open until the client goes away.
            while let Ok(Some(_)) = incoming.message().await {}
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn watch_member(lose_leader: bool) -> (String, Arc<Mutex<Vec<(i64, bool)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let creates = Arc::new(Mutex::new(Vec::new()));
    let watch = WatchServer::new(FakeWatch {
        lose_leader,
        creates: creates.clone(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(watch)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, creates)
}

fn revisions(event: WatchEvent) -> Vec<i64> {
    match event {
        WatchEvent::Events { events, .. } => events
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect(),
        other => panic!("expected events, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_resumes_on_the_next_member_when_its_member_loses_the_leader() {
    let (leaderless, first) = watch_member(true).await;
    let (good, second) = watch_member(false).await;
    let client = Client::connect_all([leaderless, good])
        .await
        .unwrap()
        .with_require_leader(true);

    let mut watcher = client.watch(Watch::key("k")).await.unwrap();
    assert_eq!(revisions(watcher.next().await.unwrap()), vec![11]);
    // The first stream now ends with "no leader": the watcher moves on and
    // asks the next member for exactly what it has not seen yet.
    assert_eq!(revisions(watcher.next().await.unwrap()), vec![12]);
    assert_eq!(watcher.next_revision(), 13);
    assert_eq!(client.current_endpoint(), 1);
    assert_eq!(*first.lock().unwrap(), vec![(0, true)]);
    assert_eq!(*second.lock().unwrap(), vec![(12, true)]);
}
