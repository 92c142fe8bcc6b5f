//! Test support: an engine whose writes fail on demand, to prove that a failed
//! commit changes nothing above the storage layer.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{Cf, Engine, Error, MemoryEngine, Scan, SizeInfo, WriteBatch};

/// A [`MemoryEngine`] whose writes fail while `fail` is set.
#[derive(Debug, Default)]
pub struct FlakyEngine {
    /// Where the data really lives.
    pub inner: MemoryEngine,
    /// When set, every write fails with an engine error.
    pub fail: AtomicBool,
}

impl FlakyEngine {
    /// Makes writes fail (`true`) or succeed again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.fail.store(failing, Ordering::SeqCst);
    }
}

impl Engine for FlakyEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get(cf, key)
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Scan,
    ) -> Result<(), Error> {
        self.inner.scan(cf, start, end, visit)
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Engine("injected failure".into()));
        }
        self.inner.write(batch, sync)
    }

    fn size(&self) -> SizeInfo {
        self.inner.size()
    }

    fn defragment(&self) -> Result<(), Error> {
        Ok(())
    }
}
