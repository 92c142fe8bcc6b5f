//! The Cluster service: list, add, remove, update and promote members.
//!
//! Membership changes are writes: they fail over only when the request surely
//! never reached a member, and an uncertain outcome is
//! [`Error::UnknownOutcome`] (check with [`Client::member_list`] before
//! trying again: adding the same peer URLs twice is refused, but a remove
//! that did happen makes the retry fail with "member not found").

use cairn_proto::etcdserverpb::{
    cluster_client::ClusterClient, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};

use crate::retry::Kind;
use crate::{Client, Error};

impl Client {
    /// Every member of the cluster (`Cluster.MemberList`), linearizable as
    /// clientv3 asks for it, so a member that was just added or removed is
    /// seen as such. A read.
    pub async fn member_list(&self) -> Result<MemberListResponse, Error> {
        let message = MemberListRequest { linearizable: true };
        self.unary(Kind::Read, message, |ch, req| async move {
            ClusterClient::new(ch).member_list(req).await
        })
        .await
    }

    /// Add a member with `peer_urls` (`Cluster.MemberAdd`); a learner
    /// (`is_learner`) receives the log but does not vote until promoted. The
    /// response has the new member's id. A write.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<MemberAddResponse, Error> {
        let message = MemberAddRequest {
            peer_ur_ls: peer_urls,
            is_learner,
        };
        self.unary(Kind::Write, message, |ch, req| async move {
            ClusterClient::new(ch).member_add(req).await
        })
        .await
    }

    /// Remove member `id` (`Cluster.MemberRemove`). A write.
    pub async fn member_remove(&self, id: u64) -> Result<MemberRemoveResponse, Error> {
        self.unary(
            Kind::Write,
            MemberRemoveRequest { id },
            |ch, req| async move { ClusterClient::new(ch).member_remove(req).await },
        )
        .await
    }

    /// Replace member `id`'s peer URLs (`Cluster.MemberUpdate`). A write.
    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<MemberUpdateResponse, Error> {
        let message = MemberUpdateRequest {
            id,
            peer_ur_ls: peer_urls,
        };
        self.unary(Kind::Write, message, |ch, req| async move {
            ClusterClient::new(ch).member_update(req).await
        })
        .await
    }

    /// Make learner `id` a voting member (`Cluster.MemberPromote`); refused
    /// until the learner has caught up with the leader. A write.
    pub async fn member_promote(&self, id: u64) -> Result<MemberPromoteResponse, Error> {
        self.unary(
            Kind::Write,
            MemberPromoteRequest { id },
            |ch, req| async move { ClusterClient::new(ch).member_promote(req).await },
        )
        .await
    }
}
