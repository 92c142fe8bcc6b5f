//! Snapshots and the log's length: raft's `Storage` for the node (the log
//! from [`RaftStorage`], snapshots from the state machine), installing a
//! leader's snapshot, and compacting the log every `--snapshot-count`
//! applied entries.

use std::sync::Arc;

use ::raft::eraftpb::{Entry, Snapshot};
use ::raft::{GetEntriesContext, RaftState, Storage};

use super::{machine_failed, Node, Transport};
use crate::raft::{Error, RaftStorage, StateMachine};

/// raft's `Storage`: the log from [`RaftStorage`], snapshots from the state
/// machine (taken on the raft thread, so exactly at the applied index).
pub(super) struct NodeStorage<M> {
    /// The log, hard state and conf state.
    pub(super) log: Arc<RaftStorage>,
    /// Where snapshot data comes from.
    pub(super) machine: Arc<M>,
}

impl<M: StateMachine> Storage for NodeStorage<M> {
    fn initial_state(&self) -> ::raft::Result<RaftState> {
        self.log.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> ::raft::Result<Vec<Entry>> {
        self.log.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> ::raft::Result<u64> {
        self.log.term(idx)
    }

    fn first_index(&self) -> ::raft::Result<u64> {
        self.log.first_index()
    }

    fn last_index(&self) -> ::raft::Result<u64> {
        self.log.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> ::raft::Result<Snapshot> {
        let applied = self.machine.applied_index();
        if applied < request_index {
            return Err(::raft::Error::Store(
                ::raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let data = self.machine.snapshot().map_err(|e| {
            tracing::error!(error = %e, "cannot take a snapshot of the state machine");
            ::raft::Error::Store(::raft::StorageError::SnapshotTemporarilyUnavailable)
        })?;
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = applied;
        meta.term = self.log.term(applied)?;
        meta.set_conf_state(self.log.initial_state()?.conf_state);
        snapshot.data = data.into();
        tracing::info!(
            index = applied,
            bytes = snapshot.data.len(),
            "snapshot taken for a member that is behind"
        );
        Ok(snapshot)
    }
}

impl<T: Transport, M: StateMachine> Node<T, M> {
    /// Installs a snapshot from the leader: the state machine first, then
    /// the log. A crash in between leaves the state ahead of the log, which
    /// replay tolerates because applying is idempotent by index.
    pub(super) fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), Error> {
        let meta = snapshot.get_metadata();
        tracing::info!(
            index = meta.index,
            term = meta.term,
            bytes = snapshot.data.len(),
            "installing a snapshot from the leader"
        );
        let in_progress = self.metrics.as_ref().map(|m| &m.snapshot_apply_in_progress);
        if let Some(g) = in_progress {
            g.set(1);
        }
        let installed = self
            .machine
            .restore(&snapshot.data)
            .map_err(machine_failed)
            .and_then(|()| self.log.apply_snapshot(meta));
        if let Some(g) = in_progress {
            g.set(0);
        }
        installed
    }

    /// Compacts the log once `snapshot_count` entries were applied past the
    /// last compaction, keeping `catch_up_entries` for slow followers.
    pub(super) fn maybe_compact_log(&mut self) -> Result<(), Error> {
        let applied = self.machine.applied_index();
        let first = self.log.first_index()?;
        if applied < first + self.config.snapshot_count + self.config.catch_up_entries {
            return Ok(());
        }
        let to = applied - self.config.catch_up_entries;
        // Never past what raft itself has applied.
        let to = to.min(self.raw.raft.raft_log.applied);
        if to > first {
            self.log.compact(to)?;
            tracing::debug!(to, "raft log compacted");
        }
        Ok(())
    }
}
