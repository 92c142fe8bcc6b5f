//! Reads at a revision: the key index says which records a range holds
//! at that revision, storage gives them in one pass, decoded
//! ([`range_at`]) or as stored ([`records_at`]).

use std::ops::Range;

use cairn_proto::mvccpb::KeyValue;
use prost::Message;

use super::index::KeyRange;
use super::page_counts::PageCounts;
use super::revision::Revision;
use super::store::{decode_kv, RangeOptions, RangeResult, State};
use super::Error;
use crate::storage::{try_get_many, Cf, Engine};

/// Reads `range` as of `view_rev` (the newest revision the reader may see),
/// with `pending` records not yet on disk (a write transaction's own writes,
/// by revision).
pub(super) fn range_at(
    state: &State,
    engine: &dyn Engine,
    pending: &dyn Fn(Revision) -> Option<KeyValue>,
    counts: Option<&PageCounts>,
    view_rev: i64,
    range: &KeyRange,
    opts: RangeOptions,
) -> Result<RangeResult, Error> {
    let (revs, count) = plan(state, counts, view_rev, range, opts)?;
    // One record (a single key's read, the commonest): answered without
    // the batch's bookkeeping below (four allocations fewer a read).
    if let [r] = revs[..] {
        let kv = match pending(r) {
            Some(kv) => kv,
            None => {
                let mut read = None;
                read_stored(engine, &revs, [0], |_, r, bytes| {
                    read = Some(decode_kv(r, bytes)?);
                    Ok(())
                })?;
                read.ok_or_else(|| missing(r))?
            }
        };
        return Ok(RangeResult {
            kvs: vec![kv],
            count,
            rev: view_rev,
        });
    }
    let mut kvs: Vec<Option<KeyValue>> = revs.iter().map(|r| pending(*r)).collect();
    let stored = kvs.iter().enumerate().filter(|(_, kv)| kv.is_none());
    let stored: Vec<usize> = stored.map(|(place, _)| place).collect();
    read_stored(engine, &revs, stored, |place, r, bytes| {
        kvs[place] = Some(decode_kv(r, bytes)?);
        Ok(())
    })?;
    let kvs = kvs
        .into_iter()
        .zip(&revs)
        .map(|(kv, r)| kv.ok_or_else(|| missing(*r)))
        .collect::<Result<_, _>>()?;
    Ok(RangeResult {
        kvs,
        count,
        rev: view_rev,
    })
}

/// [`range_at`] of committed history (nothing pending), each record as
/// stored: what a response can carry without decoding and encoding it.
pub(super) fn records_at(
    state: &State,
    engine: &dyn Engine,
    counts: Option<&PageCounts>,
    range: &KeyRange,
    opts: RangeOptions,
) -> Result<RangeResult<Records>, Error> {
    let view_rev = state.current_rev;
    let (revs, count) = plan(state, counts, view_rev, range, opts)?;
    let mut records = Records::with_places(revs.len());
    read_stored(engine, &revs, 0..revs.len(), |place, _, bytes| {
        records.place(place, bytes);
        Ok(())
    })?;
    // A place the engine never visited is a record it does not have.
    if let Some(place) = records.spans.iter().position(|s| *s == UNPLACED) {
        return Err(missing(revs[place]));
    }
    Ok(RangeResult {
        kvs: records,
        count,
        rev: view_rev,
    })
}

/// The index's part of a read: which revisions `range` holds at its
/// revision (at most `opts.limit`, in key order), and how many keys it has.
fn plan(
    state: &State,
    counts: Option<&PageCounts>,
    view_rev: i64,
    range: &KeyRange,
    opts: RangeOptions,
) -> Result<(Vec<Revision>, usize), Error> {
    let rev = if opts.rev <= 0 { view_rev } else { opts.rev };
    if rev > view_rev {
        return Err(Error::FutureRev);
    }
    if rev < state.compact_rev {
        return Err(Error::Compacted);
    }
    // A page of a list whose page before noted this page's count need not
    // walk the rest of the range to count it. Only committed history is
    // fixed (a write transaction's own reads pass no counts).
    let counts = counts.filter(|_| rev <= state.current_rev && opts.limit > 0 && !opts.count_only);
    let known = counts.and_then(|c| c.take(range, rev));
    let mut count = 0;
    let mut revs = Vec::new();
    // The last two keys given: a client's next page starts after the last
    // key it saw, which is the one before the last when the caller fetched
    // one more than the client's limit to learn `more` (as etcd does).
    let mut last: [&[u8]; 2] = [&[], &[]];
    for (key, at) in state.index.range(range, rev) {
        if !opts.count_only && (opts.limit == 0 || revs.len() < opts.limit) {
            revs.push(at.modified);
            last = [last[1], key];
        } else if known.is_some() {
            break;
        }
        count += 1;
    }
    let count = known.unwrap_or(count);
    if let Some(counts) = counts.filter(|_| count > revs.len()) {
        let after_last = count - revs.len();
        counts.note_next(range, last[1], rev, after_last);
        if revs.len() >= 2 {
            counts.note_next(range, last[0], rev, after_last + 1);
        }
    }
    Ok((revs, count))
}

/// Reads the records of `revs` at `places` in one pass, in revision order
/// (a page of keys is scattered over the history), handing `visit` each
/// one's place, revision and bytes (lent by the engine, opened in place).
fn read_stored(
    engine: &dyn Engine,
    revs: &[Revision],
    places: impl IntoIterator<Item = usize>,
    mut visit: impl FnMut(usize, Revision, &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut places = places.into_iter();
    let (first, second) = (places.next(), places.next());
    if let (Some(place), None) = (first, second) {
        // One record (a single key's read, the commonest): no batch to
        // order, so none of its allocations.
        let Some(&r) = revs.get(place) else {
            return Ok(());
        };
        let key = r.record_key(false);
        return try_get_many::<Error>(engine, Cf::Kv, std::slice::from_ref(&key), |_, bytes| {
            visit(place, r, bytes.ok_or_else(|| missing(r))?)
        });
    }
    let mut stored: Vec<(Vec<u8>, usize)> = first
        .into_iter()
        .chain(second)
        .chain(places)
        .filter_map(|place| Some((revs.get(place)?.record_key(false), place)))
        .collect();
    stored.sort_unstable();
    let (keys, places): (Vec<Vec<u8>>, Vec<usize>) = stored.into_iter().unzip();
    try_get_many::<Error>(engine, Cf::Kv, &keys, |n, bytes| {
        // A position the engine made up leaves its record missing, for
        // the caller to find.
        let Some((&place, &r)) = places.get(n).and_then(|p| Some((p, revs.get(*p)?))) else {
            return Ok(());
        };
        visit(place, r, bytes.ok_or_else(|| missing(r))?)
    })
}

/// Key-values as they are stored, each an encoded `mvccpb.KeyValue`, in
/// key order: what a Range's response splices in whole (a page of a list
/// would otherwise decode 500 records into 1,000 buffers, then encode
/// them again).
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// The records back to back, in the order storage gave them (by
    /// revision): one buffer for all of them.
    bytes: Vec<u8>,
    /// Where each record is in `bytes`, in key order ([`UNPLACED`] until
    /// placed).
    spans: Vec<Range<usize>>,
}

/// The same records in the same order, however they are laid out.
impl PartialEq for Records {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Records {}

/// The span of a place no record has filled yet.
const UNPLACED: Range<usize> = usize::MAX..usize::MAX;

/// The most a page's buffer reserves before it holds anything (its first
/// record's size times the page's records is the guess).
const RESERVE_AHEAD: usize = 16 << 20;

impl Records {
    /// `n` places, to be filled in any order.
    fn with_places(n: usize) -> Self {
        Self {
            bytes: Vec::new(),
            spans: vec![UNPLACED; n],
        }
    }

    /// Stores `record` at `place`.
    fn place(&mut self, place: usize, record: &[u8]) {
        if self.bytes.capacity() == 0 {
            let guess = record.len().saturating_mul(self.spans.len());
            self.bytes.reserve(guess.min(RESERVE_AHEAD));
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(record);
        if let Some(span) = self.spans.get_mut(place) {
            *span = start..self.bytes.len();
        }
    }

    /// The stored form of each of `kvs`, in their order.
    pub fn encode(kvs: &[KeyValue]) -> Self {
        let mut records = Self::default();
        for kv in kvs {
            let start = records.bytes.len();
            // Cannot fail: a `Vec` grows as needed.
            let _ = kv.encode(&mut records.bytes);
            records.spans.push(start..records.bytes.len());
        }
        records
    }

    /// Adds `record` after the others.
    pub fn push(&mut self, record: &[u8]) {
        self.spans.push(UNPLACED);
        self.place(self.spans.len() - 1, record);
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Keeps the first `n` records.
    pub fn truncate(&mut self, n: usize) {
        self.spans.truncate(n);
    }

    /// Each record, in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.spans
            .iter()
            .map(|span| self.bytes.get(span.clone()).unwrap_or_default())
    }
}

/// A record the key index points to that storage does not have.
fn missing(r: Revision) -> Error {
    Error::Corrupt {
        what: format!("record {r}"),
        reason: "indexed but missing from storage".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::mvcc::Store;
    use crate::storage::{MemoryEngine, RocksEngine};

    fn kv(key: &str, create: i64, modr: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: key.into(),
            create_revision: create,
            mod_revision: modr,
            version: 1,
            lease: 0,
        }
    }

    /// The memory engine and RocksDB in `dir`: a range reads its records
    /// with RocksDB's batched MultiGet, in revision order.
    fn both_engines(dir: &std::path::Path) -> [Arc<dyn Engine>; 2] {
        [
            Arc::new(MemoryEngine::new()),
            Arc::new(RocksEngine::open(dir).unwrap()),
        ]
    }

    #[test]
    fn a_range_gives_key_order_whatever_the_records_order() {
        // On both engines (RocksDB reads a range's records in one MultiGet, in
        // revision order): keys written out of key order, then a transaction
        // reading its own write beside them.
        let dir = tempfile::tempdir().unwrap();
        for engine in both_engines(dir.path()) {
            let store = Store::open(engine, true).unwrap();
            for k in ["d", "a", "c"] {
                let mut txn = store.write();
                txn.put(k.as_bytes(), k.into(), 0);
                txn.commit(None).unwrap();
            }
            let mut txn = store.write();
            txn.put(b"b", b"b".to_vec(), 0);
            let page = RangeOptions {
                limit: 3,
                ..Default::default()
            };
            let seen = txn.range(&KeyRange::new(b"a", b"z"), page).unwrap();
            assert_eq!(seen.kvs, vec![kv("a", 3, 3), kv("b", 5, 5), kv("c", 4, 4)]);
            assert_eq!(seen.count, 4);
        }
    }

    #[test]
    fn records_are_the_stored_form_of_what_a_range_decodes() {
        // On both engines, a page of keys written out of key order (so
        // storage gives them in another order than the page's), a single
        // key, an empty range and a count.
        let dir = tempfile::tempdir().unwrap();
        for engine in both_engines(dir.path()) {
            let store = Store::open(Arc::clone(&engine), true).unwrap();
            for k in ["d", "a", "c", "b", "a"] {
                let mut txn = store.write();
                txn.put(k.as_bytes(), k.repeat(300).into(), 0);
                txn.commit(None).unwrap();
            }
            let page = |limit| RangeOptions {
                limit,
                ..Default::default()
            };
            let reads = [
                (KeyRange::new(b"a", b"z"), page(3)),
                (KeyRange::new(b"a", b"z"), page(0)),
                (KeyRange::new(b"c", b""), page(0)),
                (KeyRange::new(b"x", b"z"), page(0)),
                (
                    KeyRange::new(b"a", b"z"),
                    RangeOptions {
                        count_only: true,
                        ..Default::default()
                    },
                ),
            ];
            for (range, opts) in reads {
                let decoded = store.range(&range, opts).unwrap();
                let stored = store.range_records(&range, opts).unwrap();
                assert_eq!(stored.kvs, Records::encode(&decoded.kvs), "{opts:?}");
                assert_eq!((stored.count, stored.rev), (decoded.count, decoded.rev));
            }
            // A record the index points to but storage lost: corrupt.
            let mut batch = crate::storage::WriteBatch::default();
            batch.delete(Cf::Kv, Revision::new(4, 0).record_key(false));
            engine.write(batch, false).unwrap();
            let lost = store.range_records(&KeyRange::new(b"a", b"z"), page(0));
            assert!(matches!(lost, Err(Error::Corrupt { .. })), "{lost:?}");
        }
    }

    #[test]
    fn a_single_key_is_read_from_storage_or_from_the_transaction() {
        let dir = tempfile::tempdir().unwrap();
        for engine in both_engines(dir.path()) {
            let store = Store::open(Arc::clone(&engine), true).unwrap();
            let mut txn = store.write();
            txn.put(b"a", b"a".to_vec(), 0);
            txn.commit(None).unwrap();
            let one = KeyRange::new(b"a", b"");
            let read = store.range(&one, RangeOptions::default()).unwrap();
            assert_eq!((read.kvs, read.count), (vec![kv("a", 2, 2)], 1));
            // A transaction's own write, not yet on disk.
            let mut txn = store.write();
            txn.put(b"a", b"b".to_vec(), 0);
            let own = txn.range(&one, RangeOptions::default()).unwrap();
            let want = KeyValue {
                value: b"b".to_vec(),
                version: 2,
                ..kv("a", 2, 3)
            };
            assert_eq!(own.kvs, vec![want]);
            drop(txn);
            // A record the index points to but storage lost: corrupt, not
            // an empty answer.
            let mut batch = crate::storage::WriteBatch::default();
            batch.delete(Cf::Kv, Revision::new(2, 0).record_key(false));
            engine.write(batch, false).unwrap();
            let lost = store.range(&one, RangeOptions::default());
            assert!(matches!(lost, Err(Error::Corrupt { .. })), "{lost:?}");
        }
    }
}
