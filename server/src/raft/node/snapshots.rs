//! Snapshots and the log's length: raft's `Storage` for the node (the log
//! from [`RaftStorage`], snapshots from the state machine, built in
//! `snapshot_build`), installing a
//! leader's snapshot, and compacting the log every `--snapshot-count`
//! applied entries.

use std::sync::Arc;

use ::raft::eraftpb::{Entry, Snapshot};
use ::raft::{GetEntriesContext, RaftState, Storage};

use super::snapshot_build::SnapshotBuild;
use super::{machine_failed, Node, Transport};
use crate::raft::{Error, RaftStorage, StateMachine};

/// raft's `Storage`: the log from [`RaftStorage`], snapshots from the state
/// machine (built beside the raft thread, see [`SnapshotBuild`]).
pub(super) struct NodeStorage<M> {
    /// The log, hard state and conf state.
    pub(super) log: Arc<RaftStorage>,
    /// Where snapshot data comes from.
    pub(super) machine: Arc<M>,
    /// The snapshot being built for a member that is behind.
    pub(super) build: SnapshotBuild,
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
        // Any other error would be fatal to raft-rs: a build that failed
        // is logged, and raft asks again.
        self.build
            .request(request_index, &self.log, &self.machine)
            .ok_or(::raft::Error::Store(
                ::raft::StorageError::SnapshotTemporarilyUnavailable,
            ))
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

    /// Compacts the log by count, as etcd does: once `snapshot_count`
    /// entries were applied past the last compaction, keeping
    /// `catch_up_entries` for slow followers. And by size: once the log
    /// holds twice [`CATCH_UP_BYTES`], the entries older than the newest
    /// [`CATCH_UP_BYTES`] go if they are applied and, on a leader, every
    /// follower has them.
    ///
    /// Why by size: 5,000 catch-up entries of 100 KiB puts are half a
    /// gigabyte of log files, read back at every restart. Why twice: each
    /// compaction first syncs the state machine's engine, so they come one
    /// per [`CATCH_UP_BYTES`] of entries, not one per round. Small entries
    /// never meet the size rule (a [`CATCH_UP_SCAN`] of them holds less
    /// than [`CATCH_UP_BYTES`]), so for them the log is etcd's.
    ///
    /// Either rule stops at the state machine's durable applied index
    /// ([`StateMachine::durable_applied_index`]): its applies skip its
    /// engine's log, so the entries after that index are what a restart
    /// after a crash replays. It moves when the engine flushes its
    /// memory (for RocksDB, every 8 MiB of memtables), so the log holds
    /// about that much more.
    pub(super) fn maybe_compact_log(&mut self) -> Result<(), Error> {
        // Never past what raft itself has applied.
        let applied = self
            .machine
            .applied_index()
            .min(self.raw.raft.raft_log.applied);
        let first = self.log.first_index()?;
        let by_count =
            if applied >= first + self.config.snapshot_count + self.config.catch_up_entries {
                applied - self.config.catch_up_entries
            } else {
                0
            };
        let twice = self
            .log
            .newest_start(2 * CATCH_UP_BYTES, CATCH_UP_SCAN)
            .unwrap_or(0);
        let by_size = if twice > first {
            self.log
                .newest_start(CATCH_UP_BYTES, CATCH_UP_SCAN)
                .unwrap_or(0)
                .min(applied)
                .min(self.needed_by_followers())
        } else {
            0
        };
        let wanted = by_count.max(by_size);
        if wanted <= first {
            return Ok(());
        }
        // Read only now: most rounds want nothing.
        let durable = self
            .machine
            .durable_applied_index()
            .map_err(machine_failed)?;
        let to = wanted.min(durable);
        if to > first {
            self.log.compact(to)?;
            tracing::debug!(to, "raft log compacted");
        }
        Ok(())
    }

    /// On a leader, the lowest index a follower still needs: one past its
    /// match, for every follower not being sent a snapshot, in touch or
    /// not (one that is down catches up from the log when it is back, as
    /// far as the count rule kept it). `u64::MAX` on other members: they
    /// cannot know, and keep [`CATCH_UP_BYTES`] for a follower a little
    /// behind them should they be elected.
    fn needed_by_followers(&self) -> u64 {
        let raft = &self.raw.raft;
        if raft.state != ::raft::StateRole::Leader {
            return u64::MAX;
        }
        raft.prs()
            .iter()
            .filter(|(id, pr)| **id != raft.id && pr.state != ::raft::ProgressState::Snapshot)
            .map(|(_, pr)| pr.matched + 1)
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// Bytes of the newest entries the log keeps past the count rule: what a
/// follower slightly behind a newly elected leader may need. Twice this
/// must fit in the entry cache, which measures the log's newest bytes.
const CATCH_UP_BYTES: u64 = 4 * 1024 * 1024;

/// Most newest entries looked at to find [`CATCH_UP_BYTES`] of them, so a
/// log of small entries costs a bounded walk: 1,024 entries of 4 KiB or
/// less never hold it, and the count rule alone compacts them.
const CATCH_UP_SCAN: usize = 1024;
