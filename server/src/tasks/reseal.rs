//! Re-sealing after a data key rotation.

use std::sync::Arc;
use std::time::Duration;

use super::Shutdown;
use crate::mvcc::Store;

/// Records re-sealed per round: with [`RESEAL_PAUSE`], bounds the
/// background re-sealing after a key rotation to ~2,000 records a second.
const RESEAL_BATCH: usize = 200;
/// The pause between rounds.
const RESEAL_PAUSE: Duration = Duration::from_millis(100);

/// After a data key rotation, re-seals old records at a bounded rate, then
/// drops the keys nothing needs any more. Survives a crash at any point:
/// it starts over from whatever is still sealed with an old key.
pub async fn reseal(store: Arc<Store>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.recv() => return,
            () = tokio::time::sleep(RESEAL_PAUSE) => {}
        }
        let store = Arc::clone(&store);
        let round = tokio::task::spawn_blocking(move || {
            let Some(sealed) = store.engine().sealed() else {
                return Ok(false);
            };
            if sealed.key_ids().len() <= 1 {
                return Ok(false);
            }
            if sealed.reseal_step(RESEAL_BATCH)? == 0 {
                sealed.drop_unused_keys()?;
            }
            Ok::<bool, crate::storage::Error>(true)
        })
        .await;
        match round {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "re-sealing failed; will retry"),
            Err(e) => tracing::error!(error = %e, "re-sealing task failed"),
        }
    }
}
