//! LeaseKeepAlive streams answered without tonic's streaming machinery:
//! the response body itself reads the next request, renews, and yields the
//! answer, one request at a time, with no task, channel or codec of its own.
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
use super::{caller, lease, status, LeaseService};
use crate::error::EtcdError;

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
    let api = Arc::clone(service.api());
    let caller = caller::of(&request, api.proposer());
    let mut stopping = api.proposer().stopping();
    let stopped = Box::pin(async move { drop(stopping.wait_for(|stop| *stop).await) });
    let shared = Arc::new((api, caller));
    let renew = move |id| -> Renewal {
        let shared = Arc::clone(&shared);
        Box::pin(async move { lease::renewal(&shared.0, id, &shared.1).await })
    };
    let mut response = http::Response::new(Body::new(KeepAlives::new(body, max, renew, stopped)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A keep-alive stream's response body (see the module doc): answers, in
/// the order of their requests, then the trailers: `grpc-status: 0` once the
/// client closes its side, else the error that ended the stream.
struct KeepAlives<F> {
    /// Where the requests come from.
    requests: Requests,
    /// Starts the renewal of a lease (by its id).
    renew: F,
    /// The renewal in flight: the next request is read once it answers, as
    /// etcd serves a stream's requests one after another.
    renewal: Option<Renewal>,
    /// Completes once the member stops: the stream then ends with
    /// "etcdserver: server stopped", so that the client renews elsewhere.
    stopped: Stopped,
    /// Whether the trailers were written: nothing follows them.
    ended: bool,
}

impl<F: FnMut(i64) -> Renewal> KeepAlives<F> {
    fn new(body: Body, max: usize, renew: F, stopped: Stopped) -> Self {
        Self {
            requests: Requests::Framed {
                read: BytesMut::new(),
                body,
                max,
                finished: false,
            },
            renew,
            renewal: None,
            stopped,
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

impl<F: FnMut(i64) -> Renewal + Send + Unpin> http_body::Body for KeepAlives<F> {
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
        loop {
            if let Some(renewal) = &mut this.renewal {
                let answer = ready!(renewal.as_mut().poll(cx));
                this.renewal = None;
                let frame = answer
                    .map_err(Status::from)
                    .and_then(|resp| unary::encode(&resp));
                return Poll::Ready(Some(match frame {
                    Ok(data) => Ok(Frame::data(data)),
                    Err(status) => this.end(status),
                }));
            }
            if this.stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(this.end(EtcdError::Stopped.into())));
            }
            match ready!(this.requests.poll_next(cx)) {
                Some(Ok(req)) => this.renewal = Some((this.renew)(req.id)),
                // The client closed its side.
                None => return Poll::Ready(Some(this.end(Status::ok("")))),
                // An undecodable or oversized message ends the stream with
                // that error (etcd's INTERNAL / RESOURCE_EXHAUSTED), not OK.
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "lease keep-alive stream failed");
                    return Poll::Ready(Some(this.end(status::from_transport(e))));
                }
            }
        }
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
    /// The next request, or `None` once the client has closed its side.
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<LeaseKeepAliveRequest, Status>>> {
        loop {
            let unexpected = match self {
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
            self.hand_to_tonic(unexpected);
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
