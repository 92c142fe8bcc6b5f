//! etcd's JSON form of the API messages, both ways, driven by the messages'
//! descriptors as grpc-gateway's marshaler is (one transcoder for every
//! message, nothing per type): JSON becomes the protobuf encoding of the
//! very prost type the gRPC services take, and a prost response is written
//! from its encoding. Go's behaviour, field by field and error by error,
//! is described in `decode` and `encode`; `scan` is Go's JSON syntax.

mod decode;
mod descriptors;
mod encode;
pub mod scan;

pub use decode::DecodeError;
pub use encode::{quote, EncodeError};

/// A message type of the API, by its protobuf full name.
pub trait Named: prost::Message + Default {
    const NAME: &'static str;
}

/// Implements [`Named`] for prost types of a package.
macro_rules! named {
    ($package:literal: $($ty:ident),* $(,)?) => {
        $(impl Named for $ty {
            const NAME: &'static str = concat!($package, ".", stringify!($ty));
        })*
    };
}

use cairn_proto::etcdserverpb::*;
named!("etcdserverpb":
    RangeRequest, RangeResponse, PutRequest, PutResponse, DeleteRangeRequest,
    DeleteRangeResponse, TxnRequest, TxnResponse, CompactionRequest, CompactionResponse,
    WatchRequest, WatchResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    MemberAddRequest, MemberAddResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, AlarmRequest, AlarmResponse,
    StatusRequest, StatusResponse, DefragmentRequest, DefragmentResponse, HashRequest,
    HashResponse, SnapshotRequest, SnapshotResponse, MoveLeaderRequest, MoveLeaderResponse,
    DowngradeRequest, DowngradeResponse,
    AuthEnableRequest, AuthEnableResponse, AuthDisableRequest, AuthDisableResponse,
    AuthStatusRequest, AuthStatusResponse, AuthenticateRequest, AuthenticateResponse,
    AuthUserAddRequest, AuthUserAddResponse, AuthUserGetRequest, AuthUserGetResponse,
    AuthUserListRequest, AuthUserListResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserChangePasswordRequest, AuthUserChangePasswordResponse, AuthUserGrantRoleRequest,
    AuthUserGrantRoleResponse, AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleGetRequest, AuthRoleGetResponse,
    AuthRoleListRequest, AuthRoleListResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse,
);
use cairn_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
named!("v3lockpb": LockRequest, LockResponse, UnlockRequest, UnlockResponse);
use cairn_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
named!("v3electionpb":
    CampaignRequest, CampaignResponse, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
);

/// The protobuf encoding of message `M` read from the JSON value `raw`
/// (one complete value, as the caller's scan found it).
pub fn to_wire<M: Named>(raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let descriptors = descriptors::get().map_err(|e| DecodeError::Unknown(e.to_string()))?;
    decode::Decoder { descriptors }.message(M::NAME, raw)
}

/// `message` as etcd's gateway writes it.
pub fn to_json<M: Named>(message: &M) -> Result<String, EncodeError> {
    let descriptors = descriptors::get().map_err(|e| EncodeError::Unknown(e.to_string()))?;
    let mut out = String::new();
    encode::Encoder { descriptors }.message(M::NAME, &message.encode_to_vec(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
