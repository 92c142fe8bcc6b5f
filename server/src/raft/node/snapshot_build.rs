//! A snapshot for a member that is behind, built beside the raft thread.
//!
//! raft-rs asks `Storage::snapshot` on the raft thread, and reading the
//! whole state there stalls the loop: at a million keys, seconds without a
//! heartbeat, longer than the election timeout, so the other members elect
//! a new leader, which builds the snapshot again (docs/benchmarks.md, "A
//! follower catching up by snapshot"). So, as TiKV does, the first request
//! starts a build on a thread of its own and answers
//! `SnapshotTemporarilyUnavailable`; raft asks again at the follower's next
//! heartbeat response and gets the snapshot once it is built.
//!
//! The raft thread waits only until the builder has fixed the state it
//! reads (the state machine's write lock and a RocksDB snapshot: no more
//! than an apply takes), so the snapshot's index, that index's term and the
//! conf state are read there, with nothing applied in between: exactly
//! those of the data.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use ::raft::eraftpb::{Snapshot, SnapshotMetadata};
use ::raft::Storage;

use crate::raft::{RaftStorage, StateMachine};

/// The build under way, if any: one at a time, whatever the number of
/// followers asking.
#[derive(Debug, Default)]
pub(super) struct SnapshotBuild {
    /// Taken by the raft thread only (raft's `Storage` is `&self`).
    running: Mutex<Option<Running>>,
}

/// One build.
#[derive(Debug)]
struct Running {
    /// The snapshot's metadata, read on the raft thread at the point the
    /// data is of; `None` if it could not be read (the build is then
    /// thrown away when it ends).
    meta: Option<SnapshotMetadata>,
    /// The thread reading the state: the data, or why it failed.
    thread: JoinHandle<Result<Vec<u8>, String>>,
    /// When it started, for the log.
    started: Instant,
}

impl SnapshotBuild {
    /// raft's `Storage::snapshot`: the finished build if it is at or past
    /// `request_index` (raft's floor for the snapshot), else `None` (raft
    /// is told the snapshot is temporarily unavailable) after starting a
    /// build if none runs. A finished snapshot goes to the one follower
    /// that asked: it is not kept, as it holds the whole state.
    pub(super) fn request<M: StateMachine>(
        &self,
        request_index: u64,
        log: &RaftStorage,
        machine: &Arc<M>,
    ) -> Option<Snapshot> {
        let mut running = crate::locks::lock(&self.running);
        if let Some(build) = running.take() {
            if !build.thread.is_finished() {
                *running = Some(build);
                return None;
            }
            if let Some(snapshot) = build.finish() {
                let index = snapshot.get_metadata().index;
                if index >= request_index {
                    return Some(snapshot);
                }
                tracing::info!(
                    index,
                    request_index,
                    "the snapshot built is older than raft asks for; building another"
                );
            }
        }
        *running = start(log, machine);
        None
    }
}

impl Running {
    /// Joins the finished thread: the snapshot, or `None` (logged) if the
    /// build failed.
    fn finish(self) -> Option<Snapshot> {
        let data = match self.thread.join() {
            Ok(Ok(data)) => data,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot take a snapshot of the state machine");
                return None;
            }
            Err(_) => {
                tracing::error!("the snapshot builder panicked");
                return None;
            }
        };
        let meta = self.meta?;
        tracing::info!(
            index = meta.index,
            bytes = data.len(),
            seconds = self.started.elapsed().as_secs_f64(),
            "snapshot built for a member that is behind"
        );
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta);
        snapshot.data = data.into();
        Some(snapshot)
    }
}

impl Drop for SnapshotBuild {
    /// A build still running when the node stops is waited for, so no
    /// thread outlives the member's storage.
    fn drop(&mut self) {
        if let Some(build) = crate::locks::lock(&self.running).take() {
            let _ = build.thread.join();
        }
    }
}

/// Starts a build; `None` (logged) if no thread could be started or it
/// failed before fixing its state.
fn start<M: StateMachine>(log: &RaftStorage, machine: &Arc<M>) -> Option<Running> {
    let started = Instant::now();
    let (fixed_tx, fixed_rx) = std::sync::mpsc::sync_channel(1);
    let builder = Arc::clone(machine);
    let thread = std::thread::Builder::new()
        .name("raft-snapshot".into())
        .spawn(move || {
            builder
                .snapshot(&mut |index| {
                    let _ = fixed_tx.send(index);
                })
                .map_err(|e| e.to_string())
        });
    let thread = match thread {
        Ok(thread) => thread,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a thread to build a snapshot");
            return None;
        }
    };
    // The raft thread applies nothing while it waits here.
    let Ok(index) = fixed_rx.recv() else {
        // The builder ended before fixing anything: it failed.
        let failed = Running {
            meta: None,
            thread,
            started,
        };
        failed.finish();
        return None;
    };
    let meta = metadata(log, index)
        .map_err(|e| tracing::error!(error = %e, index, "cannot describe the snapshot"))
        .ok();
    tracing::info!(index, "building a snapshot for a member that is behind");
    Some(Running {
        meta,
        thread,
        started,
    })
}

/// The snapshot's metadata at applied `index`: its term and the conf state
/// (as of `index`, since nothing has applied since).
fn metadata(log: &RaftStorage, index: u64) -> ::raft::Result<SnapshotMetadata> {
    Ok(SnapshotMetadata {
        index,
        term: log.term(index)?,
        conf_state: Some(log.initial_state()?.conf_state).into(),
        ..Default::default()
    })
}

#[cfg(test)]
#[path = "snapshot_build_tests.rs"]
mod tests;
