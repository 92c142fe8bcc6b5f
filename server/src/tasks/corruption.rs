//! The leader's periodic corruption check
//! (`--experimental-corrupt-check-time`).

use std::sync::Arc;
use std::time::Duration;

use super::Shutdown;
use crate::member::MaintenanceApi;

/// Runs the leader's corruption check ([`MaintenanceApi::check_corruption`]) every
/// `interval`.
pub async fn check_corruption(
    maintenance: Arc<MaintenanceApi>,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.recv() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = maintenance.check_corruption().await {
            tracing::warn!(error = %e, "corruption check failed");
        }
    }
}
