//! etcd's `--strict-reconfig-check` (on by default): a membership change
//! that would leave the cluster without a quorum of started, reachable
//! voters is refused before it is proposed. A conf change accepted into
//! the raft log applies on every member forever, so this is the only
//! place such a change can be stopped.
//!
//! Two notions, as in etcd's `server.go` (`mayAddMember`,
//! `mayRemoveMember`, `mayPromoteMember`):
//! - *started*: a voter that has published its name (the member table
//!   says so; a member listed in `--initial-cluster` that never ran has
//!   not). Too few: "re-configuration failed due to not enough started
//!   members".
//! - *active*: a voter the deciding member has heard from within an
//!   election timeout (etcd: connected for the last 5 s). Only a raft
//!   leader knows this in Cairn (peers talk to the leader only), so a
//!   follower checks the started voters alone. Too few: "unhealthy
//!   cluster".

use std::collections::BTreeSet;

use crate::error::EtcdError;

/// What the member deciding a membership change knows of the voters.
#[derive(Debug, Clone, Default)]
pub struct Voters {
    /// This member's id.
    pub me: u64,
    /// Each voting member's id, and whether it has started (published its
    /// name).
    pub started: Vec<(u64, bool)>,
    /// Voters heard from recently, this member included; `None` when this
    /// member cannot tell (it is not the leader).
    pub active: Option<BTreeSet<u64>>,
}

impl Voters {
    /// How many voters have started, and how many voters there are,
    /// leaving out `except`.
    fn started_of(&self, except: Option<u64>) -> (usize, usize) {
        let counted = self.started.iter().filter(|(id, _)| Some(*id) != except);
        let total = counted.clone().count();
        (counted.filter(|(_, s)| *s).count(), total)
    }

    /// How many voters are active (None: unknown).
    fn active_count(&self) -> Option<usize> {
        let active = self.active.as_ref()?;
        Some(
            self.started
                .iter()
                .filter(|(id, _)| *id == self.me || active.contains(id))
                .count(),
        )
    }

    fn is_active(&self, id: u64) -> Option<bool> {
        self.active
            .as_ref()
            .map(|a| id == self.me || a.contains(&id))
    }
}

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// etcd's `mayAddMember`: a new voter needs a quorum of started voters in
/// the configuration it makes (except the second member of a one-member
/// cluster, how every cluster grows); any new member needs this member to
/// be in touch with every voter.
pub fn may_add_member(voters: &Voters, is_learner: bool) -> Result<(), EtcdError> {
    if !is_learner {
        let (started, total) = voters.started_of(None);
        let growing_from_one = started == 1 && total == 1;
        if !growing_from_one && started < quorum(total + 1) {
            tracing::warn!(
                started,
                voters = total,
                "rejecting member add request; not enough healthy members"
            );
            return Err(EtcdError::MemberNotEnoughStarted);
        }
    }
    if let Some(active) = voters.active_count() {
        if active < voters.started.len() {
            tracing::warn!(
                active,
                voters = voters.started.len(),
                "rejecting member add request; local member has not been connected to all peers, reconfigure breaks active quorum"
            );
            return Err(EtcdError::Unhealthy);
        }
    }
    Ok(())
}

/// etcd's `mayRemoveMember`: the voters left need a quorum of started
/// ones, and (unless the member removed is down already) a quorum of
/// active ones. Removing a learner is always allowed.
pub fn may_remove_member(voters: &Voters, id: u64, is_learner: bool) -> Result<(), EtcdError> {
    if is_learner {
        return Ok(());
    }
    let (started, left) = voters.started_of(Some(id));
    if started < quorum(left) {
        tracing::warn!(
            member = format!("{id:x}"),
            started,
            voters_left = left,
            "rejecting member remove request; not enough healthy members"
        );
        return Err(EtcdError::MemberNotEnoughStarted);
    }
    // A member that is down is no part of the active quorum.
    if id != voters.me && voters.is_active(id) == Some(false) {
        return Ok(());
    }
    if let Some(active) = voters.active_count() {
        let total = voters.started.len();
        if active.saturating_sub(1) < 1 + total.saturating_sub(1) / 2 {
            tracing::warn!(
                member = format!("{id:x}"),
                active,
                voters = total,
                "rejecting member remove request; local member has not been connected to all peers, reconfigure breaks active quorum"
            );
            return Err(EtcdError::Unhealthy);
        }
    }
    Ok(())
}

/// etcd's `mayPromoteMember` (after the learner's log was found in
/// sync): the configuration with the learner as a voter, counting it as
/// started, needs a quorum of started voters.
pub fn may_promote_member(voters: &Voters, id: u64) -> Result<(), EtcdError> {
    let (started, total) = voters.started_of(Some(id));
    if started + 1 < quorum(total + 1) {
        tracing::warn!(
            member = format!("{id:x}"),
            started,
            voters = total,
            "rejecting member promote request; not enough healthy members"
        );
        return Err(EtcdError::MemberNotEnoughStarted);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Voters 1..=n, `started` of them started (the lowest ids), and, when
    /// given, the active ones; this member is 1.
    fn voters(n: u64, started: u64, active: Option<&[u64]>) -> Voters {
        Voters {
            me: 1,
            started: (1..=n).map(|id| (id, id <= started)).collect(),
            active: active.map(|a| a.iter().copied().collect()),
        }
    }

    #[test]
    fn add_needs_started_quorum_and_every_voter_active() {
        let table: &[(Voters, bool, Result<(), EtcdError>)] = &[
            // The second member of a one-member cluster.
            (voters(1, 1, Some(&[1])), false, Ok(())),
            (voters(3, 3, Some(&[1, 2, 3])), false, Ok(())),
            // 3 of 4 started is a quorum of 4; 2 of 4 is not.
            (voters(3, 3, None), false, Ok(())),
            (
                voters(3, 2, None),
                false,
                Err(EtcdError::MemberNotEnoughStarted),
            ),
            // A learner does not count towards the quorum...
            (voters(3, 2, None), true, Ok(())),
            // ...but this member must still reach every voter.
            (voters(3, 3, Some(&[1, 2])), true, Err(EtcdError::Unhealthy)),
            (
                voters(3, 3, Some(&[1, 2])),
                false,
                Err(EtcdError::Unhealthy),
            ),
        ];
        for (v, learner, want) in table {
            assert_eq!(
                &may_add_member(v, *learner),
                want,
                "{v:?} learner={learner}"
            );
        }
    }

    #[test]
    fn remove_needs_started_and_active_quorum_of_the_rest() {
        // 3 voters, 2 started: removing a started one leaves 1 of 2.
        assert_eq!(
            may_remove_member(&voters(3, 2, None), 2, false),
            Err(EtcdError::MemberNotEnoughStarted)
        );
        // Removing the one that never started is fine.
        assert_eq!(may_remove_member(&voters(3, 2, None), 3, false), Ok(()));
        // 3 voters, 3 down: removing a live one leaves 1 active of 2.
        assert_eq!(
            may_remove_member(&voters(3, 3, Some(&[1, 2])), 2, false),
            Err(EtcdError::Unhealthy)
        );
        // Removing the dead one is fine.
        assert_eq!(
            may_remove_member(&voters(3, 3, Some(&[1, 2])), 3, false),
            Ok(())
        );
        // Learners always go.
        assert_eq!(may_remove_member(&voters(3, 1, None), 9, true), Ok(()));
        // This member removing itself from a healthy three.
        assert_eq!(
            may_remove_member(&voters(3, 3, Some(&[1, 2, 3])), 1, false),
            Ok(())
        );
    }

    #[test]
    fn promote_counts_the_learner_as_started() {
        // Learner 9 (not among the voters yet): 3 voters, 2 started plus
        // the learner is 3 of 4.
        assert_eq!(may_promote_member(&voters(3, 2, None), 9), Ok(()));
        // 5 voters, 2 started plus the learner is 3 of 6.
        assert_eq!(
            may_promote_member(&voters(5, 2, None), 9),
            Err(EtcdError::MemberNotEnoughStarted)
        );
    }
}
