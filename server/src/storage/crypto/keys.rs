//! The two kinds of key: the [`MasterKey`] (from the key file; wraps data
//! keys, never seals a record) and the [`DataKey`] (seals records; stored
//! only wrapped by the master key).

use std::fmt;

use ring::aead::LessSafeKey;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::aead::{self, KEY_LEN};
use super::SealError;

/// Prefix hashed with the master key to compute its fingerprint.
const FINGERPRINT_PREFIX: &[u8] = b"cairn master key check";

/// Raw key bytes, on the heap so that moving a key (into a ring, an `Arc`)
/// moves a pointer and leaves no copy of the key behind; zeroed on drop.
pub(super) struct KeyBytes(Box<[u8; KEY_LEN]>);

impl KeyBytes {
    /// Random bytes from the operating system, generated in place.
    pub(super) fn random() -> Result<KeyBytes, SealError> {
        let mut key = KeyBytes(Box::new([0u8; KEY_LEN]));
        SystemRandom::new()
            .fill(&mut key.0[..])
            .map_err(|_| SealError::Rng)?;
        Ok(key)
    }

    /// A copy of `bytes`.
    pub(super) fn from_array(bytes: &[u8; KEY_LEN]) -> KeyBytes {
        let mut key = KeyBytes(Box::new([0u8; KEY_LEN]));
        key.0.copy_from_slice(bytes);
        key
    }

    /// A copy of the first [`KEY_LEN`] bytes of `bytes`; `None` if it is
    /// shorter.
    pub(super) fn copy_of(bytes: &[u8]) -> Option<KeyBytes> {
        bytes.first_chunk::<KEY_LEN>().map(KeyBytes::from_array)
    }

    /// The bytes.
    pub(super) fn get(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for KeyBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for KeyBytes {}

/// The master key: wraps and unwraps data keys; never seals records itself.
pub struct MasterKey {
    /// The raw key. Kept as bytes (rather than a ring key) because wrapping is
    /// rare and the ring key is cheap to build from them; wiped on drop.
    bytes: KeyBytes,
    /// [`MasterKey::fingerprint`], computed once.
    fingerprint: [u8; 8],
}

impl MasterKey {
    /// A master key from its raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        // The copy passed in is wiped when this returns.
        let bytes = Zeroizing::new(bytes);
        MasterKey::from_secret(KeyBytes::from_array(&bytes))
    }

    /// A master key from bytes already in a [`KeyBytes`] (the key file's
    /// paths, which never hold the key on the stack).
    pub(super) fn from_secret(bytes: KeyBytes) -> MasterKey {
        let mut fingerprint = [0u8; 8];
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(FINGERPRINT_PREFIX);
        ctx.update(bytes.get());
        let digest = ctx.finish();
        for (out, byte) in fingerprint.iter_mut().zip(digest.as_ref()) {
            *out = *byte;
        }
        MasterKey { bytes, fingerprint }
    }

    /// The raw key (the key file writes it).
    pub(super) fn secret(&self) -> &[u8; KEY_LEN] {
        self.bytes.get()
    }

    /// The first 8 bytes of `SHA-256(b"cairn master key check" || key)`.
    /// Safe to store in the clear; lets the server tell a wrong master key
    /// before touching anything.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// [`MasterKey::fingerprint`] in lowercase hex, for messages.
    pub fn fingerprint_hex(&self) -> String {
        super::hex(&self.fingerprint)
    }

    /// Wraps (encrypts) a data key for storage under `key_id`: returns
    /// `nonce (12) | ciphertext+tag (48)`, [`super::WRAPPED_LEN`] bytes.
    pub fn wrap(&self, data_key: &DataKey, key_id: u32) -> Result<Vec<u8>, SealError> {
        aead::wrap_key(&self.aead()?, data_key.bytes.get(), key_id)
    }

    /// Unwraps a data key stored under `key_id`. Fails with
    /// [`SealError::WrongMasterKey`] if this master key did not wrap it (or the
    /// wrapped bytes are damaged, or were stored under another id).
    pub fn unwrap(&self, wrapped: &[u8], key_id: u32) -> Result<DataKey, SealError> {
        let opened = aead::unwrap_key(&self.aead()?, wrapped, key_id)
            .and_then(|plain| KeyBytes::copy_of(&plain[..]));
        match opened {
            Some(bytes) => DataKey::from_secret(bytes),
            None => Err(SealError::WrongMasterKey { key_id }),
        }
    }

    /// The AES-256-GCM key wrapping data keys.
    fn aead(&self) -> Result<LessSafeKey, SealError> {
        aead::aead_key(self.bytes.get())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("fingerprint", &self.fingerprint_hex())
            .finish_non_exhaustive()
    }
}

/// A data key: seals records. Stored in the database only wrapped by the
/// master key ([`MasterKey::wrap`]).
pub struct DataKey {
    /// The raw key, kept so that the master key can wrap it; wiped on drop.
    bytes: KeyBytes,
    /// The AES-256-GCM key, expanded once here rather than for every record.
    pub(super) aead: LessSafeKey,
}

impl DataKey {
    /// A new random data key.
    pub fn generate() -> Result<DataKey, SealError> {
        DataKey::from_secret(KeyBytes::random()?)
    }

    /// A data key from its raw bytes (unwrapped ones).
    fn from_secret(bytes: KeyBytes) -> Result<DataKey, SealError> {
        Ok(DataKey {
            aead: aead::aead_key(bytes.get())?,
            bytes,
        })
    }

    /// Whether two keys are the same key, in time independent of where they
    /// differ.
    pub(super) fn same_as(&self, other: &DataKey) -> bool {
        self.bytes
            .get()
            .iter()
            .zip(other.bytes.get())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// A data key from raw bytes (tests).
    #[cfg(test)]
    pub(super) fn from_bytes_for_tests(bytes: [u8; KEY_LEN]) -> Result<DataKey, SealError> {
        DataKey::from_secret(KeyBytes::from_array(&bytes))
    }

    /// A second copy of this key (tests).
    #[cfg(test)]
    pub(super) fn duplicate(&self) -> Result<DataKey, SealError> {
        DataKey::from_secret(KeyBytes::from_array(self.bytes.get()))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::{KeyRing, WRAPPED_LEN};
    use super::*;

    #[test]
    fn wrap_unwrap_round_trip() {
        let master = MasterKey::from_bytes([3u8; 32]);
        let data = DataKey::generate().unwrap();
        let wrapped = master.wrap(&data, 7).unwrap();
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        let unwrapped = master.unwrap(&wrapped, 7).unwrap();
        assert!(unwrapped.same_as(&data));
        // The unwrapped key opens what the original sealed.
        let sealed = KeyRing::new(7, data).seal("cf", b"k", b"v").unwrap();
        assert_eq!(
            KeyRing::new(7, unwrapped)
                .open("cf", b"k", &sealed)
                .unwrap(),
            b"v"
        );
        // Wrapping twice gives different bytes (random nonce).
        let data = DataKey::generate().unwrap();
        assert_ne!(
            master.wrap(&data, 1).unwrap(),
            master.wrap(&data, 1).unwrap()
        );
    }

    #[test]
    fn unwrap_with_wrong_master_key_fails_clearly() {
        let master = MasterKey::from_bytes([3u8; 32]);
        let other = MasterKey::from_bytes([4u8; 32]);
        let wrapped = master.wrap(&DataKey::generate().unwrap(), 7).unwrap();
        let err = other.unwrap(&wrapped, 7).unwrap_err();
        assert!(
            matches!(err, SealError::WrongMasterKey { key_id: 7 }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("master key does not match"), "{msg}");
        assert!(msg.contains("cannot be opened"), "{msg}");
        // Under another id, damaged, truncated or extended: also refused.
        assert!(master.unwrap(&wrapped, 8).is_err());
        for i in 0..wrapped.len() * 8 {
            let mut bad = wrapped.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(master.unwrap(&bad, 7).is_err());
        }
        for len in 0..wrapped.len() {
            assert!(master.unwrap(&wrapped[..len], 7).is_err());
        }
        let mut longer = wrapped.clone();
        longer.push(0);
        assert!(master.unwrap(&longer, 7).is_err());
    }

    #[test]
    fn fingerprint_differs_between_keys() {
        let a = MasterKey::from_bytes([1u8; 32]);
        let b = MasterKey::from_bytes([2u8; 32]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            a.fingerprint(),
            MasterKey::from_bytes([1u8; 32]).fingerprint()
        );
        assert_eq!(a.fingerprint_hex().len(), 16);
        // Domain separated: not simply a prefix of SHA-256(key).
        let plain = digest::digest(&digest::SHA256, &[1u8; 32]);
        assert_ne!(&a.fingerprint()[..], &plain.as_ref()[..8]);
    }

    /// The fingerprint is stored on disk (`enc/fingerprint`): pinned, so a
    /// change of how it is computed cannot go unnoticed.
    #[test]
    fn fingerprint_is_stable() {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"cairn master key check");
        ctx.update(&[1u8; 32]);
        let expected = ctx.finish();
        assert_eq!(
            &MasterKey::from_bytes([1u8; 32]).fingerprint()[..],
            &expected.as_ref()[..8]
        );
    }

    #[test]
    fn debug_never_shows_key_material() {
        let master = MasterKey::from_bytes([0xab; 32]);
        let ring = KeyRing::new(
            1,
            DataKey::from_secret(KeyBytes::from_array(&[0xab; 32])).unwrap(),
        );
        for text in [format!("{master:?}"), format!("{ring:?}")] {
            assert!(!text.contains("171"), "{text}"); // 0xab in decimal
            assert!(!text.contains("abab"), "{text}");
        }
    }

    #[test]
    fn key_bytes_copy_needs_enough_bytes() {
        assert!(KeyBytes::copy_of(&[1u8; 31]).is_none());
        assert_eq!(KeyBytes::copy_of(&[1u8; 48]).unwrap().get(), &[1u8; 32]);
    }
}
