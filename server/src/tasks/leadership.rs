//! Lease expiries follow the raft leader.

use std::sync::Arc;

use super::Shutdown;
use crate::member::Member;

/// Promotes the lessor when this member becomes the leader and demotes it
/// when it stops being one: only the leader keeps lease expiries.
pub async fn follow_leadership(member: Arc<Member>, mut shutdown: Shutdown) {
    let Some(replication) = member.replication() else {
        return;
    };
    let mut status = replication.raft.subscribe();
    let mut leading = member.lessor().is_primary();
    loop {
        let is_leader = status.borrow_and_update().is_leader;
        if is_leader != leading {
            leading = is_leader;
            if leading {
                tracing::info!("became the leader: lease expiries start here");
                member.lessor().promote();
            } else {
                tracing::info!("no longer the leader: lease expiries are the leader's");
                member.lessor().demote();
            }
        }
        tokio::select! {
            () = shutdown.recv() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}
