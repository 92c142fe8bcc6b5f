//! `RaftStorage` on its files: an append replacing a conflicting suffix,
//! restarts, the state machine synced before the log lets go (and a failed
//! sync changing nothing), entries sealed in the files and re-sealed at a
//! key rotation, a hole in the log, the move of an older data directory's
//! log out of the engine, and the newest entries served from memory.

use std::path::Path;

use super::*;
use crate::raft::keys;
use crate::raft::log_files::{LogFiles, LogWrite};
use crate::storage::crypto::{MasterKey, SealedElsewhere, SealedEngine};

fn open(engine: Arc<dyn Engine>, dir: &Path) -> RaftStorage {
    RaftStorage::open(engine, dir).unwrap()
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

#[test]
fn an_append_replaces_the_conflicting_suffix_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(MemoryEngine::new());
    {
        let s = open(engine.clone(), dir.path());
        s.append(&entries(1..=5), None, true).unwrap();
        // A conflict at 3: 3 and 4 replaced, the stale 5 gone.
        let hs = hard_state(6, 2, 2);
        s.append(&[entry(3, 6), entry(4, 6)], Some(&hs), true)
            .unwrap();
        assert_eq!(s.last_index(), Ok(4));
    }
    let s = open(engine.clone(), dir.path());
    assert_eq!(s.last_index(), Ok(4));
    assert_eq!(s.term(3), Ok(6));
    assert_eq!(s.initial_state().unwrap().hard_state, hard_state(6, 2, 2));
    assert_eq!(
        s.entries(1, 5, None, ctx()),
        Ok(vec![entry(1, 1), entry(2, 2), entry(3, 6), entry(4, 6)])
    );
}

#[test]
fn log_and_state_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(MemoryEngine::new());
    let cs = voters(&[1, 2, 3]);
    {
        let s = open(engine.clone(), dir.path());
        s.set_conf_state(&cs).unwrap();
        s.append(&entries(1..=6), Some(&hard_state(6, 1, 5)), true)
            .unwrap();
        s.compact(3).unwrap();
    }
    {
        let s = open(engine.clone(), dir.path());
        let st = s.initial_state().unwrap();
        assert_eq!(st.hard_state, hard_state(6, 1, 5));
        assert_eq!(st.conf_state, cs);
        assert_eq!((s.first_index(), s.last_index()), (Ok(3), Ok(6)));
        assert_eq!(s.term(2), Ok(2), "term of the compaction point");
        assert_eq!(s.entries(3, 7, None, ctx()), Ok(entries(3..=6)));
        s.append(&[entry(5, 7)], Some(&hard_state(7, 0, 5)), true)
            .unwrap();
    }
    {
        let s = open(engine.clone(), dir.path());
        assert_eq!((s.first_index(), s.last_index()), (Ok(3), Ok(5)));
        assert_eq!(s.term(5), Ok(7));
        assert_eq!(s.initial_state().unwrap().hard_state, hard_state(7, 0, 5));
        s.apply_snapshot(&meta(9, 8, &[1, 2])).unwrap();
    }
    {
        let s = open(engine.clone(), dir.path());
        assert_eq!((s.first_index(), s.last_index()), (Ok(10), Ok(9)));
        assert_eq!(s.term(9), Ok(8));
        let st = s.initial_state().unwrap();
        assert_eq!(st.hard_state, hard_state(8, 0, 9));
        assert_eq!(st.conf_state, voters(&[1, 2]));
        assert_eq!(
            s.snapshot(0, 2).unwrap().get_metadata(),
            &meta(9, 8, &[1, 2])
        );
        // The log goes on after the snapshot.
        s.append(&[entry(10, 8)], None, true).unwrap();
    }
    let s = open(engine.clone(), dir.path());
    assert_eq!((s.first_index(), s.last_index()), (Ok(10), Ok(10)));
    // A compaction of the whole log survives a restart as an empty log.
    s.compact(11).unwrap();
    drop(s);
    let s = open(engine.clone(), dir.path());
    assert_eq!((s.first_index(), s.last_index()), (Ok(11), Ok(10)));
    assert_eq!(s.term(10), Ok(8));
}

#[test]
fn the_state_machine_is_synced_before_the_log_lets_go_and_a_failed_sync_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(FlakyEngine::default());
    let s = open(engine.clone(), dir.path());
    s.append(&entries(1..=5), Some(&hard_state(1, 1, 4)), true)
        .unwrap();
    assert_eq!(engine.syncs(), 0, "appends do not touch the engine");
    engine.set_failing(true);
    assert!(s.compact(3).is_err());
    assert!(s.apply_snapshot(&meta(4, 4, &[1])).is_err());
    assert_eq!((s.first_index(), s.last_index()), (Ok(1), Ok(5)));
    assert_eq!(s.initial_state().unwrap().hard_state, hard_state(1, 1, 4));
    engine.set_failing(false);
    s.compact(3).unwrap();
    assert_eq!(engine.syncs(), 1);
    s.apply_snapshot(&meta(6, 6, &[1])).unwrap();
    assert_eq!(engine.syncs(), 2);
    assert_eq!((s.first_index(), s.last_index()), (Ok(7), Ok(6)));
}

/// Every byte of every file under `dir`.
fn bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(bytes_under(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

#[test]
fn entries_are_sealed_in_the_files_and_resealed_when_the_key_changes() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let master = || MasterKey::from_bytes([7; 32]);
    let sealed = Arc::new(SealedEngine::open(Arc::clone(&inner), master()).unwrap());
    let secret = |i: u64| Entry {
        index: i,
        term: 1,
        data: format!("secret value {i}").into_bytes().into(),
        ..Default::default()
    };
    let s = open(sealed.clone(), dir.path());
    s.append(
        &[secret(1), secret(2), secret(3)],
        Some(&hard_state(1, 1, 3)),
        true,
    )
    .unwrap();
    let files = bytes_under(dir.path());
    assert!(
        !files.windows(6).any(|w| w == b"secret"),
        "plaintext in the log files"
    );
    assert_eq!(s.key_ids().unwrap(), [1].into());

    // A rotation: new entries use the new key; the old ones are re-sealed,
    // and key 1 can go.
    sealed.activate(2).unwrap();
    s.append(&[secret(4)], None, true).unwrap();
    assert_eq!(s.key_ids().unwrap(), [1, 2].into());
    assert_eq!(sealed.drop_unused_keys(&s).unwrap(), Vec::<u32>::new());
    assert_eq!(
        s.reseal(2).unwrap(),
        4,
        "from the first old entry to the end"
    );
    assert_eq!(s.reseal(2).unwrap(), 0);
    assert_eq!(s.key_ids().unwrap(), [2].into());
    assert_eq!(sealed.drop_unused_keys(&s).unwrap(), vec![1]);

    // After a restart (on the same keys) the entries open.
    drop(s);
    drop(sealed);
    let sealed = Arc::new(SealedEngine::open(inner, master()).unwrap());
    let s = open(sealed.clone(), dir.path());
    assert_eq!(
        s.entries(1, 5, None, ctx()),
        Ok((1..=4).map(secret).collect::<Vec<_>>())
    );
}

#[test]
fn a_hole_after_the_compaction_point_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    {
        let s = open(engine.clone(), dir.path());
        s.append(&entries(1..=5), None, true).unwrap();
        s.compact(4).unwrap();
    }
    {
        // The compaction point moved back: entries 2 and 3 are missing.
        let files = LogFiles::open(dir.path(), Arc::clone(&engine)).unwrap();
        let mut write = LogWrite::default();
        write
            .put_state(keys::TRUNCATED, keys::LogId { index: 1, term: 1 }.encode())
            .unwrap();
        files.write(&mut write, true).unwrap();
    }
    let err = RaftStorage::open(engine, dir.path()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("entries 2 to 3 are missing"),
        "{err}"
    );
}

/// The log of `entries` 1..=6 and its state as a data directory from
/// before kept them in `engine`: compacted to 3, conf state of voters 1, 2.
fn log_in_the_engine(engine: &dyn Engine, state_cf: Cf) {
    let mut b = WriteBatch::new();
    for e in entries(3..=6) {
        b.put(
            Cf::Raft,
            keys::entry_key(e.index),
            e.write_to_bytes().unwrap(),
        );
    }
    b.put(
        state_cf,
        keys::HARD_STATE,
        hard_state(6, 1, 5).write_to_bytes().unwrap(),
    );
    b.put(
        state_cf,
        keys::CONF_STATE,
        voters(&[1, 2]).write_to_bytes().unwrap(),
    );
    b.put(
        state_cf,
        keys::TRUNCATED,
        keys::LogId { index: 2, term: 2 }.encode(),
    );
    engine.write(b, true).unwrap();
}

fn check_moved(s: &RaftStorage, engine: &dyn Engine) {
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state, hard_state(6, 1, 5));
    assert_eq!(st.conf_state, voters(&[1, 2]));
    assert_eq!((s.first_index(), s.last_index()), (Ok(3), Ok(6)));
    assert_eq!(s.term(2), Ok(2));
    assert_eq!(s.entries(3, 7, None, ctx()), Ok(entries(3..=6)));
    for cf in [Cf::Raft, Cf::RaftState] {
        assert!(
            crate::storage::flaky::dump(engine, cf).is_empty(),
            "{cf:?} left"
        );
    }
}

#[test]
fn a_log_in_the_engine_moves_to_the_files_once() {
    for state_cf in [Cf::RaftState, Cf::Raft] {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(FlakyEngine::default());
        log_in_the_engine(engine.as_ref(), state_cf);
        engine.take_writes();
        let s = open(engine.clone(), dir.path());
        check_moved(&s, engine.as_ref());
        let writes = engine.take_writes();
        assert_eq!(writes.len(), 1, "one delete in the engine");
        assert!(writes[0].1, "synced");
        // Moved once: the next open writes nothing.
        drop(s);
        let s = open(engine.clone(), dir.path());
        assert!(engine.take_writes().is_empty());
        check_moved(&s, engine.as_ref());
    }
}

#[test]
fn a_move_cut_short_before_the_delete_is_finished_without_a_second_copy() {
    let dir = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    log_in_the_engine(engine.as_ref(), Cf::RaftState);
    let s = open(engine.clone(), dir.path());
    // The files' copy differs from the engine's from here on.
    s.append(&[], Some(&hard_state(7, 1, 6)), true).unwrap();
    drop(s);
    // The engine's copy back, as if the delete had not happened.
    log_in_the_engine(engine.as_ref(), Cf::RaftState);
    let s = open(engine.clone(), dir.path());
    assert_eq!(s.initial_state().unwrap().hard_state, hard_state(7, 1, 6));
    assert_eq!((s.first_index(), s.last_index()), (Ok(3), Ok(6)));
    for cf in [Cf::Raft, Cf::RaftState] {
        assert!(crate::storage::flaky::dump(engine.as_ref(), cf).is_empty());
    }
}

#[test]
fn the_newest_entries_are_served_from_memory_and_the_files_agree() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(MemoryEngine::new());
    let s = open(engine.clone(), dir.path());
    s.append(&entries(1..=5), Some(&hard_state(1, 1, 1)), true)
        .unwrap();
    assert_eq!(s.entries(2, 6, None, ctx()), Ok(entries(2..=5)));
    // A conflicting append replaces the cached suffix as it does the files'.
    s.append(&[entry(4, 9)], None, true).unwrap();
    assert_eq!(s.term(4), Ok(9));
    assert_eq!(
        s.term(5),
        Err(::raft::Error::Store(StorageError::Unavailable))
    );
    s.compact(3).unwrap();
    assert_eq!(
        s.term(1),
        Err(::raft::Error::Store(StorageError::Compacted))
    );
    // A restart starts with an empty cache: the files answer the same.
    drop(s);
    let s = open(engine.clone(), dir.path());
    assert_eq!(
        s.entries(3, 5, None, ctx()),
        Ok(vec![entry(3, 3), entry(4, 9)])
    );
    assert_eq!(s.term(4), Ok(9));
    // Size limits count the entries as raft gave them.
    let one = size(&entry(3, 3));
    assert_eq!(s.entries(3, 5, Some(one), ctx()), Ok(vec![entry(3, 3)]));
}
