//! LeaseKeepAlive streams: [`KeepAlives`], the one loop that answers a
//! stream's keep-alive requests (a gRPC stream's, or the JSON gateway's),
//! one request at a time, as the stream is read, with no task or channel of
//! its own; and the gRPC stream's response body, which reads, renews and
//! answers without tonic's streaming machinery.
//!
//! Why: clientv3's `KeepAliveOnce` (and etcd's benchmark, which calls it for
//! every renewal) opens a stream for each keep-alive: one request, one
//! answer, then the client cancels the stream. Through tonic each of those
//! streams built a decoder, an encoder, a task, a channel, and on the
//! client's cancel two error objects (tonic's status for the request body's
//! reset, hyper's for the response's), ~40 allocations per keep-alive over
//! three members (a uprobe on malloc, 2026-12-05). Here a stream costs its
//! body, its read buffer and, per request, the renewal's future and the
//! encoded answer; and since nothing reads the request body on its own, a
//! cancelled stream is simply dropped.
//!
//! Only the expected shape is read here: uncompressed messages of at most
//! the size limit that decode. From the first thing that is not (a
//! compressed flag, an oversized or undecodable message, trailers, a body
//! error, a message cut short), what is left of the body, that included, is
//! read by tonic's own decoder, so that tonic's errors for those stay the
//! only ones (mapped to grpc-go's, as on every stream). A stream whose
//! requests are compressed (`grpc-encoding`) goes to tonic whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use cairn_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use http::HeaderValue;
use http_body::{Body as _, Frame};
use prost::Message as _;
use tokio_stream::Stream;
use tonic::body::Body;
use tonic::codec::Streaming;
use tonic::Status;

use super::unary::{self, Replay, PREFIX};
use super::{caller, status, LeaseService};
use crate::auth::Caller;
use crate::error::EtcdError;
use crate::member::LeaseApi;

/// One renewal in flight: the answer to one request.
type Renewal = Pin<Box<dyn Future<Output = Result<LeaseKeepAliveResponse, EtcdError>> + Send>>;

/// Completes once the member stops.
type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The response to a LeaseKeepAlive call whose requests are not compressed
/// (see the module doc), served by `service` with requests of at most `max`
/// bytes.
pub(super) fn answer(
    request: http::Request<Body>,
    service: &LeaseService,
    max: usize,
) -> http::Response<Body> {
    let (parts, body) = request.into_parts();
    let metadata = tonic::metadata::MetadataMap::from_headers(parts.headers);
    let request = tonic::Request::from_parts(metadata, parts.extensions, ());
    let caller = caller::of(&request, service.api().proposer());
    let answers = keep_alives(service.api(), Requests::new(body, max), caller);
    let mut response = http::Response::new(Body::new(Answers::new(answers)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The answers to `requests`, the keep-alive requests of one stream, for
/// `caller` on the member whose Lease API is `api`.
pub(super) fn keep_alives<S>(
    api: &Arc<LeaseApi>,
    requests: S,
    caller: Caller,
) -> impl Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Unpin + Send + 'static
where
    S: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin + Send + 'static,
{
    let mut stopping = api.proposer().stopping();
    let stopped = Box::pin(async move { drop(stopping.wait_for(|stop| *stop).await) });
    let shared = Arc::new((Arc::clone(api), caller));
    let renew = move |id| -> Renewal {
        let shared = Arc::clone(&shared);
        Box::pin(async move { renewal(&shared.0, id, &shared.1).await })
    };
    KeepAlives::new(requests, renew, stopped)
}

/// The answer to one keep-alive request for lease `id`: its TTL, or 0 for
/// a lease that does not exist (or has expired), as etcd answers it; any
/// other error ends the stream.
async fn renewal(
    lease: &LeaseApi,
    id: i64,
    caller: &Caller,
) -> Result<LeaseKeepAliveResponse, EtcdError> {
    // The header is taken before the renewal, as etcd does: a client never
    // sees a successful keep-alive at a revision after the one that revoked
    // the lease.
    let header = lease.proposer().header(0);
    let ttl = match lease.renew(id, caller).await {
        Ok(ttl) => ttl,
        Err(EtcdError::LeaseNotFound) => 0,
        Err(e) => return Err(e),
    };
    Ok(LeaseKeepAliveResponse {
        header: Some(header),
        id,
        ttl,
    })
}

/// The answers to one stream's keep-alive requests, in order, each renewal
/// started once the previous answer is taken (as etcd's server sends each
/// before it reads the next request), until the client closes its side
/// (the stream ends), or a request fails, or the member stops (the stream
/// ends with that error: "etcdserver: server stopped" tells the client to
/// renew elsewhere).
struct KeepAlives<S, F> {
    /// Where the requests come from.
    requests: S,
    /// Starts the renewal of a lease (by its id).
    renew: F,
    /// The renewal in flight.
    renewal: Option<Renewal>,
    /// Completes once the member stops.
    stopped: Stopped,
    /// Whether the stream has ended: nothing follows.
    ended: bool,
}

impl<S, F> KeepAlives<S, F> {
    fn new(requests: S, renew: F, stopped: Stopped) -> Self {
        Self {
            requests,
            renew,
            renewal: None,
            stopped,
            ended: false,
        }
    }
}

impl<S, F> Stream for KeepAlives<S, F>
where
    S: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin,
    F: FnMut(i64) -> Renewal + Unpin,
{
    type Item = Result<LeaseKeepAliveResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            if let Some(renewal) = &mut this.renewal {
                let answer = ready!(renewal.as_mut().poll(cx));
                this.renewal = None;
                this.ended = answer.is_err();
                return Poll::Ready(Some(answer.map_err(Status::from)));
            }
            if this.stopped.as_mut().poll(cx).is_ready() {
                this.ended = true;
                return Poll::Ready(Some(Err(EtcdError::Stopped.into())));
            }
            match ready!(Pin::new(&mut this.requests).poll_next(cx)) {
                Some(Ok(req)) => this.renewal = Some((this.renew)(req.id)),
                // The client closed its side.
                None => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                // An undecodable or oversized message ends the stream with
                // that error (etcd's INTERNAL / RESOURCE_EXHAUSTED), not OK.
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "lease keep-alive stream failed");
                    this.ended = true;
                    return Poll::Ready(Some(Err(status::from_transport(e))));
                }
            }
        }
    }
}

/// A gRPC stream's response body: each answer as a message, then the
/// trailers: `grpc-status: 0` once the answers end, else the error that
/// ended them (as tonic's server writes a stream of answers).
struct Answers<A> {
    /// The answers.
    answers: A,
    /// Whether the trailers were written: nothing follows them.
    ended: bool,
}

impl<A> Answers<A> {
    fn new(answers: A) -> Self {
        Self {
            answers,
            ended: false,
        }
    }

    /// The trailers that end the stream with `status`.
    fn end(&mut self, status: Status) -> Result<Frame<Bytes>, Status> {
        self.ended = true;
        let mut trailers = http::HeaderMap::with_capacity(3);
        status.add_header(&mut trailers)?;
        Ok(Frame::trailers(trailers))
    }
}

impl<A> http_body::Body for Answers<A>
where
    A: Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut this.answers).poll_next(cx)) {
            Some(Ok(answer)) => match unary::encode(&answer) {
                Ok(data) => Ok(Frame::data(data)),
                Err(status) => this.end(status),
            },
            Some(Err(status)) => this.end(status),
            None => this.end(Status::ok("")),
        };
        Poll::Ready(Some(frame))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// A keep-alive stream's requests.
enum Requests {
    /// Read here: what has arrived of the next message(s), and the rest of
    /// the body.
    Framed {
        read: BytesMut,
        body: Body,
        /// The largest message accepted.
        max: usize,
        /// Whether the body has ended.
        finished: bool,
    },
    /// Read by tonic's decoder, from the first thing not read here.
    Tonic(Streaming<LeaseKeepAliveRequest>),
}

/// What the bytes read so far hold next.
enum Next {
    Message(LeaseKeepAliveRequest),
    /// Not a whole message yet.
    Partial,
    /// Not a message read here (compressed, too large, undecodable).
    Unexpected,
}

impl Requests {
    /// The requests of `body`, of at most `max` bytes each.
    fn new(body: Body, max: usize) -> Self {
        Requests::Framed {
            read: BytesMut::new(),
            body,
            max,
            finished: false,
        }
    }

    /// Hands what is left of the body to tonic's decoder: what was read
    /// and not taken, then `unexpected`, then the rest, as they arrived.
    fn hand_to_tonic(&mut self, unexpected: Option<Result<Frame<Bytes>, Status>>) {
        let Requests::Framed {
            read, body, max, ..
        } = self
        else {
            return;
        };
        let replay = Replay {
            read: std::mem::take(read).freeze(),
            unexpected,
            rest: std::mem::replace(body, Body::empty()),
        };
        let decoder = tonic_prost::ProstDecoder::<LeaseKeepAliveRequest>::default();
        *self = Requests::Tonic(Streaming::new_request(decoder, replay, None, Some(*max)));
    }
}

impl Stream for Requests {
    type Item = Result<LeaseKeepAliveRequest, Status>;

    /// The next request, or `None` once the client has closed its side.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let unexpected = match this {
                Requests::Tonic(decoder) => return Pin::new(decoder).poll_next(cx),
                Requests::Framed {
                    read,
                    body,
                    max,
                    finished,
                } => match next(read, *max) {
                    Next::Message(req) => return Poll::Ready(Some(Ok(req))),
                    Next::Partial if *finished && read.is_empty() => return Poll::Ready(None),
                    // Cut short: tonic says how.
                    Next::Partial if *finished => None,
                    Next::Partial => match ready!(Pin::new(body).poll_frame(cx)) {
                        None => {
                            *finished = true;
                            continue;
                        }
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) => {
                                read.extend_from_slice(&data);
                                continue;
                            }
                            Err(frame) => Some(Ok(frame)),
                        },
                        Some(Err(e)) => Some(Err(e)),
                    },
                    Next::Unexpected => None,
                },
            };
            this.hand_to_tonic(unexpected);
        }
    }
}

/// The next message of `read` (taken from it), if it holds a whole one of
/// the shape read here.
fn next(read: &mut BytesMut, max: usize) -> Next {
    let Some(len) = unary::declared(read) else {
        return Next::Partial;
    };
    if read.first() != Some(&0) || len > max {
        return Next::Unexpected;
    }
    let Some(message) = read.get(PREFIX..PREFIX + len) else {
        return Next::Partial;
    };
    match LeaseKeepAliveRequest::decode(message) {
        Ok(req) => {
            read.advance(PREFIX + len);
            Next::Message(req)
        }
        Err(_) => Next::Unexpected,
    }
}

#[cfg(test)]
#[path = "keep_alive_tests.rs"]
mod tests;
