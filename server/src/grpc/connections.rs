//! The client port's connections: accepted, served by hyper (HTTP/2, and
//! HTTP/1.1 for the HTTP routes) with the settings tonic's server gives
//! it, and drained at shutdown.
//!
//! Why not tonic's `Server`: around every call it adds layers the client
//! port has no use for (its future boxed once more, the connection's
//! details copied into each request's extensions, the response body boxed
//! again), several allocations a call. What the client port needs of them
//! is kept here: a request carries its connection's [`ConnInfo`] when the
//! connection has a verified client certificate (the only thing read from
//! it: the Common Name, etcd's user under `--client-cert-auth`); a call's
//! `grpc-timeout` is kept by [`super::dispatch`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;

use cairn_tls::server::ConnInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::{Stream, StreamExt};
use tonic::body::Body;
use tonic::transport::server::Connected;
use tower::ServiceExt;

use super::gather::{answer_gathered, GatheringExecutor};

/// Serves every connection `incoming` yields with `service` until
/// `shutdown` completes; then stops accepting, lets each connection finish
/// the calls it has (HTTP/2's GOAWAY) and returns once all have closed.
/// Each connection may open `max_concurrent_streams` streams at once (none:
/// no limit advertised).
pub(super) async fn serve<S, B, I, IO, E>(
    service: S,
    incoming: I,
    max_concurrent_streams: Option<u32>,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: Stream<Item = Result<IO, E>>,
    IO: AsyncRead + AsyncWrite + Connected<ConnectInfo = ConnInfo> + Unpin + Send + 'static,
    E: std::fmt::Display,
{
    // tonic's settings; hyper's defaults for the rest (its limit of 1,024
    // streams reset for local errors kept, which tonic's server turned off).
    // A connection's calls start in its own task (`super::gather`).
    let mut builder = auto::Builder::new(GatheringExecutor);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(max_concurrent_streams);
    // hyper enforces its HTTP/1 header read timeout only with a timer.
    builder.http1().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    {
        let mut incoming = pin!(incoming);
        let mut shutdown = pin!(shutdown);
        loop {
            let io = tokio::select! {
                () = &mut shutdown => break,
                io = incoming.next() => io,
            };
            let io = match io {
                Some(Ok(io)) => io,
                Some(Err(e)) => {
                    tracing::trace!(error = %e, "a connection was not accepted");
                    continue;
                }
                None => break,
            };
            let info = io.connect_info();
            let service = service.clone();
            let call = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let mut request = request.map(Body::new);
                if info.common_name.is_some() {
                    request.extensions_mut().insert(info.clone());
                }
                service.clone().oneshot(request)
            });
            let connection = builder.serve_connection(TokioIo::new(io), call);
            let connection = graceful.watch(connection.into_owned());
            tokio::spawn(async move {
                if let Err(e) = answer_gathered(connection).await {
                    tracing::debug!(error = %e, "a client connection failed");
                }
            });
        }
        // `incoming` is dropped here: the listener closes before the drain.
    }
    graceful.shutdown().await;
}
