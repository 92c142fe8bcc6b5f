//! [`EntryCache`]: the newest entries of the log, in memory.
//!
//! Raft reads back what it has just persisted: the term of the index a
//! follower acknowledged (every commit check on the leader, every append's
//! match check on a follower) and the committed entries it hands out to
//! apply. From RocksDB each of those reads is a lookup, an unseal of the
//! whole entry (a 100 KiB value for a 100 KiB put, to learn its term) and a
//! decode. etcd keeps its whole log in memory (`MemoryStorage`); this keeps
//! only the tail, bounded by bytes, which is where raft reads in the steady
//! state. A lagging follower's older entries still come from disk.

use std::collections::VecDeque;

use ::raft::eraftpb::Entry;
use protobuf::Message;

/// Bytes of entries (as encoded) kept: room for the entries between an
/// append and their apply under any client load, 16 × 1 MiB puts included.
pub(super) const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Consecutive entries ending at the log's last index (or empty).
#[derive(Debug)]
pub(super) struct EntryCache {
    /// The entries, oldest first, each index one more than the previous.
    entries: VecDeque<Cached>,
    /// The running byte offset just past the newest entry: the cache holds
    /// `end - entries[0].start` bytes, and the newest `n` entries hold
    /// `end - entries[len - n].start`, each found without a walk.
    end: u64,
    /// Most bytes kept; the newest entry is kept even when larger.
    limit: u64,
}

/// A cached entry and where it starts in the running byte count of what
/// was appended (an offset from an arbitrary base: only differences mean
/// anything).
#[derive(Debug)]
struct Cached {
    start: u64,
    entry: Entry,
}

impl EntryCache {
    /// An empty cache holding at most `limit` bytes of entries.
    pub fn new(limit: u64) -> Self {
        Self {
            entries: VecDeque::new(),
            end: 0,
            limit,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|c| c.entry.index)
    }

    /// The entries' encoded sizes, summed.
    fn bytes(&self) -> u64 {
        self.entries.front().map_or(0, |c| self.end - c.start)
    }

    /// Records consecutive `entries` just written to the log: cached
    /// entries at or after the first of them (the suffix they replace) go,
    /// everything goes if they do not follow what is cached, and then the
    /// oldest entries until the cache is within its limit.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        match self.first_index() {
            Some(cached) if first.index > cached => {
                let keep = (first.index - cached) as usize;
                if keep > self.entries.len() {
                    self.clear();
                } else if let Some(stale) = self.entries.get(keep) {
                    self.end = stale.start;
                    self.entries.truncate(keep);
                }
            }
            _ => self.clear(),
        }
        for entry in entries {
            let start = self.end;
            self.end += size(entry);
            self.entries.push_back(Cached {
                start,
                entry: entry.clone(),
            });
        }
        while self.bytes() > self.limit && self.entries.len() > 1 {
            self.entries.pop_front();
        }
    }

    /// The first index of the newest entries that hold more than `bytes`,
    /// counting no more than `max_entries` of them: the entries before it
    /// are older than `bytes` of newer ones. `None` when the cache holds no
    /// more than `bytes`, or when `max_entries` newest ones do not. A
    /// binary search, since the raft loop asks after every round.
    pub fn newest_start(&self, bytes: u64, max_entries: usize) -> Option<u64> {
        let threshold = self.end.checked_sub(bytes)?;
        // Entries starting before the threshold have more than `bytes`
        // from their start to the end; the newest of them is the answer.
        let at = self.entries.partition_point(|c| c.start < threshold);
        let at = at.checked_sub(1)?;
        if self.entries.len() - at > max_entries {
            return None;
        }
        self.entries.get(at).map(|c| c.entry.index)
    }

    /// Forgets the entries before `to` (the log was compacted up to it).
    pub fn compact(&mut self, to: u64) {
        while self.first_index().is_some_and(|first| first < to) {
            self.entries.pop_front();
        }
    }

    /// Forgets every entry (the log was replaced by a snapshot).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The term of the entry at `index`, if cached.
    pub fn term(&self, index: u64) -> Option<u64> {
        let offset = index.checked_sub(self.first_index()?)?;
        self.entries
            .get(usize::try_from(offset).ok()?)
            .map(|c| c.entry.term)
    }

    /// The entries `low..high`, limited as raft's `limit_size` (the first
    /// always, then entries while the total stays within `limit`), if all
    /// of them are cached. `low < high`.
    pub fn entries(&self, low: u64, high: u64, limit: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let last = first + self.entries.len() as u64 - 1;
        if low < first || high > last + 1 || low >= high {
            return None;
        }
        let start = usize::try_from(low - first).ok()?;
        let end = usize::try_from(high - first).ok()?;
        let mut out = Vec::with_capacity(end - start);
        let mut total = 0u64;
        for cached in self.entries.range(start..end) {
            total = total.saturating_add(size(&cached.entry));
            if !out.is_empty() && total > limit {
                break;
            }
            out.push(cached.entry.clone());
        }
        Some(out)
    }
}

/// An entry's encoded size, as raft's `limit_size` counts it.
fn size(entry: &Entry) -> u64 {
    u64::from(entry.compute_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![0u8; data].into(),
            ..Default::default()
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn appends_replace_the_suffix_and_a_gap_starts_over() {
        let mut c = EntryCache::new(u64::MAX);
        c.append(&[entry(5, 1, 0), entry(6, 1, 0), entry(7, 1, 0)]);
        assert_eq!(c.term(4), None);
        assert_eq!(c.term(6), Some(1));
        // A conflicting append at 6 replaces 6 and 7.
        c.append(&[entry(6, 2, 0)]);
        assert_eq!(
            indexes(&c.entries(5, 7, u64::MAX).unwrap()),
            [(5, 1), (6, 2)]
        );
        assert_eq!(c.term(7), None);
        // A new start at or before the first, or after a gap, starts over.
        c.append(&[entry(9, 2, 0)]);
        assert_eq!(c.term(6), None);
        assert_eq!(c.term(9), Some(2));
        c.append(&[entry(3, 3, 0)]);
        assert_eq!(c.term(9), None);
        assert_eq!(c.term(3), Some(3));
    }

    #[test]
    fn reads_only_what_is_all_cached_and_limits_like_raft() {
        let mut c = EntryCache::new(u64::MAX);
        c.append(&(1..=4).map(|i| entry(i, 1, 100)).collect::<Vec<_>>());
        let one = size(&entry(1, 1, 100));
        assert!(c.entries(0, 2, u64::MAX).is_none(), "0 is not cached");
        assert!(c.entries(2, 6, u64::MAX).is_none(), "5 is not cached");
        assert_eq!(c.entries(2, 5, u64::MAX).unwrap().len(), 3);
        assert_eq!(c.entries(2, 5, 0).unwrap().len(), 1, "the first always");
        assert_eq!(c.entries(1, 5, 2 * one).unwrap().len(), 2);
        assert_eq!(c.entries(1, 5, 2 * one + 1).unwrap().len(), 2);
        assert_eq!(c.entries(1, 5, 3 * one).unwrap().len(), 3);
    }

    #[test]
    fn holds_its_limit_and_forgets_what_is_compacted() {
        let one = size(&entry(1, 1, 1000));
        let mut c = EntryCache::new(3 * one);
        c.append(&(1..=5).map(|i| entry(i, 1, 1000)).collect::<Vec<_>>());
        assert_eq!(c.term(2), None);
        assert_eq!(indexes(&c.entries(3, 6, u64::MAX).unwrap()).len(), 3);
        c.compact(4);
        assert_eq!(c.term(3), None);
        assert_eq!(c.term(4), Some(1));
        assert_eq!(c.bytes(), 2 * one);
        // One entry larger than the limit is still kept.
        c.append(&[entry(6, 1, 10_000)]);
        assert_eq!(c.term(6), Some(1));
        assert_eq!(c.term(5), None);
        c.clear();
        assert_eq!((c.term(6), c.bytes()), (None, 0));
    }

    #[test]
    fn finds_where_the_newest_bytes_start() {
        let one = size(&entry(1, 1, 1000));
        let mut c = EntryCache::new(u64::MAX);
        assert_eq!(c.newest_start(0, 10), None, "empty");
        c.append(&(1..=5).map(|i| entry(i, 1, 1000)).collect::<Vec<_>>());
        // More than 2 entries' worth starts at the third newest (3).
        assert_eq!(c.newest_start(2 * one, 10), Some(3));
        assert_eq!(c.newest_start(2 * one - 1, 10), Some(4));
        assert_eq!(c.newest_start(0, 10), Some(5));
        // Not within what is cached, or not within the entries looked at.
        assert_eq!(c.newest_start(5 * one, 10), None);
        assert_eq!(c.newest_start(2 * one, 2), None);
        // After a conflicting append replaced 4 and 5 by one entry, the
        // sizes still count from what is cached.
        c.append(&[entry(4, 2, 1000)]);
        assert_eq!(c.newest_start(2 * one, 10), Some(2));
        assert_eq!(c.newest_start(4 * one, 10), None);
        // And after the oldest aged out for room.
        let mut c = EntryCache::new(3 * one);
        c.append(&(1..=5).map(|i| entry(i, 1, 1000)).collect::<Vec<_>>());
        assert_eq!(c.newest_start(2 * one, 10), Some(3));
        assert_eq!(c.newest_start(3 * one, 10), None);
    }
}
