//! Reads at a revision: the key index says which records a range holds
//! at that revision, storage gives them in one pass.

use cairn_proto::mvccpb::KeyValue;

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
    // One record (a single key's read, the commonest): read alone, without
    // the batch's bookkeeping below (four allocations fewer a read).
    if let [r] = revs[..] {
        let kv = match pending(r) {
            Some(kv) => kv,
            None => {
                // Lent by the engine and opened in place, as a batch's are.
                let mut read = None;
                try_get_many::<Error>(
                    engine,
                    Cf::Kv,
                    std::slice::from_ref(&r.record_key(false)),
                    |_, bytes| {
                        read = Some(decode_kv(r, bytes.ok_or_else(|| missing(r))?)?);
                        Ok(())
                    },
                )?;
                read.ok_or_else(|| missing(r))?
            }
        };
        return Ok(RangeResult {
            kvs: vec![kv],
            count,
            rev: view_rev,
        });
    }
    // The records not pending are read in one pass, in revision order (a
    // page of keys is scattered over the history), then put back in key
    // order.
    let mut kvs: Vec<Option<KeyValue>> = revs.iter().map(|r| pending(*r)).collect();
    let mut stored: Vec<(Vec<u8>, usize)> = kvs
        .iter()
        .enumerate()
        .filter(|(_, kv)| kv.is_none())
        .map(|(i, _)| (revs[i].record_key(false), i))
        .collect();
    stored.sort_unstable();
    let (keys, places): (Vec<Vec<u8>>, Vec<usize>) = stored.into_iter().unzip();
    try_get_many::<Error>(engine, Cf::Kv, &keys, |n, bytes| {
        // A position the engine made up leaves its record missing, below.
        let Some(&place) = places.get(n) else {
            return Ok(());
        };
        let r = revs[place];
        let bytes = bytes.ok_or_else(|| missing(r))?;
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

    #[test]
    fn a_range_gives_key_order_whatever_the_records_order() {
        // On both engines (RocksDB reads a range's records in one MultiGet, in
        // revision order): keys written out of key order, then a transaction
        // reading its own write beside them.
        let dir = tempfile::tempdir().unwrap();
        let engines: [Arc<dyn Engine>; 2] = [
            Arc::new(MemoryEngine::new()),
            Arc::new(RocksEngine::open(dir.path()).unwrap()),
        ];
        for engine in engines {
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
    fn a_single_key_is_read_from_storage_or_from_the_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let engines: [Arc<dyn Engine>; 2] = [
            Arc::new(MemoryEngine::new()),
            Arc::new(RocksEngine::open(dir.path()).unwrap()),
        ];
        for engine in engines {
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
