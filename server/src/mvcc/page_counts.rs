//! The counts of paginated lists' next pages, so that a list of N keys in
//! pages costs the key index O(N) instead of O(N²/page).
//!
//! A range with a limit answers the first `limit` keys and the count of
//! every key in the range (etcd's `count`, which kube-apiserver turns into
//! `remainingItemCount`), so each page walks the key index over the whole
//! rest of the range. But a list's next page asks for the same range from
//! just after the last key given, at the same revision, and the history at
//! a revision never changes (a write makes a newer revision; compaction
//! keeps whatever a revision at or above it reads; a snapshot install
//! replaces the whole store state, and this cache with it). So the page's
//! count tells the next page's: it is the page's count minus its keys.
//!
//! Worked example: `/pods/a` .. `/pods/e` alive at revision 9, pages of 2.
//! Page 1, range [`/pods/`, `/pods0`) at 9: gives a, b and count 5 (walking
//! all five), and notes "[`/pods/b\0`, `/pods0`) at 9 counts 3". Page 2
//! asks exactly that: gives c, d, stops walking there, count 3 from the
//! note, and notes "[`/pods/d\0`, `/pods0`) at 9 counts 1".

use std::collections::VecDeque;
use std::sync::Mutex;

use super::index::KeyRange;

/// How many next pages are remembered (two per list in progress, see
/// `range_at`); the oldest note is forgotten first.
const CAPACITY: usize = 64;

/// Ranges whose keys are longer together are not noted, so the notes stay
/// small whatever keys clients page through (Kubernetes keys are well
/// below this; etcd allows keys of up to a request's size).
const MAX_NOTED_KEY_BYTES: usize = 4096;

/// A next page's count: the range, its revision, and the keys in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Note {
    range: KeyRange,
    rev: i64,
    count: usize,
}

/// The counts of next pages, most recent last.
#[derive(Debug, Default)]
pub(super) struct PageCounts {
    notes: Mutex<VecDeque<Note>>,
}

impl PageCounts {
    /// The count of `range` at `rev`, if a previous page noted it (the note
    /// is used up: a list reads each page once).
    pub(super) fn take(&self, range: &KeyRange, rev: i64) -> Option<usize> {
        let mut notes = self.lock();
        let at = notes
            .iter()
            .position(|n| n.rev == rev && &n.range == range)?;
        notes.remove(at).map(|n| n.count)
    }

    /// Notes the count of the page after one that ended at key `last` of
    /// `range` at `rev`: `count` keys of `range` lie after `last`.
    pub(super) fn note_next(&self, range: &KeyRange, last: &[u8], rev: i64, count: usize) {
        let KeyRange::Range { end, .. } = range else {
            return;
        };
        if last.len() + end.as_ref().map_or(0, Vec::len) > MAX_NOTED_KEY_BYTES {
            return;
        }
        let mut start = last.to_vec();
        start.push(0);
        let range = KeyRange::Range {
            start,
            end: end.clone(),
        };
        let mut notes = self.lock();
        if notes.len() >= CAPACITY {
            notes.pop_front();
        }
        notes.push_back(Note { range, rev, count });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Note>> {
        // Whole notes are pushed and removed: a poisoned lock still holds
        // consistent ones.
        crate::locks::lock(&self.notes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::mvcc::{RangeOptions, Store};
    use crate::storage::MemoryEngine;

    #[test]
    fn paging_through_a_list_while_it_changes_counts_as_a_full_walk_does() {
        // Given ten keys at revision `at`.
        let store = Store::open(Arc::new(MemoryEngine::new()), true).unwrap();
        let write = |key: &str, delete: bool| {
            let mut txn = store.write();
            if delete {
                txn.delete_range(&KeyRange::new(key.as_bytes(), b""));
            } else {
                txn.put(key.as_bytes(), b"v".to_vec(), 0);
            }
            txn.commit(None).unwrap();
        };
        for i in 0..10 {
            write(&format!("k{i:02}"), false);
        }
        let at = store.current_revision();

        // When a client lists them in pages of 3 at `at`, as kube-apiserver
        // does, while keys of the range are created, deleted and updated
        // between its pages.
        // (The gRPC layer fetches one more than the client's limit, to
        // tell whether there is more: both are served from the notes.)
        for fetched in [3, 4] {
            let mut start = b"k".to_vec();
            let mut pages = Vec::new();
            for change in ["k05", "k10", "k02", "k11"] {
                let range = KeyRange::new(&start, b"l");
                let page = |count_only| {
                    let opts = RangeOptions {
                        limit: fetched,
                        rev: at,
                        count_only,
                    };
                    store.range(&range, opts).unwrap()
                };
                let got = page(false);
                // Then every page counts what a walk of its range at `at`
                // counts.
                assert_eq!(got.count, page(true).count);
                let keys: Vec<_> = got.kvs.iter().take(3).map(|kv| &kv.key).collect();
                pages.push((keys.len(), got.count));
                let Some(last) = keys.last() else { break };
                start = [last.as_slice(), b"\0"].concat();
                write(change, change == "k05");
            }
            assert_eq!(pages, vec![(3, 10), (3, 7), (3, 4), (1, 1)]);
            for change in ["k05", "k10", "k02", "k11"] {
                write(change, change != "k05");
            }
        }
    }

    #[test]
    fn a_page_notes_the_count_of_the_page_after_it() {
        let counts = PageCounts::default();
        let list = KeyRange::new(b"/pods/", b"/pods0");

        // Page 1 ended at /pods/b with 3 keys after it.
        counts.note_next(&list, b"/pods/b", 9, 3);

        // Page 2 is the same range from just after /pods/b, same revision:
        // it finds the count once; any other revision or range does not.
        let next = KeyRange::new(b"/pods/b\0", b"/pods0");
        assert_eq!(counts.take(&next, 8), None);
        assert_eq!(
            counts.take(&KeyRange::new(b"/pods/b\0", b"/pods1"), 9),
            None
        );
        assert_eq!(counts.take(&next, 9), Some(3));
        assert_eq!(counts.take(&next, 9), None);

        // A single-key read never pages.
        counts.note_next(&KeyRange::new(b"/pods/a", b""), b"/pods/a", 9, 1);
        assert_eq!(counts.take(&KeyRange::new(b"/pods/a\0", b""), 9), None);

        // Nor is a page of very long keys noted (the notes stay small).
        let long = vec![b'k'; MAX_NOTED_KEY_BYTES];
        counts.note_next(&list, &long, 9, 1);
        let after_long = KeyRange::new(&[long.as_slice(), b"\0"].concat(), b"/pods0");
        assert_eq!(counts.take(&after_long, 9), None);
    }

    #[test]
    fn the_oldest_notes_are_forgotten_first() {
        let counts = PageCounts::default();
        let list = KeyRange::new(b"k", b"\0");
        for rev in 0..CAPACITY as i64 + 1 {
            counts.note_next(&list, b"k1", rev, 1);
        }
        let next = KeyRange::new(b"k1\0", b"\0");
        assert_eq!(counts.take(&next, 0), None, "the first note is gone");
        assert_eq!(counts.take(&next, 1), Some(1));
        assert_eq!(counts.take(&next, CAPACITY as i64), Some(1));
    }
}
