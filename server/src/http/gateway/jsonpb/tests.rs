//! The transcoder against what etcd 3.5.1's gateway reads and writes
//! (outputs recorded from a real etcd).

use cairn_proto::etcdserverpb::{
    compare, request_op, watch_request, AlarmMember, AlarmResponse, Compare, HashResponse,
    LeaseTimeToLiveResponse, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    TxnRequest, WatchRequest, WatchResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};

use super::*;

fn decode<M: Named>(json: &str) -> Result<M, DecodeError> {
    let wire = to_wire::<M>(json.as_bytes())?;
    Ok(M::decode(wire.as_slice()).expect("the transcoder's bytes decode"))
}

fn header() -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: 14443903163313418560,
        member_id: 11417610130673999598,
        revision: 2,
        raft_term: 2,
    })
}

#[test]
fn responses_as_etcd_writes_them() {
    let range = RangeResponse {
        header: header(),
        kvs: vec![KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            value: b"bar".to_vec(),
            lease: 0,
        }],
        more: false,
        count: 1,
    };
    assert_eq!(
        to_json(&range).unwrap(),
        r#"{"header":{"cluster_id":"14443903163313418560","member_id":"11417610130673999598","revision":"2","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#
    );
    // A set but empty message is written; zero scalars are not.
    let put = PutResponse {
        header: Some(ResponseHeader::default()),
        prev_kv: None,
    };
    assert_eq!(to_json(&put).unwrap(), r#"{"header":{}}"#);
    let ttl = LeaseTimeToLiveResponse {
        header: None,
        id: 1000,
        ttl: 59,
        granted_ttl: 60,
        keys: vec![b"l".to_vec()],
    };
    assert_eq!(
        to_json(&ttl).unwrap(),
        r#"{"ID":"1000","TTL":"59","grantedTTL":"60","keys":["bA=="]}"#
    );
    // uint32 stays a number; enums by name.
    assert_eq!(
        to_json(&HashResponse {
            header: None,
            hash: 383038681
        })
        .unwrap(),
        r#"{"hash":383038681}"#
    );
    let alarms = AlarmResponse {
        header: None,
        alarms: vec![AlarmMember {
            member_id: 7,
            alarm: 1,
        }],
    };
    assert_eq!(
        to_json(&alarms).unwrap(),
        r#"{"alarms":[{"memberID":"7","alarm":"NOSPACE"}]}"#
    );
    let watch = WatchResponse {
        watch_id: -1,
        canceled: true,
        cancel_reason: "a <b> & c".into(),
        events: vec![Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue::default()),
            prev_kv: None,
        }],
        ..WatchResponse::default()
    };
    assert_eq!(
        to_json(&watch).unwrap(),
        r#"{"watch_id":"-1","canceled":true,"cancel_reason":"a \u003cb\u003e \u0026 c","events":[{"type":"DELETE","kv":{}}]}"#
    );
}

#[test]
fn requests_as_etcd_reads_them() {
    let r: RangeRequest = decode(
        r#"{"key":"Zm9v","range_end":null,"limit":"5","sortOrder":"DESCEND","sort_target":2,"serializable":true,"bogus":[1]}"#,
    )
    .unwrap();
    assert_eq!(r.key, b"foo");
    assert_eq!(r.limit, 5);
    assert_eq!(r.sort_order, 2);
    assert_eq!(r.sort_target, 2);
    assert!(r.serializable);
    // The last of duplicate keys wins.
    let r: RangeRequest = decode(r#"{"key":"Zm9v","key":"YmFy"}"#).unwrap();
    assert_eq!(r.key, b"bar");

    let t: TxnRequest = decode(
        r#"{"compare":[{"key":"Zm9v","target":"VALUE","result":"EQUAL","value":"YmFy"}],
            "success":[{"request_put":{"key":"Yg==","value":"Yw=="}}]}"#,
    )
    .unwrap();
    assert_eq!(
        t.compare,
        vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            key: b"foo".to_vec(),
            target_union: Some(compare::TargetUnion::Value(b"bar".to_vec())),
            range_end: vec![],
        }]
    );
    assert!(matches!(
        t.success.as_slice(),
        [RequestOp {
            request: Some(request_op::Request::RequestPut(p))
        }] if p.key == b"b" && p.value == b"c"
    ));

    let w: WatchRequest =
        decode(r#"{"create_request":{"key":"Zm9v","filters":["NOPUT"]}}"#).unwrap();
    assert!(matches!(
        w.request_union,
        Some(watch_request::RequestUnion::CreateRequest(c)) if c.key == b"foo" && c.filters == vec![0]
    ));
}

#[test]
fn errors_as_etcd_gives_them() {
    let cases = [
        (
            r#"{"key":5}"#,
            "json: cannot unmarshal number into Go value of type []uint8",
        ),
        (r#"{"key":"!!!"}"#, "illegal base64 data at input byte 0"),
        (r#"{"key":"Zm9vYQ"}"#, "illegal base64 data at input byte 4"),
        (
            r#"{"limit":true}"#,
            "json: cannot unmarshal bool into Go value of type int64",
        ),
        (
            r#"{"limit":1.5}"#,
            "json: cannot unmarshal number 1.5 into Go value of type int64",
        ),
        (
            r#"{"limit":"abc"}"#,
            "invalid character 'a' looking for beginning of value",
        ),
        (
            r#"{"serializable":"yes"}"#,
            "json: cannot unmarshal string into Go value of type bool",
        ),
        (
            r#"{"keys_only":1}"#,
            "json: cannot unmarshal number into Go value of type bool",
        ),
        (
            r#"{"sort_order":"BOGUS"}"#,
            r#"unknown value "\"BOGUS\"" for enum etcdserverpb.RangeRequest.SortOrder"#,
        ),
        (
            "[]",
            "json: cannot unmarshal array into Go value of type map[string]json.RawMessage",
        ),
    ];
    for (json, want) in cases {
        assert_eq!(
            decode::<RangeRequest>(json),
            Err(DecodeError::Invalid(want.to_string())),
            "{json}"
        );
    }
    // Nesting past prost's limit is refused before recursing further.
    let deep = r#"{"success":[{"request_txn":"#.repeat(200);
    let deep = format!("{deep}{{}}{}", "}]}".repeat(200));
    assert_eq!(scan::check_valid(deep.as_bytes()), Ok(()));
    assert_eq!(decode::<TxnRequest>(&deep), Err(DecodeError::TooDeep));
}
