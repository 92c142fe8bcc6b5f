//! Catching up unsynced watchers from history (etcd's syncWatchersLoop).

use std::sync::Arc;
use std::time::Duration;

use super::Shutdown;
use crate::mvcc::Store;

/// How often unsynced watchers are caught up even without a wake-up.
const WATCH_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Records read per catch-up round: bounds how long a round holds the store's
/// read lock (and so delays writers).
const WATCH_SYNC_BATCH: usize = 1000;

/// Catches up unsynced watchers from history until the member stops.
pub async fn sync_watchers(store: Arc<Store>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(WATCH_SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.recv() => return,
            _ = store.watch_hub().wait_for_work() => {}
            _ = tick.tick() => {}
        }
        // Nothing to catch up (the usual case): no round on the blocking pool.
        while store.watch_hub().has_unsynced() {
            let round = Arc::clone(&store);
            match tokio::task::spawn_blocking(move || round.sync_watchers(WATCH_SYNC_BATCH)).await {
                Ok(Ok(outcome)) if outcome.unsynced > 0 && outcome.progressed => continue,
                Ok(Ok(_)) => break,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "watch catch-up failed");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "watch catch-up task failed");
                    break;
                }
            }
        }
    }
}
