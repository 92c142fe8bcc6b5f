//! [`KeyRing`]: the data keys a member holds, by id, one of them active for
//! sealing, each with a count of the seals it made (the per-key limit of
//! random nonces: see the documentation of [`super`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::aead;
use super::{DataKey, MasterKey, SealError};

/// Seals allowed under one data key: NIST SP 800-38D's bound for AES-GCM with
/// random 96-bit nonces (see the documentation of [`super`]).
pub const SEAL_LIMIT: u64 = 1 << 32;

/// One data key of a [`KeyRing`] with its usage.
#[derive(Debug)]
struct RingEntry {
    /// The key.
    key: DataKey,
    /// Records sealed with this key (approximate across restarts: restored by
    /// [`KeyRing::set_seals`]). Atomic so that sealing needs only `&KeyRing`.
    seals: AtomicU64,
}

/// The data keys a member holds, by id, one of them active for sealing.
///
/// Sealing and opening take `&self` (the seal counters are atomic), so a ring
/// can be shared between threads; changing the set of keys or the active key
/// takes `&mut self` (the server swaps rings, or holds one behind a lock).
#[derive(Debug)]
pub struct KeyRing {
    /// The keys by id. Every record carries the id of the key that sealed it,
    /// so old keys stay here until no record needs them.
    keys: HashMap<u32, RingEntry>,
    /// The key [`KeyRing::seal`] uses. Always a key of `keys`: `new` inserts
    /// it, `set_active` checks it, `remove` refuses it.
    active: u32,
    /// Seals allowed per key before [`SealError::KeyExhausted`]; at most
    /// [`SEAL_LIMIT`].
    limit: u64,
}

impl KeyRing {
    /// A key ring holding one key, active, with the [`SEAL_LIMIT`].
    pub fn new(active_id: u32, key: DataKey) -> KeyRing {
        let mut keys = HashMap::new();
        keys.insert(
            active_id,
            RingEntry {
                key,
                seals: AtomicU64::new(0),
            },
        );
        KeyRing {
            keys,
            active: active_id,
            limit: SEAL_LIMIT,
        }
    }

    /// A ring of one fresh random key under `id`, and that key wrapped by
    /// `master`: what a file sealed apart from the engine (a `snapshot
    /// save` file, a staged install) carries, to be opened again with
    /// [`KeyRing::unwrapped`].
    pub fn fresh_wrapped(master: &MasterKey, id: u32) -> Result<(KeyRing, Vec<u8>), SealError> {
        let key = DataKey::generate()?;
        let wrapped = master.wrap(&key, id)?;
        Ok((KeyRing::new(id, key), wrapped))
    }

    /// The ring of the key that [`KeyRing::fresh_wrapped`] wrapped by
    /// `master` under `id`; an error if `master` does not open it.
    pub fn unwrapped(master: &MasterKey, wrapped: &[u8], id: u32) -> Result<KeyRing, SealError> {
        Ok(KeyRing::new(id, master.unwrap(wrapped, id)?))
    }

    /// The same ring with a lower seal limit per key (capped at
    /// [`SEAL_LIMIT`]): for members sharing data keys, and for tests.
    pub fn with_seal_limit(mut self, limit: u64) -> KeyRing {
        self.limit = limit.min(SEAL_LIMIT);
        self
    }

    /// The seal limit per key.
    pub fn seal_limit(&self) -> u64 {
        self.limit
    }

    /// Adds a key under `id` (not active; see [`KeyRing::set_active`]), with a
    /// seal count of 0. Adding the same key again under its id does nothing;
    /// a different key under an existing id is refused
    /// ([`SealError::DuplicateKey`]), as it would make that id's records
    /// unreadable.
    pub fn insert(&mut self, id: u32, key: DataKey) -> Result<(), SealError> {
        if let Some(entry) = self.keys.get(&id) {
            return if entry.key.same_as(&key) {
                Ok(())
            } else {
                Err(SealError::DuplicateKey(id))
            };
        }
        self.keys.insert(
            id,
            RingEntry {
                key,
                seals: AtomicU64::new(0),
            },
        );
        Ok(())
    }

    /// Makes the key `id` the one new records are sealed with.
    pub fn set_active(&mut self, id: u32) -> Result<(), SealError> {
        if !self.keys.contains_key(&id) {
            return Err(SealError::UnknownKey(id));
        }
        self.active = id;
        Ok(())
    }

    /// Removes the key `id`: records sealed with it can no longer be opened.
    /// Returns whether it was there. The active key cannot be removed.
    pub fn remove(&mut self, id: u32) -> Result<bool, SealError> {
        if id == self.active {
            return Err(SealError::ActiveKey(id));
        }
        Ok(self.keys.remove(&id).is_some())
    }

    /// The id of the key new records are sealed with.
    pub fn active_id(&self) -> u32 {
        self.active
    }

    /// The ids of all keys, ascending.
    pub fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.keys.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Whether the ring holds the key `id`.
    pub fn contains(&self, id: u32) -> bool {
        self.keys.contains_key(&id)
    }

    /// How many records the key `id` has sealed (including those restored by
    /// [`KeyRing::set_seals`]), or `None` if the ring does not hold it.
    pub fn record_seals(&self, id: u32) -> Option<u64> {
        self.keys
            .get(&id)
            .map(|entry| entry.seals.load(Ordering::Relaxed))
    }

    /// Raises the seal count of the key `id` to at least `seals` (it never
    /// lowers it: a count too low is the unsafe direction). Used at start-up
    /// to restore the count the server persisted; the server should persist
    /// counts rounded *up* (e.g. reserve the next million before using them).
    pub fn set_seals(&self, id: u32, seals: u64) -> Result<(), SealError> {
        let entry = self.keys.get(&id).ok_or(SealError::UnknownKey(id))?;
        entry.seals.fetch_max(seals, Ordering::Relaxed);
        Ok(())
    }

    /// Seals `plaintext`, to be stored under `record_key` in the column family
    /// `cf`, with the active key: `key id (4, BE) | nonce (12) |
    /// ciphertext+tag`. Fails with [`SealError::KeyExhausted`] once the active
    /// key has reached its seal limit.
    pub fn seal(
        &self,
        cf: &str,
        record_key: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let id = self.active;
        let entry = self.keys.get(&id).ok_or(SealError::UnknownKey(id))?;
        // Count before sealing, so that concurrent seals can never exceed the
        // limit between a check and an increment.
        entry
            .seals
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .map_err(|seals| SealError::KeyExhausted { key_id: id, seals })?;
        aead::seal_record(&entry.key.aead, id, cf, record_key, plaintext)
    }

    /// Opens a record sealed by [`KeyRing::seal`] for the same `cf` and
    /// `record_key`. Fails with [`SealError::UnknownKey`] if the ring lacks the
    /// key the record names, and with [`SealError::Tampered`] on any other
    /// failure (damaged, truncated or moved record, wrong key under that id).
    /// Never panics.
    pub fn open(&self, cf: &str, record_key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let tampered = || SealError::Tampered {
            cf: cf.to_owned(),
            key: aead::hex_truncated(record_key),
        };
        let (id, nonce, body) = aead::split_record(sealed).ok_or_else(tampered)?;
        let entry = self.keys.get(&id).ok_or(SealError::UnknownKey(id))?;
        aead::open_record(&entry.key.aead, id, nonce, body, cf, record_key).ok_or_else(tampered)
    }

    /// The id of the key a sealed record names, or `None` if it is too short to
    /// be a sealed record. Does not authenticate anything: for the background
    /// re-sealer to find records still sealed with an old key.
    pub fn key_id_of(sealed: &[u8]) -> Option<u32> {
        aead::split_record(sealed).map(|(id, _, _)| id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::aead::{HEADER_LEN, KEY_ID_LEN, NONCE_LEN};
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicUsize;

    fn ring() -> KeyRing {
        KeyRing::new(1, DataKey::generate().unwrap())
    }

    #[test]
    fn rotation_keeps_old_records_readable_until_removed() {
        let mut ring = ring();
        let old = ring.seal("cf", b"k", b"old").unwrap();
        ring.insert(2, DataKey::generate().unwrap()).unwrap();
        assert_eq!(ring.active_id(), 1, "insert does not activate");
        ring.set_active(2).unwrap();
        let new = ring.seal("cf", b"k", b"new").unwrap();
        assert_eq!(KeyRing::key_id_of(&new), Some(2));
        assert_eq!(ring.ids(), vec![1, 2]);
        assert_eq!(ring.open("cf", b"k", &old).unwrap(), b"old");
        assert_eq!(ring.open("cf", b"k", &new).unwrap(), b"new");

        assert!(matches!(ring.remove(2), Err(SealError::ActiveKey(2))));
        assert!(ring.remove(1).unwrap());
        assert!(!ring.remove(1).unwrap());
        assert!(!ring.contains(1));
        let err = ring.open("cf", b"k", &old).unwrap_err();
        assert!(matches!(err, SealError::UnknownKey(1)), "{err:?}");
        assert!(err.is_corruption());
        assert!(matches!(ring.set_active(1), Err(SealError::UnknownKey(1))));
        assert_eq!(ring.record_seals(1), None);
        assert!(ring.set_seals(1, 5).is_err());
    }

    #[test]
    fn insert_same_key_is_idempotent_different_key_refused() {
        let mut ring = ring();
        let key = DataKey::generate().unwrap();
        let copy = key.duplicate().unwrap();
        ring.insert(2, key).unwrap();
        ring.set_active(2).unwrap();
        ring.seal("cf", b"k", b"v").unwrap();
        ring.insert(2, copy).unwrap();
        assert_eq!(ring.record_seals(2), Some(1), "count kept");
        assert!(matches!(
            ring.insert(2, DataKey::generate().unwrap()),
            Err(SealError::DuplicateKey(2))
        ));
    }

    #[test]
    fn nonces_are_unique() {
        let ring = ring();
        let mut nonces = HashSet::new();
        for _ in 0..100_000 {
            let sealed = ring.seal("cf", b"same key", b"same plaintext").unwrap();
            let nonce: [u8; NONCE_LEN] = sealed[KEY_ID_LEN..HEADER_LEN].try_into().unwrap();
            assert!(nonces.insert(nonce), "nonce repeated");
        }
        assert_eq!(ring.record_seals(1), Some(100_000));
    }

    #[test]
    fn key_exhaustion() {
        let mut ring = ring();
        ring.set_seals(1, SEAL_LIMIT - 1).unwrap();
        let last = ring.seal("cf", b"k", b"v").unwrap();
        let err = ring.seal("cf", b"k", b"v").unwrap_err();
        assert!(
            matches!(err, SealError::KeyExhausted { key_id: 1, seals } if seals == SEAL_LIMIT),
            "{err:?}"
        );
        assert!(err.to_string().contains("rotate"));
        assert!(!err.is_corruption());
        assert_eq!(ring.record_seals(1), Some(SEAL_LIMIT));
        // Opening does not count, and still works.
        assert_eq!(ring.open("cf", b"k", &last).unwrap(), b"v");
        // set_seals never lowers the count.
        ring.set_seals(1, 0).unwrap();
        assert!(ring.seal("cf", b"k", b"v").is_err());
        // Rotating fixes it.
        ring.insert(2, DataKey::generate().unwrap()).unwrap();
        ring.set_active(2).unwrap();
        ring.seal("cf", b"k", b"v").unwrap();
    }

    #[test]
    fn seal_limit_is_configurable_and_capped() {
        let ring = ring().with_seal_limit(3);
        for _ in 0..3 {
            ring.seal("cf", b"k", b"v").unwrap();
        }
        assert!(matches!(
            ring.seal("cf", b"k", b"v"),
            Err(SealError::KeyExhausted { seals: 3, .. })
        ));
        assert_eq!(ring.with_seal_limit(u64::MAX).seal_limit(), SEAL_LIMIT);
    }

    #[test]
    fn concurrent_seals_never_exceed_the_limit() {
        let ring = ring().with_seal_limit(1000);
        let ok = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..500 {
                        if ring.seal("cf", b"k", b"v").is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(ok.load(Ordering::Relaxed), 1000);
        assert_eq!(ring.record_seals(1), Some(1000));
    }
}
