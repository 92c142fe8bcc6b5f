//! `RaftStorage` on its engine: each append one synced batch with the hard
//! state, a failed write changing nothing, corrupt records as errors, a
//! restart on RocksDB, the two column families (and the move of older
//! databases' state records), and the newest entries read from memory.

use super::*;

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
        crate::raft::keys::entry_key(2),
        b"\xff\xff\xff".to_vec(),
    );
    b.put(
        Cf::RaftState,
        crate::raft::keys::HARD_STATE,
        b"\xff".to_vec(),
    );
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
        crate::raft::keys::entry_key(2),
        entry(3, 3).write_to_bytes().unwrap(),
    );
    engine.write(b, true).unwrap();
    let s = RaftStorage::open(engine.clone()).unwrap();
    assert!(other(s.term(2).map(|_| ())));
    assert!(other(s.entries(2, 3, None, ctx()).map(|_| ())));

    // A hole in the log: entry 2 is missing.
    let mut b = WriteBatch::new();
    b.delete(Cf::Raft, crate::raft::keys::entry_key(2));
    b.put(
        Cf::RaftState,
        crate::raft::keys::TRUNCATED,
        b"short".to_vec(),
    );
    engine.write(b, true).unwrap();
    assert!(other(s.entries(1, 4, None, ctx()).map(|_| ())));
    assert!(matches!(
        RaftStorage::open(engine.clone()),
        Err(Error::Corrupt { .. })
    ));
    let mut b = WriteBatch::new();
    b.delete(Cf::RaftState, crate::raft::keys::TRUNCATED);
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
            .map(|i| crate::raft::keys::entry_key(i).to_vec())
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
    for key in crate::raft::keys::STATE_KEYS {
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
        b.put(Cf::Raft, crate::raft::keys::entry_key(i), b"\xff".to_vec());
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
