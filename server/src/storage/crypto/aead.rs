//! The AES-256-GCM primitives and the byte layouts they produce: these
//! bytes are what lies on disk, so nothing here may change.
//!
//! # Sealed record format
//!
//! ```text
//! key id (4 bytes, big-endian) | nonce (12 bytes) | ciphertext (len of plaintext) | tag (16 bytes)
//! ```
//!
//! The overhead is [`OVERHEAD`] = 32 bytes per record. The key id and nonce are
//! in the clear (they must be, to open the record) and are authenticated: the
//! nonce is an input of GCM, the key id is part of the associated data.
//!
//! # Associated data of a record
//!
//! Every record is sealed with associated data naming *where* it lives, so a
//! record copied or moved to another key or column family fails to open
//! instead of returning another record's value:
//!
//! ```text
//! b"cairn record" | key id (u32 BE) | len(cf) (u64 BE) | cf | len(record key) (u64 BE) | record key
//! ```
//!
//! The lengths make the encoding injective: `(cf = "a", key = "bc")` and
//! `(cf = "ab", key = "c")` give different associated data. The `b"cairn
//! record"` prefix keeps it apart from the associated data of wrapped keys.
//! What it does *not* bind is the version of a record stored again under the
//! same key and column family (an old value put back in place of a newer one);
//! the MVCC layout, where every revision has its own record key, is what rules
//! that out.
//!
//! # Wrapped data key
//!
//! `nonce (12) | ciphertext (32) + tag (16)` ([`WRAPPED_LEN`] = 60 bytes),
//! AES-256-GCM under the master key, with the associated data `b"cairn data
//! key" | key id (4 bytes, big-endian)`, so a wrapped key stored under one id
//! cannot be passed off as another id's key.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::SealError;

/// Length of a master key and of a data key (AES-256).
pub const KEY_LEN: usize = 32;
/// Length of the key id at the start of a sealed record.
pub const KEY_ID_LEN: usize = 4;
/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of an AES-GCM authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed record has beyond its plaintext: key id, nonce and tag.
pub const OVERHEAD: usize = 4 + 12 + 16;
/// Length of a data key wrapped by the master key: nonce, ciphertext and tag.
pub const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// Length of the clear header of a sealed record (key id and nonce).
pub(super) const HEADER_LEN: usize = KEY_ID_LEN + NONCE_LEN;
/// Prefix of the associated data of a wrapped data key.
const WRAP_AAD_PREFIX: &[u8] = b"cairn data key";
/// Prefix of the associated data of a sealed record.
const RECORD_AAD_PREFIX: &[u8] = b"cairn record";
/// Bytes of a record key shown (in hex) in a [`SealError::Tampered`] message.
const SHOWN_KEY_BYTES: usize = 32;

/// An AES-256-GCM key from raw bytes.
pub(super) fn aead_key(bytes: &[u8; KEY_LEN]) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Crypto("invalid key length"))
}

/// Nonces drawn from the operating system per call, in each thread.
const POOLED_NONCES: usize = 64;

/// Random bytes from the operating system, handed out a nonce at a time.
struct NoncePool {
    /// [`POOLED_NONCES`] nonces' worth of random bytes.
    bytes: [u8; NONCE_LEN * POOLED_NONCES],
    /// Where the next nonce starts; `bytes.len()` when all are used.
    next: usize,
}

thread_local! {
    /// One system call per [`POOLED_NONCES`] seals instead of one per seal
    /// (~6% of a member's CPU while it installed a million sealed values).
    /// Each nonce is as random as before, and used once; the pool is the
    /// thread's own, and nonces are stored in the clear anyway.
    static NONCES: std::cell::RefCell<NoncePool> = const {
        std::cell::RefCell::new(NoncePool {
            bytes: [0; NONCE_LEN * POOLED_NONCES],
            next: NONCE_LEN * POOLED_NONCES,
        })
    };
}

/// A fresh random nonce from the operating system (see the module
/// documentation of [`super`] for why random), from this thread's pool.
fn random_nonce() -> Result<[u8; NONCE_LEN], SealError> {
    let from_pool = NONCES.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.next + NONCE_LEN > pool.bytes.len() {
            SystemRandom::new()
                .fill(&mut pool.bytes)
                .map_err(|_| SealError::Rng)?;
            pool.next = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&pool.bytes[pool.next..pool.next + NONCE_LEN]);
        pool.next += NONCE_LEN;
        Ok(nonce)
    });
    match from_pool {
        Ok(nonce) => nonce,
        // The thread is exiting and its pool is gone: one call for one.
        Err(_) => {
            let mut nonce = [0u8; NONCE_LEN];
            SystemRandom::new()
                .fill(&mut nonce)
                .map_err(|_| SealError::Rng)?;
            Ok(nonce)
        }
    }
}

/// Seals `plaintext` with `key` (data key `id`) for `record_key` in `cf`:
/// `key id | nonce | ciphertext | tag`. The caller has counted the seal.
pub(super) fn seal_record(
    key: &LessSafeKey,
    id: u32,
    cf: &str,
    record_key: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let nonce = random_nonce()?;
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(record_aad(id, cf, record_key)),
            &mut out[HEADER_LEN..],
        )
        .map_err(|_| SealError::Crypto("plaintext too large to seal"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// The clear header of a sealed record: its key id, its nonce, and the rest
/// (ciphertext and tag). `None` if it is too short to be a sealed record.
/// Authenticates nothing.
pub(super) fn split_record(sealed: &[u8]) -> Option<(u32, &[u8; NONCE_LEN], &[u8])> {
    if sealed.len() < OVERHEAD {
        return None;
    }
    let (id, rest) = sealed.split_first_chunk::<KEY_ID_LEN>()?;
    let (nonce, body) = rest.split_first_chunk::<NONCE_LEN>()?;
    Some((u32::from_be_bytes(*id), nonce, body))
}

/// Opens the ciphertext and tag of a record split by [`split_record`]; `None`
/// when it fails authentication.
pub(super) fn open_record(
    key: &LessSafeKey,
    id: u32,
    nonce: &[u8; NONCE_LEN],
    body: &[u8],
    cf: &str,
    record_key: &[u8],
) -> Option<Vec<u8>> {
    let mut buf = body.to_vec();
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(record_aad(id, cf, record_key)),
            &mut buf,
        )
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

/// Wraps the data key `data_key` for storage under `key_id` with the master
/// key `master`: `nonce | ciphertext | tag`, [`WRAPPED_LEN`] bytes.
pub(super) fn wrap_key(
    master: &LessSafeKey,
    data_key: &[u8; KEY_LEN],
    key_id: u32,
) -> Result<Vec<u8>, SealError> {
    let nonce = random_nonce()?;
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(data_key);
    let tag = master
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(wrap_aad(key_id)),
            &mut out[NONCE_LEN..],
        )
        .map_err(|_| SealError::Crypto("wrapping a data key failed"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Unwraps a data key stored under `key_id`; `None` if `master` did not wrap
/// it (or it is damaged, of the wrong length, or stored under another id).
/// The plaintext is wiped when the caller drops it.
pub(super) fn unwrap_key(
    master: &LessSafeKey,
    wrapped: &[u8],
    key_id: u32,
) -> Option<Zeroizing<[u8; KEY_LEN + TAG_LEN]>> {
    if wrapped.len() != WRAPPED_LEN {
        return None;
    }
    let (nonce, sealed) = wrapped.split_first_chunk::<NONCE_LEN>()?;
    let mut buf = Zeroizing::new([0u8; KEY_LEN + TAG_LEN]);
    buf.copy_from_slice(sealed);
    let len = master
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(wrap_aad(key_id)),
            &mut buf[..],
        )
        .ok()?
        .len();
    (len == KEY_LEN).then_some(buf)
}

/// The associated data of a wrapped data key: `b"cairn data key" | id (BE)`.
fn wrap_aad(key_id: u32) -> [u8; WRAP_AAD_PREFIX.len() + KEY_ID_LEN] {
    let mut aad = [0u8; WRAP_AAD_PREFIX.len() + KEY_ID_LEN];
    let (prefix, id) = aad.split_at_mut(WRAP_AAD_PREFIX.len());
    prefix.copy_from_slice(WRAP_AAD_PREFIX);
    id.copy_from_slice(&key_id.to_be_bytes());
    aad
}

/// The associated data of a sealed record: `b"cairn record" | key id (u32 BE)
/// | len(cf) (u64 BE) | cf | len(record key) (u64 BE) | record key`.
fn record_aad(key_id: u32, cf: &str, record_key: &[u8]) -> RecordAad {
    let parts: [&[u8]; 6] = [
        RECORD_AAD_PREFIX,
        &key_id.to_be_bytes(),
        &(cf.len() as u64).to_be_bytes(),
        cf.as_bytes(),
        &(record_key.len() as u64).to_be_bytes(),
        record_key,
    ];
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    let mut stack = [0u8; RECORD_AAD_STACK];
    match stack.get_mut(..len) {
        // A revision's record in any family: on the stack, no allocation
        // for each record sealed or opened.
        Some(mut rest) => {
            for part in parts {
                let (head, tail) = rest.split_at_mut(part.len());
                head.copy_from_slice(part);
                rest = tail;
            }
            RecordAad::Stack(stack, len)
        }
        None => RecordAad::Heap(parts.concat()),
    }
}

/// Room for a record's associated data without an allocation: the prefix,
/// the key id, two lengths, a family's name and a record key of up to 70
/// bytes or more (78 in `kv`, where a revision's is 17 or 18).
const RECORD_AAD_STACK: usize = 112;

/// A record's associated data, on the stack when it fits.
enum RecordAad {
    Stack([u8; RECORD_AAD_STACK], usize),
    Heap(Vec<u8>),
}

impl AsRef<[u8]> for RecordAad {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Stack(bytes, len) => bytes.get(..*len).unwrap_or(bytes),
            Self::Heap(bytes) => bytes,
        }
    }
}

/// A record key for an error message: hex of at most its first 32 bytes,
/// with the full length when truncated.
pub(super) fn hex_truncated(key: &[u8]) -> String {
    match key.get(..SHOWN_KEY_BYTES) {
        Some(shown) if key.len() > SHOWN_KEY_BYTES => {
            format!("{}... ({} bytes)", super::hex(shown), key.len())
        }
        _ => super::hex(key),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::{DataKey, KeyRing, MasterKey};
    use super::*;
    use proptest::prelude::*;

    fn ring() -> KeyRing {
        KeyRing::new(1, DataKey::generate().unwrap())
    }

    #[test]
    fn nonces_never_repeat_across_pool_refills_and_threads() {
        let draw = || {
            (0..POOLED_NONCES * 3 + 1)
                .map(|_| random_nonce().unwrap())
                .collect::<Vec<_>>()
        };
        let mut all = draw();
        all.extend(std::thread::spawn(draw).join().unwrap());
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count);
        // And a record's nonce is one of them: two seals of one value differ.
        let ring = ring();
        let (a, b) = (
            ring.seal("kv", b"k", b"v").unwrap(),
            ring.seal("kv", b"k", b"v").unwrap(),
        );
        assert_ne!(a[KEY_ID_LEN..HEADER_LEN], b[KEY_ID_LEN..HEADER_LEN]);
    }

    #[test]
    fn record_aad_is_unambiguous() {
        let aad = |id, cf, key: &[u8]| record_aad(id, cf, key).as_ref().to_vec();
        assert_ne!(aad(1, "a", b"bc"), aad(1, "ab", b"c"));
        assert_ne!(aad(1, "", b"ab"), aad(1, "ab", b""));
        assert_ne!(aad(1, "a", b"b"), aad(2, "a", b"b"));
        // Crafted so that dropping the cf length prefix would make these equal:
        // "a" | len 9 | (0 0 0 0 0 0 0 1 'z')  vs  ("a" 0 0 0 0 0 0 0 9) | len 1 | 'z'.
        assert_ne!(
            aad(1, "a", b"\0\0\0\0\0\0\0\x01z"),
            aad(1, "a\0\0\0\0\0\0\0\x09", b"z")
        );
        // The same layout on the stack and, for a long key, on the heap.
        for key_len in [0, 17, 78, 79, 200] {
            let key = vec![7u8; key_len];
            let mut want = b"cairn record".to_vec();
            want.extend_from_slice(&3u32.to_be_bytes());
            want.extend_from_slice(&2u64.to_be_bytes());
            want.extend_from_slice(b"kv");
            want.extend_from_slice(&(key_len as u64).to_be_bytes());
            want.extend_from_slice(&key);
            assert_eq!(aad(3, "kv", &key), want, "key of {key_len} bytes");
        }
        let ring = ring();
        let sealed = ring.seal("a", b"bc", b"value").unwrap();
        assert!(ring.open("ab", b"c", &sealed).is_err());
        assert_eq!(ring.open("a", b"bc", &sealed).unwrap(), b"value");
    }

    #[test]
    fn sealed_format() {
        let ring = KeyRing::new(0x0102_0304, DataKey::generate().unwrap());
        let sealed = ring.seal("cf", b"key", b"hello").unwrap();
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(&sealed[..4], &[1, 2, 3, 4]);
        assert_eq!(KeyRing::key_id_of(&sealed), Some(0x0102_0304));
        assert_eq!(KeyRing::key_id_of(&sealed[..OVERHEAD - 1]), None);
        assert_eq!(KeyRing::key_id_of(&[]), None);
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        let empty = ring.seal("cf", b"key", b"").unwrap();
        assert_eq!(empty.len(), OVERHEAD);
        assert_eq!(ring.open("cf", b"key", &empty).unwrap(), b"");
    }

    #[test]
    fn tampered_error_is_clear() {
        let ring = ring();
        let mut sealed = ring.seal("kv", b"\x00\xffkey", b"value").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        let err = ring.open("kv", b"\x00\xffkey", &sealed).unwrap_err();
        assert!(err.is_corruption());
        let msg = err.to_string();
        assert!(msg.contains("\"kv\""), "{msg}");
        assert!(msg.contains("00ff6b6579"), "{msg}");
        assert!(msg.contains("failed authentication"), "{msg}");
        assert!(msg.contains("moved from another place"), "{msg}");
        let long = hex_truncated(&[0x11; 100]);
        assert_eq!(long, format!("{}... (100 bytes)", "11".repeat(32)));
        assert_eq!(hex_truncated(&[0x11; 32]), "11".repeat(32));
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The on-disk layouts, pinned by bytes made outside Cairn (Python's
    /// `cryptography` AESGCM, following this module's documentation): a data
    /// key wrapped under a master key, a record sealed with that data key,
    /// and the master key's fingerprint. Data directories and snapshot files
    /// written by earlier versions open only while these do.
    #[test]
    fn layouts_match_an_independent_implementation() {
        let master = MasterKey::from_bytes([0x5a; 32]);
        assert_eq!(master.fingerprint_hex(), "5ade60f629828356");
        let wrapped = unhex(
            "22222222222222222222222206ea53f314b7983523daee58261b35c50f1602bc\
             6a63ab36da865429ef2d9bf4f61e1783c185bdfe2da93b00787fd7d5",
        );
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        let data_key = master.unwrap(&wrapped, 7).unwrap();
        let expected = DataKey::from_bytes_for_tests(std::array::from_fn(|i| i as u8)).unwrap();
        assert!(data_key.same_as(&expected));
        let record = unhex(
            "00000007111111111111111111111111e805f8d3d72c0fca010c4ee47fa2f581\
             ea0bfa0a8666e5589b11bb",
        );
        let record_key = b"\0\0\0\0\0\0\0\x05_\0\0\0\0\0\0\0\0";
        let ring = KeyRing::new(7, data_key);
        assert_eq!(
            ring.open("kv", record_key, &record).unwrap(),
            b"hello, disk"
        );
        assert!(ring.open("kv", b"other", &record).is_err());
    }

    #[test]
    fn open_never_panics_on_garbage() {
        let ring = ring();
        for len in 0..100 {
            let garbage: Vec<u8> = (0..len).map(|i| (i * 91 + 5) as u8).collect();
            assert!(ring.open("cf", b"k", &garbage).is_err());
            let mut with_id = 1u32.to_be_bytes().to_vec();
            with_id.extend_from_slice(&garbage);
            assert!(ring.open("cf", b"k", &with_id).is_err());
        }
    }

    // ---- properties ----

    fn cf() -> impl Strategy<Value = String> {
        "[a-z_]{0,12}"
    }

    proptest! {
        #[test]
        fn prop_round_trip(
            cf in cf(),
            key in prop::collection::vec(any::<u8>(), 0..64),
            plaintext in prop::collection::vec(any::<u8>(), 0..4096),
        ) {
            let ring = ring();
            let sealed = ring.seal(&cf, &key, &plaintext).unwrap();
            prop_assert_eq!(sealed.len(), plaintext.len() + OVERHEAD);
            prop_assert_eq!(KeyRing::key_id_of(&sealed), Some(1));
            prop_assert_eq!(ring.open(&cf, &key, &sealed).unwrap(), plaintext);
        }

        #[test]
        fn prop_every_bit_flip_fails(
            cf in cf(),
            key in prop::collection::vec(any::<u8>(), 0..32),
            plaintext in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let ring = ring();
            let sealed = ring.seal(&cf, &key, &plaintext).unwrap();
            for bit in 0..sealed.len() * 8 {
                let mut bad = sealed.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(ring.open(&cf, &key, &bad).is_err(), "bit {} flipped", bit);
            }
        }

        #[test]
        fn prop_every_truncation_fails(
            cf in cf(),
            key in prop::collection::vec(any::<u8>(), 0..32),
            plaintext in prop::collection::vec(any::<u8>(), 0..128),
            extra in prop::collection::vec(any::<u8>(), 1..8),
        ) {
            let ring = ring();
            let sealed = ring.seal(&cf, &key, &plaintext).unwrap();
            for len in 0..sealed.len() {
                let err = ring.open(&cf, &key, &sealed[..len]).unwrap_err();
                prop_assert!(err.is_corruption());
            }
            let mut longer = sealed.clone();
            longer.extend_from_slice(&extra);
            prop_assert!(ring.open(&cf, &key, &longer).is_err());
        }

        #[test]
        fn prop_record_swap_fails(
            cf in cf(),
            other_cf in cf(),
            key in prop::collection::vec(any::<u8>(), 0..32),
            other_key in prop::collection::vec(any::<u8>(), 0..32),
            plaintext in prop::collection::vec(any::<u8>(), 0..128),
        ) {
            prop_assume!(cf != other_cf || key != other_key);
            let ring = ring();
            let sealed = ring.seal(&cf, &key, &plaintext).unwrap();
            let err = ring.open(&other_cf, &other_key, &sealed).unwrap_err();
            let is_tampered = matches!(err, SealError::Tampered { .. });
            prop_assert!(is_tampered);
        }

        /// The hard case for the associated data: a record moved to a key of
        /// the same length, in the same column family.
        #[test]
        fn prop_record_moved_to_same_length_key_fails(
            cf in cf(),
            key in prop::collection::vec(any::<u8>(), 1..32),
            index in any::<prop::sample::Index>(),
            delta in 1u8..,
            plaintext in prop::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut other_key = key.clone();
            other_key[index.index(key.len())] ^= delta;
            let ring = ring();
            let sealed = ring.seal(&cf, &key, &plaintext).unwrap();
            let err = ring.open(&cf, &other_key, &sealed).unwrap_err();
            let is_tampered = matches!(err, SealError::Tampered { .. });
            prop_assert!(is_tampered);
        }

        /// A record moved to another column family of the same name length,
        /// under the same key.
        #[test]
        fn prop_record_moved_to_same_length_cf_fails(
            cf in "[a-z]{1,12}",
            index in any::<prop::sample::Index>(),
            delta in 1u8..26,
            key in prop::collection::vec(any::<u8>(), 0..32),
            plaintext in prop::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut other_cf = cf.clone().into_bytes();
            let i = index.index(other_cf.len());
            other_cf[i] = b'a' + (other_cf[i] - b'a' + delta) % 26;
            let other_cf = String::from_utf8(other_cf).unwrap();
            prop_assert_ne!(&cf, &other_cf);
            let ring = ring();
            let sealed = ring.seal(&cf, &key, &plaintext).unwrap();
            let err = ring.open(&other_cf, &key, &sealed).unwrap_err();
            let is_tampered = matches!(err, SealError::Tampered { .. });
            prop_assert!(is_tampered);
        }

        #[test]
        fn prop_wrong_data_key_fails(
            cf in cf(),
            key in prop::collection::vec(any::<u8>(), 0..32),
            plaintext in prop::collection::vec(any::<u8>(), 0..128),
        ) {
            let sealed = ring().seal(&cf, &key, &plaintext).unwrap();
            let err = ring().open(&cf, &key, &sealed).unwrap_err();
            let is_tampered = matches!(err, SealError::Tampered { .. });
            prop_assert!(is_tampered);
        }

        #[test]
        fn prop_open_never_panics(
            cf in cf(),
            key in prop::collection::vec(any::<u8>(), 0..32),
            garbage in prop::collection::vec(any::<u8>(), 0..256),
            id_one in any::<bool>(),
        ) {
            let ring = ring();
            let mut sealed = garbage;
            if id_one && sealed.len() >= 4 {
                sealed[..4].copy_from_slice(&1u32.to_be_bytes());
            }
            prop_assert!(ring.open(&cf, &key, &sealed).is_err());
        }
    }
}
