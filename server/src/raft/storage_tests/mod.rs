//! `RaftStorage` against raft-rs's own `MemStorage`.
//!
//! The cases mirror the test module of raft-rs's `src/storage.rs` (term,
//! entries with size limits, first/last index, compact, create and apply
//! snapshot, append with conflicts). Each case is a list of steps run against
//! a `MemStorage` and a `RaftStorage` on `MemoryEngine`; every step's outcome
//! must be the same. `MemStorage`'s tests set its private `entries` directly;
//! here a log starts after a snapshot at (2, 2) instead, which is also how a
//! real member's log starts. Where `MemStorage` panics (a caller bug),
//! `RaftStorage` must return an error, and the case ends there.
//!
//! What `MemStorage` has no counterpart for (restarts, the state machine
//! synced before the log lets go, sealing, the move out of the engine, the
//! entry cache) is tested on the files in `on_files`.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use ::raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use ::raft::storage::MemStorage;
use ::raft::{GetEntriesContext, RaftState, Storage, StorageError};
use protobuf::Message;

use super::{Error, RaftStorage};
use crate::storage::flaky::FlakyEngine;
use crate::storage::{Cf, Engine, MemoryEngine, WriteBatch};

mod on_files;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("data {index}/{term}").into_bytes().into(),
        ..Default::default()
    }
}

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range.map(|i| entry(i, i)).collect()
}

fn meta(index: u64, term: u64, v: &[u64]) -> SnapshotMetadata {
    let mut m = SnapshotMetadata {
        index,
        term,
        ..Default::default()
    };
    m.set_conf_state(voters(v));
    m
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

fn voters(v: &[u64]) -> ConfState {
    ConfState {
        voters: v.to_vec(),
        ..Default::default()
    }
}

/// One step of a case.
#[derive(Debug, Clone)]
enum Step {
    /// Append entries and, with them, maybe a hard state.
    Append(Vec<Entry>, Option<HardState>),
    Compact(u64),
    ApplySnapshot(SnapshotMetadata),
    SetConfState(ConfState),
    Term(u64),
    /// low, high, max_size.
    Entries(u64, u64, Option<u64>),
    First,
    Last,
    /// request_index.
    Snapshot(u64),
    InitialState,
}

/// What a step produced, comparable across the two storages.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Done,
    Index(u64),
    Entries(Vec<Entry>),
    Snapshot(Snapshot),
    State(HardState, ConfState),
    /// One of raft's expected storage answers (Compacted, Unavailable, ...).
    Refused(String),
    /// `MemStorage` panicked / `RaftStorage` failed with another error.
    Broken,
}

fn outcome<T>(r: ::raft::Result<T>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => ok(v),
        Err(::raft::Error::Store(StorageError::Other(_))) => Outcome::Broken,
        Err(::raft::Error::Store(e)) => Outcome::Refused(e.to_string()),
        Err(_) => Outcome::Broken,
    }
}

fn state(s: RaftState) -> Outcome {
    Outcome::State(s.hard_state, s.conf_state)
}

/// The reads, the same for both storages.
fn read<S: Storage>(s: &S, step: &Step) -> Outcome {
    let ctx = || GetEntriesContext::empty(false);
    match step {
        Step::Term(i) => outcome(s.term(*i), Outcome::Index),
        Step::Entries(lo, hi, max) => outcome(s.entries(*lo, *hi, *max, ctx()), Outcome::Entries),
        Step::First => outcome(s.first_index(), Outcome::Index),
        Step::Last => outcome(s.last_index(), Outcome::Index),
        Step::Snapshot(req) => outcome(s.snapshot(*req, 0), Outcome::Snapshot),
        Step::InitialState => outcome(s.initial_state(), state),
        _ => unreachable!("not a read: {step:?}"),
    }
}

fn run_mem(steps: &[Step]) -> Vec<Outcome> {
    let s = MemStorage::new();
    let mut out = Vec::new();
    for step in steps {
        let r = panic::catch_unwind(AssertUnwindSafe(|| match step {
            Step::Append(ents, hs) => {
                let appended = s.wl().append(ents);
                if let (Ok(()), Some(hs)) = (&appended, hs) {
                    s.wl().set_hardstate(hs.clone());
                }
                outcome(appended, |()| Outcome::Done)
            }
            Step::Compact(to) => outcome(s.wl().compact(*to), |()| Outcome::Done),
            Step::ApplySnapshot(m) => {
                let mut snap = Snapshot::default();
                snap.set_metadata(m.clone());
                outcome(s.wl().apply_snapshot(snap), |()| Outcome::Done)
            }
            Step::SetConfState(cs) => {
                s.wl().set_conf_state(cs.clone());
                Outcome::Done
            }
            read_step => read(&s, read_step),
        }));
        let broken = r.is_err();
        out.push(r.unwrap_or(Outcome::Broken));
        if broken {
            break;
        }
    }
    out
}

fn run_ours(s: &RaftStorage, steps: &[Step]) -> Vec<Outcome> {
    let mut out = Vec::new();
    let done = |r: Result<(), Error>| outcome(r.map_err(::raft::Error::from), |()| Outcome::Done);
    for step in steps {
        let o = match step {
            Step::Append(ents, hs) => done(s.append(ents, hs.as_ref(), true)),
            Step::Compact(to) => done(s.compact(*to)),
            Step::ApplySnapshot(m) => done(s.apply_snapshot(m)),
            Step::SetConfState(cs) => done(s.set_conf_state(cs)),
            read_step => read(s, read_step),
        };
        let broken = o == Outcome::Broken;
        out.push(o);
        if broken {
            break;
        }
    }
    out
}

/// A log on a memory engine, in a temporary directory removed after it.
struct TempLog {
    log: RaftStorage,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TempLog {
    type Target = RaftStorage;

    fn deref(&self) -> &RaftStorage {
        &self.log
    }
}

fn new_storage() -> TempLog {
    let (log, _dir) = crate::raft::log_in_temp_dir(Arc::new(MemoryEngine::new()));
    TempLog { log, _dir }
}

/// The log of raft-rs's tests: entries 3..=last (term = index) after a
/// snapshot at (2, 2).
fn base(last: u64) -> Vec<Step> {
    vec![
        Step::ApplySnapshot(meta(2, 2, &[1, 2, 3])),
        Step::Append(entries(3..=last), None),
    ]
}

fn with(mut steps: Vec<Step>, more: impl IntoIterator<Item = Step>) -> Vec<Step> {
    steps.extend(more);
    steps
}

fn size(e: &Entry) -> u64 {
    u64::from(e.compute_size())
}

fn cases() -> Vec<(&'static str, Vec<Step>)> {
    use Step::*;
    let e = entries(3..=6);
    let (s4, s5, s6) = (size(&e[1]), size(&e[2]), size(&e[3]));
    let mut cases = vec![
        (
            "empty",
            vec![First, Last, Term(0), Term(1), InitialState, Snapshot(0)],
        ),
        (
            "term",
            with(
                base(5),
                [Term(1), Term(2), Term(3), Term(4), Term(5), Term(6)],
            ),
        ),
        (
            "entries",
            with(
                base(6),
                [
                    Entries(2, 6, None),
                    Entries(3, 4, None),
                    Entries(4, 5, None),
                    Entries(4, 6, None),
                    Entries(4, 7, None),
                    Entries(4, 7, Some(u64::MAX)),
                    // Even with max_size 0 the first entry is returned.
                    Entries(4, 7, Some(0)),
                    Entries(4, 7, Some(s4 + s5)),
                    Entries(4, 7, Some(s4 + s5 + s6 / 2)),
                    Entries(4, 7, Some(s4 + s5 + s6 - 1)),
                    Entries(4, 7, Some(s4 + s5 + s6)),
                    Entries(5, 5, None),
                ],
            ),
        ),
        (
            "last index",
            with(base(5), [Last, Append(vec![entry(6, 5)], None), Last]),
        ),
        ("first index", with(base(5), [First, Compact(4), First])),
        ("entries past the end", with(base(5), [Entries(4, 8, None)])),
        (
            "apply snapshot",
            vec![
                ApplySnapshot(meta(4, 4, &[1, 2, 3])),
                InitialState,
                First,
                Last,
                Term(4),
                ApplySnapshot(meta(3, 3, &[1, 2, 3])),
                InitialState,
                Append(vec![entry(5, 5)], None),
                Entries(5, 6, None),
            ],
        ),
        (
            "apply snapshot over a log",
            with(
                base(6),
                [
                    Append(vec![], Some(hard_state(6, 1, 4))),
                    ApplySnapshot(meta(5, 5, &[1, 2])),
                    InitialState,
                    First,
                    Last,
                    Term(5),
                    Term(2),
                    Append(vec![entry(6, 7)], None),
                    Entries(6, 7, None),
                    Last,
                ],
            ),
        ),
        (
            "hard state and conf state",
            vec![
                SetConfState(voters(&[1, 2, 3])),
                Append(entries(1..=3), Some(hard_state(3, 2, 2))),
                InitialState,
                Append(vec![], Some(hard_state(4, 0, 3))),
                InitialState,
                Entries(1, 4, None),
            ],
        ),
        ("compact past the end", with(base(5), [Compact(7)])),
    ];
    for to in [2u64, 3, 4, 5] {
        cases.push((
            "compact",
            with(
                base(5),
                [
                    Compact(to),
                    First,
                    Last,
                    Entries(to.max(3), to.max(3) + 1, Some(1)),
                    Entries(to.max(3), 6, Some(100)),
                ],
            ),
        ));
    }
    // Create a snapshot: commit index (and term) 4 or 5, asked for at 0 or 5.
    for (commit, request) in [(4, 0), (5, 5)] {
        cases.push((
            "create snapshot",
            with(
                base(5),
                [
                    SetConfState(voters(&[1, 2, 3])),
                    Append(vec![], Some(hard_state(commit, 0, commit))),
                    Snapshot(request),
                ],
            ),
        ));
    }
    let appends = [
        // The same entries again.
        entries(3..=5),
        // A conflict at 4: the old 4 and 5 are replaced.
        vec![entry(3, 3), entry(4, 6), entry(5, 6)],
        // Overlapping, then one more.
        vec![entry(3, 3), entry(4, 4), entry(5, 5), entry(6, 5)],
        // Overwriting compacted entries is refused.
        vec![entry(2, 3), entry(3, 3), entry(4, 5)],
        // Truncate the existing entries and append.
        vec![entry(4, 5)],
        // Direct append.
        vec![entry(6, 6)],
        // A gap is refused.
        vec![entry(7, 7)],
    ];
    for ents in appends {
        cases.push((
            "append",
            with(
                base(5),
                [
                    Append(ents, None),
                    First,
                    Last,
                    Entries(3, 4, None),
                    Term(4),
                    Term(5),
                    Term(6),
                ],
            ),
        ));
    }
    cases
}

/// Every case gives the same outcomes, step by step. Where `MemStorage`
/// panics (and stops), `RaftStorage` must have refused with an error.
#[test]
fn same_outcomes_as_memstorage() {
    for (i, (name, steps)) in cases().into_iter().enumerate() {
        let want = run_mem(&steps);
        let got = run_ours(&new_storage(), &steps);
        assert!(got.len() >= want.len(), "case #{i} {name}: {got:?}");
        for (j, (w, g)) in want.iter().zip(&got).enumerate() {
            let agree = w == g
                || (*w == Outcome::Broken && matches!(g, Outcome::Refused(_) | Outcome::Broken));
            assert!(
                agree,
                "case #{i} {name}, step {j} {:?}: MemStorage {w:?}, RaftStorage {g:?}",
                steps[j]
            );
        }
    }
}

/// The cases where `RaftStorage` differs from `MemStorage` on purpose.
#[test]
fn deliberate_differences_from_memstorage() {
    let compacted = || ::raft::Error::Store(StorageError::Compacted);
    // After a compaction, the term of the last removed entry still answers
    // (the Storage trait's contract); MemStorage only keeps its snapshot's.
    let steps = with(base(5), [Step::Compact(4), Step::Term(3)]);
    let mem = run_mem(&steps);
    assert_eq!(mem[3], Outcome::Refused(compacted().to_string()));
    let ours = new_storage();
    run_ours(&ours, &steps);
    assert_eq!(ours.term(3), Ok(3));
    assert_eq!(ours.term(2), Ok(2), "the snapshot's term, as MemStorage");
    assert_eq!(ours.term(1), Err(compacted()));

    // Compacting the whole log keeps first_index at the compaction point;
    // MemStorage falls back to its snapshot's index.
    let steps = with(base(5), [Step::Compact(6), Step::First, Step::Last]);
    assert_eq!(run_mem(&steps)[3..], [Outcome::Index(3), Outcome::Index(2)]);
    assert_eq!(
        run_ours(&new_storage(), &steps)[3..],
        [Outcome::Index(6), Outcome::Index(5)]
    );

    // A snapshot requested past the commit index is not available yet;
    // MemStorage relabels its older snapshot with the requested index.
    let steps = with(
        base(5),
        [
            Step::Append(vec![], Some(hard_state(5, 0, 5))),
            Step::Snapshot(6),
        ],
    );
    let mem = run_mem(&steps);
    let Outcome::Snapshot(snap) = &mem[3] else {
        panic!("MemStorage gave no snapshot");
    };
    assert_eq!(
        (snap.get_metadata().index, snap.get_metadata().term),
        (6, 5)
    );
    assert_eq!(
        run_ours(&new_storage(), &steps)[3],
        Outcome::Refused(StorageError::SnapshotTemporarilyUnavailable.to_string())
    );
}
