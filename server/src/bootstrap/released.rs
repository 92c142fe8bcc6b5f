//! Knowing when the data directory is closed, without polling.
//!
//! A stopping member must not return before RocksDB is closed: an
//! in-process restart reopens the same directory at once, and RocksDB
//! refuses a second open. Whatever still holds the engine (the raft log,
//! the store, work already handed to the blocking pool) lets go of it by
//! itself; the last one to drop it closes it. [`Tracked`] carries a drop
//! guard next to the engine, so that closing it is an event
//! [`Released::wait`] can await (mini-redis's drop-guard pattern), where
//! `stop` used to poll reference counts.

use std::borrow::Cow;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::storage::{Cf, Engine, Error, RecordVisitor, Scan, SizeInfo, WriteBatch};

/// An engine and a guard dropped right after it.
pub struct Tracked<E> {
    /// The engine itself. Declared first: fields drop in order, so the
    /// engine is closed before `_closed` reports it.
    inner: E,
    /// Dropped with this wrapper: its receiver, [`Released`], then resolves.
    _closed: oneshot::Sender<()>,
}

/// Resolves once the [`Tracked`] engine it came with is dropped.
#[derive(Debug)]
pub struct Released(oneshot::Receiver<()>);

/// Wraps `engine` so that its release can be awaited.
pub fn track<E: Engine>(engine: E) -> (Tracked<E>, Released) {
    let (tx, rx) = oneshot::channel();
    (
        Tracked {
            inner: engine,
            _closed: tx,
        },
        Released(rx),
    )
}

impl Released {
    /// Waits until the engine is closed, for at most `limit` (then warns:
    /// something outlived the member's stop).
    pub async fn wait(self, limit: Duration) {
        // Err is the only outcome: the sender never sends, it is dropped.
        if tokio::time::timeout(limit, self.0).await.is_err() {
            tracing::warn!("store still in use after the grace period");
        }
    }
}

impl<E: Engine> Engine for Tracked<E> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get(cf, key)
    }

    fn get_many(
        &self,
        cf: Cf,
        keys: &[Vec<u8>],
        visit: &mut dyn FnMut(usize, Option<&[u8]>) -> Scan,
    ) -> Result<(), Error> {
        self.inner.get_many(cf, keys, visit)
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

    fn scan_point_in_time(
        &self,
        cfs: &[Cf],
        fixed: &mut dyn FnMut(),
        visit: &mut RecordVisitor<'_>,
    ) -> Result<(), Error> {
        self.inner.scan_point_in_time(cfs, fixed, visit)
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), Error> {
        self.inner.write(batch, sync)
    }

    fn sync(&self) -> Result<(), Error> {
        self.inner.sync()
    }

    fn write_replayed(&self, batch: WriteBatch) -> Result<(), Error> {
        self.inner.write_replayed(batch)
    }

    fn get_persisted(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get_persisted(cf, key)
    }

    fn persist(&self) -> Result<(), Error> {
        self.inner.persist()
    }

    fn bulk_writes(&self, on: bool) -> Result<(), Error> {
        self.inner.bulk_writes(on)
    }

    fn seal_raw(&self, cf: Cf, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.inner.seal_raw(cf, key, value)
    }

    fn scan_raw(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Scan,
    ) -> Result<(), Error> {
        self.inner.scan_raw(cf, start, end, visit)
    }

    fn open_raw<'a>(&self, cf: Cf, key: &[u8], raw: &'a [u8]) -> Result<Cow<'a, [u8]>, Error> {
        self.inner.open_raw(cf, key, raw)
    }

    fn size(&self) -> SizeInfo {
        self.inner.size()
    }

    fn defragment(&self) -> Result<(), Error> {
        self.inner.defragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryEngine;

    #[tokio::test(start_paused = true)]
    async fn released_resolves_when_the_last_holder_drops() {
        let (engine, released) = track(MemoryEngine::new());
        let engine: std::sync::Arc<dyn Engine> = std::sync::Arc::new(engine);
        let held = std::sync::Arc::clone(&engine);
        drop(engine);
        let waiter = tokio::spawn(released.wait(Duration::from_secs(5)));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "still held");
        drop(held);
        let started = tokio::time::Instant::now();
        waiter.await.ok();
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
