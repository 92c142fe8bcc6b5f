//! Watch hub tests: live delivery, replay, slow watchers, compaction, progress,
//! clean-up, and a proptest of the guarantees against a model.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_proto::mvccpb::event::EventType;

use proptest::prelude::*;
use tokio::sync::mpsc;

use super::*;
use crate::storage::MemoryEngine;

fn store() -> Arc<Store> {
    Arc::new(Store::open(Arc::new(MemoryEngine::new()), true).unwrap())
}

fn put(s: &Store, keys: &[&str]) -> i64 {
    let mut t = s.write();
    for k in keys {
        t.put(k.as_bytes(), b"v".to_vec(), 0);
    }
    t.commit(None).unwrap()
}

fn spec(key: &str, end: &str, start: i64) -> WatchSpec {
    WatchSpec {
        range: KeyRange::new(key.as_bytes(), end.as_bytes()),
        start_revision: start,
        no_put: false,
        no_delete: false,
    }
}

/// Drains the channel: (revision, [(key, mod revision)]) per message.
fn drain(rx: &mut mpsc::Receiver<WatchMessage>) -> Vec<WatchMessage> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
    out
}

fn revs(msgs: &[WatchMessage]) -> Vec<Vec<i64>> {
    msgs.iter()
        .filter_map(|m| match m {
            WatchMessage::Events { events, .. } => Some(
                events
                    .iter()
                    .map(|e| e.kv.as_ref().unwrap().mod_revision)
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn sync_all(s: &Store) {
    for _ in 0..1000 {
        let o = s.sync_watchers(3).unwrap();
        if o.unsynced == 0 || !o.progressed {
            return;
        }
    }
    panic!("sync did not converge");
}

#[test]
fn live_events_are_atomic_per_revision() {
    let s = store();
    let stream = s.watch_hub().new_stream();
    let (tx, mut rx) = mpsc::channel(16);
    s.watch(spec("a", "\0", 0), stream, tx);
    put(&s, &["a", "b", "c"]); // rev 2, one txn
    put(&s, &["0"]); // rev 3, outside the range
    let mut t = s.write();
    t.delete_range(&KeyRange::new(b"a", b"c"));
    t.commit(None).unwrap(); // rev 4
    let msgs = drain(&mut rx);
    assert_eq!(revs(&msgs), vec![vec![2, 2, 2], vec![4, 4]]);
    let WatchMessage::Events {
        events, revision, ..
    } = &msgs[1]
    else {
        panic!()
    };
    assert_eq!(*revision, 4);
    assert!(events.iter().all(|e| e.r#type == EventType::Delete as i32));
    // A deletion's kv carries the deletion revision.
    assert_eq!(events[0].kv.as_ref().unwrap().mod_revision, 4);
}

#[test]
fn past_start_revision_is_replayed_then_live() {
    let s = store();
    for k in ["a", "b", "a", "c"] {
        put(&s, &[k]); // revs 2..=5
    }
    let stream = s.watch_hub().new_stream();
    let (tx, mut rx) = mpsc::channel(16);
    s.watch(spec("a", "", 3), stream, tx);
    assert!(
        drain(&mut rx).is_empty(),
        "history arrives through sync, not at once"
    );
    sync_all(&s);
    put(&s, &["a"]); // 6
    assert_eq!(revs(&drain(&mut rx)).concat(), vec![4, 6]);
}

#[test]
fn slow_watcher_never_blocks_writers_and_misses_nothing() {
    let s = store();
    let stream = s.watch_hub().new_stream();
    let (tx, mut rx) = mpsc::channel(1);
    s.watch(spec("k", "", 0), stream, tx);
    // Another watcher with room keeps up live.
    let (fast_tx, mut fast_rx) = mpsc::channel(1000);
    s.watch(spec("k", "", 0), s.watch_hub().new_stream(), fast_tx);
    for _ in 0..100 {
        put(&s, &["k"]); // commits never wait for the slow watcher
    }
    assert_eq!(
        revs(&drain(&mut fast_rx)).concat(),
        (2..=101).collect::<Vec<_>>()
    );
    let mut got = Vec::new();
    for _ in 0..1000 {
        got.extend(revs(&drain(&mut rx)).concat());
        if got.len() == 100 {
            break;
        }
        s.sync_watchers(10).unwrap();
    }
    assert_eq!(
        got,
        (2..=101).collect::<Vec<_>>(),
        "in order, no gap, no duplicate"
    );
    // Caught up: live again.
    put(&s, &["k"]);
    assert_eq!(revs(&drain(&mut rx)).concat(), vec![102]);
}

#[test]
fn compaction_cancels_a_watcher_that_needs_lost_history() {
    let s = store();
    for _ in 0..5 {
        put(&s, &["k"]); // 2..=6
    }
    let stream = s.watch_hub().new_stream();
    let (tx, mut rx) = mpsc::channel(16);
    s.watch(spec("k", "", 3), stream, tx.clone());
    s.compact(4).unwrap().run().unwrap();
    sync_all(&s);
    assert_eq!(
        drain(&mut rx),
        vec![WatchMessage::Compacted {
            watcher: 0,
            compact_revision: 4
        }]
    );
    assert!(s.watch_hub().is_empty());
    // Starting exactly at the compacted revision is served (etcd's rule:
    // clients resume from the compact_revision they were given).
    s.watch(spec("k", "", 4), stream, tx.clone());
    sync_all(&s);
    assert_eq!(revs(&drain(&mut rx)).concat(), vec![4, 5, 6]);
    // Just above it too.
    s.watch(spec("k", "", 5), stream, tx);
    sync_all(&s);
    assert_eq!(revs(&drain(&mut rx)).concat(), vec![5, 6]);
}

/// etcd loses the deletions made at the compacted revision, so a watch
/// resumed there gets that revision split; Cairn keeps the revision's
/// records until the next compaction and delivers it whole.
#[test]
fn a_watch_at_the_compacted_revision_gets_that_revision_whole() {
    let s = store();
    put(&s, &["a", "b"]); // 2
    let mut t = s.write(); // 3: put c, delete a
    t.put(b"c", b"v".to_vec(), 0);
    t.delete_range(&KeyRange::new(b"a", b""));
    let at = t.commit(None).unwrap();
    put(&s, &["b"]); // 4
    s.compact(at).unwrap().run().unwrap();
    let stream = s.watch_hub().new_stream();
    let (tx, mut rx) = mpsc::channel(16);
    s.watch(spec("\0", "\0", at), stream, tx);
    sync_all(&s);
    let events: Vec<_> = drain(&mut rx)
        .into_iter()
        .flat_map(|m| match m {
            WatchMessage::Events { events, .. } => events,
            other => panic!("{other:?}"),
        })
        .map(|e| {
            let kv = e.kv.unwrap();
            (e.r#type, kv.key, kv.mod_revision)
        })
        .collect();
    assert_eq!(
        events,
        vec![
            (EventType::Put as i32, b"c".to_vec(), at),
            (EventType::Delete as i32, b"a".to_vec(), at),
            (EventType::Put as i32, b"b".to_vec(), at + 1),
        ]
    );
}

/// A synced watcher is only visited by commits that touch its keys; the
/// revisions in between still count as delivered to it. Phase 1: a watcher
/// of `k` with a buffer of one sees nothing while 50 revisions change other
/// keys, and history up to 40 is compacted. Phase 2: its buffer fills, so
/// the next event on `k` makes it fall behind: it must catch up from that
/// revision, not from the last one it was sent (which is compacted).
#[test]
fn a_quiet_watcher_that_falls_behind_resumes_from_the_current_revision() {
    let s = store();
    let stream = s.watch_hub().new_stream();
    let (tx, mut rx) = mpsc::channel(1);
    s.watch(spec("k", "", 0), stream, tx);
    let first = put(&s, &["k"]);
    for _ in 0..50 {
        put(&s, &["other"]);
    }
    s.compact(first + 40).unwrap().run().unwrap();
    // The buffer still holds `first`'s message: the next two fall behind.
    let second = put(&s, &["k"]);
    let third = put(&s, &["k"]);
    assert_eq!(revs(&drain(&mut rx)), vec![vec![first]]);
    sync_all(&s);
    let msgs = drain(&mut rx);
    assert!(
        !msgs
            .iter()
            .any(|m| matches!(m, WatchMessage::Compacted { .. })),
        "{msgs:?}"
    );
    // One message per sync round (the buffer holds one).
    sync_all(&s);
    let mut all = revs(&msgs);
    all.extend(revs(&drain(&mut rx)));
    assert_eq!(all.concat(), vec![second, third]);
    assert!(!s.watch_hub().has_unsynced());
}

/// After a snapshot is installed underneath (reload), every watcher catches
/// up from the revision after the last one it was offered, even a watcher
/// no commit touched.
#[test]
fn a_reload_resumes_quiet_watchers_from_the_last_notified_revision() {
    let s = store();
    let stream = s.watch_hub().new_stream();
    let (tx, mut rx) = mpsc::channel(16);
    s.watch(spec("k", "", 0), stream, tx);
    for _ in 0..20 {
        put(&s, &["other"]);
    }
    s.compact(s.current_revision()).unwrap().run().unwrap();
    s.reload().unwrap();
    assert!(s.watch_hub().has_unsynced());
    sync_all(&s);
    assert_eq!(drain(&mut rx), vec![]);
    assert!(!s.watch_hub().has_unsynced());
    let next = put(&s, &["k"]);
    assert_eq!(revs(&drain(&mut rx)), vec![vec![next]]);
}

/// Watchers of single keys and of ranges together: each gets exactly the
/// events of its keys, one message per revision, and cancelling one leaves
/// the others' delivery intact.
#[test]
fn key_and_range_watchers_get_only_their_keys() {
    let s = store();
    let stream = s.watch_hub().new_stream();
    let (tx_a, mut rx_a) = mpsc::channel(16);
    let (tx_a2, mut rx_a2) = mpsc::channel(16);
    let (tx_b, mut rx_b) = mpsc::channel(16);
    let (tx_r, mut rx_r) = mpsc::channel(16);
    s.watch(spec("a", "", 0), stream, tx_a);
    let a2 = s.watch(spec("a", "", 0), stream, tx_a2);
    s.watch(spec("b", "", 0), stream, tx_b);
    s.watch(spec("a", "c", 0), stream, tx_r);
    let r1 = put(&s, &["a", "b", "c"]);
    assert!(s.watch_hub().remove(a2));
    let r2 = put(&s, &["a", "a"]);
    let r3 = put(&s, &["c"]);
    assert_eq!(revs(&drain(&mut rx_a)), vec![vec![r1], vec![r2, r2]]);
    assert_eq!(revs(&drain(&mut rx_a2)), vec![vec![r1]]);
    assert_eq!(revs(&drain(&mut rx_b)), vec![vec![r1]]);
    assert_eq!(revs(&drain(&mut rx_r)), vec![vec![r1, r1], vec![r2, r2]]);
    let _ = r3;
}

#[test]
fn stream_progress_waits_until_every_watcher_is_synced() {
    let s = store();
    for _ in 0..3 {
        put(&s, &["k"]); // 2..=4
    }
    let stream = s.watch_hub().new_stream();
    let (tx, mut rx) = mpsc::channel(16);
    s.watch(spec("k", "", 2), stream, tx.clone());
    s.request_progress_all(stream, tx.clone());
    assert!(drain(&mut rx).is_empty(), "a watcher still replays history");
    sync_all(&s);
    let msgs = drain(&mut rx);
    assert_eq!(revs(&msgs).concat(), vec![2, 3, 4]);
    assert_eq!(
        msgs.last(),
        Some(&WatchMessage::Progress {
            watcher: None,
            revision: 4
        })
    );
    // Synced: answered at once.
    s.request_progress_all(stream, tx);
    assert_eq!(
        drain(&mut rx),
        vec![WatchMessage::Progress {
            watcher: None,
            revision: 4
        }]
    );
}

#[test]
fn filters_and_future_start() {
    let s = store();
    let stream = s.watch_hub().new_stream();
    let (tx, mut rx) = mpsc::channel(16);
    s.watch(
        WatchSpec {
            no_put: true,
            ..spec("k", "", 0)
        },
        stream,
        tx.clone(),
    );
    s.watch(spec("k", "", 4), stream, tx);
    put(&s, &["k"]); // 2
    put(&s, &["k"]); // 3
    put(&s, &["k"]); // 4
    let mut t = s.write();
    t.delete_range(&KeyRange::new(b"k", b""));
    t.commit(None).unwrap(); // 5
    let msgs = drain(&mut rx);
    let by = |w: u64| {
        msgs.iter()
            .filter_map(|m| match m {
                WatchMessage::Events {
                    watcher, events, ..
                } if *watcher == w => Some(
                    events
                        .iter()
                        .map(|e| e.kv.as_ref().unwrap().mod_revision)
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect::<Vec<_>>()
    };
    assert_eq!(by(0), vec![5], "NOPUT sees only the delete");
    assert_eq!(
        by(1),
        vec![4, 5],
        "a future start revision skips earlier events"
    );
}

#[test]
fn thousands_of_create_cancel_cycles_leave_nothing_behind() {
    let s = store();
    let stream = s.watch_hub().new_stream();
    for i in 0..5000 {
        let (tx, _rx) = mpsc::channel(1);
        let key = s.watch(spec("k", "", if i % 2 == 0 { 0 } else { 1 }), stream, tx);
        assert!(s.watch_hub().remove(key));
    }
    assert!(s.watch_hub().is_empty());
    let (tx, _rx) = mpsc::channel(1);
    for _ in 0..100 {
        s.watch(spec("k", "", 0), stream, tx.clone());
    }
    s.watch_hub().remove_stream(stream);
    assert!(s.watch_hub().is_empty());
}

// ---------------------------------------------------------------------------
// Property test
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    /// Puts (key) and deletes (key, range end) in one transaction.
    Txn(Vec<(u8, Option<u8>, bool)>),
    Compact(u8),
    Watch {
        key: u8,
        end: Option<u8>,
        back: u8,
        buffer: usize,
    },
    Cancel(u8),
    Drain(u8),
    Sync,
}

fn key(k: u8) -> Vec<u8> {
    vec![b'a' + k]
}

fn range_of(k: u8, end: Option<u8>) -> KeyRange {
    match end {
        None => KeyRange::new(&key(k), b""),
        Some(0) => KeyRange::new(&key(k), b"\0"),
        Some(e) => KeyRange::new(&key(k), &key(e)),
    }
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => proptest::collection::vec((0u8..5, proptest::option::of(0u8..6), any::<bool>()), 1..4).prop_map(Step::Txn),
        1 => (0u8..6).prop_map(Step::Compact),
        2 => (0u8..5, proptest::option::of(0u8..6), 0u8..8, 1usize..4)
            .prop_map(|(key, end, back, buffer)| Step::Watch { key, end, back, buffer }),
        1 => any::<u8>().prop_map(Step::Cancel),
        2 => any::<u8>().prop_map(Step::Drain),
        2 => Just(Step::Sync),
    ]
}

struct Probe {
    key: WatcherKey,
    range: KeyRange,
    start: i64,
    rx: mpsc::Receiver<WatchMessage>,
    got: Vec<(i64, Vec<u8>, i32)>,
    /// Revisions seen per message, to check atomicity.
    messages: Vec<Vec<i64>>,
    compacted: Option<i64>,
    cancelled: bool,
}

impl Probe {
    fn take(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            match m {
                WatchMessage::Events { events, .. } => {
                    self.messages.push(
                        events
                            .iter()
                            .map(|e| e.kv.as_ref().unwrap().mod_revision)
                            .collect(),
                    );
                    for e in events {
                        let kv = e.kv.unwrap();
                        self.got.push((kv.mod_revision, kv.key, e.r#type));
                    }
                }
                WatchMessage::Compacted {
                    compact_revision, ..
                } => self.compacted = Some(compact_revision),
                WatchMessage::Progress { .. } => {}
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_watcher_sees_exactly_its_history(steps in proptest::collection::vec(step_strategy(), 1..80)) {
        let s = store();
        let stream = s.watch_hub().new_stream();
        // The model: every event ever committed, and the live keys.
        let mut history: Vec<(i64, Vec<u8>, i32)> = Vec::new();
        let mut live: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
        let mut compacted = -1;
        let mut probes: Vec<Probe> = Vec::new();
        for step in steps {
            match step {
                Step::Txn(ops) => {
                    let main = s.current_revision() + 1;
                    let mut t = s.write();
                    let mut evs = Vec::new();
                    for (k, end, is_put) in ops {
                        if is_put {
                            t.put(&key(k), vec![k], 0);
                            live.insert(key(k), ());
                            evs.push((main, key(k), EventType::Put as i32));
                        } else {
                            let r = range_of(k, end);
                            t.delete_range(&r);
                            let gone: Vec<Vec<u8>> = live.keys().filter(|x| r.contains(x)).cloned().collect();
                            for g in gone {
                                live.remove(&g);
                                evs.push((main, g, EventType::Delete as i32));
                            }
                        }
                    }
                    t.commit(None).unwrap();
                    history.extend(evs);
                }
                Step::Compact(back) => {
                    let rev = s.current_revision() - i64::from(back);
                    if rev > compacted && rev >= 1 {
                        s.compact(rev).unwrap().run().unwrap();
                        compacted = rev;
                    }
                }
                Step::Watch { key: k, end, back, buffer } => {
                    let start = (s.current_revision() - i64::from(back)).max(1);
                    let (tx, rx) = mpsc::channel(buffer);
                    let range = range_of(k, end);
                    let wk = s.watch(WatchSpec { range: range.clone(), start_revision: start, no_put: false, no_delete: false }, stream, tx);
                    probes.push(Probe { key: wk, range, start, rx, got: vec![], messages: vec![], compacted: None, cancelled: false });
                }
                Step::Cancel(i) => {
                    if !probes.is_empty() {
                        let n = probes.len();
                        let p = &mut probes[i as usize % n];
                        p.take();
                        s.watch_hub().remove(p.key);
                        p.cancelled = true;
                    }
                }
                Step::Drain(i) => {
                    if !probes.is_empty() {
                        let n = probes.len();
                        probes[i as usize % n].take();
                    }
                }
                Step::Sync => { s.sync_watchers(4).unwrap(); }
            }
        }
        // Let everyone catch up.
        for _ in 0..10_000 {
            for p in &mut probes { p.take(); }
            let o = s.sync_watchers(4).unwrap();
            if o.unsynced == 0 { break; }
        }
        for p in &mut probes { p.take(); }
        for p in &probes {
            // Atomic: a revision never spans two messages.
            let mut seen_in: BTreeMap<i64, usize> = BTreeMap::new();
            for (i, m) in p.messages.iter().enumerate() {
                for r in m {
                    let first = *seen_in.entry(*r).or_insert(i);
                    prop_assert_eq!(first, i, "revision {} split across messages", r);
                }
            }
            let want: Vec<(i64, Vec<u8>, i32)> = history
                .iter()
                .filter(|(rev, k, _)| *rev >= p.start && p.range.contains(k))
                .cloned()
                .collect();
            if let Some(c) = p.compacted {
                // Cancelled for compaction: what it got is an exact prefix of
                // its history, and it really needed compacted history.
                prop_assert!(p.got.len() <= want.len());
                prop_assert_eq!(&p.got[..], &want[..p.got.len()]);
                let next = p.got.last().map_or(p.start, |(r, _, _)| r + 1);
                prop_assert!(next < c, "cancelled at {} while it needed {}", c, next);
            } else if p.cancelled {
                prop_assert!(p.got.len() <= want.len());
                prop_assert_eq!(&p.got[..], &want[..p.got.len()]);
            } else {
                prop_assert_eq!(&p.got, &want);
            }
        }
    }
}
