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
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::jsonpb::scan::{self, Stop};
use super::jsonpb::{self, Named};
use super::{decode_with, error_response, http_status, max_body, max_message, ok_headers};
use crate::member::Apis;

/// Decoded requests waiting for the service.
const REQUEST_BUFFER: usize = 16;

/// The JSON values of a request body, read as they arrive.
pub(super) struct JsonValues {
    body: BodyDataStream,
    buf: Vec<u8>,
    /// The body has ended.
    done: bool,
    /// The most bytes one value may take.
    limit: usize,
}

impl JsonValues {
    pub(super) fn new(body: Body, limit: usize) -> Self {
        Self {
            body: body.into_data_stream(),
            buf: Vec::new(),
            done: false,
            limit,
        }
    }

    /// The next value, `None` once the body ends, or Go's text for why the
    /// body is not a sequence of JSON values.
    pub(super) async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            let start = scan::skip_space(&self.buf, 0);
            if start < self.buf.len() {
                match scan::value(&self.buf, start, self.done) {
                    Ok(end) => {
                        let value = self.buf[start..end].to_vec();
                        self.buf.drain(..end);
                        return Ok(Some(value));
                    }
                    Err(Stop::Syntax(message)) => return Err(message),
                    Err(Stop::Eof) if self.done => return Err("unexpected EOF".into()),
                    Err(Stop::Eof) => {}
                }
            } else if self.done {
                return Ok(None);
            }
            if self.buf.len() > self.limit {
                return Err("http: request body too large".into());
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                // A body that breaks off ends like one that ended.
                Some(Err(_)) | None => self.done = true,
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
        let line = match item.and_then(|r| {
            jsonpb::to_json(&r).map_err(|e| Status::internal(e.to_string()))
        }) {
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
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    let max = max_message(apis);
    let mut values = JsonValues::new(body, max_body(apis));
    let first = match values.next().await {
        Ok(first) => first,
        Err(message) => return error_response(&Status::unknown(message)),
    };
    let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
    if let Some(raw) = first {
        let request = match decode_with::<Req>(&raw, max, Status::unknown) {
            Ok(request) => request,
            Err(status) => return error_response(&status),
        };
        // The channel is new: there is room for the first request.
        if tx.try_send(Ok(request)).is_ok() {
            tokio::spawn(read_requests(values, tx, max));
        }
    }
    respond(open(ReceiverStream::new(rx)))
}

/// Feeds the rest of a body's requests to the service, until the body
/// ends, a value does not decode, or the service's stream is gone.
async fn read_requests<Req: Named + Send + 'static>(
    mut values: JsonValues,
    tx: mpsc::Sender<Result<Req, Status>>,
    max: usize,
) {
    loop {
        let next = tokio::select! {
            next = values.next() => next,
            () = tx.closed() => return,
        };
        let raw = match next {
            Ok(Some(raw)) => raw,
            Ok(None) => return,
            Err(message) => {
                tracing::debug!(error = %message, "gateway request stream ended");
                return;
            }
        };
        match decode_with::<Req>(&raw, max, Status::unknown) {
            Ok(request) => {
                if tx.send(Ok(request)).await.is_err() {
                    return;
                }
            }
            Err(status) => {
                tracing::debug!(error = %status.message(), "gateway request stream ended");
                return;
            }
        }
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
    Fut: std::future::Future<
        Output = Result<tonic::Response<tonic::codegen::BoxStream<Resp>>, Status>,
    >,
{
    let opened = async {
        let body = super::read_body(body, max_body(apis)).await?;
        let request = decode_with::<Req>(super::first_value(&body)?, max_message(apis), |m| {
            Status::invalid_argument(m)
        })?;
        super::require_leader(apis, headers)?;
        call(tonic::Request::new(request)).await
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
