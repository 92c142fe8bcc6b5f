//! Test support: a crash's image of a database, and an engine whose
//! writes fail on demand, to prove that a failed commit changes nothing
//! above the storage layer, which records the writes it accepted, to check
//! what went into one batch, and which counts its reads, to check what a
//! request reads.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{Cf, Engine, Error, MemoryEngine, RecordVisitor, Scan, SizeInfo, WriteBatch};

/// Every record of `cf` in `engine`, in key order (as [`Engine::scan`]
/// gives them).
pub fn dump(engine: &dyn Engine, cf: Cf) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let scanned = engine.scan(cf, &[], None, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Scan::Continue
    });
    assert!(scanned.is_ok(), "scan of {cf:?}: {scanned:?}");
    out
}

/// A copy of the files of the database in `from` as they are on disk now
/// (RocksDB's directory is flat): what a crash of the process would leave.
pub fn crash_image(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in std::fs::read_dir(from).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), to.join(file.file_name())).unwrap();
    }
}

/// A [`MemoryEngine`] whose writes fail while `fail` is set.
#[derive(Debug, Default)]
pub struct FlakyEngine {
    /// Where the data really lives.
    pub inner: MemoryEngine,
    /// When set, every write fails with an engine error.
    pub fail: AtomicBool,
    /// Every accepted write, with its sync flag, oldest first.
    writes: Mutex<Vec<(WriteBatch, bool)>>,
    /// Reads so far (gets and scans).
    reads: AtomicUsize,
    /// Syncs so far (`Engine::sync`).
    syncs: AtomicUsize,
    /// Whether `Engine::bulk_writes` is on now.
    bulk: AtomicBool,
    /// Accepted writes made while `bulk` was on.
    bulk_writes: AtomicUsize,
    /// Accepted writes made as `Engine::write_replayed`.
    replayed: AtomicUsize,
}

impl FlakyEngine {
    /// Makes writes fail (`true`) or succeed again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.fail.store(failing, Ordering::SeqCst);
    }

    /// The reads (gets and scans) so far.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// The syncs so far.
    pub fn syncs(&self) -> usize {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Whether [`Engine::bulk_writes`] is on now, and how many accepted
    /// writes were made while it was.
    pub fn bulk(&self) -> (bool, usize) {
        (
            self.bulk.load(Ordering::SeqCst),
            self.bulk_writes.load(Ordering::SeqCst),
        )
    }

    /// How many accepted writes were [`Engine::write_replayed`] ones.
    pub fn replayed(&self) -> usize {
        self.replayed.load(Ordering::SeqCst)
    }

    /// The writes accepted since the last call, oldest first.
    pub fn take_writes(&self) -> Vec<(WriteBatch, bool)> {
        std::mem::take(&mut *crate::locks::lock(&self.writes))
    }
}

impl Engine for FlakyEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(cf, key)
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Scan,
    ) -> Result<(), Error> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.scan(cf, start, end, visit)
    }

    fn scan_point_in_time(
        &self,
        cfs: &[Cf],
        fixed: &mut dyn FnMut(),
        visit: &mut RecordVisitor<'_>,
    ) -> Result<(), Error> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.scan_point_in_time(cfs, fixed, visit)
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Engine("injected failure".into()));
        }
        let record = (batch.clone(), sync);
        self.inner.write(batch, sync)?;
        crate::locks::lock(&self.writes).push(record);
        if self.bulk.load(Ordering::SeqCst) {
            self.bulk_writes.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn write_replayed(&self, batch: WriteBatch) -> Result<(), Error> {
        self.write(batch, false)?;
        self.replayed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn bulk_writes(&self, on: bool) -> Result<(), Error> {
        self.bulk.store(on, Ordering::SeqCst);
        Ok(())
    }

    fn sync(&self) -> Result<(), Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Engine("injected failure".into()));
        }
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync()
    }

    fn size(&self) -> SizeInfo {
        self.inner.size()
    }

    fn defragment(&self) -> Result<(), Error> {
        Ok(())
    }
}
