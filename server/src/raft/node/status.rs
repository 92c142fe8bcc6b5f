//! [`RaftStatus`]: what the rest of the member may know about raft, and how
//! the raft thread publishes it after every round of its loop.

use std::collections::{BTreeMap, BTreeSet};

use ::raft::StateRole;

use super::{Node, Transport};
use crate::raft::{RequestError, StateMachine};

/// What the rest of the member may know about raft, published after every
/// round of the loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// This member's id.
    pub id: u64,
    /// The leader this member knows (0: none).
    pub leader: u64,
    /// The current term.
    pub term: u64,
    /// The highest log index known to be committed.
    pub commit: u64,
    /// The last applied index.
    pub applied: u64,
    /// This member's role.
    pub is_leader: bool,
    /// Whether this member is a learner.
    pub is_learner: bool,
    /// Voters of the current configuration.
    pub voters: BTreeSet<u64>,
    /// Learners of the current configuration.
    pub learners: BTreeSet<u64>,
    /// On the leader: each member's matched index (what it has in its log).
    pub matched: BTreeMap<u64, u64>,
    /// On the leader: members heard from within the last election timeout.
    pub active: BTreeSet<u64>,
    /// This member is the only voter, leads, and has committed an entry of
    /// its term: raft would answer a ReadIndex at once with `commit`
    /// (raft-rs's singleton case), so a linearizable read may take `commit`
    /// from this status instead of a round of the loop. Cleared when the
    /// loop ends.
    pub reads_alone: bool,
}

impl<T: Transport, M: StateMachine> Node<T, M> {
    /// Publishes the status (and the leadership, when it changed); fails
    /// the reads in flight when the leader changed under them.
    pub(super) fn publish_status(&mut self) {
        let status = self.current_status();
        let leadership = (status.leader, status.term);
        self.leadership.send_if_modified(|l| {
            if *l == leadership {
                false
            } else {
                *l = leadership;
                true
            }
        });
        if status.leader != self.last_leader {
            crate::raft::log::leader_changed(
                status.id,
                self.last_leader,
                status.leader,
                status.term,
            );
            if self.last_leader != 0 {
                self.reads.fail_all(RequestError::LeaderChanged);
            }
            // A new term of leadership starts its heartbeats afresh (etcd
            // resets its detector on becoming leader).
            self.heartbeats.clear();
            // etcd counts each leader that becomes known, not its loss.
            if status.leader != 0 {
                if let Some(m) = &self.metrics {
                    m.leader_changes.inc();
                }
            }
            self.last_leader = status.leader;
        }
        self.status.send_if_modified(|s| {
            if *s == status {
                false
            } else {
                *s = status;
                true
            }
        });
    }

    /// The status as raft and the state machine describe it now.
    fn current_status(&mut self) -> RaftStatus {
        let reads_alone = self.reads_alone();
        let raft = &self.raw.raft;
        let conf = raft.prs().conf();
        let is_leader = raft.state == StateRole::Leader;
        let (matched, active) = if is_leader {
            let mut matched = BTreeMap::new();
            let mut active = BTreeSet::new();
            let window = self.config.heartbeat * self.config.election_ticks as u32;
            for (id, pr) in raft.prs().iter() {
                matched.insert(*id, pr.matched);
                let heard = self.heard.get(id).is_some_and(|t| t.elapsed() < window);
                if pr.recent_active || heard || *id == raft.id {
                    active.insert(*id);
                }
            }
            (matched, active)
        } else {
            Default::default()
        };
        RaftStatus {
            id: raft.id,
            leader: raft.leader_id,
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.machine.applied_index(),
            is_leader,
            is_learner: conf.learners().contains(&raft.id),
            voters: conf.voters().ids().iter().collect(),
            learners: conf.learners().iter().copied().collect(),
            matched,
            active,
            reads_alone,
        }
    }

    /// Publishes a commit index that advanced, before the entries up to it
    /// are applied (and their proposers answered): a lone voter's read
    /// takes its index from the status, and must never get one below a
    /// write already acknowledged. Until the round's full status follows,
    /// `applied < commit` sends reads through the loop.
    pub(super) fn publish_commit(&mut self) {
        let commit = self.raw.raft.raft_log.committed;
        self.status.send_if_modified(|s| {
            if s.commit < commit {
                s.commit = commit;
                true
            } else {
                false
            }
        });
    }

    /// Whether this member is the only voter, leads, and has committed an
    /// entry of its term (see [`RaftStatus::reads_alone`]); the last is
    /// read from the log once per term.
    fn reads_alone(&mut self) -> bool {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader || !raft.prs().is_singleton() {
            return false;
        }
        if self.committed_in_term != raft.term && raft.commit_to_current_term() {
            self.committed_in_term = raft.term;
        }
        self.committed_in_term == raft.term
    }
}
