//! The Cluster API: the member table (etcd's Cluster service) and this
//! member's own attributes.
//!
//! Membership changes are raft conf changes carrying a
//! `cairnpb.ConfChangeContext` (the proposal id and the member record);
//! applying one updates raft's configuration and the replicated member
//! table in the same step. The safety checks are etcd's: with
//! `--strict-reconfig-check` (the default) a change must leave a quorum of
//! started and reachable voters ([`crate::reconfig`]), and a learner is
//! promoted only once its log has caught up (90% of the leader's).

use std::sync::Arc;

use cairn_proto::cairnpb;
use cairn_proto::etcdserverpb::Member as PbMember;
use raft::eraftpb::ConfChangeType;

use super::Proposer;
use crate::auth::Caller;
use crate::entry::Command;
use crate::error::EtcdError;
use crate::machine::Applied;
use crate::metrics::server::PromoteMetrics;

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
/// number, with no path (a trailing `/` aside), query or user; or the same
/// with `https://`.
fn valid_url(url: &str) -> bool {
    let Some(host_port) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
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

/// What the Cluster service (and the start-up publication of this
/// member's name) call.
#[derive(Debug)]
pub struct ClusterApi {
    /// Conf changes and member updates go through it.
    proposer: Arc<Proposer>,
    /// `--strict-reconfig-check`: refuse membership changes that would
    /// leave too few started or reachable voters ([`crate::reconfig`]).
    strict_reconfig_check: bool,
    /// This member's zone (`--zone`), published with its name.
    zone: String,
    /// etcd's learner promotion counters (set once at start; none in unit
    /// tests).
    metrics: std::sync::OnceLock<PromoteMetrics>,
}

impl ClusterApi {
    /// The Cluster API over `proposer`.
    pub fn new(proposer: Arc<Proposer>, strict_reconfig_check: bool, zone: String) -> Self {
        Self {
            proposer,
            strict_reconfig_check,
            zone,
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Counts learner promotions in `metrics` from now on.
    pub fn set_metrics(&self, metrics: PromoteMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// The shared write path (headers, linearizable reads).
    pub fn proposer(&self) -> &Arc<Proposer> {
        &self.proposer
    }

    /// This member's zone.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The member table.
    pub fn member_list(&self) -> Vec<cairnpb::Member> {
        self.proposer.machine().tables().members()
    }

    /// What this member knows of the voters, for the
    /// `--strict-reconfig-check` rules: which started (published their
    /// name: etcd counts only those), and, on the leader, which it heard
    /// from within an election timeout.
    fn reconfig_voters(&self) -> crate::reconfig::Voters {
        let status = self.proposer.raft_status();
        crate::reconfig::Voters {
            me: self.proposer.identity().member_id,
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
        caller: &Caller,
    ) -> Result<(cairnpb::Member, Vec<cairnpb::Member>), EtcdError> {
        self.proposer.require_admin(caller).await?;
        if peer_urls.is_empty() || !peer_urls.iter().all(|u| valid_url(u)) {
            return Err(EtcdError::MemberBadUrls);
        }
        if self.strict_reconfig_check {
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
        let salt = format!("{:x}{now}", self.proposer.identity().cluster_id);
        let id = crate::bootstrap::ids::member_id(&peer_urls, &salt);
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
            .proposer
            .propose_conf_change(change, id, Some(member.clone()))
            .await?;
        Ok((member, members))
    }

    /// MemberRemove. With `--strict-reconfig-check`, refused when the
    /// voters left would not have a quorum of started ones, or (as the
    /// leader sees it) of reachable ones ([`crate::reconfig`]).
    pub async fn member_remove(
        &self,
        id: u64,
        caller: &Caller,
    ) -> Result<Vec<cairnpb::Member>, EtcdError> {
        self.proposer.require_admin(caller).await?;
        let Some(target) = self.proposer.machine().tables().member(id) else {
            return Err(EtcdError::MemberNotFound);
        };
        if self.strict_reconfig_check {
            crate::reconfig::may_remove_member(&self.reconfig_voters(), id, target.is_learner)?;
        }
        self.proposer
            .propose_conf_change(ConfChangeType::RemoveNode, id, None)
            .await
    }

    /// MemberUpdate: new peer URLs for member `id`.
    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
        caller: &Caller,
    ) -> Result<Vec<cairnpb::Member>, EtcdError> {
        self.proposer.require_admin(caller).await?;
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
        match self
            .proposer
            .propose(Command::MemberPeerUrls(update))
            .await?
        {
            Applied::Members(m) => Ok(m),
            _ => Err(EtcdError::Internal),
        }
    }

    /// MemberPromote: a learner becomes a voter, once its log has caught up.
    /// Decided by the leader (only it knows the learner's progress).
    pub async fn member_promote(
        &self,
        id: u64,
        caller: &Caller,
    ) -> Result<Vec<cairnpb::Member>, EtcdError> {
        self.proposer.require_admin(caller).await?;
        let Some(target) = self.proposer.machine().tables().member(id) else {
            return Err(EtcdError::MemberNotFound);
        };
        if !target.is_learner {
            return Err(EtcdError::MemberNotLearner);
        }
        let status = self.proposer.raft_status();
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
            if let Some(m) = self.metrics.get() {
                let reason = EtcdError::LearnerNotReady.to_string();
                m.failures.with_label_values(&[&reason]).inc();
            }
            return Err(EtcdError::LearnerNotReady);
        }
        if self.strict_reconfig_check {
            crate::reconfig::may_promote_member(&self.reconfig_voters(), id)?;
        }
        let members = self
            .proposer
            .propose_conf_change(ConfChangeType::AddNode, id, None)
            .await?;
        if let Some(m) = self.metrics.get() {
            m.successes.inc();
        }
        Ok(members)
    }

    /// Announces this member's name, client URLs and zone to the cluster
    /// (once, after start, as etcd publishes its attributes).
    pub async fn publish_attributes(
        &self,
        name: String,
        client_urls: Vec<String>,
    ) -> Result<(), EtcdError> {
        let me = cairnpb::Member {
            id: self.proposer.identity().member_id,
            name,
            client_urls,
            zone: self.zone.clone(),
            ..cairnpb::Member::default()
        };
        self.proposer.propose(Command::MemberAttributes(me)).await?;
        Ok(())
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
