//! The history of one key, as a list of generations.
//!
//! A *generation* is one life of a key: from the put that created it to the
//! delete (tombstone) that ended it. The last generation is the current one; it
//! is empty while the key does not exist.
//!
//! # Worked example
//!
//! ```text
//! put(foo) @ 1.0, put(foo) @ 2.0, delete(foo) @ 3.0,
//! put(foo) @ 4.0, put(foo) @ 5.0, delete(foo) @ 6.0, put(foo) @ 7.0
//!
//! generations:
//!   {created 1.0, ver 3, revs [1.0, 2.0, 3.0(t)]}
//!   {created 4.0, ver 3, revs [4.0, 5.0, 6.0(t)]}
//!   {created 7.0, ver 1, revs [7.0]}            <- current
//! ```
//!
//! `get(at = 2)` finds 2.0 (created 1, version 2); `get(at = 3)` finds nothing:
//! at revision 3 the key is deleted. `get(at = 5)` finds 5.0 (version 2).
//!
//! Compaction at revision R keeps, for every generation still needed, the
//! latest revision at or below R (reads at R must still see it) and everything
//! above R; generations that ended at or below R disappear, tombstone included.
//! Compacting the example:
//!
//! ```text
//! compact(2): keeps 2.0, drops 1.0
//!   {created 1.0, ver 3, revs [2.0, 3.0(t)]} {4.0 ..} {7.0 ..}
//! compact(4): the first generation ended at 3 <= 4: it goes, tombstone too;
//!             4.0 is the latest revision <= 4 of the next one
//!   {created 4.0, ver 3, revs [4.0, 5.0, 6.0(t)]} {7.0 ..}
//! compact(6): the second generation ended at 6: it goes
//!   {created 7.0, ver 1, revs [7.0]}
//! ```
//!
//! The kept revisions are reported to the caller (`available`), which deletes
//! every other stored record at or below R.

use std::collections::HashSet;

use smallvec::{smallvec, SmallVec};

use super::revision::Revision;

/// A generation's revisions: the first held in place (the same 24 bytes as a
/// `Vec`, with smallvec's `union` feature), so a key put once costs no
/// allocation and its read no pointer to chase; more move to the heap.
type Revs = SmallVec<[Revision; 1]>;

/// A key's generations: the first held in the `KeyIndex` itself, which the
/// index keeps in its B-tree's nodes, so reading a key that was never
/// deleted finds its generation in the node (with [`Revs`], a key put once
/// is read without leaving the node: two cache misses less per read among
/// 1,000,000 keys; docs/benchmarks.md, "A key's history held in the
/// index's nodes").
type Generations = SmallVec<[Generation; 1]>;

/// One life of a key: its revisions from creation to (possibly) deletion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Generation {
    /// The key's version at the last revision in `revs` (compaction trims
    /// `revs` but not the count, so versions of older revisions are derived
    /// from it by distance).
    ver: i64,
    /// The revision that created the key in this generation.
    created: Revision,
    /// Every revision of this generation still known, oldest first; the last
    /// one is the tombstone if the generation ended.
    revs: Revs,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }
}

/// What a key looked like at some revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAt {
    /// The revision of the record holding the key's value then.
    pub modified: Revision,
    /// The revision that created the key (start of its generation).
    pub created: Revision,
    /// How many times the key had been put in this generation.
    pub version: i64,
}

/// The whole known history of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    /// The latest revision that touched the key (put or tombstone).
    modified: Revision,
    /// Oldest first; never empty; the last is the current generation.
    generations: Generations,
}

/// Where a key's history stood before a write transaction changed it:
/// enough to take back what the transaction appended, without copying the
/// history (a transaction only ever appends revisions newer than every
/// known one: puts to the current generation, a tombstone that ends it and
/// opens the next). Copying instead made every write to a key cost as much
/// as the key's whole uncompacted history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyMark {
    /// `modified` before.
    modified: Revision,
    /// How many generations there were.
    generations: usize,
    /// The last of them: its version, creation and revision count.
    last_ver: i64,
    last_created: Revision,
    last_revs: usize,
}

impl Default for KeyIndex {
    fn default() -> Self {
        Self {
            modified: Revision::default(),
            generations: smallvec![Generation::default()],
        }
    }
}

impl KeyIndex {
    /// A key with no history yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the index of a key from a stored record, at start-up: the
    /// record's own create revision and version are authoritative because
    /// compaction may have removed the key's earlier records.
    pub fn restore(created: Revision, modified: Revision, version: i64) -> Self {
        Self {
            modified,
            generations: smallvec![Generation {
                ver: version,
                created,
                revs: smallvec![modified],
            }],
        }
    }

    /// Where this history stands now (see [`KeyMark`]).
    pub fn mark(&self) -> KeyMark {
        let last = self.generations.last();
        KeyMark {
            modified: self.modified,
            generations: self.generations.len(),
            last_ver: last.map_or(0, |g| g.ver),
            last_created: last.map_or_else(Revision::default, |g| g.created),
            last_revs: last.map_or(0, |g| g.revs.len()),
        }
    }

    /// Takes back every put and tombstone recorded since `mark` was taken.
    pub fn rollback(&mut self, mark: KeyMark) {
        self.generations.truncate(mark.generations);
        if let Some(g) = self.generations.last_mut() {
            g.revs.truncate(mark.last_revs);
            g.ver = mark.last_ver;
            g.created = mark.last_created;
        }
        self.modified = mark.modified;
    }

    /// Records a put at `rev`, which must be newer than every known revision.
    pub fn put(&mut self, rev: Revision) {
        debug_assert!(rev > self.modified, "put {rev} not after {}", self.modified);
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let last = self.generations.len() - 1;
        let g = &mut self.generations[last];
        if g.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver += 1;
        self.modified = rev;
    }

    /// Records a delete at `rev`: ends the current generation. Returns false
    /// (and changes nothing) when the key does not currently exist.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        if self.generations.last().is_none_or(Generation::is_empty) {
            return false;
        }
        self.put(rev);
        self.generations.push(Generation::default());
        true
    }

    /// True when the key has no history left (fully compacted away).
    pub fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].is_empty()
    }

    /// True when the key exists at the latest revision.
    pub fn is_live(&self) -> bool {
        self.generations.last().is_some_and(|g| !g.is_empty())
    }

    /// The latest revision that touched the key.
    pub fn modified(&self) -> Revision {
        self.modified
    }

    /// The key as it was at main revision `at`, or `None` if it did not exist then.
    pub fn get(&self, at: i64) -> Option<KeyAt> {
        let g = self.find_generation(at)?;
        let n = g.revs.iter().rposition(|r| r.main <= at)?;
        Some(KeyAt {
            modified: g.revs[n],
            created: g.created,
            version: g.ver - (g.revs.len() - n - 1) as i64,
        })
    }

    /// The generation alive at `at`, if any.
    fn find_generation(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(end)) = (g.revs.first(), g.revs.last()) else {
                continue;
            };
            // A finished generation ends at its tombstone: at or after it the key is gone.
            if i != last && end.main <= at {
                return None;
            }
            if first.main <= at {
                return Some(g);
            }
        }
        None
    }

    /// Revisions of this key's records newer than `since` (for watch replay and
    /// the model tests), oldest first.
    pub fn revisions_since(&self, since: i64) -> Vec<Revision> {
        self.generations
            .iter()
            .flat_map(|g| g.revs.iter())
            .filter(|r| r.main > since)
            .copied()
            .collect()
    }

    /// Compacts the history at main revision `at` (see the module doc) and adds
    /// the revisions at or below `at` that must be kept to `available`.
    pub fn compact(&mut self, at: i64, available: &mut HashSet<Revision>) {
        // Skip generations that ended at or before `at`; stop at the first one
        // still alive at `at` or created after it (the current one at the latest).
        let mut gen_idx = 0;
        while gen_idx < self.generations.len() - 1 {
            match self.generations[gen_idx].revs.last() {
                Some(tomb) if tomb.main > at => break,
                _ => gen_idx += 1,
            }
        }
        let last_gen = self.generations.len() - 1;
        let g = &mut self.generations[gen_idx];
        if let Some(keep) = g.revs.iter().rposition(|r| r.main <= at) {
            available.insert(g.revs[keep]);
            g.revs.drain(..keep);
            // Only a tombstone can be left alone in a finished generation: the
            // key is deleted at `at`, so nothing needs the generation any more.
            if g.revs.len() == 1 && gen_idx != last_gen {
                available.remove(&g.revs[0]);
                gen_idx += 1;
            }
        }
        self.generations.drain(..gen_idx);
        // A key updated many times and then compacted, as an apiserver's
        // compaction every five minutes leaves most keys, is read again
        // without leaving the index's node.
        for g in &mut self.generations {
            back_in_place(&mut g.revs);
        }
        back_in_place(&mut self.generations);
    }
}

/// Moves `v` back into place if it is on the heap and now fits (no
/// allocation: the heap block is only freed). A longer `v` stays where it
/// is, so a key that keeps changing is not moved at every compaction.
fn back_in_place<A: smallvec::Array>(v: &mut SmallVec<A>) {
    if v.spilled() && v.len() <= v.inline_size() {
        v.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// The history of the module doc's worked example.
    fn example() -> KeyIndex {
        let mut ki = KeyIndex::new();
        ki.put(r(1));
        ki.put(r(2));
        assert!(ki.tombstone(r(3)));
        ki.put(r(4));
        ki.put(r(5));
        assert!(ki.tombstone(r(6)));
        ki.put(r(7));
        ki
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases
    fn get_table() {
        let ki = example();
        // (at, expected (modified, created, version))
        let table: &[(i64, Option<(i64, i64, i64)>)] = &[
            (0, None),
            (1, Some((1, 1, 1))),
            (2, Some((2, 1, 2))),
            (3, None),
            (4, Some((4, 4, 1))),
            (5, Some((5, 4, 2))),
            (6, None),
            (7, Some((7, 7, 1))),
            (100, Some((7, 7, 1))),
        ];
        for (at, want) in table {
            let got = ki
                .get(*at)
                .map(|k| (k.modified.main, k.created.main, k.version));
            assert_eq!(got, *want, "get({at})");
        }
    }

    #[test]
    fn rollback_takes_back_what_was_appended_since_the_mark() {
        // (put, tombstone?) steps after the mark, from several starting
        // histories: rolling back restores the history exactly.
        let starts = [KeyIndex::new(), example(), {
            let mut deleted = example();
            deleted.tombstone(r(20));
            deleted
        }];
        let steps: [&[(i64, bool)]; 4] = [
            &[(30, false)],
            &[(30, false), (31, true)],
            &[(30, true), (31, false), (32, false)],
            &[
                (30, false),
                (31, true),
                (32, false),
                (33, true),
                (34, false),
            ],
        ];
        for start in &starts {
            for step in steps {
                let mut ki = start.clone();
                let mark = ki.mark();
                for &(main, tombstone) in step {
                    if tombstone {
                        ki.tombstone(r(main));
                    } else {
                        ki.put(r(main));
                    }
                }
                ki.rollback(mark);
                assert_eq!(&ki, start, "steps {step:?}");
            }
        }
    }

    #[test]
    fn tombstone_of_missing_key_is_refused() {
        let mut ki = KeyIndex::new();
        assert!(!ki.tombstone(r(1)));
        ki.put(r(2));
        assert!(ki.tombstone(r(3)));
        assert!(!ki.tombstone(r(4)));
        assert!(!ki.is_live());
    }

    #[test]
    fn compact_table() {
        // (compact at, kept revisions, revisions still readable, whether empty after)
        struct Case {
            at: i64,
            available: Vec<i64>,
            remaining: Vec<i64>,
        }
        let cases = [
            Case {
                at: 1,
                available: vec![1],
                remaining: vec![1, 2, 3, 4, 5, 6, 7],
            },
            Case {
                at: 2,
                available: vec![2],
                remaining: vec![2, 3, 4, 5, 6, 7],
            },
            Case {
                at: 3,
                available: vec![],
                remaining: vec![4, 5, 6, 7],
            },
            Case {
                at: 4,
                available: vec![4],
                remaining: vec![4, 5, 6, 7],
            },
            Case {
                at: 5,
                available: vec![5],
                remaining: vec![5, 6, 7],
            },
            Case {
                at: 6,
                available: vec![],
                remaining: vec![7],
            },
            Case {
                at: 7,
                available: vec![7],
                remaining: vec![7],
            },
            Case {
                at: 9,
                available: vec![7],
                remaining: vec![7],
            },
        ];
        for case in cases {
            let mut ki = example();
            let mut available = HashSet::new();
            ki.compact(case.at, &mut available);
            let mut got: Vec<i64> = available.iter().map(|r| r.main).collect();
            got.sort();
            assert_eq!(got, case.available, "available after compact({})", case.at);
            let remaining: Vec<i64> = ki.revisions_since(0).iter().map(|r| r.main).collect();
            assert_eq!(
                remaining, case.remaining,
                "revisions after compact({})",
                case.at
            );
            // Reads at and above the compaction point are unchanged.
            let reference = example();
            for at in case.at..=8 {
                assert_eq!(
                    ki.get(at),
                    reference.get(at),
                    "get({at}) after compact({})",
                    case.at
                );
            }
        }
    }

    #[test]
    fn compacting_a_deleted_key_empties_it() {
        let mut ki = KeyIndex::new();
        ki.put(r(1));
        assert!(ki.tombstone(r(2)));
        let mut available = HashSet::new();
        ki.compact(1, &mut available);
        assert!(!ki.is_empty());
        ki.compact(2, &mut available);
        assert!(ki.is_empty());
        assert_eq!(available, HashSet::from([r(1)]));
    }

    #[test]
    fn restore_keeps_version_and_creation() {
        let mut ki = KeyIndex::restore(r(3), r(9), 4);
        assert_eq!(ki.get(9).map(|k| (k.created.main, k.version)), Some((3, 4)));
        assert_eq!(ki.get(8), None);
        ki.put(r(10));
        assert_eq!(
            ki.get(10).map(|k| (k.created.main, k.version)),
            Some((3, 5))
        );
    }

    /// A key put once (or restored) holds its history in place; more puts
    /// and generations move to the heap, and reads, rollbacks and
    /// compactions see the same history either way.
    #[test]
    fn a_history_held_in_place_and_on_the_heap_reads_the_same() {
        // The layout the index's nodes rely on (smallvec's `union` feature).
        assert_eq!(size_of::<Revs>(), size_of::<Vec<Revision>>());
        assert_eq!(size_of::<Generation>(), 48);

        let once = KeyIndex::restore(r(1), r(1), 1);
        let mut put = KeyIndex::new();
        put.put(r(1));
        for ki in [&once, &put] {
            assert!(!ki.generations.spilled() && !ki.generations[0].revs.spilled());
            assert_eq!(ki.get(1).map(|k| (k.modified, k.version)), Some((r(1), 1)));
        }
        assert_eq!(once, put);

        // The worked example: its three generations on the heap, the first
        // two's three revisions each too, the current one's one in place
        // until the next put.
        let mut ki = example();
        assert!(ki.generations.spilled() && ki.generations[0].revs.spilled());
        let mark = ki.mark();
        ki.put(r(8));
        assert!(ki.generations[2].revs.spilled());
        ki.rollback(mark);
        assert_eq!(ki, example());
        // Compacted down to the current generation's one revision: what is
        // left reads as before.
        let mut available = HashSet::new();
        ki.compact(7, &mut available);
        assert_eq!(available, HashSet::from([r(7)]));
        assert_eq!(ki.generations.len(), 1);
        // ... and back in place: the compacted key reads from the node.
        assert!(!ki.generations.spilled() && !ki.generations[0].revs.spilled());
        assert_eq!(ki.get(7).map(|k| (k.created, k.version)), Some((r(7), 1)));
        assert_eq!(ki.get(6), None);
        assert_eq!(ki.revisions_since(0), vec![r(7)]);

        // A key put five times: compacted to three revisions it stays on the
        // heap, to one it returns in place, its version still counted.
        let mut busy = KeyIndex::new();
        for main in 1..=5 {
            busy.put(r(main));
        }
        busy.compact(3, &mut HashSet::new());
        assert_eq!(busy.revisions_since(0), vec![r(3), r(4), r(5)]);
        assert!(busy.generations[0].revs.spilled());
        busy.compact(5, &mut HashSet::new());
        assert!(!busy.generations[0].revs.spilled());
        assert_eq!(busy.get(5).map(|k| (k.created, k.version)), Some((r(1), 5)));
    }
}
