//! The `snapshot save` file: a consistent copy of a member's replicated
//! state, and restoring a new cluster from one.
//!
//! Format: the magic `CAIRNSNAP1`, the applied index it was taken at (8
//! bytes big-endian), the state's length (8 bytes big-endian), the state
//! (length-delimited `cairnpb.SnapshotRecord`s of the `kv`, `lease` and
//! `meta` column families), zero padding to a multiple of 512 bytes, then a
//! SHA-256 of everything before it. A truncated or damaged file is refused.
//! The padding and the trailing digest are what `etcdctl snapshot save`
//! checks of etcd's own files (size % 512 == 32, digest of the rest), so
//! stock etcdctl saves Cairn snapshots.
//!
//! Restore (`cairn snapshot restore FILE --data-dir DIR --name NAME
//! --initial-cluster ... --initial-cluster-token ... --initial-advertise-peer-urls ...`)
//! writes the state into a new data directory and bootstraps a new cluster
//! from it, with the membership given on the command line (the old member
//! table and alarms are dropped, as etcd's restore does). Run it once per
//! member with the same file and cluster flags, then start each member with
//! `cairn` and the same flags.

use crate::storage::crypto::{DataKey, KeyRing, MasterKey, WRAPPED_LEN};

const MAGIC: &[u8] = b"CAIRNSNAP1";
/// Marks a sealed state section: `SEALED1 | wrapped file key | sealed state`.
const SEALED_MAGIC: &[u8] = b"SEALED1";
/// The file key's id inside the wrapped blob's associated data.
const FILE_KEY_ID: u32 = 0;
const DIGEST_LEN: usize = 32;
/// The body is padded to a multiple of this (etcdctl's check).
const ALIGN: usize = 512;
const HEADER_LEN: usize = MAGIC.len() + 16;

/// Errors reading a snapshot file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a snapshot file, or damaged.
    #[error("invalid snapshot file: {0}")]
    Invalid(&'static str),
    /// The state is sealed and the master key given does not open it.
    #[error("the snapshot is sealed with another master key (give the saving member's --encryption-key-file)")]
    WrongKey,
    /// Sealing failed.
    #[error("sealing the snapshot: {0}")]
    Seal(String),
}

/// Seals snapshot state `data` for a file: a fresh random file key, wrapped
/// by `master`, seals the whole state (so the file holds no plaintext).
pub fn seal_state(master: &MasterKey, index: u64, data: &[u8]) -> Result<Vec<u8>, Error> {
    let key = DataKey::generate().map_err(|e| Error::Seal(e.to_string()))?;
    let wrapped = master
        .wrap(&key, FILE_KEY_ID)
        .map_err(|e| Error::Seal(e.to_string()))?;
    let sealed = KeyRing::new(FILE_KEY_ID, key)
        .seal("snapshot", &index.to_be_bytes(), data)
        .map_err(|e| Error::Seal(e.to_string()))?;
    let mut out = Vec::with_capacity(SEALED_MAGIC.len() + wrapped.len() + sealed.len());
    out.extend_from_slice(SEALED_MAGIC);
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The plain state of a file's state section (unsealed with `master` when
/// it is sealed).
pub fn open_state(master: Option<&MasterKey>, index: u64, state: &[u8]) -> Result<Vec<u8>, Error> {
    let Some(rest) = state.strip_prefix(SEALED_MAGIC) else {
        return Ok(state.to_vec());
    };
    let master = master.ok_or(Error::WrongKey)?;
    if rest.len() < WRAPPED_LEN {
        return Err(Error::Invalid("sealed state too short"));
    }
    let (wrapped, sealed) = rest.split_at(WRAPPED_LEN);
    let key = master
        .unwrap(wrapped, FILE_KEY_ID)
        .map_err(|_| Error::WrongKey)?;
    KeyRing::new(FILE_KEY_ID, key)
        .open("snapshot", &index.to_be_bytes(), sealed)
        .map_err(|_| Error::Invalid("sealed state fails authentication"))
}

/// Wraps state `data` taken at `index` into a snapshot file.
pub fn encode_file(index: u64, data: &[u8]) -> Vec<u8> {
    let body = (HEADER_LEN + data.len()).div_ceil(ALIGN) * ALIGN;
    let mut out = Vec::with_capacity(body + DIGEST_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(body, 0);
    let digest = ring::digest::digest(&ring::digest::SHA256, &out);
    out.extend_from_slice(digest.as_ref());
    out
}

/// The (index, state data) of a snapshot file, after checking its digest.
pub fn decode_file(file: &[u8]) -> Result<(u64, &[u8]), Error> {
    if file.len() < HEADER_LEN + DIGEST_LEN || !file.starts_with(MAGIC) {
        return Err(Error::Invalid("not a Cairn snapshot"));
    }
    let (body, digest) = file.split_at(file.len() - DIGEST_LEN);
    if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != digest {
        return Err(Error::Invalid("checksum mismatch (truncated or damaged)"));
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let index = word(MAGIC.len());
    let len = usize::try_from(word(MAGIC.len() + 8)).map_err(|_| Error::Invalid("bad length"))?;
    let data = body
        .get(HEADER_LEN..HEADER_LEN.saturating_add(len))
        .ok_or(Error::Invalid("length beyond the file"))?;
    Ok((index, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let file = encode_file(42, b"state");
        // etcdctl's check of a snapshot stream.
        assert_eq!(file.len() % 512, 32);
        assert_eq!(decode_file(&file).ok(), Some((42, &b"state"[..])));
        let big = vec![7u8; 1000];
        assert_eq!(decode_file(&encode_file(1, &big)).ok(), Some((1, &big[..])));
        let mut bad = file.clone();
        let n = bad.len();
        bad[n / 2] ^= 1;
        assert!(decode_file(&bad).is_err());
        assert!(decode_file(&file[..file.len() - 1]).is_err());
        assert!(decode_file(b"nope").is_err());
    }
}
