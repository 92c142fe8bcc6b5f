//! Cluster operations of a [`Member`]: the member table (etcd's Cluster
//! service) and the cluster-wide Maintenance calls (HashKV, MoveLeader,
//! Snapshot).
//!
//! Membership changes are raft conf changes carrying a
//! `cairnpb.ConfChangeContext` (the proposal id and the member record);
//! applying one updates raft's configuration and the replicated member
//! table in the same step. The safety checks are etcd's: with
//! `--strict-reconfig-check` (the default) a change must leave a quorum of
//! started and reachable voters ([`crate::reconfig`]), and a learner is
//! promoted only once its log has caught up (90% of the leader's).

use std::time::Duration;

use cairn_proto::cairnpb::{self, ConfChangeContext};
use cairn_proto::etcdserverpb::{HashKvResponse, Member as PbMember};
use prost::Message;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

use crate::entry::Command;
use crate::error::EtcdError;
use crate::machine::Applied;
use crate::member::Member;

/// How far a learner's log may trail the leader's and still be promoted
/// (etcd: it must have 90% of the leader's entries).
const LEARNER_READY_PERCENT: u64 = 90;
/// etcd allows one learner at a time.
const MAX_LEARNERS: usize = 1;

/// A member record as the Cluster service shows it.
pub fn to_pb(m: &cairnpb::Member) -> PbMember {
    PbMember {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
        zone: m.zone.clone(),
    }
}

/// A peer URL as etcd's `types.NewURLs` takes it: `http://host:port`, where
/// host is a name, an IPv4 address or a bracketed IPv6 address and port a
/// number, with no path (a trailing `/` aside), query or user. (`https://`
/// waits for peer TLS.)
fn valid_url(url: &str) -> bool {
    let Some(host_port) = url
        .strip_prefix("http://")
        .map(|rest| rest.strip_suffix('/').unwrap_or(rest))
    else {
        return false;
    };
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once("]:") {
            Some((ip, port)) if ip.parse::<std::net::Ipv6Addr>().is_ok() => (ip, port),
            _ => return false,
        },
        None => match host_port.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, port),
            _ => return false,
        },
    };
    let host_ok = !host.is_empty()
        && !host
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@' | '[' | ']' | ' ') || c.is_control());
    host_ok && port.parse::<u16>().is_ok()
}

impl Member {
    /// The member table.
    pub fn member_list(&self) -> Vec<cairnpb::Member> {
        self.machine().members()
    }

    /// Proposes a conf change and waits for it to be applied here.
    async fn propose_member_change(
        &self,
        change_type: ConfChangeType,
        node: u64,
        member: Option<cairnpb::Member>,
    ) -> Result<Vec<cairnpb::Member>, EtcdError> {
        let Some(replication) = self.replication() else {
            return Err(EtcdError::NotLeader);
        };
        let request_id = self.next_proposal_id();
        let context = ConfChangeContext { request_id, member }.encode_to_vec();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = node;
        let mut change = ConfChangeV2::default();
        change.mut_changes().push(single);
        change.context = context.into();
        let waiter = self.machine().register(request_id);
        if let Err(e) = replication.raft.propose_conf_change(change).await {
            self.machine().cancel(request_id);
            return Err(e);
        }
        match tokio::time::timeout(replication.request_timeout, waiter).await {
            Ok(Ok(Ok(Applied::Members(members)))) => Ok(members),
            Ok(Ok(Ok(_))) => Err(EtcdError::Internal),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => {
                self.machine().cancel(request_id);
                Err(EtcdError::Timeout)
            }
        }
    }

    /// What this member knows of the voters, for the
    /// `--strict-reconfig-check` rules: which started (published their
    /// name: etcd counts only those), and, on the leader, which it heard
    /// from within an election timeout.
    fn reconfig_voters(&self) -> crate::reconfig::Voters {
        let status = self.raft_status();
        crate::reconfig::Voters {
            me: self.identity().member_id,
            started: self
                .member_list()
                .into_iter()
                .filter(|m| !m.is_learner)
                .map(|m| (m.id, !m.name.is_empty()))
                .collect(),
            active: status.is_leader.then_some(status.active),
        }
    }

    /// MemberAdd: a new voter or learner with `peer_urls`. Returns the new
    /// member and the member table after the change.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(cairnpb::Member, Vec<cairnpb::Member>), EtcdError> {
        if peer_urls.is_empty() || !peer_urls.iter().all(|u| valid_url(u)) {
            return Err(EtcdError::MemberBadUrls);
        }
        if self.strict_reconfig_check() {
            crate::reconfig::may_add_member(&self.reconfig_voters(), is_learner)?;
        }
        let members = self.member_list();
        if members
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExist);
        }
        if is_learner && members.iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
            return Err(EtcdError::TooManyLearners);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let salt = format!("{:x}{now}", self.identity().cluster_id);
        let id = crate::embed::member_id(&peer_urls, &salt);
        if members.iter().any(|m| m.id == id) {
            return Err(EtcdError::MemberExist);
        }
        let member = cairnpb::Member {
            id,
            peer_urls,
            is_learner,
            ..cairnpb::Member::default()
        };
        let change = if is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let members = self
            .propose_member_change(change, id, Some(member.clone()))
            .await?;
        Ok((member, members))
    }

    /// MemberRemove. With `--strict-reconfig-check`, refused when the
    /// voters left would not have a quorum of started ones, or (as the
    /// leader sees it) of reachable ones ([`crate::reconfig`]).
    pub async fn member_remove(&self, id: u64) -> Result<Vec<cairnpb::Member>, EtcdError> {
        let Some(target) = self.machine().member(id) else {
            return Err(EtcdError::MemberNotFound);
        };
        if self.strict_reconfig_check() {
            crate::reconfig::may_remove_member(&self.reconfig_voters(), id, target.is_learner)?;
        }
        self.propose_member_change(ConfChangeType::RemoveNode, id, None)
            .await
    }

    /// MemberUpdate: new peer URLs for member `id`.
    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<Vec<cairnpb::Member>, EtcdError> {
        if peer_urls.is_empty() || !peer_urls.iter().all(|u| valid_url(u)) {
            return Err(EtcdError::MemberBadUrls);
        }
        let members = self.member_list();
        if !members.iter().any(|m| m.id == id) {
            return Err(EtcdError::MemberNotFound);
        }
        if members
            .iter()
            .any(|m| m.id != id && m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExist);
        }
        let update = cairnpb::Member {
            id,
            peer_urls,
            ..cairnpb::Member::default()
        };
        match self.propose(Command::MemberPeerUrls(update)).await? {
            Applied::Members(m) => Ok(m),
            _ => Err(EtcdError::Internal),
        }
    }

    /// MemberPromote: a learner becomes a voter, once its log has caught up.
    /// Decided by the leader (only it knows the learner's progress).
    pub async fn member_promote(&self, id: u64) -> Result<Vec<cairnpb::Member>, EtcdError> {
        let Some(target) = self.machine().member(id) else {
            return Err(EtcdError::MemberNotFound);
        };
        if !target.is_learner {
            return Err(EtcdError::MemberNotLearner);
        }
        let status = self.raft_status();
        if !status.is_leader {
            return Err(if status.leader == 0 {
                EtcdError::NoLeader
            } else {
                EtcdError::NotLeader
            });
        }
        let leader_match = status.matched.get(&status.id).copied().unwrap_or(0);
        let learner_match = status.matched.get(&id).copied().unwrap_or(0);
        if learner_match * 100 < leader_match * LEARNER_READY_PERCENT {
            return Err(EtcdError::LearnerNotReady);
        }
        if self.strict_reconfig_check() {
            crate::reconfig::may_promote_member(&self.reconfig_voters(), id)?;
        }
        self.propose_member_change(ConfChangeType::AddNode, id, None)
            .await
    }

    /// Announces this member's name, client URLs and zone to the cluster
    /// (once, after start, as etcd publishes its attributes).
    pub async fn publish_attributes(
        &self,
        name: String,
        client_urls: Vec<String>,
    ) -> Result<(), EtcdError> {
        let me = cairnpb::Member {
            id: self.identity().member_id,
            name,
            client_urls,
            zone: self.zone().to_string(),
            ..cairnpb::Member::default()
        };
        self.propose(Command::MemberAttributes(me)).await?;
        Ok(())
    }

    /// Maintenance.HashKV at `revision` (0 = current).
    pub async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, EtcdError> {
        let store = std::sync::Arc::clone(self.store());
        let (hash, compact_revision, _) =
            tokio::task::spawn_blocking(move || store.hash_kv(revision))
                .await
                .map_err(|_| EtcdError::Internal)??;
        // etcd's header carries the member's current revision, not the
        // hashed one.
        Ok(HashKvResponse {
            header: Some(self.header(0)),
            hash,
            compact_revision,
        })
    }

    /// Rotates the data key on every member (a replicated operation);
    /// returns the id now active.
    pub async fn rotate_data_key(&self) -> Result<u32, EtcdError> {
        let next = self
            .machine()
            .keys()
            .map(crate::storage::crypto::KeyHandle::next_key_id)
            .ok_or(EtcdError::Internal)?;
        match self.propose(Command::RotateDataKey(next)).await? {
            Applied::KeyRotated(id) => Ok(id),
            _ => Err(EtcdError::Internal),
        }
    }

    /// Maintenance.MoveLeader: hands the leadership to `target` (a voter);
    /// only the leader can. Returns once `target` leads.
    pub async fn move_leader(&self, target: u64) -> Result<(), EtcdError> {
        let Some(replication) = self.replication() else {
            return Err(EtcdError::BadLeaderTransferee);
        };
        let status = replication.raft.status();
        if !status.is_leader {
            return Err(EtcdError::NotLeader);
        }
        if !status.voters.contains(&target) {
            return Err(EtcdError::BadLeaderTransferee);
        }
        if target == status.id {
            return Ok(());
        }
        let mut changes = replication.raft.subscribe();
        let deadline = tokio::time::Instant::now() + replication.request_timeout;
        let mut retry = tokio::time::interval(Duration::from_millis(200));
        loop {
            if changes.borrow().leader == target {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Err(EtcdError::Timeout),
                _ = retry.tick() => {
                    // raft drops a transfer it cannot start (say, a step
                    // down in between); asking again is harmless.
                    if changes.borrow().is_leader {
                        replication.raft.send(crate::raft::Input::TransferLeader(target));
                    }
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(EtcdError::Stopped);
                    }
                }
            }
        }
    }

    /// Maintenance.Snapshot: a consistent copy of the replicated state
    /// (see [`crate::snapshot`] for the file format).
    pub async fn snapshot_file(&self) -> Result<Vec<u8>, EtcdError> {
        let machine = std::sync::Arc::clone(self.machine());
        let data = tokio::task::spawn_blocking(move || machine.consistent_snapshot())
            .await
            .map_err(|_| EtcdError::Internal)?
            .map_err(|e| {
                tracing::error!(error = %e, "snapshot failed");
                EtcdError::Internal
            })?;
        let (index, state) = data;
        let state = match self.machine().keys() {
            // Sealed with the member's master key: the file holds no plaintext.
            Some(keys) => {
                crate::snapshot::seal_state(keys.master(), index, &state).map_err(|e| {
                    tracing::error!(error = %e, "sealing the snapshot failed");
                    EtcdError::Internal
                })?
            }
            None => state,
        };
        Ok(crate::snapshot::encode_file(index, &state))
    }
}

#[cfg(test)]
mod tests {
    use super::valid_url;

    #[test]
    fn peer_urls_as_etcd_parses_them() {
        let table = [
            ("http://127.0.0.1:2380", true),
            ("http://127.0.0.1:2380/", true),
            ("http://node-1.example:2380", true),
            ("http://[::1]:2380", true),
            ("http://[::1", false),
            ("http://[::1]", false),
            ("http://[nonsense]:2380", false),
            ("http://::1:2380", false),
            ("http://127.0.0.1", false),
            ("http://127.0.0.1:", false),
            ("http://127.0.0.1:99999", false),
            ("http://127.0.0.1:23a0", false),
            ("http://:2380", false),
            ("http://127.0.0.1:2380/path", false),
            ("http://user@127.0.0.1:2380", false),
            ("http://127.0.0.1:2380?x=1", false),
            ("127.0.0.1:2380", false),
            ("unix://sock:1", false),
            ("", false),
        ];
        for (url, want) in table {
            assert_eq!(valid_url(url), want, "{url}");
        }
    }
}
