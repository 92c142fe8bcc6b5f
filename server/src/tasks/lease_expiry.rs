//! The leader's lease loop: every [`CHECK_INTERVAL`], revoke expired leases
//! and take due checkpoints, each as an ordinary write through the Lease API
//! (the operations a raft leader would propose).

use std::sync::Arc;

use super::Shutdown;
use crate::lease::CHECK_INTERVAL;
use crate::member::LeaseApi;

/// Runs the lease loop of `lease` until the member stops. A write in
/// progress finishes before it returns.
pub async fn run(lease: Arc<LeaseApi>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.recv() => break,
            _ = tick.tick() => {}
        }
        lease.revoke_expired_leases().await;
        lease.checkpoint_due_leases().await;
    }
    tracing::debug!("lease task stopped");
}
