//! The load tool's gRPC transport: each call straight onto an HTTP/2
//! connection (the `h2` crate), with no tonic `Channel` in between.
//!
//! Why: the tool shares the machine's cores with the members it measures,
//! so every microsecond of CPU it spends on a call is taken from the
//! servers (docs/benchmarks.md, "What bounds the 1,000-client rows").
//! tonic's `Channel` hands each call through a tower buffer (a channel to
//! a worker task), then hyper's dispatch (a channel to the connection's
//! task), which spawns a task of its own to pipe the request's body into
//! its stream: three tasks woken per call before a byte leaves. Here the
//! calling task opens the stream, writes the request's message and awaits
//! the answer itself; only the connection's own task (h2's I/O) is woken.
//! The tool measures etcd through the same code, so both servers are
//! measured with less of the client in the way.
//!
//! What a call sends is tonic's: the generated clients still encode and
//! decode (`KvClient::new(H2Channel)`), only the transport under them
//! changes. A request body that is whole when the call starts (every unary
//! call: tonic encodes the one message before it polls the transport) is
//! sent with the stream's opening; a streaming one (Watch, LeaseKeepAlive)
//! is piped by a task of its own after its first messages, as hyper does.
//!
//! A connection that fails fails the calls on it; the next call dials
//! again (as tonic's `Channel` reconnects).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cairn_tls::client::Connector;
use http::uri::{Authority, Scheme};
use http::Uri;
use http_body::{Body, Frame};
use tower_service::Service;

/// What a call fails with: an h2 or a dial error, which tonic turns into a
/// status (h2's reasons by their gRPC codes).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// HTTP/2's own defaults are a 64 KiB window; these are hyper's (what
/// tonic's `Channel` ran with), so large values stream as they did.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// One endpoint's connection, shared by every clone.
#[derive(Clone)]
pub struct H2Channel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for H2Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Channel")
            .field("authority", &self.inner.authority)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// `http` or `https`: the `:scheme` of every request.
    scheme: Scheme,
    /// The endpoint's host and port: every request's `:authority`, and
    /// where to dial.
    authority: Authority,
    /// TCP (and TLS) with small writes gathered, as the client's.
    connector: Connector,
    /// Bounds each dial (none when zero, etcd's default).
    dial_timeout: Duration,
    /// The live connection's handle, and how many dials made it: a call
    /// that finds the connection broken clears it only if no other call
    /// has replaced it since. A std lock held to clone or swap.
    current: Mutex<(u64, Option<h2::client::SendRequest<Bytes>>)>,
    /// One dial at a time: calls that find the connection gone together
    /// share the next one.
    dialing: tokio::sync::Mutex<()>,
}

impl H2Channel {
    /// Dials `uri` (`http://host:port`, TLS by `connector`; `https` names
    /// the scheme requests carry) now, so that set-up is not measured.
    pub async fn connect(
        uri: &Uri,
        https: bool,
        connector: Connector,
        dial_timeout: Duration,
    ) -> Result<H2Channel, BoxError> {
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| BoxError::from(format!("{uri}: no host:port")))?;
        let channel = H2Channel {
            inner: Arc::new(Inner {
                scheme: if https { Scheme::HTTPS } else { Scheme::HTTP },
                authority,
                connector,
                dial_timeout,
                current: Mutex::new((0, None)),
                dialing: tokio::sync::Mutex::new(()),
            }),
        };
        channel.inner.sender().await?;
        Ok(channel)
    }
}

impl Inner {
    fn current(&self) -> std::sync::MutexGuard<'_, (u64, Option<h2::client::SendRequest<Bytes>>)> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live connection's handle (and its dial's number), dialing if
    /// there is none.
    async fn sender(&self) -> Result<(u64, h2::client::SendRequest<Bytes>), BoxError> {
        if let (dial, Some(sender)) = &*self.current() {
            return Ok((*dial, sender.clone()));
        }
        let _one_dial = self.dialing.lock().await;
        if let (dial, Some(sender)) = &*self.current() {
            return Ok((*dial, sender.clone()));
        }
        let dialed = self.dial();
        let sender = if self.dial_timeout.is_zero() {
            dialed.await?
        } else {
            tokio::time::timeout(self.dial_timeout, dialed)
                .await
                .map_err(|_| BoxError::from("dial timed out"))??
        };
        let mut current = self.current();
        current.0 += 1;
        current.1 = Some(sender.clone());
        Ok((current.0, sender))
    }

    /// A new connection; its I/O is driven by a task of its own until it
    /// closes.
    async fn dial(&self) -> Result<h2::client::SendRequest<Bytes>, BoxError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query("/")
            .build()?;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        let io = connector.call(uri).await?.into_inner();
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(io)
            .await?;
        // Its end (an error or not) is what the calls on it see.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Forgets the connection of dial `dial` (broken), unless another
    /// call already replaced it.
    fn broken(&self, dial: u64) {
        let mut current = self.current();
        if current.0 == dial {
            current.1 = None;
        }
    }

    /// One call: the stream opened with what the body holds now, the rest
    /// piped if it is a stream, the answer's headers awaited.
    async fn call(
        &self,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<ResponseBody>, BoxError> {
        let (mut parts, mut body) = request.into_parts();
        let mut uri = http::uri::Parts::from(std::mem::take(&mut parts.uri));
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        parts.uri = Uri::from_parts(uri)?;
        let (dial, sender) = self.sender().await?;
        let mut sender = match sender.ready().await {
            Ok(sender) => sender,
            Err(e) => {
                self.broken(dial);
                return Err(e.into());
            }
        };
        let (mut chunks, ended) = take_ready(&mut body)?;
        let opened = sender.send_request(
            http::Request::from_parts(parts, ()),
            ended && chunks.is_empty(),
        );
        let (response, mut stream) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.broken(dial);
                return Err(e.into());
            }
        };
        let last = chunks.pop();
        for chunk in chunks {
            stream.send_data(chunk, false)?;
        }
        if let Some(last) = last {
            stream.send_data(last, ended)?;
        }
        if !ended {
            tokio::spawn(pipe(body, stream));
        }
        let response = response.await?;
        Ok(response.map(ResponseBody::new))
    }
}

/// The body's frames that are ready now, and whether it ended.
fn take_ready(body: &mut tonic::body::Body) -> Result<(Vec<Bytes>, bool), BoxError> {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut chunks = Vec::new();
    loop {
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // A gRPC request has data frames only.
                if let Ok(data) = frame.into_data() {
                    chunks.push(data);
                }
            }
            Poll::Ready(Some(Err(status))) => return Err(status.into()),
            Poll::Ready(None) => return Ok((chunks, true)),
            Poll::Pending => return Ok((chunks, false)),
        }
    }
}

/// The rest of a streaming request's body onto its stream, until either
/// ends.
async fn pipe(mut body: tonic::body::Body, mut stream: h2::SendStream<Bytes>) {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let sent = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => stream.send_data(data, false),
                Err(_) => Ok(()),
            },
            Some(Err(_)) => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

impl Service<http::Request<tonic::body::Body>> for H2Channel {
    type Response = http::Response<ResponseBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // A stream's slot is awaited in the call (h2's `ready`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.call(request).await })
    }
}

/// An answer's body: its DATA frames (their window given back as they are
/// read), then its trailers (a gRPC answer's status).
pub struct ResponseBody {
    stream: h2::RecvStream,
    /// Set once the DATA frames have ended: the trailers are next.
    data_done: bool,
    /// Set once the trailers (or their absence) were returned.
    done: bool,
}

impl ResponseBody {
    fn new(stream: h2::RecvStream) -> Self {
        ResponseBody {
            stream,
            data_done: false,
            done: false,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The frame is read: the server may send as much again.
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        let trailers = ready!(this.stream.poll_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
