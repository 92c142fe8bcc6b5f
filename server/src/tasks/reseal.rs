//! Re-sealing after a data key rotation.

use std::sync::Weak;
use std::time::Duration;

use prometheus::IntCounter;

use super::Shutdown;
use crate::storage::crypto::{KeyHandle, SealedElsewhere};

/// Records re-sealed per round: with [`RESEAL_PAUSE`], bounds the
/// background re-sealing after a key rotation to ~2,000 records a second.
const RESEAL_BATCH: usize = 200;
/// The pause between rounds.
const RESEAL_PAUSE: Duration = Duration::from_millis(100);

/// After a data key rotation, re-seals old records at a bounded rate, then
/// drops the keys nothing needs any more. Survives a crash at any point:
/// it starts over from whatever is still sealed with an old key.
/// Each record re-sealed is counted in `resealed`
/// (cairn_encryption_resealed_records_total). `log` is the raft log, whose
/// entries are sealed with the same keys (held weakly: the member's stop
/// closes it, not this task).
pub async fn reseal(
    keys: KeyHandle,
    log: Weak<dyn SealedElsewhere>,
    resealed: Option<IntCounter>,
    mut shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            () = shutdown.recv() => return,
            () = tokio::time::sleep(RESEAL_PAUSE) => {}
        }
        let Some(log) = log.upgrade() else {
            return;
        };
        let keys = keys.clone();
        let round =
            tokio::task::spawn_blocking(move || keys.reseal_round(RESEAL_BATCH, log.as_ref()))
                .await;
        match round {
            Ok(Ok(count)) => {
                if let Some(c) = &resealed {
                    c.inc_by(count as u64);
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "re-sealing failed; will retry"),
            Err(e) => tracing::error!(error = %e, "re-sealing task failed"),
        }
    }
}
