//! etcd 3.5's JSON API (its grpc-gateway) on the client port: `POST
//! /v3/kv/range` with `{"key":"Zm9v"}` and the like, under `/v3/` and
//! `/v3beta/` as etcd 3.5 serves them.
//!
//! One code path with gRPC: a handler reads the body as etcd's gateway does
//! ([`jsonpb`]: JSON to the very prost request the gRPC service takes),
//! calls the gRPC service's own method with a `tonic::Request` (so the same
//! validation, limits, member API and error table, `grpc::status`), and
//! writes the prost response as etcd's JSON. An error is grpc-gateway's
//! body, `{"error","code","message"}`, with the HTTP status of the gRPC
//! code. Streams (watch, keep-alive, snapshot, observe) are one JSON object
//! per line, `{"result":...}`, read and written with bounded buffers.
//!
//! Auth (`/v3/auth/...`): the HTTP `Authorization` header is passed to the
//! gRPC method as metadata `authorization` (etcd's gateway does the same),
//! which the services read as the caller's token.

mod auth;
mod cluster;
mod jsonpb;
mod kv;
mod lease;
mod maintenance;
mod recipes;
mod stream;
mod watch;

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, MethodRouter};
use axum::Router;
use tonic::{Code, Status};

use self::jsonpb::{DecodeError, Named};
use crate::error::EtcdError;
use crate::grpc::status::from_transport;
use crate::member::Apis;

/// The path prefixes etcd 3.5 serves the gateway under (`/v3alpha` is
/// gone in 3.5).
const PREFIXES: [&str; 2] = ["/v3", "/v3beta"];

/// The gateway's routes, to be merged into the client port's router.
pub fn router() -> Router<Arc<Apis>> {
    let mut router = Router::new();
    for prefix in PREFIXES {
        for (path, route) in kv::routes()
            .into_iter()
            .chain(watch::routes())
            .chain(lease::routes())
            .chain(cluster::routes())
            .chain(maintenance::routes())
            .chain(recipes::routes())
            .chain(auth::routes())
        {
            router = router.route(&format!("{prefix}{path}"), route);
        }
        // grpc-gateway's own answers for the rest of its prefix; Go's mux
        // redirects the bare prefix to it.
        router = router
            .route(&format!("{prefix}/{{*rest}}"), any(unknown))
            .route(prefix, any(move |method| redirect(method, prefix)));
    }
    router
}

/// A path and its handler, which takes any method and calls [`not_post`]
/// first (axum's own 405 would name the allowed methods, which
/// grpc-gateway's does not).
type Route = (&'static str, MethodRouter<Arc<Apis>>);

/// grpc-gateway's answer to a method other than POST: a preflight's empty
/// 200 for OPTIONS, Go's 405 otherwise.
fn not_post(method: &Method) -> Option<Response> {
    if method == Method::POST {
        None
    } else if method == Method::OPTIONS {
        Some(StatusCode::OK.into_response())
    } else {
        Some(plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"))
    }
}

/// Any other path under the prefix: etcd answers OPTIONS (a CORS
/// preflight) with an empty 200, anything else with grpc-gateway's 404.
async fn unknown(method: Method) -> Response {
    if method == Method::OPTIONS {
        return StatusCode::OK.into_response();
    }
    plain(StatusCode::NOT_FOUND, "Not Found")
}

/// Go's `http.Redirect` to `prefix/` (a small HTML body for GET and HEAD).
async fn redirect(method: Method, prefix: &'static str) -> Response {
    let mut response = if method == Method::GET || method == Method::HEAD {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            format!("<a href=\"{prefix}/\">Moved Permanently</a>.\n\n"),
        )
            .into_response()
    } else {
        ().into_response()
    };
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(location) = HeaderValue::from_str(&format!("{prefix}/")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A text answer as Go's `http.Error` writes it.
fn plain(status: StatusCode, text: &'static str) -> Response {
    super::go_error(status, text)
}

/// The largest request message the gRPC services take (etcd's margin
/// over `--max-request-bytes`).
fn max_message(apis: &Apis) -> usize {
    apis.kv()
        .limits()
        .max_request_bytes
        .saturating_add(crate::grpc::GRPC_OVERHEAD_BYTES)
}

/// The largest JSON body read for one request message: base64 makes bytes
/// a third larger, and a JSON body may spend more on names and escapes.
/// A larger body is refused before it is all in memory.
fn max_body(apis: &Apis) -> usize {
    max_message(apis)
        .saturating_mul(2)
        .saturating_add(64 * 1024)
}

/// grpc-gateway's HTTP status for a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// grpc-gateway's error answer: `{"error":M,"code":C,"message":M}`.
fn error_response(status: &Status) -> Response {
    let mut body = String::from("{\"error\":");
    jsonpb::quote(status.message(), &mut body);
    body.push_str(&format!(",\"code\":{},\"message\":", status.code() as i32));
    jsonpb::quote(status.message(), &mut body);
    body.push('}');
    (
        http_status(status.code()),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The headers of a successful answer: etcd's gateway passes on its gRPC
/// call's response metadata, which is only the content type.
fn ok_headers() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CONTENT_TYPE, "application/json"),
        (
            header::HeaderName::from_static("grpc-metadata-content-type"),
            "application/grpc",
        ),
    ]
}

/// The request message `M` from one JSON value (empty: the body had none,
/// which the gateway reads as an empty request), through the same size and
/// decoding checks as a gRPC request (`grpc::status`'s mapping of the
/// transport's errors). `bad_json` makes the status for input that is not
/// the message's JSON: etcd's gateway says InvalidArgument for a unary
/// call, Unknown for a stream's request.
fn decode_with<M: Named>(
    raw: &[u8],
    max_message: usize,
    bad_json: fn(String) -> Status,
) -> Result<M, Status> {
    // A top-level null is an empty request (jsonpb's "noop").
    if raw.is_empty() || raw == b"null" {
        return Ok(M::default());
    }
    let wire = match jsonpb::to_wire::<M>(raw) {
        Ok(wire) => wire,
        Err(DecodeError::Invalid(message)) => return Err(bad_json(message)),
        // What prost says of a message nested past its limit, mapped as
        // the gRPC services map it.
        Err(DecodeError::TooDeep) => {
            return Err(from_transport(Status::internal(
                "failed to decode Protobuf message: recursion limit reached",
            )))
        }
        Err(e @ DecodeError::Unknown(_)) => return Err(Status::internal(e.to_string())),
    };
    if wire.len() > max_message {
        return Err(from_transport(Status::out_of_range(format!(
            "Error, decoded message length too large: found {} bytes, the limit is: {max_message} bytes",
            wire.len()
        ))));
    }
    M::decode(wire.as_slice()).map_err(|e| from_transport(Status::internal(e.to_string())))
}

/// The first JSON value of a whole body, as Go's `json.Decoder` finds it
/// (anything after it is not read); empty if the body has none.
fn first_value(body: &[u8]) -> Result<&[u8], Status> {
    let start = jsonpb::scan::skip_space(body, 0);
    if start == body.len() {
        return Ok(&[]);
    }
    match jsonpb::scan::value(body, start, true) {
        Ok(end) => Ok(&body[start..end]),
        Err(jsonpb::scan::Stop::Eof) => Err(Status::invalid_argument("unexpected EOF")),
        Err(jsonpb::scan::Stop::Syntax(message)) => Err(Status::invalid_argument(message)),
    }
}

/// The body, or grpc-gateway's error if it is larger than `limit` (Go's
/// `http.MaxBytesReader` text).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Status> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Status::resource_exhausted("http: request body too large"))
}

/// `request` with the HTTP `Authorization` header as the gRPC metadata
/// `authorization` (the caller's token), as etcd's gateway passes it.
fn with_token<T>(mut request: tonic::Request<T>, headers: &HeaderMap) -> tonic::Request<T> {
    let token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", token);
    }
    request
}

/// The caller of a gateway stream (watch, keep-alive): its
/// `Authorization` header, while auth is on.
fn caller(apis: &Apis, headers: &HeaderMap) -> crate::auth::Caller {
    crate::grpc::caller::of(
        &with_token(tonic::Request::new(()), headers),
        apis.proposer(),
    )
}

/// etcd's `hasleader` check, asked for with the gateway's metadata header
/// `Grpc-Metadata-Hasleader: true` (what `RequireLeader` checks for gRPC).
fn require_leader(apis: &Apis, headers: &HeaderMap) -> Result<bool, Status> {
    let wanted = headers
        .get("grpc-metadata-hasleader")
        .is_some_and(|v| v.as_bytes() == b"true");
    if wanted && apis.raft_status().leader == 0 {
        return Err(EtcdError::NoLeader.into());
    }
    Ok(wanted)
}

/// A unary call: the body's first JSON value as `Req`, the gRPC service's
/// method `call`, the response as JSON.
async fn unary<Req, Resp, F, Fut>(apis: &Apis, headers: &HeaderMap, body: Body, call: F) -> Response
where
    Req: Named,
    Resp: Named,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let result = async {
        let body = read_body(body, max_body(apis)).await?;
        let request = decode_with::<Req>(
            first_value(&body)?,
            max_message(apis),
            Status::invalid_argument,
        )?;
        require_leader(apis, headers)?;
        call(with_token(tonic::Request::new(request), headers)).await
    }
    .await;
    match result
        .and_then(|r| jsonpb::to_json(r.get_ref()).map_err(|e| Status::internal(e.to_string())))
    {
        Ok(json) => (StatusCode::OK, ok_headers(), json).into_response(),
        Err(status) => error_response(&status),
    }
}

/// A route calling method `$method` of the gRPC service made by `$service`
/// (from the member's `Apis`) for each request.
macro_rules! unary_route {
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
                    super::unary(&apis, &headers, body, |request| async move {
                        <_ as $trait>::$method(&service, request).await
                    })
                    .await
                },
            ),
        )
    };
}
use unary_route;

#[cfg(test)]
mod tests;
