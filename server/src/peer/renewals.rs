//! Lease renewals a follower forwards to the leader, on one long-lived
//! stream per leader (`cairnpb.Peer/Renewals`).
//!
//! A keep-alive that reaches a follower must be answered by the leader,
//! which alone keeps lease expiries. As a call of its own, each renewal cost
//! an HTTP/2 stream opened and closed, with request headers, response
//! headers and trailers encoded and parsed on both members: under many
//! keep-alives that was most of the followers' and the leader's CPU. On a
//! stream, a renewal is one small message each way, and the messages that
//! are ready together leave in one write.
//!
//! The follower numbers its renewals and waits for the answer with that
//! number ([`RenewalStreams`]); the leader answers each as soon as it is
//! renewed, in any order ([`answer_renewals`]). When a stream ends (the
//! leader went away, the connection broke), every renewal still waiting
//! fails as an unreachable peer would, and the next renewal opens a new
//! stream. A leader of a build from before this stream answers
//! `Unimplemented`: that peer's renewals then go as calls, as before.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use cairn_proto::cairnpb::peer_client::PeerClient;
use cairn_proto::cairnpb::{Renewal, RenewalAnswer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use super::{Error, PeerHandler};
use crate::error::EtcdError;
use crate::locks::lock;
use crate::raft::Waiters;

/// Renewals queued for one stream before a renewing caller waits for room.
const QUEUED_RENEWALS: usize = 1024;

/// Answers queued on the leader's side of one stream.
const QUEUED_ANSWERS: usize = 1024;

/// The follower's side: one stream per leader URL, opened on first use.
#[derive(Debug, Default)]
pub struct RenewalStreams {
    /// Peer URL -> its stream (a stream that ended is replaced on next use).
    streams: Mutex<HashMap<String, Arc<RenewalStream>>>,
    /// Peer URLs whose member answered the stream `Unimplemented` (an older
    /// build): their renewals go as calls.
    unsupported: Mutex<HashSet<String>>,
}

/// How a forwarded renewal ended.
#[derive(Debug)]
pub enum Renewed {
    /// The leader's answer: the TTL, or why not.
    Answer(Result<i64, Error>),
    /// The leader does not serve renewal streams: renew with a call.
    Unsupported,
}

/// One open stream to a leader.
#[derive(Debug)]
struct RenewalStream {
    /// The renewals to send; tonic's request body drains it, so renewals
    /// queued together leave in one write.
    requests: mpsc::Sender<Renewal>,
    /// The renewals waiting for an answer, shared with the task that reads
    /// the answers.
    waiting: Arc<Waiting>,
}

/// The renewals of one stream that wait for their answers.
#[derive(Debug, Default)]
struct Waiting {
    /// The number the last renewal got.
    numbered: AtomicU64,
    /// Renewal number -> who waits for its answer.
    answers: Waiters<Renewed>,
    /// Set once the stream ended, before its waiters are failed: a renewal
    /// that registers and then finds it set must not wait (nothing will
    /// answer it).
    ended: AtomicBool,
}

impl Waiting {
    fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

impl RenewalStreams {
    /// Renews lease `id` at the leader at `url` on that leader's stream
    /// (opened over `channel` if there is none).
    pub async fn renew(
        &self,
        url: &str,
        channel: impl FnOnce() -> Result<Channel, Error>,
        id: i64,
    ) -> Renewed {
        if lock(&self.unsupported).contains(url) {
            return Renewed::Unsupported;
        }
        let stream = match self.stream(url, channel) {
            Ok(stream) => stream,
            Err(e) => return Renewed::Answer(Err(e)),
        };
        let waiting = &stream.waiting;
        let request = waiting.numbered.fetch_add(1, Ordering::SeqCst) + 1;
        let rx = waiting.answers.register(request);
        // After registering: a stream that ended before could not fail us.
        if waiting.ended() {
            waiting.answers.cancel(request);
            return ended();
        }
        let renewal = Renewal { request, lease: id };
        if stream.requests.send(renewal).await.is_err() {
            waiting.answers.cancel(request);
            return ended();
        }
        let renewed = rx.await.unwrap_or_else(|_| ended());
        if let Renewed::Unsupported = renewed {
            lock(&self.unsupported).insert(url.to_string());
        }
        renewed
    }

    /// The live stream to `url`, opened if there is none or the last one
    /// ended.
    fn stream(
        &self,
        url: &str,
        channel: impl FnOnce() -> Result<Channel, Error>,
    ) -> Result<Arc<RenewalStream>, Error> {
        let mut streams = lock(&self.streams);
        if let Some(stream) = streams.get(url) {
            if !stream.waiting.ended() {
                return Ok(Arc::clone(stream));
            }
        }
        let (requests, queued) = mpsc::channel(QUEUED_RENEWALS);
        let waiting = Arc::new(Waiting::default());
        let client = super::client::client(channel()?);
        tokio::spawn(read_answers(
            client,
            ReceiverStream::new(queued),
            Arc::clone(&waiting),
        ));
        let stream = Arc::new(RenewalStream { requests, waiting });
        streams.insert(url.to_string(), Arc::clone(&stream));
        Ok(stream)
    }
}

/// A renewal's outcome on a stream that ended before it was answered.
fn ended() -> Renewed {
    Renewed::Answer(Err(Error::Unreachable("the renewal stream ended".into())))
}

/// Opens the stream with `requests` as its body and hands each answer to
/// its waiter, until the stream ends; then fails whatever still waits.
async fn read_answers(
    mut client: PeerClient<Channel>,
    requests: ReceiverStream<Renewal>,
    waiting: Arc<Waiting>,
) {
    let end = match client.renewals(requests).await {
        Ok(response) => {
            let mut answers = response.into_inner();
            loop {
                match answers.message().await {
                    Ok(Some(answer)) => deliver(&waiting, answer),
                    Ok(None) => {
                        break Error::Unreachable("the leader ended the renewal stream".into())
                    }
                    Err(status) => break Error::from(status),
                }
            }
        }
        Err(status) if status.code() == Code::Unimplemented => {
            end_stream(&waiting, || Renewed::Unsupported);
            return;
        }
        Err(status) => Error::from(status),
    };
    tracing::debug!(error = %end, "lease renewal stream ended");
    end_stream(&waiting, || Renewed::Answer(Err(end.clone())));
}

/// Hands `answer` to whoever waits for it.
fn deliver(waiting: &Waiting, answer: RenewalAnswer) {
    let result = match answer.error {
        Some(wire) => Err(Error::from_wire(&wire, &answer.message)
            .unwrap_or_else(|| Error::Failed(answer.message.clone()))),
        None => Ok(answer.ttl),
    };
    waiting
        .answers
        .answer(answer.request, Renewed::Answer(result));
}

/// Marks the stream ended and answers every waiter with `outcome()`.
fn end_stream(waiting: &Waiting, outcome: impl Fn() -> Renewed) {
    waiting.ended.store(true, Ordering::SeqCst);
    waiting.answers.fail_all(outcome);
}

/// The leader's side of one stream: renews each lease as its renewal
/// arrives, each in a task of its own (a renewal may wait, for an expired
/// lease's revoke to apply or a checkpoint to clear; the others must not
/// wait behind it), and sends the answers as they come. Ends with the
/// follower's side, or once this member is gone. (Answering the renewals
/// that need not wait without a task was measured no better.)
pub fn answer_renewals<L: PeerHandler>(
    handler: Weak<L>,
    renewals: Streaming<Renewal>,
) -> ReceiverStream<Result<RenewalAnswer, Status>> {
    let (answers, queued) = mpsc::channel(QUEUED_ANSWERS);
    tokio::spawn(answer_each(handler, renewals, answers));
    ReceiverStream::new(queued)
}

/// The task of [`answer_renewals`].
async fn answer_each<L: PeerHandler>(
    handler: Weak<L>,
    mut renewals: Streaming<Renewal>,
    answers: mpsc::Sender<Result<RenewalAnswer, Status>>,
) {
    while let Ok(Some(renewal)) = renewals.message().await {
        let Some(handler) = handler.upgrade() else {
            let _ = answers
                .send(Err(Error::Refused(EtcdError::Stopped).to_status()))
                .await;
            return;
        };
        let answers = answers.clone();
        tokio::spawn(async move {
            let _ = answers.send(Ok(renew(handler, renewal).await)).await;
        });
    }
}

/// Renews one lease through `handler`: the answer to send back.
async fn renew<L: PeerHandler>(handler: Arc<L>, renewal: Renewal) -> RenewalAnswer {
    match handler.renew(renewal.lease).await {
        Ok(ttl) => RenewalAnswer {
            request: renewal.request,
            ttl,
            ..RenewalAnswer::default()
        },
        Err(e) => {
            let e = Error::answer(e);
            RenewalAnswer {
                request: renewal.request,
                ttl: 0,
                error: Some(e.to_wire()),
                message: e.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use cairn_proto::etcdserverpb::{
        HashKvResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    };
    use tokio::net::TcpListener;
    use tokio::sync::Notify;
    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;
    use crate::peer::PeerService;

    /// How long any renewal may take before the test fails.
    const DEADLINE: Duration = Duration::from_secs(10);

    /// A leader whose answers depend on the lease: 1 renews (TTL 10), 2 is
    /// unknown, 3 waits for `slow` to be notified (TTL 30), anything else
    /// fails in a way a peer does not pass on.
    #[derive(Default)]
    struct Leader {
        slow: Notify,
    }

    #[tonic::async_trait]
    impl PeerHandler for Leader {
        async fn renew(&self, id: i64) -> Result<i64, EtcdError> {
            match id {
                1 => Ok(10),
                2 => Err(EtcdError::LeaseNotFound),
                3 => {
                    self.slow.notified().await;
                    Ok(30)
                }
                _ => Err(EtcdError::Internal),
            }
        }
        fn members(&self) -> (u64, Vec<cairn_proto::cairnpb::Member>) {
            (1, Vec::new())
        }
        async fn hash_kv(&self, _revision: i64) -> Result<HashKvResponse, EtcdError> {
            Err(EtcdError::Internal)
        }
        async fn time_to_live(
            &self,
            _req: LeaseTimeToLiveRequest,
        ) -> Result<LeaseTimeToLiveResponse, EtcdError> {
            Err(EtcdError::Internal)
        }
    }

    /// Serves `router` on a port of its own; its URL.
    async fn serve(router: tonic::transport::server::Router) -> String {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
        url
    }

    fn channel(url: &str) -> Result<Channel, Error> {
        crate::raft::Dialer::default()
            .lazy(url)
            .map_err(|e| Error::Unreachable(e.to_string()))
    }

    async fn renew(streams: &RenewalStreams, url: &str, id: i64) -> Renewed {
        tokio::time::timeout(DEADLINE, streams.renew(url, || channel(url), id))
            .await
            .expect("no answer in time")
    }

    fn answer(renewed: Renewed) -> Result<i64, Error> {
        match renewed {
            Renewed::Answer(result) => result,
            Renewed::Unsupported => panic!("the stream is served"),
        }
    }

    #[tokio::test]
    async fn renewals_are_answered_in_any_order_with_the_leaders_refusals() {
        let leader = Arc::new(Leader::default());
        let server = tonic::transport::Server::builder()
            .add_service(PeerService::new(&leader).into_server());
        let url = serve(server).await;
        let streams = Arc::new(RenewalStreams::default());
        // Phase 1: a renewal that waits does not hold up the others.
        let waiting = tokio::spawn({
            let (streams, url) = (Arc::clone(&streams), url.clone());
            async move { answer(renew(&streams, &url, 3).await) }
        });
        assert_eq!(answer(renew(&streams, &url, 1).await), Ok(10));
        assert_eq!(
            answer(renew(&streams, &url, 2).await),
            Err(Error::Refused(EtcdError::LeaseNotFound))
        );
        assert!(
            matches!(answer(renew(&streams, &url, 4).await), Err(Error::Failed(m)) if m.contains("etcdserver"))
        );
        assert!(!waiting.is_finished());
        // Phase 2: the one that waited gets its own answer; all went on one
        // stream.
        leader.slow.notify_one();
        assert_eq!(waiting.await.unwrap(), Ok(30));
        assert_eq!(lock(&streams.streams).len(), 1);
        let stream = Arc::clone(&lock(&streams.streams)[&url]);
        assert!(stream.waiting.answers.is_empty());
        // Phase 3: the leader's member is gone: the stream ends with its
        // refusal, and so does a new one.
        let gone = Arc::downgrade(&leader);
        drop(leader);
        // (The task that renewed 3 lets go of the member just after it answers.)
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while gone.upgrade().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the member is still held"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            answer(renew(&streams, &url, 1).await),
            Err(Error::Refused(EtcdError::Stopped))
        );
        assert!(stream.waiting.ended());
        assert_eq!(
            answer(renew(&streams, &url, 1).await),
            Err(Error::Refused(EtcdError::Stopped))
        );
    }

    #[tokio::test]
    async fn a_renewal_waiting_on_a_stream_that_breaks_fails_as_unreachable() {
        use tokio::io::AsyncReadExt;
        // A "leader" that takes the connection, reads the renewal's first
        // bytes, and drops it.
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf).await;
        });
        let streams = RenewalStreams::default();
        let renewed = renew(&streams, &url, 1).await;
        assert!(matches!(answer(renewed), Err(Error::Unreachable(_))));
        // The ended stream is not reused: the next renewal opens another
        // (refused too: nobody listens any more).
        let first = Arc::clone(&lock(&streams.streams)[&url]);
        assert!(first.waiting.ended());
        let renewed = renew(&streams, &url, 1).await;
        assert!(matches!(answer(renewed), Err(Error::Unreachable(_))));
        assert!(!Arc::ptr_eq(&first, &lock(&streams.streams)[&url]));
    }

    #[tokio::test]
    async fn a_leader_without_the_stream_is_renewed_with_calls() {
        let (_, health) = tonic_health::server::health_reporter();
        let url = serve(tonic::transport::Server::builder().add_service(health)).await;
        let streams = RenewalStreams::default();
        assert!(matches!(
            renew(&streams, &url, 1).await,
            Renewed::Unsupported
        ));
        // Remembered: the next renewal does not try the stream again.
        assert!(lock(&streams.unsupported).contains(&url));
        assert!(matches!(
            renew(&streams, &url, 1).await,
            Renewed::Unsupported
        ));
    }
}
