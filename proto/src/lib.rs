//! etcd v3 API protocol buffers for Cairn.
//!
//! The `.proto` files under `proto/` mirror etcd 3.5's `mvccpb`, `authpb` and
//! `etcdserverpb` packages field for field, so any etcd v3 client (etcdctl,
//! clientv3, ...) can talk to Cairn and Cairn's client can talk to etcd.
//! Types are generated with prost and the gRPC clients/servers with tonic.
//!
//! `protoc` is taken from the `protoc-bin-vendored` crate instead of the system,
//! so a fresh machine or CI runner builds this crate without installing protobuf.
//!
//! Server traits are generated with default stubs: any rpc a server does not
//! implement answers `Unimplemented`. With default stubs, server-streaming rpcs
//! return `tonic::codegen::BoxStream<T>` instead of an associated stream type.

/// The `FileDescriptorSet` of every `.proto` file above (protoc's output,
/// encoded): the message and field descriptors the JSON gateway transcodes
/// by (field names, numbers, types, enum value names).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// etcd storage types: `KeyValue` and watch `Event`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd auth storage types: users, roles, permissions.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcd client API: request/response messages plus `*_client` and `*_server`
/// modules for the KV, Watch, Lease, Cluster, Maintenance and Auth services.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// Cairn's own storage records: the persistent lease record (same field
/// numbers as etcd's `leasepb.Lease`). Not part of the client API.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}

/// etcd's Lock service (`v3lockpb.Lock`): Lock and Unlock.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// etcd's Election service (`v3electionpb.Election`): Campaign, Proclaim,
/// Leader, Observe, Resign.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

#[cfg(test)]
mod tests {
    //! Wire-format checks: each test pins the tag bytes of a few fields, so a
    //! wrong field number or wire type in the `.proto` files fails here.

    use super::etcdserverpb::{
        alarm_request, compare, request_op, watch_request, AlarmRequest, Compare, MemberAddRequest,
        PutRequest, RangeRequest, RequestOp, ResponseHeader, StatusResponse, TxnRequest,
        WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
    };
    use super::mvccpb::{event::EventType, Event, KeyValue};
    use prost::Message;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn key_value_field_numbers() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 4,
            value: b"v".to_vec(),
            lease: 6,
        };
        let bytes = kv.encode_to_vec();
        assert_eq!(
            bytes,
            [0x0a, 1, b'k', 0x10, 2, 0x18, 3, 0x20, 4, 0x2a, 1, b'v', 0x30, 6]
        );
        assert_eq!(KeyValue::decode(bytes.as_slice()), Ok(kv));
    }

    #[test]
    fn compare_value_target_and_range_end() {
        let cmp = Compare {
            result: compare::CompareResult::NotEqual as i32,
            target: compare::CompareTarget::Value as i32,
            key: b"k".to_vec(),
            target_union: Some(compare::TargetUnion::Value(b"v".to_vec())),
            range_end: b"z".to_vec(),
        };
        let bytes = cmp.encode_to_vec();
        // result=1 (NOT_EQUAL=3), target=2 (VALUE=3), key=3.
        assert!(bytes.starts_with(&[0x08, 3, 0x10, 3, 0x1a, 1, b'k']));
        // value=7, length-delimited.
        assert!(contains(&bytes, &[0x3a, 1, b'v']));
        // range_end=64: tag (64 << 3 | 2) = 514 = varint [0x82, 0x04].
        assert!(contains(&bytes, &[0x82, 0x04, 1, b'z']));
        assert_eq!(bytes.len(), 7 + 3 + 4);
        assert_eq!(Compare::decode(bytes.as_slice()), Ok(cmp));
    }

    #[test]
    fn compare_numeric_targets() {
        let tag_of = |union: compare::TargetUnion| {
            let cmp = Compare {
                target_union: Some(union),
                ..Compare::default()
            };
            cmp.encode_to_vec()
        };
        assert_eq!(tag_of(compare::TargetUnion::Version(1)), [0x20, 1]);
        assert_eq!(tag_of(compare::TargetUnion::CreateRevision(1)), [0x28, 1]);
        assert_eq!(tag_of(compare::TargetUnion::ModRevision(1)), [0x30, 1]);
        assert_eq!(tag_of(compare::TargetUnion::Lease(1)), [0x40, 1]);
        // A oneof member set to its default value is still written.
        assert_eq!(tag_of(compare::TargetUnion::Version(0)), [0x20, 0]);
        assert_eq!(compare::CompareTarget::Lease as i32, 4);
    }

    #[test]
    fn watch_response_with_events() {
        let resp = WatchResponse {
            header: Some(ResponseHeader {
                revision: 5,
                ..ResponseHeader::default()
            }),
            watch_id: 1,
            created: true,
            events: vec![Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: b"a".to_vec(),
                    ..KeyValue::default()
                }),
                prev_kv: None,
            }],
            ..WatchResponse::default()
        };
        let bytes = resp.encode_to_vec();
        let expected: [u8; 17] = [
            0x0a, 2, 0x18, 5, // header=1 { revision=3 }
            0x10, 1, // watch_id=2
            0x18, 1, // created=3
            0x5a, 7, // events=11, length 7
            0x08, 1, // type=1 (DELETE)
            0x12, 3, 0x0a, 1, b'a', // kv=2 { key=1 }
        ];
        assert_eq!(bytes, expected);
        assert_eq!(WatchResponse::decode(bytes.as_slice()), Ok(resp));

        let cancel = WatchResponse {
            canceled: true,
            compact_revision: 9,
            cancel_reason: "x".into(),
            fragment: true,
            ..WatchResponse::default()
        };
        assert_eq!(
            cancel.encode_to_vec(),
            [0x20, 1, 0x28, 9, 0x32, 1, b'x', 0x38, 1]
        );
    }

    #[test]
    fn watch_request_union_and_packed_filters() {
        let progress = WatchRequest {
            request_union: Some(watch_request::RequestUnion::ProgressRequest(
                WatchProgressRequest {},
            )),
        };
        assert_eq!(progress.encode_to_vec(), [0x1a, 0]);

        let create = WatchCreateRequest {
            filters: vec![1],
            watch_id: 7,
            fragment: true,
            ..WatchCreateRequest::default()
        };
        // filters=5 packed (as etcd's Go code emits), watch_id=7, fragment=8.
        assert_eq!(create.encode_to_vec(), [0x2a, 1, 1, 0x38, 7, 0x40, 1]);
    }

    #[test]
    fn request_op_and_range_fields() {
        let op = RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest::default())),
        };
        assert_eq!(op.encode_to_vec(), [0x22, 0]);

        let range = RangeRequest {
            serializable: true,
            max_create_revision: 1,
            ..RangeRequest::default()
        };
        assert_eq!(range.encode_to_vec(), [0x38, 1, 0x68, 1]);

        let put = PutRequest {
            prev_kv: true,
            ignore_lease: true,
            ..PutRequest::default()
        };
        assert_eq!(put.encode_to_vec(), [0x20, 1, 0x30, 1]);
    }

    #[test]
    fn maintenance_and_cluster_fields() {
        let status = StatusResponse {
            raft_applied_index: 7,
            db_size_in_use: 100,
            is_learner: true,
            ..StatusResponse::default()
        };
        assert_eq!(status.encode_to_vec(), [0x38, 7, 0x48, 100, 0x50, 1]);

        let alarm = AlarmRequest {
            action: alarm_request::AlarmAction::Deactivate as i32,
            member_id: 1,
            alarm: super::etcdserverpb::AlarmType::Corrupt as i32,
        };
        assert_eq!(alarm.encode_to_vec(), [0x08, 2, 0x10, 1, 0x18, 2]);

        let add = MemberAddRequest {
            peer_ur_ls: vec!["x".into()],
            is_learner: true,
        };
        assert_eq!(add.encode_to_vec(), [0x0a, 1, b'x', 0x10, 1]);
    }

    #[test]
    fn lease_record_matches_etcd_leasepb() {
        // etcd's leasepb.Lease: ID=1, TTL=2, RemainingTTL=3, all varints.
        let record = super::cairnpb::Lease {
            id: 5,
            ttl: 60,
            remaining_ttl: 7,
        };
        assert_eq!(record.encode_to_vec(), [0x08, 5, 0x10, 60, 0x18, 7]);
        assert_eq!(
            super::cairnpb::Lease::decode(&[0x08, 5, 0x10, 60, 0x18, 7][..]),
            Ok(record)
        );
    }

    #[test]
    fn server_traits_have_default_stubs() {
        use super::etcdserverpb::{kv_server, watch_server};
        use std::future::Future;
        use std::pin::pin;
        use std::task::{Context, Poll, Waker};

        struct Empty;
        // Compiles only because every rpc has a default body.
        impl kv_server::Kv for Empty {}
        impl watch_server::Watch for Empty {}

        let fut = kv_server::Kv::range(&Empty, tonic::Request::new(RangeRequest::default()));
        let mut fut = pin!(fut);
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Err(status)) => assert_eq!(status.code(), tonic::Code::Unimplemented),
            other => panic!("expected Unimplemented, got {:?}", other.map(|r| r.is_ok())),
        }
        let _server = kv_server::KvServer::new(Empty);
        let _server = watch_server::WatchServer::new(Empty);
    }
}
