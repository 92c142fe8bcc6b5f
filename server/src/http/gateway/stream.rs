//! Streams as etcd's gateway carries them: a request stream is JSON values
//! one after another in the body, a response stream one `{"result":...}`
//! object per line (grpc-gateway's delimiter), ended by an `{"error":...}`
//! object if the stream fails.
//!
//! Memory stays bounded whatever the client does: a request value larger
//! than the body limit is refused before it is all read, decoded requests
//! wait in a small channel (the body is not read further while it is
//! full), and responses are produced only as fast as the client reads
//! them (the body is a stream the connection pulls), so a client that never
//! reads stalls its own watch, whose watchers then catch up from history
//! (see `grpc/watch.rs`).

use axum::body::{Body, BodyDataStream};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::jsonpb::scan::{self, Stop};
use super::jsonpb::{self, Named};
use super::{decode_with, error_response, http_status, max_body, max_message, ok_headers};
use crate::member::Apis;

/// Decoded requests waiting for the service.
const REQUEST_BUFFER: usize = 16;

/// Why a request body's values end.
#[derive(Debug)]
enum Ended {
    /// Not a sequence of JSON values, or a value too large (Go's text).
    Invalid(String),
    /// The connection broke off: the client is gone.
    Broken,
}

/// Where a value could end, found in one pass over the bytes as they
/// arrive, so that the buffer is scanned in full (by Go's rules) only when
/// a value may be complete, not again at every chunk of a large one.
#[derive(Debug, Default)]
struct Tracker {
    /// Bytes of the buffer looked at.
    pos: usize,
    depth: usize,
    in_string: bool,
    escape: bool,
    /// A value may end within the bytes looked at.
    ready: bool,
}

impl Tracker {
    fn advance(&mut self, buf: &[u8]) {
        for &c in buf.get(self.pos..).unwrap_or_default() {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if c == b'\\' {
                    self.escape = true;
                } else if c == b'"' {
                    self.in_string = false;
                    self.ready |= self.depth == 0;
                }
                continue;
            }
            match c {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.ready |= self.depth == 0;
                }
                // A top-level scalar (or garbage) ends at the first byte
                // that cannot continue it.
                c if self.depth == 0
                    && !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.')) =>
                {
                    self.ready = true;
                }
                _ => {}
            }
        }
        self.pos = buf.len();
    }
}

/// The JSON values of a request body, read as they arrive.
pub(super) struct JsonValues {
    body: BodyDataStream,
    buf: Vec<u8>,
    track: Tracker,
    /// The body has ended.
    done: bool,
    /// ... because the connection broke off.
    broken: bool,
    /// The most bytes one value may take.
    limit: usize,
}

impl JsonValues {
    pub(super) fn new(body: Body, limit: usize) -> Self {
        Self {
            body: body.into_data_stream(),
            buf: Vec::new(),
            track: Tracker::default(),
            done: false,
            broken: false,
            limit,
        }
    }

    /// The next value, `None` once the body ends, or why there is none.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, Ended> {
        loop {
            let start = scan::skip_space(&self.buf, 0);
            self.track.advance(&self.buf);
            if start < self.buf.len() && (self.track.ready || self.done) {
                match scan::value(&self.buf, start, self.done) {
                    Ok(end) => {
                        let value = self.buf[start..end].to_vec();
                        self.buf.drain(..end);
                        // What follows is looked at afresh.
                        self.track = Tracker::default();
                        return Ok(Some(value));
                    }
                    Err(_) if self.broken => return Err(Ended::Broken),
                    Err(Stop::Syntax(message)) => return Err(Ended::Invalid(message)),
                    Err(Stop::Eof) if self.done => {
                        return Err(Ended::Invalid("unexpected EOF".into()))
                    }
                    Err(Stop::Eof) => self.track.ready = false,
                }
            } else if self.broken {
                return Err(Ended::Broken);
            } else if self.done {
                return Ok(None);
            }
            if self.buf.len() > self.limit {
                return Err(Ended::Invalid("http: request body too large".into()));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) => {
                    self.done = true;
                    self.broken = true;
                }
                None => self.done = true,
            }
        }
    }
}

/// grpc-gateway's object for an error that ends a response stream.
fn error_chunk(status: &Status) -> String {
    let http = http_status(status.code());
    let mut out = format!(
        "{{\"error\":{{\"grpc_code\":{},\"http_code\":{},\"message\":",
        status.code() as i32,
        http.as_u16()
    );
    jsonpb::quote(status.message(), &mut out);
    out.push_str(",\"http_status\":");
    jsonpb::quote(http.canonical_reason().unwrap_or_default(), &mut out);
    out.push_str("}}");
    out
}

/// A response stream as the body of a 200 answer.
pub(super) fn respond<Resp, S>(responses: S) -> Response
where
    Resp: Named + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    let lines = responses.map(|item| {
        let line = match item
            .and_then(|r| jsonpb::to_json(&r).map_err(|e| Status::internal(e.to_string())))
        {
            Ok(json) => format!("{{\"result\":{json}}}\n"),
            Err(status) => error_chunk(&status),
        };
        Ok::<_, std::convert::Infallible>(line)
    });
    (StatusCode::OK, ok_headers(), Body::from_stream(lines)).into_response()
}

/// A request stream: the body's first value is read and decoded before
/// answering (an error is the whole answer, code Unknown as etcd's gateway
/// gives it), the rest by a task as the client sends them. A later value
/// that does not decode ends the request stream, as in etcd's gateway
/// (which stops reading); the responses go on.
pub(super) async fn bidi<Req, Resp, S>(
    apis: &Apis,
    body: Body,
    open: impl FnOnce(ReceiverStream<Result<Req, Status>>) -> S,
) -> Response
where
    Req: Named + Send + 'static,
    Resp: Named + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Unpin + Send + 'static,
{
    let max = max_message(apis);
    let mut values = JsonValues::new(body, max_body(apis));
    let first = match values.next().await {
        Ok(first) => first,
        Err(Ended::Invalid(message)) => return error_response(&Status::unknown(message)),
        Err(Ended::Broken) => return error_response(&Status::cancelled("client is gone")),
    };
    let (gone_tx, gone) = oneshot::channel();
    let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
    if let Some(raw) = first {
        let request = match decode_with::<Req>(&raw, max, Status::unknown) {
            Ok(request) => request,
            Err(status) => return error_response(&status),
        };
        // The channel is new: there is room for the first request.
        if tx.try_send(Ok(request)).is_ok() {
            tokio::spawn(read_requests(values, tx, max, gone_tx));
        }
    }
    respond(Until {
        stream: open(ReceiverStream::new(rx)),
        gone: Some(gone),
    })
}

/// A response stream that ends once the client is known to be gone (its
/// request body broke off), so the service's stream is dropped and its
/// task stops without waiting for a write to fail.
struct Until<S> {
    stream: S,
    /// Sent: the client is gone; dropped unsent: the requests ended
    /// normally and the responses go on (then `None`).
    gone: Option<oneshot::Receiver<()>>,
}

impl<S: Stream + Unpin> Stream for Until<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if let Some(gone) = self.gone.as_mut() {
            match Pin::new(gone).poll(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(None),
                Poll::Ready(Err(_)) => self.gone = None,
                Poll::Pending => {}
            }
        }
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

/// Feeds the rest of a body's requests to the service, until the body
/// ends, a value does not decode, or the service's stream is gone. After a
/// value that does not decode the body is still read (and dropped), so
/// that a client that goes away is noticed.
async fn read_requests<Req: Named + Send + 'static>(
    mut values: JsonValues,
    tx: mpsc::Sender<Result<Req, Status>>,
    max: usize,
    mut gone: oneshot::Sender<()>,
) {
    loop {
        let next = tokio::select! {
            next = values.next() => next,
            () = tx.closed() => return,
        };
        let ended = match next {
            Ok(Some(raw)) => match decode_with::<Req>(&raw, max, Status::unknown) {
                Ok(request) => {
                    if tx.send(Ok(request)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(status) => Ended::Invalid(status.message().to_string()),
            },
            Ok(None) => return,
            Err(ended) => ended,
        };
        drop(tx);
        if let Ended::Invalid(message) = ended {
            tracing::debug!(error = %message, "gateway request stream ended");
            loop {
                tokio::select! {
                    chunk = values.body.next() => match chunk {
                        Some(Ok(_)) => continue,
                        Some(Err(_)) => break,
                        None => return,
                    },
                    () = gone.closed() => return,
                }
            }
        }
        let _ = gone.send(());
        return;
    }
}

/// A server stream (snapshot, observe): the body's first value is the
/// request, as for a unary call; the answer is the service's stream.
pub(super) async fn server_stream<Req, Resp, F, Fut>(
    apis: &Apis,
    headers: &axum::http::HeaderMap,
    body: Body,
    call: F,
) -> Response
where
    Req: Named,
    Resp: Named + Send + 'static,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<tonic::codegen::BoxStream<Resp>>, Status>>,
{
    let opened = async {
        let body = super::read_body(body, max_body(apis)).await?;
        let request = decode_with::<Req>(
            super::first_value(&body)?,
            max_message(apis),
            Status::invalid_argument,
        )?;
        super::require_leader(apis, headers)?;
        call(super::with_token(tonic::Request::new(request), headers)).await
    }
    .await;
    match opened {
        Ok(responses) => respond(responses.into_inner()),
        Err(status) => error_response(&status),
    }
}

/// A route whose handler opens server stream `$method` of the service
/// made by `$service`.
macro_rules! server_stream_route {
    ($path:literal, $service:expr, $trait:path, $method:ident) => {
        (
            $path,
            axum::routing::any(
                |method: axum::http::Method,
                 axum::extract::State(apis): axum::extract::State<
                    std::sync::Arc<crate::member::Apis>,
                >,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Body| async move {
                    if let Some(response) = super::not_post(&method) {
                        return response;
                    }
                    let service = $service(&apis);
                    super::stream::server_stream(&apis, &headers, body, |request| async move {
                        <_ as $trait>::$method(&service, request).await
                    })
                    .await
                },
            ),
        )
    };
}
pub(super) use server_stream_route;

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: &[&'static str]) -> Body {
        let chunks: Vec<Result<&'static str, std::io::Error>> =
            chunks.iter().map(|c| Ok(*c)).collect();
        Body::from_stream(tokio_stream::iter(chunks))
    }

    async fn all(chunks: &[&'static str], limit: usize) -> (Vec<String>, Option<Ended>) {
        let mut values = JsonValues::new(body(chunks), limit);
        let mut got = Vec::new();
        loop {
            match values.next().await {
                Ok(Some(v)) => got.push(String::from_utf8(v).unwrap()),
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(e)),
            }
        }
    }

    #[tokio::test]
    async fn values_across_and_within_chunks() {
        let (got, end) = all(&["{\"a\":", "\"}\"}{\"b\"", ":[1,2]} ", " {}\n"], 1000).await;
        assert_eq!(got, [r#"{"a":"}"}"#, r#"{"b":[1,2]}"#, "{}"]);
        assert!(end.is_none());
        // Byte by byte: the same values.
        let bytes: Vec<&'static str> =
            r#"{"k":"a\"b"} {"x":{"y":[]}}"#.split_inclusive(|_: char| true).collect();
        let (got, end) = all(&bytes, 1000).await;
        assert_eq!(got, [r#"{"k":"a\"b"}"#, r#"{"x":{"y":[]}}"#]);
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn truncated_malformed_and_oversized() {
        let (got, end) = all(&["{}", "{\"a\""], 1000).await;
        assert_eq!(got, ["{}"]);
        assert!(matches!(end, Some(Ended::Invalid(m)) if m == "unexpected EOF"));
        let (_, end) = all(&["{\"a\" 1}"], 1000).await;
        assert!(
            matches!(end, Some(Ended::Invalid(m)) if m == "invalid character '1' after object key")
        );
        let (_, end) = all(&["[\"", "xxxxxxxxxx", "xxxxxxxxxx"], 8).await;
        assert!(matches!(end, Some(Ended::Invalid(m)) if m == "http: request body too large"));
    }
}
