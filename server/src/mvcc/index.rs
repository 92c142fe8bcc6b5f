//! The in-memory ordered index: user key -> [`KeyIndex`].
//!
//! It is never stored: at start-up it is rebuilt from the revision records
//! (etcd's treeIndex does the same), which is what lets the encryption layer
//! keep user keys sealed on disk.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use smallvec::SmallVec;

use super::key_index::{KeyAt, KeyIndex, KeyMark};
use super::revision::Revision;

/// Which keys a request addresses, decoded from etcd's `key` / `range_end` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// `range_end` empty: exactly `key`.
    Single(Vec<u8>),
    /// `[start, end)`; `end == None` is etcd's `range_end = "\0"`: every key >= start.
    Range {
        /// First key (inclusive).
        start: Vec<u8>,
        /// Bound (exclusive), or none.
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    /// Decodes etcd's conventions: empty `range_end` = one key, `"\0"` = from `key` on.
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::Range {
                start: key.to_vec(),
                end: None,
            },
            end => KeyRange::Range {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    /// True when `key` is inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k == key,
            KeyRange::Range { start, end } => {
                key >= start.as_slice() && end.as_ref().is_none_or(|e| key < e.as_slice())
            }
        }
    }
}

/// The map bounds of `[start, end)` (`end == None`: every key from
/// `start` on), or `None` when the range is empty (end <= start). A single
/// key is looked up, not ranged over (`TreeIndex::range`).
fn range_bounds<'a>(start: &'a [u8], end: Option<&'a [u8]>) -> Option<KeyBounds<'a>> {
    match end {
        None => Some((Bound::Included(start), Bound::Unbounded)),
        Some(end) if end > start => Some((Bound::Included(start), Bound::Excluded(end))),
        Some(_) => None,
    }
}

/// Lower and upper bound of a non-empty `[start, end)` over the index.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// A record as the rebuild of the index needs it (start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredRecord {
    /// The user key.
    pub key: Vec<u8>,
    /// The record's revision.
    pub rev: Revision,
    /// Whether the record is a deletion.
    pub tombstone: bool,
    /// The create revision a put's record carries.
    pub created: i64,
    /// The version a put's record carries.
    pub version: i64,
}

/// A key as the index holds it: up to [`INLINE_KEY`] bytes inside the
/// tree's node, longer ones on the heap as a `Vec` would be (the same 24
/// bytes either way). A lookup compares the probe with several keys of
/// each node on its way down; with the bytes in the node those comparisons
/// read the node's own cache lines, where a `Vec` key costs a pointer
/// chase, and at 1,000,000 keys a cache miss, per comparison
/// (docs/benchmarks.md, "Keys held in the index's nodes").
type IndexKey = SmallVec<[u8; INLINE_KEY]>;

/// The longest key held inside the tree's nodes: what fits in the bytes a
/// `Vec`'s pointer and length take. etcd's benchmark writes 8-byte keys.
const INLINE_KEY: usize = 16;

/// `key` as the index holds it, without a copy when it stays on the heap.
fn index_key(key: Vec<u8>) -> IndexKey {
    if key.len() <= INLINE_KEY {
        IndexKey::from_slice(&key)
    } else {
        IndexKey::from_vec(key)
    }
}

/// Every key's history, ordered by key.
#[derive(Debug, Default, Clone)]
pub struct TreeIndex {
    /// Keys with any history left (live, or deleted but not yet compacted away).
    keys: BTreeMap<IndexKey, KeyIndex>,
}

impl TreeIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The history of one key.
    pub fn key_index(&self, key: &[u8]) -> Option<&KeyIndex> {
        self.keys.get(key)
    }

    /// Takes back a failed transaction's changes to one key: back to `mark`,
    /// or removed when the key had no history before (`None`).
    pub fn rollback(&mut self, key: &[u8], mark: Option<KeyMark>) {
        match mark {
            Some(mark) => {
                if let Some(ki) = self.keys.get_mut(key) {
                    ki.rollback(mark);
                }
            }
            None => {
                self.keys.remove(key);
            }
        }
    }

    /// Records a put of `key` at `rev`.
    ///
    /// One search of the tree serves the whole put: it also gives the key's
    /// state at `view` before the put (None: not live then), which the
    /// record's create revision and version come from, and where its
    /// history stood (None: the key had none), to roll back to. Three
    /// searches did this before, ~3% of three members' CPU under puts
    /// (`memcmp` of keys on the way down a tree of 100,000).
    pub fn put(
        &mut self,
        key: &[u8],
        rev: Revision,
        view: i64,
    ) -> (Option<KeyAt>, Option<KeyMark>) {
        if let Some(ki) = self.keys.get_mut(key) {
            let before = (ki.get(view), Some(ki.mark()));
            ki.put(rev);
            return before;
        }
        let mut ki = KeyIndex::default();
        ki.put(rev);
        self.keys.insert(IndexKey::from_slice(key), ki);
        (None, None)
    }

    /// Records a delete of `key` at `rev`; false if the key was not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys.get_mut(key).is_some_and(|ki| ki.tombstone(rev))
    }

    /// Start-up: inserts a record read from disk (records come in revision
    /// order). Takes the key decoded from the record: one lookup, and no
    /// allocation for a new key (a short one is held in the node, a long
    /// one moved).
    pub fn restore(
        &mut self,
        key: Vec<u8>,
        rev: Revision,
        tombstone: bool,
        created: i64,
        version: i64,
    ) {
        match self.keys.entry(index_key(key)) {
            Entry::Occupied(mut ki) if tombstone => {
                ki.get_mut().tombstone(rev);
            }
            Entry::Occupied(mut ki) => ki.get_mut().put(rev),
            // A tombstone whose puts were all compacted away: nothing to rebuild.
            Entry::Vacant(_) if tombstone => {}
            Entry::Vacant(slot) => {
                slot.insert(KeyIndex::restore(Revision::new(created, 0), rev, version));
            }
        }
    }

    /// Builds the index from records sorted by key, each key's records in
    /// revision order (the records read at start-up, stably sorted by key):
    /// each key's history is built whole and the map in one go, with no
    /// search per record. The same index as [`TreeIndex::restore`] of each
    /// record in revision order.
    pub fn from_sorted(records: impl IntoIterator<Item = RestoredRecord>) -> Self {
        // (key, its history so far: none while only tombstones were seen)
        let mut group: Option<(Vec<u8>, Option<KeyIndex>)> = None;
        let mut built: Vec<(IndexKey, KeyIndex)> = Vec::new();
        for r in records {
            if !matches!(&group, Some((key, _)) if *key == r.key) {
                if let Some((key, Some(ki))) = group.take() {
                    built.push((index_key(key), ki));
                }
                group = Some((r.key, None));
            }
            let Some((_, slot)) = &mut group else {
                continue;
            };
            match slot {
                Some(ki) if r.tombstone => {
                    ki.tombstone(r.rev);
                }
                Some(ki) => ki.put(r.rev),
                // A tombstone whose puts were all compacted away.
                None if r.tombstone => {}
                None => {
                    *slot = Some(KeyIndex::restore(
                        Revision::new(r.created, 0),
                        r.rev,
                        r.version,
                    ))
                }
            }
        }
        if let Some((key, Some(ki))) = group {
            built.push((index_key(key), ki));
        }
        // Already in key order: collecting builds the map in one pass.
        Self {
            keys: built.into_iter().collect(),
        }
    }

    /// The key at main revision `at`.
    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.keys.get(key)?.get(at)
    }

    /// Keys of `range` that exist at `at`, in key order, with their state then.
    pub fn range<'a>(
        &'a self,
        range: &KeyRange,
        at: i64,
    ) -> impl Iterator<Item = (&'a [u8], KeyAt)> + 'a {
        // One key: one search down the tree. A range bounded by the key on
        // both sides searches for each bound (10-34% more of a single-key
        // read's index time, `examples/point_reads.rs`).
        let (one, many) = match range {
            KeyRange::Single(key) => (self.keys.get_key_value(key.as_slice()), None),
            KeyRange::Range { start, end } => {
                let bounds = range_bounds(start, end.as_deref());
                (None, bounds.map(|b| self.keys.range::<[u8], _>(b)))
            }
        };
        one.into_iter()
            .chain(many.into_iter().flatten())
            .filter_map(move |(k, ki)| ki.get(at).map(|state| (k.as_slice(), state)))
    }

    /// Compacts every key at `at`; returns the revisions at or below `at` that
    /// must be kept on disk.
    pub fn compact(&mut self, at: i64) -> HashSet<Revision> {
        let mut available = HashSet::new();
        self.keys.retain(|_, ki| {
            ki.compact(at, &mut available);
            !ki.is_empty()
        });
        available
    }

    /// Number of keys with any history (for tests and metrics).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key has any history.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases
    fn key_range_conventions() {
        let table: &[(&[u8], &[u8], &[u8], bool)] = &[
            // key, range_end, probe, contained
            (b"a", b"", b"a", true),
            (b"a", b"", b"ab", false),
            (b"a", b"\0", b"zzz", true),
            (b"b", b"\0", b"a", false),
            (b"a", b"c", b"b", true),
            (b"a", b"c", b"c", false),
            (b"\0", b"\0", b"anything", true),
        ];
        for (key, end, probe, want) in table {
            assert_eq!(
                KeyRange::new(key, end).contains(probe),
                *want,
                "{key:?} {end:?} {probe:?}"
            );
        }
        // An inverted range is empty instead of panicking.
        let mut idx = TreeIndex::new();
        idx.put(b"b", Revision::new(2, 0), 1);
        assert_eq!(idx.range(&KeyRange::new(b"c", b"a"), 2).count(), 0);
    }

    #[test]
    fn range_sees_only_live_keys_at_revision() {
        let mut idx = TreeIndex::new();
        idx.put(b"a", Revision::new(2, 0), 1);
        idx.put(b"b", Revision::new(3, 0), 2);
        assert!(idx.tombstone(b"a", Revision::new(4, 0)));
        let keys = |at| {
            idx.range(&KeyRange::new(b"a", b"\0"), at)
                .map(|(k, _)| k.to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(2), vec![b"a".to_vec()]);
        assert_eq!(keys(3), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(keys(4), vec![b"b".to_vec()]);
        // One key (looked up, not ranged over): there while live, with its
        // state at the revision asked; a neighbour or a prefix is not it.
        let one = |key: &[u8], at| idx.range(&KeyRange::new(key, b""), at).collect::<Vec<_>>();
        let a_at_3 = idx.get(b"a", 3).unwrap();
        assert_eq!(one(b"a", 3), vec![(&b"a"[..], a_at_3)]);
        assert_eq!(one(b"a", 4), vec![]);
        assert_eq!(one(b"b", 2), vec![]);
        assert_eq!(one(b"", 3), vec![]);
        assert_eq!(one(b"ab", 3), vec![]);
        let available = idx.compact(4);
        assert_eq!(available, HashSet::from([Revision::new(3, 0)]));
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn a_put_gives_the_state_before_it_and_the_mark_to_roll_back_to() {
        let mut idx = TreeIndex::new();
        // A key never seen: not live, no history.
        assert_eq!(idx.put(b"a", Revision::new(2, 0), 1), (None, None));
        // A live key: its state at the view, and where its history stood.
        let mark = idx.key_index(b"a").map(KeyIndex::mark);
        let (before, was) = idx.put(b"a", Revision::new(3, 0), 2);
        assert_eq!(
            before.map(|at| (at.created, at.modified, at.version)),
            Some((Revision::new(2, 0), Revision::new(2, 0), 1))
        );
        assert_eq!(was, mark);
        // A deleted key: not live, but a history to roll back to.
        assert!(idx.tombstone(b"a", Revision::new(4, 0)));
        let mark = idx.key_index(b"a").map(KeyIndex::mark);
        assert_eq!(idx.put(b"a", Revision::new(5, 0), 4), (None, mark));
        idx.rollback(b"a", mark);
        assert_eq!(idx.get(b"a", 5), None);
        assert_eq!(idx.get(b"a", 3).map(|at| at.version), Some(2));
    }

    #[test]
    fn keys_inside_the_nodes_and_on_the_heap_order_as_bytes() {
        // Keys on both sides of the inline bound, sharing prefixes, so
        // that neighbours in the tree are held both ways.
        let short = vec![b'k'; INLINE_KEY - 1];
        let exact = vec![b'k'; INLINE_KEY];
        let long = vec![b'k'; INLINE_KEY + 1];
        let longer = [&exact[..], b"\x00tail"].concat();
        let keys: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            short.clone(),
            [&short[..], b"\xff"].concat(),
            exact.clone(),
            longer.clone(),
            long.clone(),
            [&long[..], b"z"].concat(),
            vec![b'l'],
        ];
        let mut sorted = keys.clone();
        sorted.sort();
        // Built three ways: by puts (in reverse), by restored records, and
        // from records sorted by key.
        let mut by_puts = TreeIndex::new();
        for (i, key) in keys.iter().enumerate().rev() {
            by_puts.put(key, Revision::new(2 + i as i64, 0), 1 + i as i64);
        }
        let records: Vec<RestoredRecord> = sorted
            .iter()
            .enumerate()
            .map(|(i, key)| RestoredRecord {
                key: key.clone(),
                rev: Revision::new(2 + i as i64, 0),
                tombstone: false,
                created: 2 + i as i64,
                version: 1,
            })
            .collect();
        let mut by_restore = TreeIndex::new();
        for r in records.clone() {
            by_restore.restore(r.key, r.rev, r.tombstone, r.created, r.version);
        }
        let from_sorted = TreeIndex::from_sorted(records);
        let at = 2 + keys.len() as i64;
        for idx in [&by_puts, &by_restore, &from_sorted] {
            let all: Vec<Vec<u8>> = idx
                .range(&KeyRange::new(b"", b"\0"), at)
                .map(|(k, _)| k.to_vec())
                .collect();
            assert_eq!(all, sorted);
            for key in &keys {
                assert!(idx.get(key, at).is_some(), "{key:?}");
                assert_eq!(idx.range(&KeyRange::new(key, b""), at).count(), 1);
            }
            // A prefix of a held key, or a held key with a byte more, is
            // not that key.
            assert!(idx.get(&exact[..INLINE_KEY - 2], at).is_none());
            assert!(idx.get(&[&longer[..], b"!"].concat(), at).is_none());
            // [exact, long): exact and the keys it prefixes that sort
            // before long.
            let between: Vec<Vec<u8>> = idx
                .range(&KeyRange::new(&exact, &long), at)
                .map(|(k, _)| k.to_vec())
                .collect();
            assert_eq!(between, vec![exact.clone(), longer.clone()]);
        }
    }
}
