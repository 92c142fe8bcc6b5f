//! The tower layer that counts every gRPC call of the client port, as
//! grpc-go-prometheus's interceptors do for etcd: started when the request
//! arrives, handled with its code when the response's status is known (in
//! the headers of a trailers-only answer, else in the trailers), messages
//! and their bytes as the bodies stream by (read from gRPC's length
//! prefixes, so streams count each message). A call whose response is
//! dropped unfinished (the client went away) is handled as `Canceled`, as
//! grpc-go reports it.
//!
//! Requests for other paths (the HTTP routes, unknown methods) pass through
//! untouched. A gRPC call costs one map lookup, a few atomic adds and the
//! boxing of its request body (tonic's router takes only its own body type).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

use super::grpc::{GrpcMetrics, CANCELED, CODES, UNKNOWN};

/// The layer, over `Arc<GrpcMetrics>` (none: every request passes
/// through, for members built without metrics).
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: Option<Arc<GrpcMetrics>>,
}

impl GrpcMetricsLayer {
    /// Counts calls in `metrics`.
    pub fn new(metrics: Option<Arc<GrpcMetrics>>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service the layer makes.
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Option<Arc<GrpcMetrics>>,
}

impl<S, ResBody> tower::Service<http::Request<tonic::body::Body>> for Metered<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let counted = self.metrics.as_ref().and_then(|metrics| {
            let index = metrics.lookup(request.uri().path())?;
            Some((Arc::clone(metrics), index))
        });
        let Some((metrics, index)) = counted else {
            return MeteredFuture {
                inner: self.inner.call(request),
                call: None,
            };
        };
        if let Some(method) = metrics.method(index) {
            method.started.inc();
        }
        let version = request.headers().get("client-api-version");
        metrics.client_request(index, version.and_then(|v| v.to_str().ok()));
        let request = request.map(|body| {
            tonic::body::Body::new(MeteredBody {
                inner: body,
                framing: Framing::default(),
                direction: Direction::Received,
                call: None,
                metrics: Some((Arc::clone(&metrics), index)),
            })
        });
        MeteredFuture {
            inner: self.inner.call(request),
            call: Some(Call {
                metrics,
                index,
                start: Instant::now(),
                handled: false,
            }),
        }
    }
}

/// One call until it is handled: records `Canceled` if dropped before.
#[derive(Debug)]
struct Call {
    metrics: Arc<GrpcMetrics>,
    index: usize,
    start: Instant,
    handled: bool,
}

impl Call {
    fn handled(&mut self, code: usize) {
        if std::mem::replace(&mut self.handled, true) {
            return;
        }
        if let Some(method) = self.metrics.method(self.index) {
            if let Some(counter) = method.handled.get(code.min(CODES.len() - 1)) {
                counter.inc();
            }
            if let Some(histogram) = &method.handling {
                histogram.observe(super::since(self.start));
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.handled(CANCELED);
    }
}

/// The status code a header map carries, if any.
fn status_code(headers: &http::HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|c| *c < CODES.len())
            .unwrap_or(UNKNOWN),
    )
}

pin_project_lite::pin_project! {
    /// The inner service's future, with the call it answers.
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<MeteredBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(result.map(|response| {
            let metrics = call.as_ref().map(|c| (Arc::clone(&c.metrics), c.index));
            if let Some(code) = status_code(response.headers()) {
                // Trailers-only: the call is over, whatever the body holds.
                if let Some(call) = call.as_mut() {
                    call.handled(code);
                }
            }
            response.map(|body| MeteredBody {
                inner: body,
                framing: Framing::default(),
                direction: Direction::Sent,
                call,
                metrics,
            })
        }))
    }
}

/// Which way a body goes.
#[derive(Debug, Clone, Copy)]
enum Direction {
    /// A request's messages.
    Received,
    /// A response's messages.
    Sent,
}

/// gRPC's message framing (1 byte flag, 4 bytes length, then the message),
/// followed across data frames of any size.
#[derive(Debug, Default)]
struct Framing {
    /// Bytes of the current prefix seen so far (0..5).
    prefix_seen: usize,
    /// The prefix's length bytes, as they arrive.
    length: [u8; 4],
    /// Bytes of the current message still to come.
    remaining: u64,
}

impl Framing {
    /// Feeds `data`: (messages started, message bytes seen).
    fn feed(&mut self, data: &[u8]) -> (u64, u64) {
        let (mut messages, mut bytes) = (0, 0);
        let mut at = 0;
        while at < data.len() {
            if self.remaining > 0 {
                let take = self.remaining.min((data.len() - at) as u64);
                self.remaining -= take;
                bytes += take;
                at += take as usize;
                continue;
            }
            if self.prefix_seen > 0 {
                self.length[self.prefix_seen - 1] = data[at];
            }
            self.prefix_seen += 1;
            at += 1;
            if self.prefix_seen == 5 {
                self.prefix_seen = 0;
                self.remaining = u64::from(u32::from_be_bytes(self.length));
                messages += 1;
            }
        }
        (messages, bytes)
    }
}

/// A body whose gRPC messages are counted; for a response, it also carries
/// the call until its trailers give the status.
#[derive(Debug)]
pub struct MeteredBody<B> {
    inner: B,
    framing: Framing,
    direction: Direction,
    /// The call still waiting for its status (responses only).
    call: Option<Call>,
    /// The metrics and method index (none for paths that are not counted).
    metrics: Option<(Arc<GrpcMetrics>, usize)>,
}

impl<B> MeteredBody<B> {
    fn count(&mut self, data: &[u8]) {
        let Some((metrics, index)) = &self.metrics else {
            return;
        };
        let (messages, bytes) = self.framing.feed(data);
        let Some(method) = metrics.method(*index) else {
            return;
        };
        match self.direction {
            Direction::Received => {
                method.received.inc_by(messages);
                metrics.received_bytes.inc_by(bytes);
            }
            Direction::Sent => {
                method.sent.inc_by(messages);
                metrics.sent_bytes.inc_by(bytes);
            }
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    self.count(data.chunk());
                } else if let Some(trailers) = frame.trailers_ref() {
                    let code = status_code(trailers).unwrap_or(UNKNOWN);
                    if let Some(call) = self.call.as_mut() {
                        call.handled(code);
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(call) = self.call.as_mut() {
                    call.handled(UNKNOWN);
                }
            }
            None => {
                // Ended without trailers: grpc-go reports no status.
                if let Some(call) = self.call.as_mut() {
                    call.handled(UNKNOWN);
                }
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::Framing;

    #[test]
    fn framing_counts_messages_across_any_split() {
        // Two messages (3 bytes, then 0 bytes), then one of 2 bytes.
        let stream = [0, 0, 0, 0, 3, 7, 7, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 9, 9];
        for split in 0..stream.len() {
            let mut framing = Framing::default();
            let (a, b) = stream.split_at(split);
            let (m1, b1) = framing.feed(a);
            let (m2, b2) = framing.feed(b);
            assert_eq!((m1 + m2, b1 + b2), (3, 5), "split at {split}");
        }
    }
}
