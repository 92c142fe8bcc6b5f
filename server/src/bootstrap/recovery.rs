//! Start-up checks and repairs of a member's data, run by [`crate::bootstrap`]
//! before the member joins raft:
//!
//! - [`initial_corrupt_check`]: etcd's `--experimental-initial-corrupt-check`
//!   (`CheckInitialHashKV`): this member's HashKV against its peers' at
//!   the same revision; a different hash at the same compacted revision
//!   means this member's data is not the cluster's, and it refuses to
//!   start rather than serve it.
//! - [`force_new_cluster`]: etcd's `--force-new-cluster`
//!   (`restartAsStandaloneNode`): disaster recovery, making this member the
//!   only voter of its cluster from the data it has.

use std::time::Duration;

use crate::machine::Machine;
use crate::raft::Dialer;

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
    for peer in machine.tables().members() {
        if peer.id == member_id {
            continue;
        }
        let peer_id = format!("{:x}", peer.id);
        let Some(url) = peer.peer_urls.first() else {
            continue;
        };
        let answer = tokio::time::timeout(timeout, crate::peer::hash_kv(dialer, url, revision))
            .await
            .unwrap_or(Err(crate::peer::Error::DeadlineExceeded));
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

/// etcd's `--force-new-cluster` (`restartAsStandaloneNode`): rewrites this
/// member's raft state so that it is the only voter of its cluster, keeping
/// every committed entry (so all data and revisions), its member id and
/// its cluster id. Run before the raft node starts, on a member that has
/// raft state (a fresh data directory is left alone, as etcd ignores the
/// flag without a WAL).
///
/// As etcd: entries past the commit index are discarded (no quorum will
/// ever commit them now); one conf change entry removing each other member
/// (of the configuration, the member table and conf changes committed but
/// not yet applied) is appended at the commit index's term and committed
/// at once, so applying them leaves a member table of this member alone.
/// The stored configuration is set to this member alone as well, so that
/// it elects itself at start. Doing it again changes nothing: the member
/// must be started with the flag once, then without it.
pub fn force_new_cluster(
    machine: &Machine,
    log: &crate::raft::RaftStorage,
    member_id: u64,
) -> Result<(), Error> {
    use ::raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType};
    use ::raft::Storage as _;
    use prost::Message as _;
    use protobuf::Message as _;

    let raft_error = crate::raft::Error::from;
    let state = log.initial_state().map_err(raft_error)?;
    let mut hard_state = state.hard_state;
    let commit = hard_state.commit;
    let last = log.last_index().map_err(raft_error)?;
    tracing::warn!(
        cluster_id = format!("{:x}", machine.tables().cluster_id()),
        local_member_id = format!("{member_id:x}"),
        commit_index = commit,
        discarded_uncommitted_entries = last.saturating_sub(commit),
        "forcing restart member"
    );

    // Everyone this member's state knows of: the configuration, the member
    // table, and members added by committed entries not yet applied (they
    // are applied before the removals below, which then undo them).
    let conf = &state.conf_state;
    let mut others: std::collections::BTreeSet<u64> = conf
        .voters
        .iter()
        .chain(&conf.learners)
        .chain(&conf.voters_outgoing)
        .chain(&conf.learners_next)
        .copied()
        .chain(machine.tables().members().iter().map(|m| m.id))
        .collect();
    let first_unapplied = (machine.applied_index() + 1).max(log.first_index().map_err(raft_error)?);
    if first_unapplied <= commit {
        let entries = log
            .entries(
                first_unapplied,
                commit + 1,
                None,
                ::raft::GetEntriesContext::empty(false),
            )
            .map_err(raft_error)?;
        for entry in entries {
            if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
                let mut cc = ConfChangeV2::default();
                if cc.merge_from_bytes(&entry.data).is_ok() {
                    others.extend(cc.changes.iter().map(|c| c.node_id));
                }
            }
        }
    }
    let was_learner = machine
        .tables()
        .member(member_id)
        .is_some_and(|m| m.is_learner)
        || conf.learners.contains(&member_id);
    others.remove(&member_id);

    let change_entry = |index: u64, kind: ConfChangeType, node: u64| -> Result<Entry, Error> {
        let mut single = ConfChangeSingle::default();
        single.set_change_type(kind);
        single.node_id = node;
        let mut change = ConfChangeV2::default();
        change.mut_changes().push(single);
        // No proposer waits for these: request id 0.
        change.context = cairn_proto::cairnpb::ConfChangeContext::default()
            .encode_to_vec()
            .into();
        let mut entry = Entry::default();
        entry.set_entry_type(EntryType::EntryConfChangeV2);
        entry.term = hard_state.term;
        entry.index = index;
        entry.data = change
            .write_to_bytes()
            .map_err(|e| crate::raft::Error::Decode("conf change", e.to_string()))?
            .into();
        Ok(entry)
    };
    let mut entries = Vec::new();
    for node in others {
        let index = commit + 1 + entries.len() as u64;
        entries.push(change_entry(index, ConfChangeType::RemoveNode, node)?);
    }
    if was_learner {
        // etcd adds itself when it is not a voter: a learner alone cannot lead.
        let index = commit + 1 + entries.len() as u64;
        entries.push(change_entry(index, ConfChangeType::AddNode, member_id)?);
    }
    if entries.is_empty() && last > commit {
        // Nothing to remove, but uncommitted entries to drop: an empty
        // entry replaces them (raft's own no-op).
        entries.push(Entry {
            term: hard_state.term,
            index: commit + 1,
            ..Default::default()
        });
    }
    if let Some(new_commit) = entries.last().map(|e| e.index) {
        hard_state.commit = new_commit;
        log.append(&entries, Some(&hard_state), true)?;
    }
    let alone = ::raft::eraftpb::ConfState {
        voters: vec![member_id],
        ..Default::default()
    };
    log.set_conf_state(&alone)?;
    Ok(())
}
