//! Request and response bodies for the tests of [`super::unary`] and
//! [`super::keep_alive`]: a scripted request body, gRPC's framing, and the
//! frames a response body yields.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as _, Frame};
use tonic::body::Body;

/// A request body of the given frames (or errors), in order; then, if
/// `open`, pending for ever (a client that sends nothing more).
pub struct Scripted {
    pub frames: VecDeque<Result<Frame<Bytes>, tonic::Status>>,
    pub open: bool,
}

impl Scripted {
    /// A body of `frames` that then ends.
    pub fn ended(frames: impl IntoIterator<Item = Result<Frame<Bytes>, tonic::Status>>) -> Body {
        Body::new(Scripted {
            frames: frames.into_iter().collect(),
            open: false,
        })
    }

    /// A body of `frames` that then sends nothing more.
    pub fn open(frames: impl IntoIterator<Item = Result<Frame<Bytes>, tonic::Status>>) -> Body {
        Body::new(Scripted {
            frames: frames.into_iter().collect(),
            open: true,
        })
    }
}

impl http_body::Body for Scripted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        match self.frames.pop_front() {
            None if self.open => Poll::Pending,
            next => Poll::Ready(next),
        }
    }
}

/// `message` with gRPC's prefix (flag `flag`).
pub fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut framed = vec![flag];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// `body`'s next frame.
pub async fn next(body: &mut Body) -> Option<Result<Frame<Bytes>, tonic::Status>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
}

/// Every frame of `body`: DATA joined, then the trailers, if any.
pub async fn drain(mut body: Body) -> (Vec<u8>, Option<HeaderMap>) {
    let (mut data, mut trailers) = (Vec::new(), None);
    while let Some(frame) = next(&mut body).await {
        match frame.unwrap().into_data() {
            Ok(bytes) => data.extend_from_slice(&bytes),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    (data, trailers)
}
