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

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use ::raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use ::raft::storage::MemStorage;
use ::raft::{GetEntriesContext, RaftState, Storage, StorageError};
use protobuf::Message;

use super::{Error, RaftStorage};
use crate::storage::flaky::FlakyEngine;
use crate::storage::{Cf, Engine, MemoryEngine, RocksEngine, Scan, WriteBatch};

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

fn new_storage() -> RaftStorage {
    RaftStorage::open(Arc::new(MemoryEngine::new())).unwrap()
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

#[test]
fn append_is_one_synced_batch_with_the_hard_state() {
    let engine = Arc::new(FlakyEngine::default());
    let s = RaftStorage::open(engine.clone()).unwrap();
    s.append(&entries(1..=5), None, true).unwrap();
    engine.take_writes();

    // A conflict at 3: puts 3 and 4, deletes the stale 5, with the hard state.
    let hs = hard_state(6, 2, 2);
    s.append(&[entry(3, 6), entry(4, 6)], Some(&hs), true)
        .unwrap();
    let writes = engine.take_writes();
    assert_eq!(writes.len(), 1, "one write");
    let (batch, sync) = &writes[0];
    assert!(sync);
    assert_eq!(batch.len(), 4, "{batch:?}");
    assert_eq!(s.last_index(), Ok(4));
    assert_eq!(s.term(3), Ok(6));
    assert_eq!(s.initial_state().unwrap().hard_state, hs);
    assert_eq!(
        s.entries(1, 5, None, GetEntriesContext::empty(false)),
        Ok(vec![entry(1, 1), entry(2, 2), entry(3, 6), entry(4, 6)])
    );
}

#[test]
fn failed_write_changes_nothing() {
    let engine = Arc::new(FlakyEngine::default());
    let s = RaftStorage::open(engine.clone()).unwrap();
    s.append(&entries(1..=3), Some(&hard_state(1, 1, 1)), true)
        .unwrap();
    engine.set_failing(true);
    assert!(s.append(&entries(4..=5), None, true).is_err());
    assert!(s.compact(3).is_err());
    assert!(s.apply_snapshot(&meta(3, 3, &[1])).is_err());
    engine.set_failing(false);
    assert_eq!((s.first_index(), s.last_index()), (Ok(1), Ok(3)));
    assert_eq!(s.term(3), Ok(3));
    assert_eq!(s.initial_state().unwrap().hard_state, hard_state(1, 1, 1));
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    let engine = Arc::new(MemoryEngine::new());
    let s = RaftStorage::open(engine.clone()).unwrap();
    s.append(&entries(1..=3), Some(&hard_state(1, 1, 1)), true)
        .unwrap();
    let ctx = || GetEntriesContext::empty(false);
    let other =
        |r: ::raft::Result<_>| matches!(r, Err(::raft::Error::Store(StorageError::Other(_))));

    // Garbage where entry 2 should be.
    let mut b = WriteBatch::new();
    b.put(
        Cf::Raft,
        super::keys::entry_key(2),
        b"\xff\xff\xff".to_vec(),
    );
    b.put(Cf::RaftState, super::keys::HARD_STATE, b"\xff".to_vec());
    engine.write(b, true).unwrap();
    // (A new storage: the one above serves its own appends from memory.)
    let s = RaftStorage::open(engine.clone()).unwrap();
    assert!(other(s.entries(1, 4, None, ctx()).map(|_| ())));
    assert!(other(s.term(2).map(|_| ())));
    assert!(other(s.initial_state().map(|_| ())));

    // Entry 3 stored under the key of 2.
    let mut b = WriteBatch::new();
    b.put(
        Cf::Raft,
        super::keys::entry_key(2),
        entry(3, 3).write_to_bytes().unwrap(),
    );
    engine.write(b, true).unwrap();
    let s = RaftStorage::open(engine.clone()).unwrap();
    assert!(other(s.term(2).map(|_| ())));
    assert!(other(s.entries(2, 3, None, ctx()).map(|_| ())));

    // A hole in the log: entry 2 is missing.
    let mut b = WriteBatch::new();
    b.delete(Cf::Raft, super::keys::entry_key(2));
    b.put(Cf::RaftState, super::keys::TRUNCATED, b"short".to_vec());
    engine.write(b, true).unwrap();
    assert!(other(s.entries(1, 4, None, ctx()).map(|_| ())));
    assert!(matches!(
        RaftStorage::open(engine.clone()),
        Err(Error::Corrupt { .. })
    ));
    let mut b = WriteBatch::new();
    b.delete(Cf::RaftState, super::keys::TRUNCATED);
    engine.write(b, true).unwrap();
    let err = RaftStorage::open(engine).unwrap_err();
    assert!(err.to_string().contains("entry 2 is missing"), "{err}");
}

#[test]
fn log_and_state_survive_a_restart_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = || GetEntriesContext::empty(false);
    let cs = voters(&[1, 2, 3]);
    {
        let engine = Arc::new(RocksEngine::open(dir.path()).unwrap());
        let s = RaftStorage::open(engine).unwrap();
        s.set_conf_state(&cs).unwrap();
        s.append(&entries(1..=6), Some(&hard_state(6, 1, 5)), true)
            .unwrap();
        s.compact(3).unwrap();
    }
    {
        let engine = Arc::new(RocksEngine::open(dir.path()).unwrap());
        let s = RaftStorage::open(engine).unwrap();
        let st = s.initial_state().unwrap();
        assert_eq!(st.hard_state, hard_state(6, 1, 5));
        assert_eq!(st.conf_state, cs);
        assert_eq!((s.first_index(), s.last_index()), (Ok(3), Ok(6)));
        assert_eq!(s.term(2), Ok(2), "term of the compaction point");
        assert_eq!(s.entries(3, 7, None, ctx()), Ok(entries(3..=6)));
        // A conflicting append at 5 drops the old 6.
        s.append(&[entry(5, 7)], Some(&hard_state(7, 0, 5)), true)
            .unwrap();
    }
    {
        let engine = Arc::new(RocksEngine::open(dir.path()).unwrap());
        let s = RaftStorage::open(engine).unwrap();
        assert_eq!((s.first_index(), s.last_index()), (Ok(3), Ok(5)));
        assert_eq!(s.term(5), Ok(7));
        assert_eq!(s.initial_state().unwrap().hard_state, hard_state(7, 0, 5));
        s.apply_snapshot(&meta(9, 8, &[1, 2])).unwrap();
    }
    let engine = Arc::new(RocksEngine::open(dir.path()).unwrap());
    let s = RaftStorage::open(engine).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (Ok(10), Ok(9)));
    assert_eq!(s.term(9), Ok(8));
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state, hard_state(8, 0, 9));
    assert_eq!(st.conf_state, voters(&[1, 2]));
    assert_eq!(
        s.snapshot(0, 2).unwrap().get_metadata(),
        &meta(9, 8, &[1, 2])
    );
}

/// Every key of `cf` in `engine`.
fn keys_of(engine: &dyn Engine, cf: Cf) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    engine
        .scan(cf, &[], None, &mut |k, _| {
            keys.push(k.to_vec());
            Scan::Continue
        })
        .unwrap();
    keys
}

#[test]
fn the_entries_family_holds_entries_alone() {
    let engine = Arc::new(MemoryEngine::new());
    let s = RaftStorage::open(engine.clone()).unwrap();
    s.set_conf_state(&voters(&[1])).unwrap();
    s.append(&entries(1..=4), Some(&hard_state(4, 1, 4)), true)
        .unwrap();
    s.compact(2).unwrap();
    let raft = keys_of(engine.as_ref(), Cf::Raft);
    assert_eq!(
        raft,
        (2..=4)
            .map(|i| super::keys::entry_key(i).to_vec())
            .collect::<Vec<_>>()
    );
    assert_eq!(keys_of(engine.as_ref(), Cf::RaftState).len(), 3);
}

#[test]
fn state_in_the_entries_family_moves_on_open() {
    // The first layout: every record in `raft`.
    let engine = Arc::new(FlakyEngine::default());
    {
        let s = RaftStorage::open(engine.clone()).unwrap();
        s.set_conf_state(&voters(&[1, 2])).unwrap();
        s.append(&entries(1..=6), Some(&hard_state(6, 1, 5)), true)
            .unwrap();
        s.compact(3).unwrap();
        s.apply_snapshot(&meta(6, 6, &[1, 2])).unwrap();
        s.append(&entries(7..=8), Some(&hard_state(8, 1, 7)), true)
            .unwrap();
    }
    let mut b = WriteBatch::new();
    for key in super::keys::STATE_KEYS {
        let value = engine.get(Cf::RaftState, key).unwrap().unwrap();
        b.delete(Cf::RaftState, key);
        b.put(Cf::Raft, key, value);
    }
    engine.write(b, true).unwrap();
    engine.take_writes();

    let s = RaftStorage::open(engine.clone()).unwrap();
    let writes = engine.take_writes();
    assert_eq!(writes.len(), 1, "one write");
    assert!(writes[0].1, "synced");
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state, hard_state(8, 1, 7));
    assert_eq!(st.conf_state, voters(&[1, 2]));
    assert_eq!((s.first_index(), s.last_index()), (Ok(7), Ok(8)));
    assert_eq!(s.term(6), Ok(6));
    assert_eq!(keys_of(engine.as_ref(), Cf::Raft).len(), 2, "entries 7, 8");
    assert_eq!(keys_of(engine.as_ref(), Cf::RaftState).len(), 4);

    // Moved once: the next open writes nothing.
    drop(s);
    RaftStorage::open(engine.clone()).unwrap();
    assert!(engine.take_writes().is_empty());
}

#[test]
fn the_newest_entries_are_read_from_memory() {
    let engine = Arc::new(MemoryEngine::new());
    let s = RaftStorage::open(engine.clone()).unwrap();
    s.append(&entries(1..=5), Some(&hard_state(1, 1, 1)), true)
        .unwrap();
    // Garbage on disk under 3 and 4: what was appended is served anyway.
    let mut b = WriteBatch::new();
    for i in [3, 4] {
        b.put(Cf::Raft, super::keys::entry_key(i), b"\xff".to_vec());
    }
    engine.write(b, true).unwrap();
    let ctx = || GetEntriesContext::empty(false);
    assert_eq!(s.entries(2, 6, None, ctx()), Ok(entries(2..=5)));
    assert_eq!(s.term(4), Ok(4));
    // A conflicting append replaces the cached suffix as it does the disk's.
    s.append(&[entry(4, 9)], None, true).unwrap();
    assert_eq!(s.term(4), Ok(9));
    assert_eq!(
        s.term(5),
        Err(::raft::Error::Store(StorageError::Unavailable))
    );
    // After a compaction past them, and a restart, the disk answers.
    s.compact(3).unwrap();
    assert_eq!(
        s.term(1),
        Err(::raft::Error::Store(StorageError::Compacted))
    );
    let s = RaftStorage::open(engine).unwrap();
    assert!(s.entries(3, 5, None, ctx()).is_err());
}
