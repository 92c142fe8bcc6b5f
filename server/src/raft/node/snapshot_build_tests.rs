//! The build's life, in phases, against a state machine whose snapshot
//! waits at a gate: no raft loop, no network.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

use super::SnapshotBuild;
use crate::raft::{MemberChange, RaftStorage, StateMachine};
use crate::storage::MemoryEngine;

/// A state machine whose snapshot is its applied index, fixed at once and
/// handed back only when the test opens the gate (or fails, if told to).
struct Gated {
    /// The applied index, moved by the test.
    applied: AtomicU64,
    /// Snapshots started.
    builds: AtomicUsize,
    /// One message per snapshot allowed to finish: `true` to succeed.
    gate: Mutex<Receiver<bool>>,
}

#[derive(Debug, thiserror::Error)]
#[error("gated: {0}")]
struct GatedError(&'static str);

impl StateMachine for Gated {
    type Error = GatedError;

    fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    fn apply_entry(&self, _: u64, _: &bytes::Bytes) -> Result<(), GatedError> {
        Ok(())
    }

    fn apply_member_change(
        &self,
        _: u64,
        _: MemberChange,
        _: u64,
        _: &[u8],
    ) -> Result<(), GatedError> {
        Ok(())
    }

    fn snapshot(&self, fixed: &mut dyn FnMut(u64)) -> Result<Vec<u8>, GatedError> {
        self.builds.fetch_add(1, Ordering::SeqCst);
        let index = self.applied_index();
        fixed(index);
        match self.gate.lock().unwrap().recv() {
            Ok(true) => Ok(index.to_be_bytes().to_vec()),
            _ => Err(GatedError("told to fail")),
        }
    }

    fn restore(&self, _: &[u8]) -> Result<(), GatedError> {
        Ok(())
    }

    fn stopped(&self) {}
}

/// A log of entries 1..=9, 1..=4 in term 1 and the rest in term 2, all
/// committed, voters 1, 2 and 3; a machine that applied 5.
/// (The log's directory goes with the last element.)
fn setup() -> (RaftStorage, Arc<Gated>, Sender<bool>, tempfile::TempDir) {
    let (log, dir) = crate::raft::log_in_temp_dir(Arc::new(MemoryEngine::new()));
    let entries: Vec<Entry> = (1..=9)
        .map(|index| Entry {
            index,
            term: if index <= 4 { 1 } else { 2 },
            ..Default::default()
        })
        .collect();
    let hard_state = HardState {
        term: 2,
        commit: 9,
        ..Default::default()
    };
    log.append(&entries, Some(&hard_state), false).unwrap();
    let voters = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    log.set_conf_state(&voters).unwrap();
    let (open, gate) = std::sync::mpsc::channel();
    let machine = Arc::new(Gated {
        applied: AtomicU64::new(5),
        builds: AtomicUsize::new(0),
        gate: Mutex::new(gate),
    });
    (log, machine, open, dir)
}

/// Calls `f` until it gives something (the builder thread is scheduled
/// when it is; the deadline only catches a hang).
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = f() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Asks for a snapshot at or past `request_index` until one is handed out.
fn until_built(
    build: &SnapshotBuild,
    request_index: u64,
    log: &RaftStorage,
    machine: &Arc<Gated>,
) -> Snapshot {
    poll("a snapshot built", || {
        build.request(request_index, log, machine)
    })
}

/// Asks for a snapshot at or past `request_index` until the `n`th build
/// has started, none handed out meanwhile.
fn until_started(
    n: usize,
    build: &SnapshotBuild,
    request_index: u64,
    log: &RaftStorage,
    machine: &Arc<Gated>,
) {
    poll("a build started", || {
        assert!(build.request(request_index, log, machine).is_none());
        (machine.builds.load(Ordering::SeqCst) >= n).then_some(())
    })
}

#[test]
fn a_snapshot_is_built_beside_the_raft_thread_at_the_index_it_started_from() {
    let (log, machine, open, _dir) = setup();
    let build = SnapshotBuild::default();

    // When raft first asks, it is told to ask again, and a build starts
    // at the applied index.
    assert!(build.request(0, &log, &machine).is_none());
    assert_eq!(machine.builds.load(Ordering::SeqCst), 1);

    // While it runs, more applies and more requests start no second build.
    machine.applied.store(7, Ordering::SeqCst);
    for _ in 0..3 {
        assert!(build.request(0, &log, &machine).is_none());
    }
    assert_eq!(machine.builds.load(Ordering::SeqCst), 1);

    // Once it ends, raft gets it: the data, index, term and conf state of
    // the point it started from.
    open.send(true).unwrap();
    let snapshot = until_built(&build, 0, &log, &machine);
    let meta = snapshot.get_metadata();
    assert_eq!((meta.index, meta.term), (5, 2));
    assert_eq!(meta.get_conf_state().voters, vec![1, 2, 3]);
    assert_eq!(&snapshot.data[..], &5u64.to_be_bytes());

    // It was handed out, not kept: the next request builds again, from
    // the new applied index.
    assert!(build.request(0, &log, &machine).is_none());
    assert_eq!(machine.builds.load(Ordering::SeqCst), 2);
    open.send(true).unwrap();
    assert_eq!(
        until_built(&build, 0, &log, &machine).get_metadata().index,
        7
    );
}

#[test]
fn a_build_older_than_raft_asks_for_or_failed_is_thrown_away() {
    let (log, machine, open, _dir) = setup();
    let build = SnapshotBuild::default();

    // Given a build finished at index 5,
    assert!(build.request(0, &log, &machine).is_none());
    open.send(true).unwrap();
    machine.applied.store(8, Ordering::SeqCst);
    // when raft asks for at least index 8, that build is not handed out:
    // another starts, from 8.
    until_started(2, &build, 8, &log, &machine);

    // A build that fails is logged and replaced by the next request's.
    open.send(false).unwrap();
    until_started(3, &build, 8, &log, &machine);
    open.send(true).unwrap();
    assert_eq!(
        until_built(&build, 8, &log, &machine).get_metadata().index,
        8
    );
}

#[test]
fn a_node_that_stops_waits_for_its_build() {
    let (log, machine, open, _dir) = setup();
    let build = SnapshotBuild::default();
    assert!(build.request(0, &log, &machine).is_none());
    // The gate opens only after the drop has begun; the drop returns once
    // the builder has ended (its clone of the machine dropped with it).
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        open.send(true)
    });
    drop(build);
    assert_eq!(Arc::strong_count(&machine), 1);
    opener.join().unwrap().unwrap();
}
