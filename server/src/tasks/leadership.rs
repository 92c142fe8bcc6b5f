//! Lease expiries follow the raft leader.

use std::sync::Arc;

use super::Shutdown;
use crate::member::{LeaseApi, Proposer};

/// Promotes the lessor when this member becomes the leader and demotes it
/// when it stops being one: only the leader keeps lease expiries.
pub async fn follow_leadership(
    proposer: Arc<Proposer>,
    lease: Arc<LeaseApi>,
    mut shutdown: Shutdown,
) {
    // (leader, term) changes only when either does: the whole status
    // changes with every round of a busy leader (commit, applied, matched),
    // and waking this task for each of those cost a wake-up per round.
    let raft = &proposer.replication().raft;
    let id = raft.status().id;
    let mut leadership = raft.leadership();
    let mut leading = lease.lessor().leader_only().is_primary();
    loop {
        let is_leader = leadership.borrow_and_update().0 == id;
        if is_leader != leading {
            leading = is_leader;
            if leading {
                tracing::info!("became the leader: lease expiries start here");
                lease.lessor().leader_only().promote();
            } else {
                tracing::info!("no longer the leader: lease expiries are the leader's");
                lease.lessor().leader_only().demote();
            }
        }
        tokio::select! {
            () = shutdown.recv() => return,
            changed = leadership.changed() => if changed.is_err() { return },
        }
    }
}
