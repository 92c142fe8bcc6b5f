//! Encryption at rest: sealing records with AES-256-GCM.
//!
//! The module is split by concern, each file with its own tests:
//!
//! * [`key_file`] — the master key file: loading (raw or base64, mode 0600
//!   or stricter) and generating one.
//! * [`keys`] — [`MasterKey`] (fingerprint; wraps and unwraps data keys)
//!   and [`DataKey`].
//! * [`aead`] — the AES-256-GCM primitives and the byte layouts: a sealed
//!   record, a wrapped key, their associated data.
//! * [`key_ring`] — [`KeyRing`]: the data keys by id, one active; seal and
//!   open, with the per-key seal limit.
//! * [`engine`] — [`SealedEngine`], the storage `Engine` that seals on write
//!   and opens on read, and keeps its keys in the `meta` column family.
//! * [`rotation`] — data key rotation, background re-sealing and master key
//!   re-wrapping, and [`KeyHandle`], the explicit handle the server's
//!   rotation paths hold (the `Engine` trait knows nothing of sealing).
//!
//! # Key hierarchy
//!
//! * The **master key** ([`MasterKey`], 32 bytes) lives in a key file outside
//!   the database (`--encryption-key-file`), mode 0600 or stricter. It never
//!   seals records; it only *wraps* data keys. Each member of a cluster has its
//!   own master key. Its [fingerprint](MasterKey::fingerprint) (8 bytes of a
//!   domain-separated SHA-256) may be stored in the clear next to the data, so a
//!   member started with the wrong key file can refuse to start before it
//!   touches anything.
//! * **Data keys** ([`DataKey`], 32 random bytes) seal the records. Each has a
//!   `u32` id. They are stored in the database *wrapped* by the master key
//!   ([`MasterKey::wrap`]), under their id, and live unwrapped only in memory,
//!   in a [`KeyRing`]. Rotating the data key adds a new key and makes it active;
//!   records sealed with older keys stay readable (the id in every record says
//!   which key opens it) until the background re-sealer has moved them to the
//!   new key and the old key is removed. Rotating the master key only re-wraps
//!   the data keys: no record is touched.
//!
//! The byte layouts (sealed record, wrapped key, associated data) are
//! documented in [`aead`]; they are the on-disk format and never change.
//!
//! # Nonces: random, with a per-key limit
//!
//! Every seal draws a fresh random 96-bit nonce from the operating system
//! ([`ring::rand::SystemRandom`]; drawn 64 at a time into a pool of the
//! thread's own, each used once). A counter nonce would have to be persisted
//! and must *never* go backwards, yet several ordinary events roll it back: a
//! crash between sealing and persisting the counter, a restore of a database
//! backup or a Raft snapshot, a member rebuilt from another's data. A single
//! repeated nonce under AES-GCM reveals the XOR of two plaintexts and the
//! authentication key (after which tags can be forged), so a counter would turn
//! any of these events into a silent break. Random nonces need no state that
//! can be lost or rolled back.
//!
//! Their cost is the birthday bound: after `q` seals under one key, the chance
//! that any two nonces collide is about `q² / 2⁹⁷`. NIST SP 800-38D limits a key
//! used with random 96-bit nonces to 2³² invocations; at that point the
//! collision probability is about 2⁻³³, below 2⁻³². [`KeyRing`] therefore
//! counts the seals of each key (an `AtomicU64`) and refuses to seal once the
//! active key reaches [`SEAL_LIMIT`] (2³²), with [`SealError::KeyExhausted`].
//! The server must rotate to a new data key before that happens (sealing fails
//! while it has not). The count only needs to be approximate: the server can
//! persist it from time to time ([`KeyRing::record_seals`]) and restore it at
//! start-up ([`KeyRing::set_seals`]); seals lost from the count in a crash
//! raise the collision probability only slightly (it grows smoothly with `q`),
//! whereas a counter nonce that repeats once fails completely. The count is per
//! key *and per key ring*: if several members share one data key, each counts
//! only its own seals, and the server should lower the limit accordingly
//! ([`KeyRing::with_seal_limit`], e.g. [`SEAL_LIMIT`] divided by the number of
//! members).
//!
//! Opening a record uses no nonce and does not count.
//!
//! # Errors
//!
//! Any failure to open a record ([`SealError::Tampered`]) is reported as such:
//! AES-GCM cannot tell a flipped bit from a truncated value, a record moved from
//! another place or the wrong data key under the right id, and never returns
//! unauthenticated plaintext. [`SealError::is_corruption`] tells the server when
//! to raise the CORRUPT alarm. Opening never panics, whatever the input.
//!
//! # Key material in memory
//!
//! Raw key bytes held by [`MasterKey`] and [`DataKey`], and the buffers that key
//! files are read into and decoded from, are [`zeroize::Zeroizing`]: overwritten
//! with zeros when dropped, in a way the compiler does not optimise away. Best
//! effort still: ring's expanded AES key schedule is not cleared.

pub mod aead;
pub mod engine;
pub mod key_file;
pub mod key_ring;
pub mod keys;
pub mod rotation;

pub use aead::{KEY_ID_LEN, KEY_LEN, NONCE_LEN, OVERHEAD, TAG_LEN, WRAPPED_LEN};
pub use engine::{SealedEngine, SEALED_CFS};
pub use key_file::KeyFileError;
pub use key_ring::{KeyRing, SEAL_LIMIT};
pub use keys::{DataKey, MasterKey};
pub use rotation::{KeyHandle, SealedElsewhere};

/// Errors of sealing, opening, wrapping and unwrapping, and of the key ring.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A wrapped data key failed to open under the master key: the key file
    /// holds a different master key than the one that wrapped it (or the
    /// wrapped key was damaged).
    #[error(
        "the master key does not match: wrapped data key {key_id} cannot be opened \
         (wrong encryption key file, or the stored wrapped key is damaged)"
    )]
    WrongMasterKey {
        /// The id of the data key that failed to unwrap.
        key_id: u32,
    },
    /// A record names a data key id that is not in the key ring: the key was
    /// removed too early, was never loaded, or the record's header is damaged.
    #[error(
        "record sealed with data key {0}, which is not in the key ring \
         (missing data key, or a damaged record)"
    )]
    UnknownKey(u32),
    /// A record failed authentication.
    #[error(
        "record {key} in column family {cf:?} failed authentication: flipped bits, \
         a truncated value, or a record moved from another place"
    )]
    Tampered {
        /// The column family the record was read from.
        cf: String,
        /// The record key, in hex, truncated to its first 32 bytes.
        key: String,
    },
    /// The active data key has sealed as many records as its nonce limit
    /// allows; the server must rotate to a new data key.
    #[error(
        "data key {key_id} has sealed {seals} records, the limit for random nonces: \
         rotate the data key"
    )]
    KeyExhausted {
        /// The exhausted key.
        key_id: u32,
        /// Its seal count.
        seals: u64,
    },
    /// [`KeyRing::remove`] was asked to remove the active key.
    #[error("data key {0} is the active key and cannot be removed")]
    ActiveKey(u32),
    /// [`KeyRing::insert`] was given a key under an id that already holds a
    /// different key.
    #[error("a different data key with id {0} is already in the key ring")]
    DuplicateKey(u32),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
    /// AES-GCM refused an operation that cannot fail on valid input (a key of
    /// the wrong length, a plaintext of more than 64 GiB).
    #[error("AES-256-GCM: {0}")]
    Crypto(&'static str),
}

impl SealError {
    /// Whether the error means stored data is damaged or misplaced (the server
    /// raises the CORRUPT alarm and must not return the value): a record that
    /// failed authentication, or one naming a key the ring does not have.
    pub fn is_corruption(&self) -> bool {
        matches!(self, SealError::Tampered { .. } | SealError::UnknownKey(_))
    }
}

/// The storage layer's error for a crypto one: a record that fails to open
/// is corruption (the server raises CORRUPT); anything else is a failure to
/// seal.
fn storage_error(e: SealError) -> super::Error {
    if e.is_corruption() {
        super::Error::Tampered(e.to_string())
    } else {
        super::Error::Sealing(e.to_string())
    }
}

/// Lowercase hex, for messages (a fingerprint, a record key): display only.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            // Writing to a String cannot fail.
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
    }

    #[test]
    fn types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<KeyRing>();
        check::<MasterKey>();
        check::<DataKey>();
        check::<SealError>();
        check::<KeyFileError>();
        check::<SealedEngine>();
        check::<KeyHandle>();
    }
}
