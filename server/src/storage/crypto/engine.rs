//! [`SealedEngine`]: encryption at rest, as an [`Engine`] over an engine.
//!
//! Every value written to the column families that can hold user data
//! (`kv`: MVCC records with their user keys and values; `lease`; `raft`: log
//! entries carry whole requests; `auth`: users, password hashes, roles) is sealed with AES-256-GCM
//! ([`super::key_ring`]) before it reaches the inner engine, with the column
//! family and the record key as associated data; every value read is opened
//! (and authenticated) on the way out. Record keys stay plain: they are
//! revisions, lease ids and log indexes, never user data, which is why the
//! ordered key index is rebuilt in memory from the records at start-up.
//! `meta` stays plain: it holds the wrapped data keys themselves, the
//! master key's fingerprint and counters, and no user data.
//!
//! Keys: a master key (from a key file) wraps random data keys; the wrapped
//! data keys live in `meta` under `enc/key/<id>`, the active id under
//! `enc/active`, the master key's fingerprint under `enc/fingerprint` (so a
//! wrong master key is refused before anything is written).
//!
//! Rotation (new data keys, re-sealing, dropping old keys, re-wrapping under
//! a new master key) is in [`super::rotation`]; this file seals, opens, and
//! replaces a data key before it reaches its seal limit.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use super::{storage_error, DataKey, KeyRing, MasterKey, SealError};
use crate::storage::{BatchOp, Cf, Engine, Error, RecordVisitor, Scan, SizeInfo, WriteBatch};

/// The column families whose values are sealed.
pub const SEALED_CFS: [Cf; 5] = [Cf::Kv, Cf::Lease, Cf::Raft, Cf::Auth, Cf::RaftState];

/// `meta` key of the master key's fingerprint (a wrong key is refused).
pub(super) const FINGERPRINT: &[u8] = b"enc/fingerprint";
/// `meta` key of the active data key's id (u32, big-endian).
pub(super) const ACTIVE: &[u8] = b"enc/active";
/// `meta` prefix of the wrapped data keys (+ id, u32 big-endian).
const KEY_PREFIX: &[u8] = b"enc/key/";
/// `meta` prefix of the persisted seal counts (+ id, u32 big-endian).
const SEALS_PREFIX: &[u8] = b"enc/seals/";
/// Seals reserved (persisted ahead) per write of the counter: the count
/// survives a crash rounded up, never down.
const SEAL_RESERVATION: u64 = 1 << 20;

/// Sealed values in one batch from which it is sealed on several threads:
/// far above any client request's, so only a batch of a whole state (a
/// snapshot's install, a restore) pays for starting them.
const PARALLEL_SEALS: u64 = 4096;

/// The `meta` key of data key `id`'s wrapped bytes.
pub(super) fn key_record(id: u32) -> Vec<u8> {
    let mut k = KEY_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The `meta` key of data key `id`'s persisted seal count.
pub(super) fn seals_record(id: u32) -> Vec<u8> {
    let mut k = SEALS_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Whether the values of `cf` are sealed.
fn is_sealed(cf: Cf) -> bool {
    SEALED_CFS.contains(&cf)
}

/// An engine that seals the values of [`SEALED_CFS`].
pub struct SealedEngine {
    /// Where the sealed records live.
    pub(super) inner: Arc<dyn Engine>,
    /// The master key: wraps new data keys at rotation.
    pub(super) master: MasterKey,
    /// The data keys (one active for sealing).
    pub(super) keys: RwLock<KeyRing>,
    /// Serialises writes with the re-sealer, so a record it re-seals is
    /// never one a write has just replaced or deleted. Also guards the
    /// persisted seal reservation: (key id, seals reserved on disk).
    pub(super) writes: Mutex<(u32, u64)>,
    /// How many times a data key was made active: a key drop that looked
    /// at records sealed outside the engine gives up if this moved
    /// meanwhile (see `drop_unused_keys`).
    pub(super) activations: AtomicU64,
}

impl std::fmt::Debug for SealedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedEngine")
            .field("keys", &self.read_keys().ids())
            .field("active", &self.read_keys().active_id())
            .finish_non_exhaustive()
    }
}

impl SealedEngine {
    /// Opens the sealed view of `inner` with `master`. A database without
    /// encryption records gets its first data key (id 1). A database whose
    /// keys were wrapped by another master key is refused before anything is
    /// written (`Error::WrongMasterKey`).
    pub fn open(inner: Arc<dyn Engine>, master: MasterKey) -> Result<Self, Error> {
        let fingerprint = inner.get(Cf::Meta, FINGERPRINT)?;
        let stored = Self::stored_keys(inner.as_ref())?;
        if let Some(f) = &fingerprint {
            if f.as_slice() != master.fingerprint() {
                return Err(Error::WrongMasterKey);
            }
        }
        let ring = if stored.is_empty() {
            if fingerprint.is_some() {
                return Err(Error::Tampered("the data keys are missing".into()));
            }
            let key = DataKey::generate().map_err(storage_error)?;
            let mut batch = WriteBatch::new();
            batch.put(
                Cf::Meta,
                key_record(1),
                master.wrap(&key, 1).map_err(storage_error)?,
            );
            batch.put(Cf::Meta, ACTIVE, 1u32.to_be_bytes());
            batch.put(Cf::Meta, FINGERPRINT, master.fingerprint());
            inner.write(batch, true)?;
            KeyRing::new(1, key)
        } else {
            let active = inner
                .get(Cf::Meta, ACTIVE)?
                .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| Error::Tampered("the active data key id is missing".into()))?;
            let mut ring: Option<KeyRing> = None;
            let mut others = Vec::new();
            for (id, wrapped) in stored {
                let key = master.unwrap(&wrapped, id).map_err(|e| match e {
                    SealError::WrongMasterKey { .. } => Error::WrongMasterKey,
                    other => storage_error(other),
                })?;
                if id == active {
                    ring = Some(KeyRing::new(id, key));
                } else {
                    others.push((id, key));
                }
            }
            let mut ring = ring
                .ok_or_else(|| Error::Tampered(format!("active data key {active} is missing")))?;
            for (id, key) in others {
                ring.insert(id, key).map_err(storage_error)?;
            }
            for id in ring.ids() {
                if let Some(v) = inner.get(Cf::Meta, &seals_record(id))? {
                    if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                        ring.set_seals(id, u64::from_be_bytes(b))
                            .map_err(storage_error)?;
                    }
                }
            }
            ring
        };
        let active = ring.active_id();
        let reserved = ring.record_seals(active).unwrap_or(0);
        Ok(Self {
            inner,
            master,
            keys: RwLock::new(ring),
            writes: Mutex::new((active, reserved)),
            activations: AtomicU64::new(0),
        })
    }

    /// Whether `inner` already holds encryption records (a fingerprint or a
    /// wrapped data key). When it does, [`SealedEngine::open`] writes nothing:
    /// it opens the keys or refuses. Read without writing, for the offline
    /// tools, which must not add keys to a directory they merely inspect.
    pub fn has_keys(inner: &dyn Engine) -> Result<bool, Error> {
        Ok(inner.get(Cf::Meta, FINGERPRINT)?.is_some() || !Self::stored_keys(inner)?.is_empty())
    }

    /// The wrapped data keys stored in `engine`, by id.
    pub(super) fn stored_keys(engine: &dyn Engine) -> Result<Vec<(u32, Vec<u8>)>, Error> {
        let mut keys = Vec::new();
        let mut end = KEY_PREFIX.to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        engine.scan(Cf::Meta, KEY_PREFIX, Some(&end), &mut |k, v| {
            if let Ok(id) = <[u8; 4]>::try_from(&k[KEY_PREFIX.len()..]) {
                keys.push((u32::from_be_bytes(id), v.to_vec()));
            }
            Scan::Continue
        })?;
        Ok(keys)
    }

    /// The key ring, for reading.
    pub(super) fn read_keys(&self) -> RwLockReadGuard<'_, KeyRing> {
        // The ring changes in single assignments; a poisoned lock still
        // holds a usable ring.
        crate::locks::read(&self.keys)
    }

    /// Lowers the number of seals per data key before a new one is made
    /// (tests exercise the automatic rotation with it).
    pub fn with_seal_limit(self, limit: u64) -> Self {
        let ring = self.keys.into_inner().unwrap_or_else(|e| e.into_inner());
        Self {
            keys: RwLock::new(ring.with_seal_limit(limit)),
            ..self
        }
    }

    /// The master key (to seal exported snapshots).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The engine underneath, holding sealed bytes (tests tamper with it).
    pub fn inner(&self) -> &Arc<dyn Engine> {
        &self.inner
    }

    /// The active data key's id.
    pub fn active_key(&self) -> u32 {
        self.read_keys().active_id()
    }

    /// The ids of every data key held.
    pub fn key_ids(&self) -> Vec<u32> {
        self.read_keys().ids()
    }

    /// A point read's answer as stored, opened where `cf` is sealed.
    fn open_found(
        &self,
        cf: Cf,
        key: &[u8],
        found: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, Error> {
        match found {
            Some(v) if is_sealed(cf) => Ok(Some(self.open_value(cf, key, &v)?)),
            other => Ok(other),
        }
    }

    /// Opens a value read from the sealed column family `cf`.
    fn open_value(&self, cf: Cf, key: &[u8], value: &[u8]) -> Result<Vec<u8>, Error> {
        self.read_keys()
            .open(cf.name(), key, value)
            .map_err(storage_error)
    }

    /// Seals the puts of `batch` in place; returns the seal reservation
    /// record to store, when the active key's count passes what is
    /// persisted (empty otherwise). The caller stores it no later than
    /// the sealed records can reach a disk.
    fn seal_batch(
        &self,
        batch: &mut WriteBatch,
        reserved: &mut (u32, u64),
    ) -> Result<WriteBatch, Error> {
        // A data key that has sealed half its limit is replaced before it
        // can run out (random nonces: the limit keeps collisions unlikely).
        let (active, used, limit) = {
            let keys = self.read_keys();
            let active = keys.active_id();
            (
                active,
                keys.record_seals(active).unwrap_or(0),
                keys.seal_limit(),
            )
        };
        let needed = batch
            .ops
            .iter()
            .filter(|op| matches!(op, BatchOp::Put { cf, .. } if is_sealed(*cf)))
            .count() as u64;
        if used + needed > limit / 2 {
            let next = self.key_ids().into_iter().max().unwrap_or(active) + 1;
            tracing::info!(key_id = active, seals = used, "data key used up; rotating");
            self.add_key(next)?;
        }
        let keys = self.read_keys();
        let seal_all = |ops: &mut [BatchOp]| -> Result<(), Error> {
            for op in ops {
                if let BatchOp::Put { cf, key, value } = op {
                    if is_sealed(*cf) {
                        *value = keys.seal(cf.name(), key, value).map_err(storage_error)?;
                    }
                }
            }
            Ok(())
        };
        // Asked only for a large batch: the count of usable cores reads
        // the cgroup's files, a cost no client write should pay.
        let threads = if needed < PARALLEL_SEALS {
            1
        } else {
            crate::storage::parallel::default_threads()
        };
        if threads < 2 {
            seal_all(&mut batch.ops)?;
        } else {
            // A whole state in one batch (a snapshot's install, a restore):
            // sealed on every core, each thread its own slice, in place.
            let per_thread = batch.ops.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let mut workers = Vec::with_capacity(threads);
                for part in batch.ops.chunks_mut(per_thread) {
                    let worker = std::thread::Builder::new()
                        .name("seal".into())
                        .spawn_scoped(scope, move || seal_all(part))
                        .map_err(|e| Error::Sealing(format!("cannot start a thread: {e}")))?;
                    workers.push(worker);
                }
                workers.into_iter().try_for_each(|worker| {
                    worker
                        .join()
                        .unwrap_or_else(|_| Err(Error::Sealing("a sealing thread panicked".into())))
                })
            })?;
        }
        let active = keys.active_id();
        let used = keys.record_seals(active).unwrap_or(0);
        let mut reservation = WriteBatch::new();
        if reserved.0 != active || used >= reserved.1 {
            let ahead = used + SEAL_RESERVATION;
            reservation.put(Cf::Meta, seals_record(active), ahead.to_be_bytes());
            *reserved = (active, ahead);
        }
        Ok(reservation)
    }

    /// Stores `reservation` (from [`SealedEngine::seal_batch`]) on its
    /// own, synced, for sealed records that do not go with it in one write
    /// of this engine's log: a crash keeps the count rounded up, never
    /// down, whatever it keeps of them.
    fn store_reservation(&self, reservation: WriteBatch) -> Result<(), Error> {
        if reservation.is_empty() {
            return Ok(());
        }
        self.inner.write(reservation, true)
    }
}

impl Engine for SealedEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.open_found(cf, key, self.inner.get(cf, key)?)
    }

    fn get_many(
        &self,
        cf: Cf,
        keys: &[Vec<u8>],
        visit: &mut dyn FnMut(usize, Option<&[u8]>) -> Scan,
    ) -> Result<(), Error> {
        if !is_sealed(cf) {
            return self.inner.get_many(cf, keys, visit);
        }
        let mut failure = None;
        self.inner.get_many(cf, keys, &mut |i, sealed| {
            let Some(sealed) = sealed else {
                return visit(i, None);
            };
            let key = keys
                .get(i)
                .ok_or_else(|| Error::Engine(format!("get_many: no key at position {i}")));
            match key.and_then(|key| self.open_value(cf, key, sealed)) {
                Ok(plain) => visit(i, Some(&plain)),
                Err(e) => {
                    failure = Some(e);
                    Scan::Stop
                }
            }
        })?;
        failure.map_or(Ok(()), Err)
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Scan,
    ) -> Result<(), Error> {
        if !is_sealed(cf) {
            return self.inner.scan(cf, start, end, visit);
        }
        let mut failure = None;
        self.inner.scan(
            cf,
            start,
            end,
            &mut |k, v| match self.open_value(cf, k, v) {
                Ok(plain) => visit(k, &plain),
                Err(e) => {
                    failure = Some(e);
                    Scan::Stop
                }
            },
        )?;
        failure.map_or(Ok(()), Err)
    }

    fn scan_point_in_time(
        &self,
        cfs: &[Cf],
        fixed: &mut dyn FnMut(),
        visit: &mut RecordVisitor<'_>,
    ) -> Result<(), Error> {
        let mut failure = None;
        self.inner.scan_point_in_time(
            cfs,
            fixed,
            &mut |cf, k, v| match self.open_raw(cf, k, v) {
                Ok(plain) => visit(cf, k, &plain),
                Err(e) => {
                    failure = Some(e);
                    Scan::Stop
                }
            },
        )?;
        failure.map_or(Ok(()), Err)
    }

    fn scan_raw(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Scan,
    ) -> Result<(), Error> {
        self.inner.scan(cf, start, end, visit)
    }

    fn open_raw<'a>(&self, cf: Cf, key: &[u8], raw: &'a [u8]) -> Result<Cow<'a, [u8]>, Error> {
        if is_sealed(cf) {
            Ok(Cow::Owned(self.open_value(cf, key, raw)?))
        } else {
            Ok(Cow::Borrowed(raw))
        }
    }

    fn write(&self, mut batch: WriteBatch, sync: bool) -> Result<(), Error> {
        let mut writes = crate::locks::lock(&self.writes);
        let reservation = self.seal_batch(&mut batch, &mut writes)?;
        // In the same atomic write as the records it covers.
        batch.ops.extend(reservation.ops);
        self.inner.write(batch, sync)
    }

    fn sync(&self) -> Result<(), Error> {
        self.inner.sync()
    }

    fn write_replayed(&self, mut batch: WriteBatch) -> Result<(), Error> {
        let mut writes = crate::locks::lock(&self.writes);
        let reservation = self.seal_batch(&mut batch, &mut writes)?;
        // Not in the replayed write: a crash may lose that one while
        // records sealed later under the same reservation (the raft log's
        // entries) are kept.
        self.store_reservation(reservation)?;
        self.inner.write_replayed(batch)
    }

    fn get_persisted(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.open_found(cf, key, self.inner.get_persisted(cf, key)?)
    }

    fn persist(&self) -> Result<(), Error> {
        self.inner.persist()
    }

    fn bulk_writes(&self, on: bool) -> Result<(), Error> {
        self.inner.bulk_writes(on)
    }

    fn seal_raw(&self, cf: Cf, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, Error> {
        if !is_sealed(cf) {
            return Ok(value);
        }
        let mut writes = crate::locks::lock(&self.writes);
        let mut batch = WriteBatch::new();
        batch.put(cf, key.to_vec(), value);
        let reservation = self.seal_batch(&mut batch, &mut writes)?;
        let Some(BatchOp::Put { value: sealed, .. }) = batch.ops.pop() else {
            return Err(Error::Sealing("a sealed record went missing".into()));
        };
        // Before the sealed record can reach a disk.
        self.store_reservation(reservation)?;
        Ok(sealed)
    }

    fn size(&self) -> SizeInfo {
        self.inner.size()
    }

    fn defragment(&self) -> Result<(), Error> {
        self.inner.defragment()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::storage::MemoryEngine;

    fn master(byte: u8) -> MasterKey {
        MasterKey::from_bytes([byte; 32])
    }

    #[test]
    fn behaves_like_an_engine() {
        let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let sealed = SealedEngine::open(inner, master(1)).unwrap();
        crate::storage::conformance::check(&sealed);
    }

    #[test]
    fn a_batch_of_a_whole_state_is_sealed_on_several_threads_alike() {
        let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let sealed = SealedEngine::open(Arc::clone(&inner), master(1)).unwrap();
        let n = PARALLEL_SEALS as usize + 7;
        let mut b = WriteBatch::new();
        for i in 0..n {
            b.put(Cf::Kv, format!("r{i:05}"), format!("value {i}"));
            b.put(Cf::Meta, format!("m{i:05}"), format!("meta {i}"));
        }
        sealed.write(b, false).unwrap();
        for i in [0, n / 2, n - 1] {
            let key = format!("r{i:05}");
            let raw = inner.get(Cf::Kv, key.as_bytes()).unwrap().unwrap();
            assert!(!raw.windows(5).any(|w| w == b"value"));
            assert_eq!(
                sealed.get(Cf::Kv, key.as_bytes()).unwrap(),
                Some(format!("value {i}").into_bytes())
            );
            let meta = format!("m{i:05}");
            assert_eq!(
                inner.get(Cf::Meta, meta.as_bytes()).unwrap(),
                Some(format!("meta {i}").into_bytes())
            );
        }
        let mut count = 0;
        sealed
            .scan(Cf::Kv, b"", None, &mut |_, _| {
                count += 1;
                Scan::Continue
            })
            .unwrap();
        assert_eq!(count, n);
    }

    #[test]
    fn values_are_sealed_underneath_and_bound_to_their_place() {
        let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let sealed = SealedEngine::open(Arc::clone(&inner), master(1)).unwrap();
        let mut b = WriteBatch::new();
        b.put(Cf::Kv, b"r1".to_vec(), b"secret value".to_vec());
        b.put(Cf::Meta, b"plain".to_vec(), b"meta".to_vec());
        sealed.write(b, false).unwrap();
        let raw = inner.get(Cf::Kv, b"r1").unwrap().unwrap();
        assert!(!raw.windows(6).any(|w| w == b"secret"));
        assert_eq!(inner.get(Cf::Meta, b"plain").unwrap().unwrap(), b"meta");
        assert_eq!(sealed.get(Cf::Kv, b"r1").unwrap().unwrap(), b"secret value");
        // The same sealed bytes under another record key do not open.
        let mut swap = WriteBatch::new();
        swap.put(Cf::Kv, b"r2".to_vec(), raw.clone());
        inner.write(swap, false).unwrap();
        assert!(matches!(sealed.get(Cf::Kv, b"r2"), Err(Error::Tampered(_))));
        // A flipped bit fails too, and a scan stops with the error.
        let mut flipped = raw;
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let mut b = WriteBatch::new();
        b.put(Cf::Kv, b"r1".to_vec(), flipped);
        inner.write(b, false).unwrap();
        assert!(matches!(sealed.get(Cf::Kv, b"r1"), Err(Error::Tampered(_))));
        let scanned = sealed.scan(Cf::Kv, &[], None, &mut |_, _| Scan::Continue);
        assert!(matches!(scanned, Err(Error::Tampered(_))));
    }

    #[test]
    fn a_wrong_master_key_is_refused_before_anything_is_written() {
        let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        drop(SealedEngine::open(Arc::clone(&inner), master(1)).unwrap());
        let before = SealedEngine::stored_keys(inner.as_ref()).unwrap();
        assert!(matches!(
            SealedEngine::open(Arc::clone(&inner), master(2)),
            Err(Error::WrongMasterKey)
        ));
        assert_eq!(SealedEngine::stored_keys(inner.as_ref()).unwrap(), before);
        // Master key rotation: re-wrapped under the new key, refused with the old.
        SealedEngine::rewrap(inner.as_ref(), &master(1), &master(3)).unwrap();
        assert!(SealedEngine::open(Arc::clone(&inner), master(3)).is_ok());
        assert!(matches!(
            SealedEngine::open(Arc::clone(&inner), master(1)),
            Err(Error::WrongMasterKey)
        ));
    }

    #[test]
    fn a_data_key_is_replaced_before_its_seal_limit() {
        let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let sealed = SealedEngine::open(Arc::clone(&inner), master(1))
            .unwrap()
            .with_seal_limit(20);
        for i in 0u32..50 {
            let mut b = WriteBatch::new();
            b.put(Cf::Kv, i.to_be_bytes().to_vec(), b"v".to_vec());
            sealed.write(b, false).unwrap();
        }
        // Half of 20 per key: five keys for 50 records, every one readable.
        assert_eq!(sealed.key_ids(), vec![1, 2, 3, 4, 5]);
        for i in 0u32..50 {
            assert_eq!(sealed.get(Cf::Kv, &i.to_be_bytes()).unwrap().unwrap(), b"v");
        }
    }

    #[test]
    fn a_replayed_write_leaves_its_seal_reservation_to_a_synced_write_of_its_own() {
        let inner = Arc::new(crate::storage::flaky::FlakyEngine::default());
        let sealed = SealedEngine::open(Arc::clone(&inner) as Arc<dyn Engine>, master(1)).unwrap();
        inner.take_writes();
        let mut b = WriteBatch::new();
        b.put(Cf::Kv, b"r1".to_vec(), b"secret value".to_vec());
        sealed.write_replayed(b).unwrap();
        let writes = inner.take_writes();
        assert_eq!(writes.len(), 2, "{writes:?}");
        let (reservation, synced) = &writes[0];
        assert!(synced, "the reservation first, synced");
        assert!(matches!(
            &reservation.ops[..],
            [BatchOp::Put { cf: Cf::Meta, key, .. }] if key.starts_with(SEALS_PREFIX)
        ));
        let (records, _) = &writes[1];
        assert!(matches!(
            &records.ops[..],
            [BatchOp::Put { cf: Cf::Kv, .. }]
        ));
        assert_eq!(sealed.get(Cf::Kv, b"r1").unwrap().unwrap(), b"secret value");
        assert_eq!(
            sealed.get_persisted(Cf::Kv, b"r1").unwrap().unwrap(),
            b"secret value"
        );
        // Under the same reservation: no second one.
        let mut b = WriteBatch::new();
        b.put(Cf::Kv, b"r2".to_vec(), b"v".to_vec());
        sealed.write_replayed(b).unwrap();
        assert_eq!(inner.take_writes().len(), 1);
    }
}
