//! The crypto core of encryption at rest: sealing records with AES-256-GCM.
//!
//! This module knows nothing about the storage engine, Raft or the MVCC store:
//! it turns `(column family, record key, plaintext)` into sealed bytes and back,
//! and it loads, generates, wraps and unwraps the keys that do it. The storage
//! layer calls [`KeyRing::seal`] on every value it writes and [`KeyRing::open`]
//! on every value it reads.
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
//! A wrapped data key is `nonce (12) | ciphertext (32) + tag (16)`
//! ([`WRAPPED_LEN`] = 60 bytes), AES-256-GCM under the master key, with the
//! associated data `b"cairn data key" | key id (4 bytes, big-endian)`, so a
//! wrapped key stored under one id cannot be passed off as another id's key.
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
//! # Associated data
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
//! # Nonces: random, with a per-key limit
//!
//! Every seal draws a fresh random 96-bit nonce from the operating system
//! ([`ring::rand::SystemRandom`]). A counter nonce would have to be persisted
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
//! files are read into, are overwritten with zeros when dropped. This is best
//! effort (written without `unsafe`, so the compiler could in principle keep
//! copies, and ring's expanded AES key schedule is not cleared).

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

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
/// Seals allowed under one data key: NIST SP 800-38D's bound for AES-GCM with
/// random 96-bit nonces (see the module documentation).
pub const SEAL_LIMIT: u64 = 1 << 32;

/// Length of the clear header of a sealed record (key id and nonce).
const HEADER_LEN: usize = KEY_ID_LEN + NONCE_LEN;
/// Prefix of the associated data of a wrapped data key.
const WRAP_AAD_PREFIX: &[u8] = b"cairn data key";
/// Prefix of the associated data of a sealed record.
const RECORD_AAD_PREFIX: &[u8] = b"cairn record";
/// Prefix hashed with the master key to compute its fingerprint.
const FINGERPRINT_PREFIX: &[u8] = b"cairn master key check";
/// Largest key file read. A key file is 32 bytes, or about 45 in base64; a
/// larger file is not a key file, and is refused without reading all of it.
const MAX_KEY_FILE_LEN: u64 = 1024;
/// Bytes of a record key shown (in hex) in a [`SealError::Tampered`] message.
const SHOWN_KEY_BYTES: usize = 32;

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

/// Errors of loading or generating a master key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be opened, read, created or synced.
    #[error("encryption key file {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file's permissions let group or others access it.
    #[error(
        "encryption key file {} has mode {mode:04o}, which gives group or others access; \
         it must be 0600 or stricter (chmod 600 {})",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a key.
    #[error(
        "encryption key file {}: {reason}; expected exactly 32 raw bytes or the base64 of 32 bytes",
        path.display()
    )]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its contents.
        reason: String,
    },
    /// [`MasterKey::generate_file`] found a file already there.
    #[error("encryption key file {} already exists; refusing to overwrite it", path.display())]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// The operating system's random number generator failed.
    #[error(
        "encryption key file {}: the system random number generator failed",
        path.display()
    )]
    Rng {
        /// The key file that was to be generated.
        path: PathBuf,
    },
}

/// The master key: wraps and unwraps data keys; never seals records itself.
pub struct MasterKey {
    /// The raw key. Kept as bytes (rather than a ring key) because wrapping is
    /// rare and the ring key is cheap to build from them; wiped on drop.
    bytes: [u8; KEY_LEN],
    /// [`MasterKey::fingerprint`], computed once.
    fingerprint: [u8; 8],
}

impl MasterKey {
    /// A master key from its raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(FINGERPRINT_PREFIX);
        ctx.update(&bytes);
        let digest = ctx.finish();
        let mut fingerprint = [0u8; 8];
        for (out, byte) in fingerprint.iter_mut().zip(digest.as_ref()) {
            *out = *byte;
        }
        MasterKey { bytes, fingerprint }
    }

    /// Loads the master key from a key file holding exactly 32 raw bytes, or
    /// the base64 (standard alphabet, padded or not, surrounding whitespace
    /// allowed) of 32 bytes. Refuses a file that group or others may access in
    /// any way (mode must be 0600 or stricter).
    pub fn load(path: impl AsRef<Path>) -> Result<MasterKey, KeyFileError> {
        let path = path.as_ref();
        let io_err = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |reason: String| KeyFileError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(io_err)?;
        // The mode of the file actually opened, not of whatever the path names
        // a moment later.
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(invalid("not a regular file".to_owned()));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut contents = Vec::with_capacity(64);
        let read = file
            .take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut contents)
            .map_err(io_err);
        let parsed = read.and_then(|_| {
            if contents.len() as u64 > MAX_KEY_FILE_LEN {
                Err(invalid(format!(
                    "the file is larger than {MAX_KEY_FILE_LEN} bytes"
                )))
            } else {
                parse_key_material(&contents).map_err(invalid)
            }
        });
        wipe(&mut contents);
        let mut bytes = parsed?;
        let key = MasterKey::from_bytes(bytes);
        wipe(&mut bytes);
        Ok(key)
    }

    /// Generates a new random master key and writes it to a new key file
    /// (base64 and a newline), created with mode 0600 and synced, along with
    /// its directory. Fails if the file exists: a key file is never
    /// overwritten.
    pub fn generate_file(path: impl AsRef<Path>) -> Result<MasterKey, KeyFileError> {
        let path = path.as_ref();
        let io_err = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyFileError::Rng {
                path: path.to_path_buf(),
            })?;
        let key = MasterKey::from_bytes(bytes);
        wipe(&mut bytes);

        // The mode is set at creation, so the key is never readable by others,
        // not even for an instant; the umask can only remove bits from it.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    KeyFileError::Exists {
                        path: path.to_path_buf(),
                    }
                } else {
                    io_err(source)
                }
            })?;
        let mut text = base64_encode(&key.bytes).into_bytes();
        text.push(b'\n');
        let written = file.write_all(&text).and_then(|()| file.sync_all());
        wipe(&mut text);
        drop(file);
        if let Err(source) = written {
            // A partial key file would be refused by `load` and block the next
            // `generate_file`; remove it. The write error is the one to report.
            let _ = fs::remove_file(path);
            return Err(io_err(source));
        }
        sync_parent_dir(path).map_err(io_err)?;
        Ok(key)
    }

    /// The first 8 bytes of `SHA-256(b"cairn master key check" || key)`.
    /// Safe to store in the clear; lets the server tell a wrong master key
    /// before touching anything.
    pub fn fingerprint(&self) -> [u8; 8] {
        self.fingerprint
    }

    /// [`MasterKey::fingerprint`] in lowercase hex, for messages.
    pub fn fingerprint_hex(&self) -> String {
        hex(&self.fingerprint)
    }

    /// Wraps (encrypts) a data key for storage under `key_id`: returns
    /// `nonce (12) | ciphertext+tag (48)`, [`WRAPPED_LEN`] bytes.
    pub fn wrap(&self, data_key: &DataKey, key_id: u32) -> Result<Vec<u8>, SealError> {
        let aead = self.aead()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Rng)?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data_key.bytes);
        let tag = aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(wrap_aad(key_id)),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| SealError::Crypto("wrapping a data key failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Unwraps a data key stored under `key_id`. Fails with
    /// [`SealError::WrongMasterKey`] if this master key did not wrap it (or the
    /// wrapped bytes are damaged, or were stored under another id).
    pub fn unwrap(&self, wrapped: &[u8], key_id: u32) -> Result<DataKey, SealError> {
        let wrong = SealError::WrongMasterKey { key_id };
        if wrapped.len() != WRAPPED_LEN {
            return Err(wrong);
        }
        let Some((nonce, sealed)) = wrapped.split_first_chunk::<NONCE_LEN>() else {
            return Err(wrong);
        };
        let aead = self.aead()?;
        let mut buf = [0u8; KEY_LEN + TAG_LEN];
        buf.copy_from_slice(sealed);
        let opened = aead
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(wrap_aad(key_id)),
                &mut buf,
            )
            .ok()
            .and_then(|plain| <[u8; KEY_LEN]>::try_from(&*plain).ok());
        wipe(&mut buf);
        let Some(mut bytes) = opened else {
            return Err(wrong);
        };
        let key = DataKey::from_bytes(bytes);
        wipe(&mut bytes);
        key
    }

    /// The AES-256-GCM key wrapping data keys.
    fn aead(&self) -> Result<LessSafeKey, SealError> {
        aead_key(&self.bytes)
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
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
    bytes: [u8; KEY_LEN],
    /// The AES-256-GCM key, expanded once here rather than for every record.
    aead: LessSafeKey,
}

impl DataKey {
    /// A new random data key.
    pub fn generate() -> Result<DataKey, SealError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::Rng)?;
        let key = DataKey::from_bytes(bytes);
        wipe(&mut bytes);
        key
    }

    /// A data key from its raw bytes (unwrapped ones).
    fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<DataKey, SealError> {
        Ok(DataKey {
            aead: aead_key(&bytes)?,
            bytes,
        })
    }

    /// Whether two keys are the same key, in time independent of where they
    /// differ.
    fn same_as(&self, other: &DataKey) -> bool {
        self.bytes
            .iter()
            .zip(&other.bytes)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

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
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Rng)?;
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = entry
            .key
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(record_aad(id, cf, record_key)),
                &mut out[HEADER_LEN..],
            )
            .map_err(|_| SealError::Crypto("plaintext too large to seal"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a record sealed by [`KeyRing::seal`] for the same `cf` and
    /// `record_key`. Fails with [`SealError::UnknownKey`] if the ring lacks the
    /// key the record names, and with [`SealError::Tampered`] on any other
    /// failure (damaged, truncated or moved record, wrong key under that id).
    /// Never panics.
    pub fn open(&self, cf: &str, record_key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let tampered = || SealError::Tampered {
            cf: cf.to_owned(),
            key: hex_truncated(record_key),
        };
        if sealed.len() < OVERHEAD {
            return Err(tampered());
        }
        let Some((id, rest)) = sealed.split_first_chunk::<KEY_ID_LEN>() else {
            return Err(tampered());
        };
        let Some((nonce, body)) = rest.split_first_chunk::<NONCE_LEN>() else {
            return Err(tampered());
        };
        let id = u32::from_be_bytes(*id);
        let entry = self.keys.get(&id).ok_or(SealError::UnknownKey(id))?;
        let mut buf = body.to_vec();
        let len = entry
            .key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(record_aad(id, cf, record_key)),
                &mut buf,
            )
            .map_err(|_| tampered())?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// The id of the key a sealed record names, or `None` if it is too short to
    /// be a sealed record. Does not authenticate anything: for the background
    /// re-sealer to find records still sealed with an old key.
    pub fn key_id_of(sealed: &[u8]) -> Option<u32> {
        if sealed.len() < OVERHEAD {
            return None;
        }
        sealed
            .split_first_chunk::<KEY_ID_LEN>()
            .map(|(id, _)| u32::from_be_bytes(*id))
    }
}

/// An AES-256-GCM key from raw bytes.
fn aead_key(bytes: &[u8; KEY_LEN]) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Crypto("invalid key length"))
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
fn record_aad(key_id: u32, cf: &str, record_key: &[u8]) -> Vec<u8> {
    let mut aad =
        Vec::with_capacity(RECORD_AAD_PREFIX.len() + KEY_ID_LEN + 16 + cf.len() + record_key.len());
    aad.extend_from_slice(RECORD_AAD_PREFIX);
    aad.extend_from_slice(&key_id.to_be_bytes());
    aad.extend_from_slice(&(cf.len() as u64).to_be_bytes());
    aad.extend_from_slice(cf.as_bytes());
    aad.extend_from_slice(&(record_key.len() as u64).to_be_bytes());
    aad.extend_from_slice(record_key);
    aad
}

/// The key of a key file's contents: exactly 32 bytes are the raw key;
/// anything else must be base64 of 32 bytes, with surrounding whitespace
/// allowed.
fn parse_key_material(contents: &[u8]) -> Result<[u8; KEY_LEN], String> {
    if let Ok(raw) = <[u8; KEY_LEN]>::try_from(contents) {
        return Ok(raw);
    }
    let text = contents.trim_ascii();
    if text.is_empty() {
        return Err(format!("the file is empty ({} bytes)", contents.len()));
    }
    let mut decoded = base64_decode(text).map_err(|e| {
        format!(
            "{} bytes, so not a raw key, and not valid base64 ({e})",
            contents.len()
        )
    })?;
    let key = <[u8; KEY_LEN]>::try_from(decoded.as_slice())
        .map_err(|_| format!("the base64 decodes to {} bytes", decoded.len()));
    wipe(&mut decoded);
    key
}

/// The standard base64 alphabet.
const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Decodes standard base64, padded or not. Strict: no characters outside the
/// alphabet (whitespace included), padding only at the end and only the right
/// amount, and unused trailing bits must be zero (one encoding per value).
fn base64_decode(text: &[u8]) -> Result<Vec<u8>, String> {
    let unpadded = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    if unpadded.len() != text.len() && !text.len().is_multiple_of(4) {
        return Err("wrong amount of '=' padding".to_owned());
    }
    if unpadded.len() % 4 == 1 {
        return Err(format!("impossible length {}", unpadded.len()));
    }
    let mut out = Vec::with_capacity(unpadded.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for (i, &c) in unpadded.iter().enumerate() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => {
                wipe(&mut out);
                return Err(format!("invalid character {:?} at offset {i}", c as char));
            }
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if acc != 0 {
        wipe(&mut out);
        return Err("non-zero trailing bits".to_owned());
    }
    Ok(out)
}

/// Encodes standard base64, with padding.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(BASE64_ALPHABET[((n >> shift) & 0x3f) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// A record key for an error message: hex of at most its first 32 bytes,
/// with the full length when truncated.
fn hex_truncated(key: &[u8]) -> String {
    match key.get(..SHOWN_KEY_BYTES) {
        Some(shown) if key.len() > SHOWN_KEY_BYTES => {
            format!("{}... ({} bytes)", hex(shown), key.len())
        }
        _ => hex(key),
    }
}

/// Overwrites key material with zeros before it is freed (best effort: see the
/// module documentation).
fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(&*buf);
}

/// Syncs the directory holding `path`, so that a newly created file in it
/// survives a crash.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicUsize;

    /// A unique path in the temporary directory (removed on drop).
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(name: &str) -> TempPath {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            TempPath(
                std::env::temp_dir()
                    .join(format!("cairn-seal-test-{}-{n}-{name}", std::process::id())),
            )
        }

        /// Writes `contents` and sets `mode`.
        fn write(name: &str, contents: &[u8], mode: u32) -> TempPath {
            let path = TempPath::new(name);
            fs::write(&path.0, contents).unwrap();
            fs::set_permissions(&path.0, fs::Permissions::from_mode(mode)).unwrap();
            path
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    fn ring() -> KeyRing {
        KeyRing::new(1, DataKey::generate().unwrap())
    }

    // ---- base64 ----

    #[test]
    fn base64_decodes_padded_and_unpadded() {
        assert_eq!(base64_decode(b"").unwrap(), b"");
        assert_eq!(base64_decode(b"Zg==").unwrap(), b"f");
        assert_eq!(base64_decode(b"Zg").unwrap(), b"f");
        assert_eq!(base64_decode(b"Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode(b"Zm8").unwrap(), b"fo");
        assert_eq!(base64_decode(b"Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode(b"Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode(b"+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
    }

    #[test]
    fn base64_rejects_bad_input() {
        for bad in [
            &b"Zm9v!"[..], // invalid character
            b"Zm 9v",      // inner whitespace
            b"Zm9v\n",     // whitespace is trimmed by the caller, not here
            b"Zm-_",       // URL-safe alphabet
            b"Z",          // impossible length
            b"Zm9vY",      // impossible length
            b"Zg=",        // too little padding
            b"Zg===",      // too much padding
            b"Zm8==",      // too much padding
            b"Z===",       // padding in place of data
            b"Zg==Zg==",   // padding in the middle
            b"Zh==",       // non-zero trailing bits
            b"Zm9=",       // non-zero trailing bits
        ] {
            assert!(
                base64_decode(bad).is_err(),
                "{:?} should be refused",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn base64_round_trips() {
        for len in 0..70 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64_encode(&bytes);
            assert_eq!(text.len() % 4, 0);
            assert_eq!(base64_decode(text.as_bytes()).unwrap(), bytes);
            assert_eq!(
                base64_decode(text.trim_end_matches('=').as_bytes()).unwrap(),
                bytes
            );
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn key_material_raw_or_base64() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let b64 = base64_encode(&key);
        assert_eq!(parse_key_material(&key).unwrap(), key);
        assert_eq!(parse_key_material(b64.as_bytes()).unwrap(), key);
        assert_eq!(
            parse_key_material(format!("{b64}\n").as_bytes()).unwrap(),
            key
        );
        assert_eq!(
            parse_key_material(format!("  \t{}\r\n\n", b64.trim_end_matches('=')).as_bytes())
                .unwrap(),
            key
        );
        // Wrong lengths, raw and base64.
        assert!(parse_key_material(&key[..31]).is_err());
        assert!(parse_key_material(&[0u8; 33]).is_err());
        let err = parse_key_material(base64_encode(&key[..31]).as_bytes()).unwrap_err();
        assert!(err.contains("31 bytes"), "{err}");
        assert!(parse_key_material(base64_encode(&[1u8; 33]).as_bytes()).is_err());
        assert!(parse_key_material(b"").is_err());
        assert!(parse_key_material(b"\n\n").is_err());
        let err = parse_key_material(format!("{}*\n", &b64[..42]).as_bytes()).unwrap_err();
        assert!(err.contains("invalid character"), "{err}");
    }

    // ---- key files ----

    #[test]
    fn load_accepts_0600_and_stricter() {
        let key: [u8; 32] = std::array::from_fn(|i| 200 - i as u8);
        let expected = MasterKey::from_bytes(key).fingerprint();
        for mode in [0o600, 0o400, 0o200, 0o000] {
            let raw = TempPath::write("raw", &key, mode);
            assert_eq!(MasterKey::load(&raw.0).unwrap().fingerprint(), expected);
            let b64 = TempPath::write("b64", format!("{}\n", base64_encode(&key)).as_bytes(), mode);
            assert_eq!(MasterKey::load(&b64.0).unwrap().fingerprint(), expected);
        }
    }

    #[test]
    fn load_refuses_group_or_world_access() {
        let key = [9u8; 32];
        for mode in [
            0o644, 0o640, 0o604, 0o610, 0o601, 0o660, 0o666, 0o777, 0o620,
        ] {
            let file = TempPath::write("loose", &key, mode);
            let err = MasterKey::load(&file.0).unwrap_err();
            assert!(
                matches!(err, KeyFileError::Permissions { mode: m, .. } if m == mode),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&file.0.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
            assert!(msg.contains("0600"), "{msg}");
        }
    }

    #[test]
    fn load_refuses_wrong_length_naming_the_path() {
        for contents in [
            &[1u8; 31][..],
            &[1u8; 33][..],
            b"",
            base64_encode(&[1u8; 16]).as_bytes(),
        ] {
            let file = TempPath::write("short", contents, 0o600);
            let err = MasterKey::load(&file.0).unwrap_err();
            assert!(matches!(err, KeyFileError::Invalid { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&file.0.display().to_string()), "{msg}");
            assert!(msg.contains("32 raw bytes"), "{msg}");
        }
        let big = TempPath::write("big", &vec![b'A'; 5000], 0o600);
        assert!(matches!(
            MasterKey::load(&big.0),
            Err(KeyFileError::Invalid { .. })
        ));
    }

    #[test]
    fn load_reports_missing_file() {
        let missing = TempPath::new("missing");
        let err = MasterKey::load(&missing.0).unwrap_err();
        assert!(
            matches!(&err, KeyFileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert!(err.to_string().contains(&missing.0.display().to_string()));
    }

    #[test]
    fn generate_file_creates_0600_and_never_overwrites() {
        let path = TempPath::new("generated");
        let key = MasterKey::generate_file(&path.0).unwrap();
        let meta = fs::metadata(&path.0).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let contents = fs::read(&path.0).unwrap();
        assert_eq!(contents.len(), 45, "44 base64 characters and a newline");
        assert_eq!(contents.last(), Some(&b'\n'));
        assert_eq!(
            MasterKey::load(&path.0).unwrap().fingerprint(),
            key.fingerprint()
        );

        let err = MasterKey::generate_file(&path.0).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err:?}");
        assert_eq!(fs::read(&path.0).unwrap(), contents, "left untouched");

        let other = TempPath::new("generated");
        let key2 = MasterKey::generate_file(&other.0).unwrap();
        assert_ne!(key.fingerprint(), key2.fingerprint());
    }

    // ---- master key ----

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

    #[test]
    fn debug_never_shows_key_material() {
        let master = MasterKey::from_bytes([0xab; 32]);
        let ring = KeyRing::new(1, DataKey::from_bytes([0xab; 32]).unwrap());
        for text in [format!("{master:?}"), format!("{ring:?}")] {
            assert!(!text.contains("171"), "{text}"); // 0xab in decimal
            assert!(!text.contains("abab"), "{text}");
        }
    }

    // ---- key ring ----

    #[test]
    fn record_aad_is_unambiguous() {
        assert_ne!(record_aad(1, "a", b"bc"), record_aad(1, "ab", b"c"));
        assert_ne!(record_aad(1, "", b"ab"), record_aad(1, "ab", b""));
        assert_ne!(record_aad(1, "a", b"b"), record_aad(2, "a", b"b"));
        // Crafted so that dropping the cf length prefix would make these equal:
        // "a" | len 9 | (0 0 0 0 0 0 0 1 'z')  vs  ("a" 0 0 0 0 0 0 0 9) | len 1 | 'z'.
        assert_ne!(
            record_aad(1, "a", b"\0\0\0\0\0\0\0\x01z"),
            record_aad(1, "a\0\0\0\0\0\0\0\x09", b"z")
        );
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
        let copy = DataKey::from_bytes(key.bytes).unwrap();
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

    #[test]
    fn types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<KeyRing>();
        check::<MasterKey>();
        check::<DataKey>();
        check::<SealError>();
        check::<KeyFileError>();
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
