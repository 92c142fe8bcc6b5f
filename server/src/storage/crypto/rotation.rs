//! Key rotation: new data keys, background re-sealing, dropping keys no
//! record needs, re-wrapping under a new master key; and [`KeyHandle`], the
//! explicit handle the server's rotation paths hold.
//!
//! [`SealedEngine::rotate`] (or [`SealedEngine::activate`], which a
//! replicated `RaftRequest` makes every member run with the same id, each
//! with its own key material) adds a data key and makes it active at once;
//! [`SealedEngine::reseal_step`] re-seals a bounded number of records still
//! sealed with an older key (under the write lock, re-reading each record so a
//! concurrent write is never overwritten); once a full pass finds none,
//! [`SealedEngine::drop_unused_keys`] deletes the old keys. A crash anywhere
//! leaves every record sealed under a key that is still stored.
//!
//! The storage `Engine` trait knows nothing of any of this: whoever opens a
//! sealed engine gets a [`KeyHandle`] with it and hands it to the code that
//! rotates (the state machine applying `RotateDataKey`, the admin rpc that
//! proposes it, the background re-sealer, and the snapshot that is sealed
//! with the master key).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::engine::{key_record, seals_record, ACTIVE, FINGERPRINT, SEALED_CFS};
use super::{storage_error, DataKey, KeyRing, MasterKey, SealedEngine};
use crate::storage::{Cf, Engine, Error, Scan, WriteBatch};

/// Records sealed with an engine's keys ([`crate::storage::Engine::seal_raw`])
/// but kept outside it: the raft log's files.
pub trait SealedElsewhere: Send + Sync {
    /// Re-seals with key `active` every record sealed with another, durably;
    /// how many.
    fn reseal(&self, active: u32) -> Result<usize, Error>;

    /// The ids of the keys the records are sealed with. Taken while no
    /// record is being sealed, so that a key made active after it returns
    /// is the only one a record can be sealed with before the next call.
    fn key_ids(&self) -> Result<BTreeSet<u32>, Error>;
}

/// A handle on a sealed engine's keys, for the code that rotates them: given
/// out by whoever opened the engine, cheap to clone. Held as
/// `Option<KeyHandle>`: `None` when the engine is not sealed (the
/// `bench-plaintext` build, unit tests on a memory engine).
#[derive(Clone, Debug)]
pub struct KeyHandle {
    /// The sealed engine whose keys these are (also serving the store: the
    /// same engine, not a copy).
    engine: Arc<SealedEngine>,
}

impl KeyHandle {
    /// The handle on `engine`'s keys.
    pub fn new(engine: Arc<SealedEngine>) -> Self {
        Self { engine }
    }

    /// The id a rotation proposes: one past the highest id this member holds.
    pub fn next_key_id(&self) -> u32 {
        self.engine.key_ids().into_iter().max().unwrap_or(0) + 1
    }

    /// Makes `id` the active data key (see [`SealedEngine::activate`]).
    pub fn activate(&self, id: u32) -> Result<(), Error> {
        self.engine.activate(id)
    }

    /// One round of the background re-sealing: nothing while a single key is
    /// held; otherwise re-seals up to `max` records still sealed with an old
    /// key, and once none is left drops the keys no record needs. Returns
    /// how many records it re-sealed.
    /// `elsewhere` holds the records sealed with these keys outside the
    /// engine (the raft log's files): re-sealed in the same rounds (all at
    /// once: there are few), and their keys kept while they need them.
    pub fn reseal_round(
        &self,
        max: usize,
        elsewhere: &dyn SealedElsewhere,
    ) -> Result<usize, Error> {
        if self.engine.key_ids().len() <= 1 {
            return Ok(0);
        }
        let resealed =
            self.engine.reseal_step(max)? + elsewhere.reseal(self.engine.active_key())?;
        if resealed == 0 {
            self.engine.drop_unused_keys(elsewhere)?;
        }
        Ok(resealed)
    }

    /// The ids of every data key held.
    pub fn key_ids(&self) -> Vec<u32> {
        self.engine.key_ids()
    }

    /// The id of the data key new records are sealed with.
    pub fn active_key_id(&self) -> u32 {
        self.engine.active_key()
    }

    /// The master key (to seal exported snapshots).
    pub fn master(&self) -> &MasterKey {
        self.engine.master()
    }

    /// The sealed engine (tests reach the sealed bytes underneath with it).
    pub fn engine(&self) -> &Arc<SealedEngine> {
        &self.engine
    }
}

impl SealedEngine {
    /// Adds a new data key and makes it active for every later write;
    /// returns its id. Records sealed with older keys stay readable and are
    /// re-sealed by [`SealedEngine::reseal_step`].
    pub fn rotate(&self) -> Result<u32, Error> {
        let _writes = crate::locks::lock(&self.writes);
        let id = self.key_ids().into_iter().max().unwrap_or(0) + 1;
        self.add_key(id)?;
        Ok(id)
    }

    /// Makes `id` the active data key, creating it if this member has no
    /// key by that id (a cluster agrees on ids; each member has its own key
    /// material under its own master key).
    pub fn activate(&self, id: u32) -> Result<(), Error> {
        let _writes = crate::locks::lock(&self.writes);
        if self.read_keys().contains(id) {
            let mut batch = WriteBatch::new();
            batch.put(Cf::Meta, ACTIVE, id.to_be_bytes());
            self.inner.write(batch, true)?;
            let mut keys = crate::locks::write(&self.keys);
            self.activations.fetch_add(1, Ordering::SeqCst);
            return keys.set_active(id).map_err(storage_error);
        }
        self.add_key(id)
    }

    /// Wraps and stores a new data key `id`, then makes it active (the
    /// caller holds the write lock).
    pub(super) fn add_key(&self, id: u32) -> Result<(), Error> {
        let key = DataKey::generate().map_err(storage_error)?;
        let mut batch = WriteBatch::new();
        batch.put(
            Cf::Meta,
            key_record(id),
            self.master.wrap(&key, id).map_err(storage_error)?,
        );
        batch.put(Cf::Meta, ACTIVE, id.to_be_bytes());
        self.inner.write(batch, true)?;
        let mut keys = crate::locks::write(&self.keys);
        keys.insert(id, key).map_err(storage_error)?;
        self.activations.fetch_add(1, Ordering::SeqCst);
        keys.set_active(id).map_err(storage_error)?;
        tracing::info!(key_id = id, "new data key active");
        Ok(())
    }

    /// Re-seals up to `max` records still sealed with a non-active key;
    /// returns how many it re-sealed (0: none left).
    pub fn reseal_step(&self, max: usize) -> Result<usize, Error> {
        let writes = crate::locks::lock(&self.writes);
        let active = self.active_key();
        let mut stale: Vec<(Cf, Vec<u8>, Vec<u8>)> = Vec::new();
        for cf in SEALED_CFS {
            self.inner.scan(cf, &[], None, &mut |k, v| {
                if KeyRing::key_id_of(v).is_some_and(|id| id != active) {
                    stale.push((cf, k.to_vec(), v.to_vec()));
                }
                if stale.len() >= max {
                    Scan::Stop
                } else {
                    Scan::Continue
                }
            })?;
            if stale.len() >= max {
                break;
            }
        }
        let mut batch = WriteBatch::new();
        {
            let keys = self.read_keys();
            for (cf, key, sealed) in &stale {
                let plain = keys.open(cf.name(), key, sealed).map_err(storage_error)?;
                let resealed = keys.seal(cf.name(), key, &plain).map_err(storage_error)?;
                batch.put(*cf, key.clone(), resealed);
            }
        }
        let count = stale.len();
        if count > 0 {
            // Written raw: already sealed. Replayed, as the applies whose
            // records it rewrites: a crash that kept a re-sealed record
            // but lost its apply would give the replayed entry another
            // revision (`Engine::write_replayed`).
            self.inner.write_replayed(batch)?;
        }
        drop(writes);
        Ok(count)
    }

    /// Deletes every data key but the active one, once no record needs it
    /// (call after [`SealedEngine::reseal_step`] returned 0). Returns the
    /// ids dropped.
    ///
    /// A record sealed outside the engine (`elsewhere`) keeps its key: the
    /// ids it reports are taken before the engine's lock (its sealing takes
    /// that lock), so a key made active in between could have sealed a
    /// record it did not report; the drop then waits for the next round.
    /// The re-sealed records are persisted before a key goes (and only
    /// then: a persist flushes every memtable): a crash could otherwise
    /// keep a record as it was, under the dropped key.
    pub fn drop_unused_keys(&self, elsewhere: &dyn SealedElsewhere) -> Result<Vec<u32>, Error> {
        let activations = self.activations.load(Ordering::SeqCst);
        let mut used = elsewhere.key_ids()?;
        let _writes = crate::locks::lock(&self.writes);
        if self.activations.load(Ordering::SeqCst) != activations {
            return Ok(Vec::new());
        }
        let active = self.active_key();
        for cf in SEALED_CFS {
            self.inner.scan(cf, &[], None, &mut |_, v| {
                if let Some(id) = KeyRing::key_id_of(v) {
                    used.insert(id);
                }
                Scan::Continue
            })?;
        }
        let unused: Vec<u32> = self
            .key_ids()
            .into_iter()
            .filter(|id| *id != active && !used.contains(id))
            .collect();
        if unused.is_empty() {
            return Ok(unused);
        }
        // Under the writes' lock: nothing was sealed since the scan.
        self.inner.persist()?;
        let mut batch = WriteBatch::new();
        for id in &unused {
            batch.delete(Cf::Meta, key_record(*id));
            batch.delete(Cf::Meta, seals_record(*id));
        }
        self.inner.write(batch, true)?;
        let mut keys = crate::locks::write(&self.keys);
        for id in &unused {
            keys.remove(*id).map_err(storage_error)?;
        }
        tracing::info!(dropped = ?unused, "old data keys dropped: no record needs them");
        Ok(unused)
    }

    /// Re-wraps every data key of `inner` from `old` to `new` (master key
    /// rotation), in one synced write. Nothing changes if `old` is wrong.
    pub fn rewrap(inner: &dyn Engine, old: &MasterKey, new: &MasterKey) -> Result<(), Error> {
        match inner.get(Cf::Meta, FINGERPRINT)? {
            Some(f) if f.as_slice() == new.fingerprint() => return Ok(()),
            Some(f) if f.as_slice() != old.fingerprint() => return Err(Error::WrongMasterKey),
            _ => {}
        }
        let mut batch = WriteBatch::new();
        for (id, wrapped) in Self::stored_keys(inner)? {
            let key = old
                .unwrap(&wrapped, id)
                .map_err(|_| Error::WrongMasterKey)?;
            batch.put(
                Cf::Meta,
                key_record(id),
                new.wrap(&key, id).map_err(storage_error)?,
            );
        }
        batch.put(Cf::Meta, FINGERPRINT, new.fingerprint());
        inner.write(batch, true)?;
        tracing::info!("data keys re-wrapped under the new master key");
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::storage::MemoryEngine;

    /// Nothing sealed outside the engine.
    struct Nothing;

    impl SealedElsewhere for Nothing {
        fn reseal(&self, _active: u32) -> Result<usize, Error> {
            Ok(0)
        }

        fn key_ids(&self) -> Result<BTreeSet<u32>, Error> {
            Ok(BTreeSet::new())
        }
    }

    /// Records outside the engine sealed with `ids`; `meanwhile` runs while
    /// they are reported (a rotation racing the drop).
    struct Outside<F: Fn() + Send + Sync> {
        ids: Vec<u32>,
        meanwhile: F,
    }

    impl<F: Fn() + Send + Sync> SealedElsewhere for Outside<F> {
        fn reseal(&self, _active: u32) -> Result<usize, Error> {
            Ok(0)
        }

        fn key_ids(&self) -> Result<BTreeSet<u32>, Error> {
            (self.meanwhile)();
            Ok(self.ids.iter().copied().collect())
        }
    }

    #[test]
    fn a_key_sealing_records_outside_the_engine_is_kept_and_a_racing_rotation_defers_the_drop() {
        let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let sealed = Arc::new(SealedEngine::open(inner, master(1)).unwrap());
        sealed.activate(2).unwrap();
        // Key 1 still seals a record outside: kept.
        let outside = Outside {
            ids: vec![1],
            meanwhile: || {},
        };
        assert_eq!(
            sealed.drop_unused_keys(&outside).unwrap(),
            Vec::<u32>::new()
        );
        assert_eq!(sealed.key_ids(), vec![1, 2]);
        // Key 3 made active while the outside records are reported: key 2
        // may have sealed one it did not report, so nothing is dropped...
        let racing = Outside {
            ids: vec![],
            meanwhile: || sealed.activate(3).unwrap(),
        };
        assert_eq!(sealed.drop_unused_keys(&racing).unwrap(), Vec::<u32>::new());
        assert_eq!(sealed.key_ids(), vec![1, 2, 3]);
        // ...until a round with no rotation in it.
        assert_eq!(sealed.drop_unused_keys(&Nothing).unwrap(), vec![1, 2]);
        assert_eq!(sealed.key_ids(), vec![3]);
    }

    fn master(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 32])
    }

    #[test]
    fn rotation_reseals_everything_and_drops_the_old_key() {
        let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let sealed = SealedEngine::open(Arc::clone(&inner), master(1)).unwrap();
        let mut b = WriteBatch::new();
        for i in 0u32..500 {
            b.put(
                Cf::Kv,
                i.to_be_bytes().to_vec(),
                format!("v{i}").into_bytes(),
            );
        }
        sealed.write(b, false).unwrap();
        assert_eq!(sealed.rotate().unwrap(), 2);
        // New writes use the new key at once.
        let mut b = WriteBatch::new();
        b.put(Cf::Lease, b"l".to_vec(), b"x".to_vec());
        sealed.write(b, false).unwrap();
        let raw = inner.get(Cf::Lease, b"l").unwrap().unwrap();
        assert_eq!(KeyRing::key_id_of(&raw), Some(2));
        // Old ones are re-sealed in bounded steps; the old key goes last.
        assert_eq!(
            sealed.drop_unused_keys(&Nothing).unwrap(),
            Vec::<u32>::new()
        );
        let mut steps = 0;
        while sealed.reseal_step(64).unwrap() > 0 {
            steps += 1;
        }
        assert_eq!(steps, 8);
        assert_eq!(sealed.drop_unused_keys(&Nothing).unwrap(), vec![1]);
        assert_eq!(sealed.key_ids(), vec![2]);
        for i in 0u32..500 {
            let v = sealed.get(Cf::Kv, &i.to_be_bytes()).unwrap().unwrap();
            assert_eq!(v, format!("v{i}").into_bytes());
        }
        // After a restart the ring is the same.
        drop(sealed);
        let reopened = SealedEngine::open(inner, master(1)).unwrap();
        assert_eq!((reopened.key_ids(), reopened.active_key()), (vec![2], 2));
    }

    #[test]
    fn a_crash_after_the_old_key_went_keeps_every_record_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let inner: Arc<dyn Engine> = Arc::new(crate::storage::RocksEngine::open(&path).unwrap());
        let sealed = SealedEngine::open(Arc::clone(&inner), master(1)).unwrap();
        let mut b = WriteBatch::new();
        for i in 0u32..100 {
            b.put(
                Cf::Kv,
                i.to_be_bytes().to_vec(),
                format!("v{i}").into_bytes(),
            );
        }
        sealed.write_replayed(b).unwrap();
        // In the table files, sealed with key 1.
        sealed.persist().unwrap();
        assert_eq!(sealed.rotate().unwrap(), 2);
        while sealed.reseal_step(64).unwrap() > 0 {}
        assert_eq!(sealed.drop_unused_keys(&Nothing).unwrap(), vec![1]);

        let image = dir.path().join("image");
        crate::storage::flaky::crash_image(&path, &image);
        let crashed: Arc<dyn Engine> = Arc::new(crate::storage::RocksEngine::open(&image).unwrap());
        let crashed = SealedEngine::open(crashed, master(1)).unwrap();
        assert_eq!(crashed.key_ids(), vec![2]);
        for i in 0u32..100 {
            let v = crashed.get(Cf::Kv, &i.to_be_bytes()).unwrap().unwrap();
            assert_eq!(v, format!("v{i}").into_bytes());
        }
    }

    #[test]
    fn the_handle_rotates_reseals_and_drops() {
        let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let sealed = Arc::new(SealedEngine::open(Arc::clone(&inner), master(1)).unwrap());
        let keys = KeyHandle::new(Arc::clone(&sealed));
        let mut b = WriteBatch::new();
        for i in 0u32..10 {
            b.put(Cf::Kv, i.to_be_bytes().to_vec(), b"v".to_vec());
        }
        sealed.write(b, false).unwrap();
        // One key: a round does nothing.
        keys.reseal_round(4, &Nothing).unwrap();
        assert_eq!(keys.key_ids(), vec![1]);
        assert_eq!(keys.next_key_id(), 2);
        keys.activate(2).unwrap();
        assert_eq!((keys.key_ids(), sealed.active_key()), (vec![1, 2], 2));
        // Activating an id held already only switches to it.
        keys.activate(2).unwrap();
        assert_eq!(keys.key_ids(), vec![1, 2]);
        // Rounds of 4: three to re-seal 10 records, one to drop key 1.
        for _ in 0..4 {
            keys.reseal_round(4, &Nothing).unwrap();
        }
        assert_eq!(keys.key_ids(), vec![2]);
        assert_eq!(keys.master().fingerprint(), master(1).fingerprint());
        for i in 0u32..10 {
            assert_eq!(sealed.get(Cf::Kv, &i.to_be_bytes()).unwrap().unwrap(), b"v");
        }
    }
}
