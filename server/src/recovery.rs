//! Start-up checks and repairs of a member's data, run by [`crate::embed`]
//! before the member joins raft:
//!
//! - [`initial_corrupt_check`]: etcd's `--experimental-initial-corrupt-check`
//!   (`CheckInitialHashKV`): this member's HashKV against its peers' at
//!   the same revision; a different hash at the same compacted revision
//!   means this member's data is not the cluster's, and it refuses to
//!   start rather than serve it.

use std::time::Duration;

use crate::machine::Machine;
use crate::raft::transport::Dialer;

/// Why a start-up check or repair failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--experimental-initial-corrupt-check` found a peer whose hash at
    /// this member's revision differs (etcd's text).
    #[error("{0:x} found data inconsistency with peers")]
    Inconsistent(u64),
    /// This member's own hash could not be computed.
    #[error("{member:x} failed to fetch hash ({source})")]
    Hash {
        /// This member's id.
        member: u64,
        /// Why.
        source: crate::mvcc::Error,
    },
    /// A blocking task failed.
    #[error("start-up check task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The raft log could not be read or rewritten.
    #[error(transparent)]
    Raft(#[from] crate::raft::Error),
    /// The state machine could not be updated.
    #[error(transparent)]
    Machine(#[from] crate::machine::Error),
}

/// etcd's initial corruption check: asks every peer in the member table for
/// its HashKV at this member's current revision. A peer with the same
/// compacted revision and another hash is a mismatch, and any mismatch
/// refuses the start. Peers that do not answer within `timeout`, are
/// behind, or compacted elsewhere are skipped with a warning (as etcd
/// does: the check proves only what the reachable peers can).
pub async fn initial_corrupt_check(
    machine: &Machine,
    member_id: u64,
    dialer: &Dialer,
    timeout: Duration,
) -> Result<(), Error> {
    tracing::info!(
        local_member_id = format!("{member_id:x}"),
        ?timeout,
        "starting initial corruption check"
    );
    let store = std::sync::Arc::clone(machine.store());
    let (hash, compact_revision, revision) = tokio::task::spawn_blocking(move || store.hash_kv(0))
        .await?
        .map_err(|source| Error::Hash {
            member: member_id,
            source,
        })?;
    let mut mismatches = 0;
    for peer in machine.members() {
        if peer.id == member_id {
            continue;
        }
        let peer_id = format!("{:x}", peer.id);
        let Some(url) = peer.peer_urls.first() else {
            continue;
        };
        let answer = tokio::time::timeout(
            timeout,
            crate::raft::transport::peer_hash_kv(dialer, url, revision),
        )
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
        let theirs = match answer {
            Ok(theirs) => theirs,
            Err(e) => {
                tracing::warn!(
                    local_member_id = format!("{member_id:x}"),
                    remote_peer_id = peer_id,
                    remote_peer_endpoint = %url,
                    error = %e,
                    "failed hash kv request; skipping the peer in the initial corruption check"
                );
                continue;
            }
        };
        if theirs.hash == hash {
            continue;
        }
        if theirs.compact_revision == compact_revision {
            tracing::warn!(
                local_member_id = format!("{member_id:x}"),
                local_member_revision = revision,
                local_member_compact_revision = compact_revision,
                local_member_hash = hash,
                remote_peer_id = peer_id,
                remote_peer_endpoint = %url,
                remote_peer_compact_revision = theirs.compact_revision,
                remote_peer_hash = theirs.hash,
                "found different hash values from remote peer"
            );
            mismatches += 1;
        } else {
            tracing::warn!(
                local_member_id = format!("{member_id:x}"),
                local_member_compact_revision = compact_revision,
                remote_peer_id = peer_id,
                remote_peer_compact_revision = theirs.compact_revision,
                "found different compact revision values from remote peer"
            );
        }
    }
    if mismatches > 0 {
        return Err(Error::Inconsistent(member_id));
    }
    tracing::info!(
        local_member_id = format!("{member_id:x}"),
        "initial corruption checking passed; no corruption"
    );
    Ok(())
}
