//! An in-memory [`Engine`] for tests: same semantics as RocksDB, no disk.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use super::{BatchOp, Cf, Engine, Error, RecordVisitor, Scan, SizeInfo, WriteBatch};

type Tables = BTreeMap<(Cf, Vec<u8>), Vec<u8>>;

/// An engine that keeps every column family in one ordered map.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    /// All records keyed by (column family, key); one lock makes batches atomic.
    tables: Mutex<Tables>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock cannot leave a half-applied batch
        // (batches are applied on a copy-free loop that does not panic), so a
        // poisoned lock is still consistent.
        crate::locks::lock(&self.tables)
    }
}

impl Engine for MemoryEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.lock().get(&(cf, key.to_vec())).cloned())
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Scan,
    ) -> Result<(), Error> {
        let tables = self.lock();
        let upper = match end {
            Some(end) => Bound::Excluded((cf, end.to_vec())),
            None => Bound::Unbounded,
        };
        if let Some(end) = end {
            if end <= start {
                return Ok(());
            }
        }
        for ((record_cf, key), value) in
            tables.range((Bound::Included((cf, start.to_vec())), upper))
        {
            if *record_cf != cf {
                break;
            }
            if visit(key, value) == Scan::Stop {
                break;
            }
        }
        Ok(())
    }

    fn scan_point_in_time(
        &self,
        cfs: &[Cf],
        fixed: &mut dyn FnMut(),
        visit: &mut RecordVisitor<'_>,
    ) -> Result<(), Error> {
        // A copy taken under one hold of the lock, in visiting order, is
        // the point in time.
        let copy: Vec<(Cf, Vec<u8>, Vec<u8>)> = {
            let tables = self.lock();
            cfs.iter()
                .flat_map(|&cf| {
                    tables
                        .range((cf, Vec::new())..)
                        .take_while(move |((c, _), _)| *c == cf)
                        .map(move |((_, k), v)| (cf, k.clone(), v.clone()))
                })
                .collect()
        };
        fixed();
        for (cf, key, value) in &copy {
            if visit(*cf, key, value) == Scan::Stop {
                break;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), Error> {
        Ok(())
    }

    fn write(&self, batch: WriteBatch, _sync: bool) -> Result<(), Error> {
        let mut tables = self.lock();
        for op in batch.ops {
            match op {
                BatchOp::Put { cf, key, value } => {
                    tables.insert((cf, key), value);
                }
                BatchOp::Delete { cf, key } => {
                    tables.remove(&(cf, key));
                }
            }
        }
        Ok(())
    }

    fn size(&self) -> SizeInfo {
        let bytes: usize = self
            .lock()
            .iter()
            .map(|((_, k), v)| k.len() + v.len())
            .sum();
        SizeInfo {
            total: bytes as u64,
            in_use: bytes as u64,
        }
    }

    fn defragment(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        super::super::conformance::check(&super::MemoryEngine::new());
    }
}
