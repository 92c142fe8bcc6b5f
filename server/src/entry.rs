//! The data of a normal raft log entry: encoded in one place, decoded in one
//! place.
//!
//! An entry accepted into the raft log must apply on every member, forever.
//! So the rule is structural: [`encode`] builds the bytes and runs [`decode`]
//! — the very function the state machine runs on the entry — on them before
//! anything is proposed; a request whose entry would not decode is refused
//! there, with etcd's error, and never reaches the log. An entry that does not
//! decode all the same (written by an older version of Cairn, say) is not a
//! reason to stop: [`Undecodable::error`] is the deterministic answer every
//! member derives from the bytes alone, and the entry is applied as that
//! error.
//!
//! A transaction travels as its own encoded bytes inside the entry (field
//! `txn` of `cairnpb.RaftRequest`), so it is decoded at exactly the depth the
//! gRPC layer decoded it: protobuf decoders limit how deeply messages nest,
//! and an envelope one level deeper than what the client sent turned a Txn
//! nested as deep as the gRPC decoder allows into an entry no member could
//! apply.

use bytes::Buf;
use cairn_proto::cairnpb::{self, raft_request::Request, RaftRequest};
use cairn_proto::etcdserverpb::{
    AlarmRequest, CompactionRequest, DeleteRangeRequest, LeaseCheckpointRequest, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, TxnRequest,
};
use prost::Message;

use crate::error::EtcdError;

/// What prost says when a message nests deeper than it decodes (its limit
/// is a compile-time constant; `decode_error_texts_are_recognised` pins the
/// text).
const RECURSION_LIMIT_TEXT: &str = "recursion limit reached";

/// A decoded entry: the proposal id and what to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The proposal id, unique in the cluster: applying the entry answers
    /// the waiter registered under it, wherever it was proposed.
    pub id: u64,
    /// Who asked (None: no credentials); checked at apply while auth is
    /// enabled.
    pub auth: Option<cairnpb::AuthHeader>,
    /// The operation; `None` for a request of a kind this version does not
    /// know (applied as a no-op, as before).
    pub command: Option<Command>,
}

/// One state-machine operation, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Put.
    Put(PutRequest),
    /// DeleteRange.
    DeleteRange(DeleteRangeRequest),
    /// Txn.
    Txn(TxnRequest),
    /// Compaction.
    Compaction(CompactionRequest),
    /// LeaseGrant (with the id the proposer chose).
    LeaseGrant(LeaseGrantRequest),
    /// LeaseRevoke.
    LeaseRevoke(LeaseRevokeRequest),
    /// LeaseCheckpoint.
    LeaseCheckpoint(LeaseCheckpointRequest),
    /// Alarm activate / deactivate.
    Alarm(AlarmRequest),
    /// A member publishes its name, client URLs and zone.
    MemberAttributes(cairnpb::Member),
    /// MemberUpdate: new peer URLs.
    MemberPeerUrls(cairnpb::Member),
    /// Data key rotation to this key id.
    RotateDataKey(u32),
    /// Enable or cancel the cluster's downgrade job.
    Downgrade(cairnpb::DowngradeInfo),
    /// An Auth service change or an authentication.
    Auth(cairnpb::auth_request::Request),
}

impl Command {
    /// etcd's name of the request kind (the `op` label of
    /// etcd_server_apply_duration_seconds); Cairn's own requests are named
    /// the same way.
    pub fn op(&self) -> &'static str {
        match self {
            Command::Put(_) => "Put",
            Command::DeleteRange(_) => "DeleteRange",
            Command::Txn(_) => "Txn",
            Command::Compaction(_) => "Compaction",
            Command::LeaseGrant(_) => "LeaseGrant",
            Command::LeaseRevoke(_) => "LeaseRevoke",
            Command::LeaseCheckpoint(_) => "LeaseCheckpoint",
            Command::Alarm(_) => "Alarm",
            Command::MemberAttributes(_) => "ClusterMemberAttrSet",
            Command::MemberPeerUrls(_) => "MemberPeerUrls",
            Command::RotateDataKey(_) => "RotateDataKey",
            Command::Downgrade(_) => "DowngradeInfoSet",
            Command::Auth(r) => {
                use cairnpb::auth_request::Request as A;
                match r {
                    A::Enable(_) => "AuthEnable",
                    A::Disable(_) => "AuthDisable",
                    A::Authenticate(_) => "Authenticate",
                    A::UserAdd(_) => "AuthUserAdd",
                    A::UserDelete(_) => "AuthUserDelete",
                    A::UserChangePassword(_) => "AuthUserChangePassword",
                    A::UserGrantRole(_) => "AuthUserGrantRole",
                    A::UserRevokeRole(_) => "AuthUserRevokeRole",
                    A::RoleAdd(_) => "AuthRoleAdd",
                    A::RoleGrantPermission(_) => "AuthRoleGrantPermission",
                    A::RoleRevokePermission(_) => "AuthRoleRevokePermission",
                    A::RoleDelete(_) => "AuthRoleDelete",
                }
            }
        }
    }

    /// The wire form of this command.
    fn into_request(self) -> Request {
        match self {
            Command::Put(r) => Request::Put(r),
            Command::DeleteRange(r) => Request::DeleteRange(r),
            Command::Txn(r) => Request::Txn(r.encode_to_vec()),
            Command::Compaction(r) => Request::Compaction(r),
            Command::LeaseGrant(r) => Request::LeaseGrant(r),
            Command::LeaseRevoke(r) => Request::LeaseRevoke(r),
            Command::LeaseCheckpoint(r) => Request::LeaseCheckpoint(r),
            Command::Alarm(r) => Request::Alarm(r),
            Command::MemberAttributes(m) => Request::MemberAttributes(m),
            Command::MemberPeerUrls(m) => Request::MemberPeerUrls(m),
            Command::RotateDataKey(id) => Request::RotateDataKey(id),
            Command::Downgrade(d) => Request::Downgrade(d),
            Command::Auth(r) => Request::AuthRequest(cairnpb::AuthRequest { request: Some(r) }),
        }
    }

    /// The decoded form of a wire request (None: an auth request of a kind
    /// this version does not know, applied as a no-op).
    fn from_request(request: Request) -> Result<Option<Self>, prost::DecodeError> {
        Ok(Some(match request {
            Request::Put(r) => Command::Put(r),
            Request::DeleteRange(r) => Command::DeleteRange(r),
            Request::Txn(bytes) => Command::Txn(TxnRequest::decode(bytes.as_slice())?),
            Request::Compaction(r) => Command::Compaction(r),
            Request::LeaseGrant(r) => Command::LeaseGrant(r),
            Request::LeaseRevoke(r) => Command::LeaseRevoke(r),
            Request::LeaseCheckpoint(r) => Command::LeaseCheckpoint(r),
            Request::Alarm(r) => Command::Alarm(r),
            Request::MemberAttributes(m) => Command::MemberAttributes(m),
            Request::MemberPeerUrls(m) => Command::MemberPeerUrls(m),
            Request::RotateDataKey(id) => Command::RotateDataKey(id),
            Request::Downgrade(d) => Command::Downgrade(d),
            Request::AuthRequest(r) => match r.request {
                Some(r) => Command::Auth(r),
                None => return Ok(None),
            },
        }))
    }
}

/// An entry that does not decode. Every member derives the same
/// [`Undecodable::error`] from the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable raft entry (proposal {id:?}): {reason}")]
pub struct Undecodable {
    /// The proposal id, if at least that much of the entry decodes, so that
    /// a waiting client still gets its answer.
    pub id: Option<u64>,
    /// The decoder's complaint (for the log).
    pub reason: String,
    /// Whether the entry nests deeper than the decoder allows.
    too_deep: bool,
}

impl Undecodable {
    /// The answer for the entry's client: etcd's refusal of a transaction
    /// nested too deeply, or an internal error for anything else.
    pub fn error(&self) -> EtcdError {
        if self.too_deep {
            EtcdError::TooManyOps
        } else {
            EtcdError::Internal
        }
    }
}

/// Only the proposal id of a `RaftRequest`: prost skips the other fields
/// without decoding them, so this decodes whenever the envelope is sound.
#[derive(Clone, PartialEq, Message)]
struct ProposalId {
    #[prost(uint64, tag = "1")]
    id: u64,
}

/// Whether a decoder's complaint is about nesting depth.
pub fn is_too_deep(error: &impl std::fmt::Display) -> bool {
    error.to_string().contains(RECURSION_LIMIT_TEXT)
}

/// Decodes an entry's data (not empty: an empty entry is a leader's no-op).
/// From a `Bytes` (as raft holds an entry), each byte field is copied once
/// into its request; from a slice, prost copies it twice.
pub fn decode(data: impl Buf + Clone) -> Result<Entry, Undecodable> {
    let whole = data.clone();
    let undecodable = |e: prost::DecodeError| Undecodable {
        id: ProposalId::decode(whole.clone()).ok().map(|p| p.id),
        too_deep: is_too_deep(&e),
        reason: e.to_string(),
    };
    let raw = RaftRequest::decode(data).map_err(undecodable)?;
    let command = match raw.request {
        Some(request) => Command::from_request(request).map_err(undecodable)?,
        None => None,
    };
    Ok(Entry {
        id: raw.id,
        auth: raw.auth,
        command,
    })
}

/// Encodes `command` as the data of an entry with proposal id `id`, and
/// checks that [`decode`] accepts it: what is proposed is exactly what every
/// state machine will decode. A command that would not decode is refused
/// with the error its entry would have been applied as.
pub fn encode(id: u64, command: Command) -> Result<Vec<u8>, EtcdError> {
    encode_with(id, None, command)
}

/// [`encode`] with the caller's `auth` header.
pub fn encode_with(
    id: u64,
    auth: Option<cairnpb::AuthHeader>,
    command: Command,
) -> Result<Vec<u8>, EtcdError> {
    let data = RaftRequest {
        id,
        auth,
        request: Some(command.into_request()),
    }
    .encode_to_vec();
    if let Err(e) = decode(data.as_slice()) {
        // Debug: a client can send these at will.
        tracing::debug!(error = %e, "refused a request whose raft entry would not decode");
        return Err(e.error());
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::{request_op, RequestOp};

    /// A Txn nested `depth` levels deep (1 = a plain Txn) around one put.
    pub(crate) fn nested_txn(depth: usize) -> TxnRequest {
        let mut txn = TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        for _ in 1..depth {
            txn = TxnRequest {
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestTxn(txn)),
                }],
                ..Default::default()
            };
        }
        txn
    }

    /// The deepest Txn the gRPC layer decodes (with the same decoder).
    fn deepest_decodable() -> usize {
        (1..200)
            .take_while(|d| TxnRequest::decode(nested_txn(*d).encode_to_vec().as_slice()).is_ok())
            .last()
            .unwrap_or(0)
    }

    #[test]
    fn every_command_round_trips() {
        let commands = [
            Command::Put(PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            }),
            Command::DeleteRange(DeleteRangeRequest::default()),
            Command::Txn(nested_txn(3)),
            Command::Compaction(CompactionRequest {
                revision: 7,
                physical: true,
            }),
            Command::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 9 }),
            Command::LeaseRevoke(LeaseRevokeRequest { id: 9 }),
            Command::LeaseCheckpoint(LeaseCheckpointRequest::default()),
            Command::Alarm(AlarmRequest::default()),
            Command::MemberAttributes(cairnpb::Member::default()),
            Command::MemberPeerUrls(cairnpb::Member::default()),
            Command::RotateDataKey(3),
            Command::Downgrade(cairnpb::DowngradeInfo {
                enabled: true,
                target_version: "3.4.0".into(),
            }),
            Command::Auth(cairnpb::auth_request::Request::RoleAdd(
                cairn_proto::etcdserverpb::AuthRoleAddRequest { name: "r".into() },
            )),
        ];
        let header = cairnpb::AuthHeader {
            username: "alice".into(),
            revision: 3,
            internal: false,
        };
        for command in commands {
            let data = encode(42, command.clone()).unwrap();
            assert_eq!(
                decode(data.as_slice()).unwrap(),
                Entry {
                    id: 42,
                    auth: None,
                    command: Some(command.clone())
                }
            );
            let data = encode_with(42, Some(header.clone()), command.clone()).unwrap();
            assert_eq!(decode(data.as_slice()).unwrap().auth, Some(header.clone()));
        }
    }

    /// The bug this module exists for: a Txn exactly as deep as the gRPC
    /// decoder accepts used to become an entry one level too deep to apply.
    #[test]
    fn the_deepest_txn_a_client_can_send_makes_an_entry_that_decodes() {
        let deepest = deepest_decodable();
        assert!(deepest >= 49, "prost decodes {deepest} levels");
        let data = encode(1, Command::Txn(nested_txn(deepest))).unwrap();
        assert_eq!(
            decode(data.as_slice()).unwrap().command,
            Some(Command::Txn(nested_txn(deepest)))
        );
        // One level deeper is refused where the entry is built, with etcd's
        // refusal of a too-deep transaction, not proposed.
        assert_eq!(
            encode(1, Command::Txn(nested_txn(deepest + 1))),
            Err(EtcdError::TooManyOps)
        );
    }

    #[test]
    fn an_entry_an_older_version_wrote_too_deep_applies_as_an_error() {
        // The old format: the Txn as a message inside the envelope.
        #[derive(Clone, PartialEq, Message)]
        struct OldRaftRequest {
            #[prost(uint64, tag = "1")]
            id: u64,
            #[prost(message, optional, tag = "5")]
            txn: Option<TxnRequest>,
        }
        let deepest = deepest_decodable();
        // What an older version proposed for the deepest Txn still decodes:
        // the field's wire format is the same.
        let old = OldRaftRequest {
            id: 7,
            txn: Some(nested_txn(deepest)),
        }
        .encode_to_vec();
        assert_eq!(
            decode(old.as_slice()).unwrap().command,
            Some(Command::Txn(nested_txn(deepest)))
        );
        // Anything deeper decodes to a deterministic error for proposal 7.
        let older = OldRaftRequest {
            id: 7,
            txn: Some(nested_txn(deepest + 5)),
        }
        .encode_to_vec();
        let err = decode(older.as_slice()).unwrap_err();
        assert_eq!(err.id, Some(7));
        assert_eq!(err.error(), EtcdError::TooManyOps);
        // Garbage: no id, an internal error.
        let err = decode(&b"\xff\xff\xff"[..]).unwrap_err();
        assert_eq!(err.id, None);
        assert_eq!(err.error(), EtcdError::Internal);
    }

    #[test]
    fn decode_error_texts_are_recognised() {
        let err = TxnRequest::decode(nested_txn(500).encode_to_vec().as_slice()).unwrap_err();
        assert!(is_too_deep(&err), "{err}");
        let err = TxnRequest::decode(&b"\x12\x05ab"[..]).unwrap_err();
        assert!(!is_too_deep(&err), "{err}");
    }
}
