//! The keep-alive stream's body, driven by scripted requests and renewals
//! (no member): answers in order, the stream's end, and tonic's errors for
//! what is not read here.

use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use cairn_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use http_body::{Body as _, Frame};
use prost::Message as _;
use tokio_stream::StreamExt;
use tonic::body::Body;
use tonic::codec::Streaming;
use tonic::Status;

use super::{Answers, KeepAlives, Renewal, Requests, Stopped};
use crate::error::EtcdError;
use crate::grpc::status::from_transport;
use crate::grpc::test_body::{drain, framed, next, Scripted};

/// What a request body yields.
type Item = Result<Frame<Bytes>, Status>;

/// The largest request the tests' streams accept.
const MAX: usize = 64;

/// A request for lease `id`, framed.
fn request(id: i64) -> Vec<u8> {
    framed(0, &LeaseKeepAliveRequest { id }.encode_to_vec())
}

/// A renewal that answers TTL `id * 10`, or, for a negative `id`, fails
/// as a member that lost its leadership does.
fn renew(id: i64) -> Renewal {
    Box::pin(async move {
        if id < 0 {
            return Err(EtcdError::NotLeader);
        }
        Ok(renewed(id))
    })
}

/// What `renew` answers for lease `id`.
fn renewed(id: i64) -> LeaseKeepAliveResponse {
    LeaseKeepAliveResponse {
        header: None,
        id,
        ttl: id * 10,
    }
}

fn data(bytes: &[u8]) -> Item {
    Ok(Frame::data(Bytes::copy_from_slice(bytes)))
}

/// A gRPC stream's response body over `requests`, its renewals made by
/// `renew`, ended when `stopped` completes.
fn grpc_body(
    requests: Body,
    renew: impl FnMut(i64) -> Renewal + Send + Unpin + 'static,
    stopped: Stopped,
) -> Body {
    let answers = KeepAlives::new(Requests::new(requests, MAX), renew, stopped);
    Body::new(Answers::new(answers))
}

/// A stream's body over `requests`, for a member that does not stop.
fn stream(requests: Body) -> Body {
    grpc_body(requests, renew, Box::pin(std::future::pending()))
}

/// What a stream's body yields: the answers' (id, TTL), then how it ended.
async fn answers(body: Body) -> (Vec<(i64, i64)>, Status) {
    let (mut data, trailers) = drain(body).await;
    let mut answers = Vec::new();
    while !data.is_empty() {
        let len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
        let resp = LeaseKeepAliveResponse::decode(&data[5..5 + len]).unwrap();
        answers.push((resp.id, resp.ttl));
        data.drain(..5 + len);
    }
    let status = Status::from_header_map(&trailers.expect("trailers end the stream")).unwrap();
    (answers, status)
}

/// What tonic's own server makes of the same request body: the requests
/// its decoder reads (answered as `renew` answers them), then its end.
async fn as_tonic(requests: Body) -> (Vec<(i64, i64)>, Status) {
    let decoder = tonic_prost::ProstDecoder::<LeaseKeepAliveRequest>::default();
    let mut decoded = Streaming::new_request(decoder, requests, None, Some(MAX));
    let mut answers = Vec::new();
    while let Some(next) = decoded.next().await {
        match next {
            Ok(req) => answers.push((req.id, req.id * 10)),
            Err(status) => return (answers, from_transport(status)),
        }
    }
    (answers, Status::ok(""))
}

fn same(a: &Status, b: &Status) -> bool {
    a.code() == b.code() && a.message() == b.message()
}

#[tokio::test]
async fn requests_are_answered_in_order_however_framed_then_ok_once_the_client_closes() {
    let (one, two, three) = (request(1), request(2), request(3));
    let frames = vec![
        data(&one),
        // The second request's prefix cut, its rest with the whole third.
        data(&two[..3]),
        data(&[&two[3..], &three[..]].concat()),
        // An empty DATA frame (clients end a stream with one).
        data(&[]),
    ];
    let (answers, status) = answers(stream(Scripted::ended(frames))).await;
    assert_eq!(answers, [(1, 10), (2, 20), (3, 30)]);
    assert_eq!(status.code(), tonic::Code::Ok);
}

#[tokio::test]
async fn a_renewal_that_fails_ends_the_stream_with_its_error() {
    let frames = vec![data(&[request(1), request(-1), request(2)].concat())];
    let (answers, status) = answers(stream(Scripted::ended(frames))).await;
    assert_eq!(answers, [(1, 10)]);
    assert!(
        same(&status, &Status::from(EtcdError::NotLeader)),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_stream_waits_for_the_next_request_and_ends_when_the_member_stops() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut body = grpc_body(
        Scripted::open([data(&request(7))]),
        renew,
        Box::pin(async move { drop(stopped.await) }),
    );
    let first = next(&mut body).await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from(framed(0, &renewed(7).encode_to_vec())));
    // Nothing more from the client: the body waits.
    let poll = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)));
    assert!(poll.await.is_pending());
    stop.send(()).unwrap();
    let trailers = next(&mut body)
        .await
        .unwrap()
        .unwrap()
        .into_trailers()
        .unwrap();
    let status = Status::from_header_map(&trailers).unwrap();
    assert!(
        same(&status, &Status::from(EtcdError::Stopped)),
        "{status:?}"
    );
    assert!(next(&mut body).await.is_none());
}

#[tokio::test]
async fn what_is_not_read_here_ends_the_stream_as_tonic_ends_it() {
    let one = request(1);
    let big = framed(0, &LeaseKeepAliveRequest { id: i64::MAX }.encode_to_vec());
    let oversized = [framed(0, &[0x08; 70])].concat();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x", http::HeaderValue::from_static("y"));
    let cases: Vec<(&str, Vec<Item>)> = vec![
        (
            "a compressed flag",
            vec![data(&[&one[..], &framed(1, &big[5..])].concat())],
        ),
        ("larger than the limit", vec![data(&one), data(&oversized)]),
        (
            "undecodable",
            vec![data(&[&one[..], &framed(0, &[0x08, 0xff])].concat())],
        ),
        ("cut short", vec![data(&one), data(&big[..8])]),
        (
            "trailers",
            vec![data(&one), Ok(Frame::trailers(trailers.clone()))],
        ),
        (
            "a body error",
            vec![data(&one), Err(Status::cancelled("gone"))],
        ),
    ];
    for (case, frames) in cases {
        let copy = |frames: &[Item]| {
            Scripted::ended(frames.iter().map(|f| match f {
                Ok(frame) => match frame.data_ref() {
                    Some(bytes) => Ok(Frame::data(bytes.clone())),
                    None => Ok(Frame::trailers(frame.trailers_ref().unwrap().clone())),
                },
                Err(status) => Err(Status::new(status.code(), status.message())),
            }))
        };
        let ours = answers(stream(copy(&frames))).await;
        let tonic = as_tonic(copy(&frames)).await;
        assert_eq!(ours.0, tonic.0, "{case}: the requests answered");
        assert_eq!(ours.0, [(1, 10)], "{case}: the request before");
        assert!(
            same(&ours.1, &tonic.1),
            "{case}: {:?} vs {:?}",
            ours.1,
            tonic.1
        );
        // tonic ends a stream whose body fails or carries trailers as if
        // the client had closed it; everything else is an error.
        let code = match case {
            "a compressed flag" | "undecodable" | "cut short" => tonic::Code::Internal,
            "larger than the limit" => tonic::Code::ResourceExhausted,
            _ => tonic::Code::Ok,
        };
        assert_eq!(ours.1.code(), code, "{case}");
    }
}

#[tokio::test]
async fn a_cancelled_renewal_is_dropped_with_its_stream() {
    // A renewal that never answers: dropping the body (hyper drops it when
    // the client resets the stream) drops the renewal too.
    let (dropped, is_dropped) = tokio::sync::oneshot::channel::<()>();
    let mut dropped = Some(dropped);
    let renew = move |_| -> Renewal {
        let guard = dropped.take();
        Box::pin(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            unreachable!()
        })
    };
    let mut body = grpc_body(
        Scripted::open([data(&request(1))]),
        renew,
        Box::pin(std::future::pending()),
    );
    let poll = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)));
    assert!(poll.await.is_pending());
    drop(body);
    assert!(is_dropped.await.is_err(), "the renewal was dropped");
}

#[tokio::test]
async fn the_gateways_stream_gets_the_same_answers_and_ends_when_its_requests_do() {
    let requests = tokio_stream::iter([1, 2, -1, 3].map(|id| Ok(LeaseKeepAliveRequest { id })));
    let answers = KeepAlives::new(requests, renew, Box::pin(std::future::pending()));
    let answers: Vec<_> = answers.collect().await;
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(answers[0].as_ref().unwrap(), &renewed(1));
    assert_eq!(answers[1].as_ref().unwrap(), &renewed(2));
    assert!(same(
        answers[2].as_ref().unwrap_err(),
        &Status::from(EtcdError::NotLeader)
    ));

    let requests = tokio_stream::iter([Ok(LeaseKeepAliveRequest { id: 4 })]);
    let answers = KeepAlives::new(requests, renew, Box::pin(std::future::pending()));
    let answers: Vec<_> = answers.collect().await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].as_ref().unwrap(), &renewed(4));
}
