//! Whether the member serves: until it stops, or until its raft loop fails.

use std::sync::Arc;

use super::Shutdown;
use crate::member::Proposer;
use crate::raft::Ending;

/// Resolves once `member`'s raft loop has failed; never for a member
/// without raft, or whose raft thread ended otherwise.
pub async fn raft_failed(proposer: &Proposer) {
    let mut ending = proposer.replication().raft.ending();
    if ending.wait_for(|e| *e == Ending::Failed).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Keeps the member serving and the gRPC health service SERVING until the
/// member stops or its raft loop fails; then ends every long-lived client
/// stream ([`Proposer::begin_stop`]: requests answer "server stopped") and
/// reports NOT_SERVING. A failed member stops answering at once: it can no
/// longer apply entries, so it must not look alive with stale state
/// meanwhile. The `cairn` binary exits then (`Handle::failed`), as etcd
/// does.
pub async fn serve_until_stopped(
    proposer: Arc<Proposer>,
    health: tonic_health::server::HealthReporter,
    mut shutdown: Shutdown,
) {
    tokio::select! {
        () = raft_failed(&proposer) => {
            tracing::error!("the member's raft loop failed: it stops serving");
        }
        () = shutdown.recv() => {}
    }
    proposer.begin_stop();
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
}
