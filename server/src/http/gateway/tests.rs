//! The gateway's answers that need no member.

use super::*;

#[test]
fn error_body_and_status() {
    let response = error_response(&Status::invalid_argument("etcdserver: key is not provided"));
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let cases = [
        (Code::NotFound, 404),
        (Code::OutOfRange, 400),
        (Code::FailedPrecondition, 400),
        (Code::ResourceExhausted, 429),
        (Code::Unavailable, 503),
        (Code::Unknown, 500),
        (Code::DataLoss, 500),
        (Code::Unimplemented, 501),
    ];
    for (code, http) in cases {
        assert_eq!(http_status(code).as_u16(), http, "{code:?}");
    }
}

#[test]
fn first_value_as_go_decoder() {
    assert_eq!(first_value(b"  ").unwrap(), b"");
    assert_eq!(first_value(br#"{"a":1} garbage"#).unwrap(), br#"{"a":1}"#);
    let err = first_value(br#"{"key":"Zm9v""#).unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "unexpected EOF")
    );
}

#[test]
fn decode_limits_as_grpc() {
    use cairn_proto::etcdserverpb::PutRequest;
    let err = decode_with::<PutRequest>(
        br#"{"key":"Zm9v","value":"YmFyYmF6"}"#,
        8,
        Status::invalid_argument,
    )
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.message(),
        "grpc: received message larger than max (13 vs. 8)"
    );
    let put = decode_with::<PutRequest>(b"null", 8, Status::invalid_argument).unwrap();
    assert_eq!(put, PutRequest::default());
}
