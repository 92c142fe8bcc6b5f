//! Record layout of the raft log: its state records (key-values of the
//! log's files, and of the `raft_state` column family before them) and the
//! entry keys (the keys of the `raft` column family before the files, and
//! the associated data each entry is sealed with in them).
//!
//! | where                    | key                       | value                                     |
//! |--------------------------|---------------------------|-------------------------------------------|
//! | entries                  | `e` + index (8 bytes, BE) | `eraftpb.Entry` (rust-protobuf)           |
//! | state                    | `s/hard_state`            | `eraftpb.HardState`                       |
//! | state                    | `s/conf_state`            | `eraftpb.ConfState`                       |
//! | state                    | `s/snapshot`              | `eraftpb.SnapshotMetadata` (last applied) |
//! | state                    | `s/truncated`             | index, term (8 bytes BE each)             |
//!
//! Big-endian indexes made RocksDB's key order the log order. `s/truncated`
//! is the last entry removed from the log (by compaction or a snapshot):
//! the log starts right after it. Databases written before `raft_state`
//! existed hold the `s/` records in `raft`; `LogFiles::open` moves them
//! with the rest.

use protobuf::Message;

use super::Error;

/// First byte of every entry key.
const ENTRY_PREFIX: u8 = b'e';
/// Upper bound (exclusive) of the entry keys, for scans to the log's end.
pub(super) const ENTRIES_END: &[u8] = b"f";
/// The persisted `HardState`.
pub(super) const HARD_STATE: &[u8] = b"s/hard_state";
/// The persisted `ConfState`.
pub(super) const CONF_STATE: &[u8] = b"s/conf_state";
/// Metadata of the last applied snapshot.
pub(super) const SNAPSHOT: &[u8] = b"s/snapshot";
/// The compaction point ([`LogId`] of the last removed entry).
pub(super) const TRUNCATED: &[u8] = b"s/truncated";
/// Every state record (in `raft_state`).
pub(super) const STATE_KEYS: [&[u8]; 4] = [HARD_STATE, CONF_STATE, SNAPSHOT, TRUNCATED];

/// An entry's position: index and term.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct LogId {
    /// The entry's index.
    pub index: u64,
    /// The term it was proposed in.
    pub term: u64,
}

impl LogId {
    /// 16 bytes: index then term, big-endian.
    pub fn encode(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.term.to_be_bytes());
        out
    }

    /// Inverse of [`LogId::encode`].
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self, Error> {
        let bad_len = || corrupt(key, format!("{} bytes, want 16", value.len()));
        let (index, term) = value.split_first_chunk::<8>().ok_or_else(bad_len)?;
        let term = <[u8; 8]>::try_from(term).map_err(|_| bad_len())?;
        Ok(Self {
            index: u64::from_be_bytes(*index),
            term: u64::from_be_bytes(term),
        })
    }
}

/// The key of the entry at `index`.
pub(super) fn entry_key(index: u64) -> [u8; 9] {
    let mut key = [ENTRY_PREFIX; 9];
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The index in an entry key.
pub(super) fn entry_index(key: &[u8]) -> Result<u64, Error> {
    match key.split_first() {
        Some((&ENTRY_PREFIX, rest)) => <[u8; 8]>::try_from(rest)
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt(key, "entry key is not prefix + 8 bytes".into())),
        _ => Err(corrupt(key, "not an entry key".into())),
    }
}

/// Encodes a raft message with rust-protobuf.
pub(super) fn encode<M: Message>(what: &'static str, m: &M) -> Result<Vec<u8>, Error> {
    m.write_to_bytes().map_err(|e| Error::Encode {
        what,
        reason: e.to_string(),
    })
}

/// Decodes the raft message stored under `key`.
pub(super) fn decode<M: Message>(key: &[u8], value: &[u8]) -> Result<M, Error> {
    M::parse_from_bytes(value).map_err(|e| corrupt(key, e.to_string()))
}

/// A [`Error::Corrupt`] for `key`, printed readably.
pub(super) fn corrupt(key: &[u8], reason: String) -> Error {
    Error::Corrupt {
        key: key.escape_ascii().to_string(),
        reason,
    }
}
