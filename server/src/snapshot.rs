//! The `snapshot save` file: a consistent copy of a member's replicated
//! state, and restoring a new cluster from one.
//!
//! Format: a bbolt database (`cairn-bbolt`), as etcd's own snapshot files
//! are, then the SHA-256 of it (what `etcdctl snapshot save` checks of a
//! snapshot stream: size % 512 == 32, digest of the rest). So etcd's tools
//! open it: `etcdutl snapshot status` (and etcdctl 3.4's) report its
//! revision and key count. Two buckets:
//! - `key`: one entry per MVCC record, under its revision key (etcd's
//!   encoding, in the clear: revisions and counts are readable), the value
//!   (an `mvccpb.KeyValue`) sealed;
//! - `cairn`: `index` (the applied index, 8 bytes big-endian), `key` (the
//!   file key wrapped by the member's master key) and `state` (the `lease`,
//!   `meta` and `auth` records as length-delimited `SnapshotRecord`s,
//!   sealed as one).
//!
//! Values are sealed with a fresh random file key (AES-256-GCM, each bound
//! to its record key), wrapped by the saving member's master key: only
//! `cairn` with that key restores the file; etcd's tools see revisions, not
//! data. `etcdutl snapshot status`'s TOTAL KEYS counts every bucket's keys:
//! the key records plus the three of `cairn`; its hash is of the sealed
//! bytes (so it differs between two saves of one state). Without sealing
//! (`bench-plaintext` builds) there is no `key` entry and values are plain.
//!
//! A truncated or damaged file is refused (digest, then bbolt's structure,
//! then each seal). Files of the earlier format (`CAIRNSNAP1`) still
//! restore.
//!
//! Restore (`cairn snapshot restore FILE --data-dir DIR --name NAME
//! --initial-cluster ... --initial-cluster-token ... --initial-advertise-peer-urls ...`)
//! writes the state into a new data directory and bootstraps a new cluster
//! from it, with the membership given on the command line (the old member
//! table and alarms are dropped, as etcd's restore does). Run it once per
//! member with the same file and cluster flags, then start each member with
//! `cairn` and the same flags.

use std::io::Cursor;

use cairn_bbolt::{Db, Entry, Item, Writer};
use cairn_proto::cairnpb::SnapshotRecord;
use prost::Message;

use crate::storage::crypto::{KeyRing, MasterKey, WRAPPED_LEN};

/// The bucket of Cairn's own entries, and its keys.
const CAIRN: &[u8] = b"cairn";
const INDEX: &[u8] = b"index";
const FILE_KEY: &[u8] = b"key";
const STATE: &[u8] = b"state";
/// The bucket of the MVCC records (etcd's name).
const KEY: &[u8] = b"key";
/// The associated data's column family of the sealed state and records.
const STATE_CF: &str = "snapshot";
const KV_CF: &str = "kv";
/// The file key's id inside the wrapped blob's associated data.
const FILE_KEY_ID: u32 = 0;
const DIGEST_LEN: usize = 32;

/// The earlier format: `CAIRNSNAP1`, index, length, state, zero padding to
/// 512 bytes, SHA-256; its state `SEALED1 | wrapped key | sealed state`.
const LEGACY_MAGIC: &[u8] = b"CAIRNSNAP1";
const LEGACY_SEALED: &[u8] = b"SEALED1";
const LEGACY_HEADER: usize = LEGACY_MAGIC.len() + 16;

/// Errors reading a snapshot file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a snapshot file, or damaged.
    #[error("invalid snapshot file: {0}")]
    Invalid(&'static str),
    /// The bbolt structure or a record is damaged.
    #[error("invalid snapshot file: {0}")]
    Damaged(String),
    /// The state is sealed and the master key given does not open it.
    #[error("the snapshot is sealed with another master key (give the saving member's --encryption-key-file)")]
    WrongKey,
    /// Sealing or writing failed.
    #[error("sealing the snapshot: {0}")]
    Seal(String),
}

impl From<cairn_bbolt::Error> for Error {
    fn from(e: cairn_bbolt::Error) -> Self {
        Error::Damaged(e.to_string())
    }
}

/// A snapshot file's contents.
#[derive(Debug)]
pub struct Decoded {
    /// The applied index it was taken at.
    pub index: u64,
    /// The plain state: every record as a length-delimited
    /// `SnapshotRecord`, `kv` first (what `Machine::restore` takes).
    pub data: Vec<u8>,
    /// Keys of the file's buckets besides the key records (etcdutl counts
    /// them in its TOTAL KEYS); 0 for the earlier format.
    pub other_keys: u64,
}

fn record(cf: &str, key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let rec = SnapshotRecord {
        cf: cf.to_string(),
        key: key.to_vec(),
        value: value.to_vec(),
    };
    // Growing a Vec cannot run out of room: the encoding cannot fail.
    let _ = rec.encode_length_delimited(out);
}

/// Writes state `data` (what `Machine::snapshot_data` yields) taken at
/// `index` as a snapshot file, sealed under `master` (None: plain).
pub fn encode_file(index: u64, data: &[u8], master: Option<&MasterKey>) -> Result<Vec<u8>, Error> {
    let seal = |e: &dyn std::fmt::Display| Error::Seal(e.to_string());
    let sealing = match master {
        Some(master) => Some(KeyRing::fresh_wrapped(master, FILE_KEY_ID).map_err(|e| seal(&e))?),
        None => None,
    };
    let mut kv = Vec::new();
    let mut state = Vec::new();
    let mut buf = data;
    while !buf.is_empty() {
        let rec = SnapshotRecord::decode_length_delimited(&mut buf).map_err(|e| seal(&e))?;
        if rec.cf == KV_CF {
            kv.push((rec.key, rec.value));
        } else {
            let _ = rec.encode_length_delimited(&mut state);
        }
    }
    kv.sort();
    let mut w = Writer::new(Cursor::new(Vec::new())).map_err(|e| seal(&e))?;
    let mut keys = w.bucket();
    for (k, v) in &kv {
        let value = match &sealing {
            Some((ring, _)) => ring.seal(KV_CF, k, v).map_err(|e| seal(&e))?,
            None => v.clone(),
        };
        keys.put_value(k, &value).map_err(|e| seal(&e))?;
    }
    let keys = keys.finish().map_err(|e| seal(&e))?;
    let mut cairn = w.bucket();
    let index_bytes = index.to_be_bytes();
    cairn.put_value(INDEX, &index_bytes).map_err(|e| seal(&e))?;
    if let Some((_, wrapped)) = &sealing {
        cairn.put_value(FILE_KEY, wrapped).map_err(|e| seal(&e))?;
    }
    let state = match &sealing {
        Some((ring, _)) => ring
            .seal(STATE_CF, &index_bytes, &state)
            .map_err(|e| seal(&e))?,
        None => state,
    };
    cairn.put_value(STATE, &state).map_err(|e| seal(&e))?;
    let cairn = cairn.finish().map_err(|e| seal(&e))?;
    let mut root = w.bucket();
    root.put(CAIRN, Entry::Bucket(cairn))
        .map_err(|e| seal(&e))?;
    root.put(KEY, Entry::Bucket(keys)).map_err(|e| seal(&e))?;
    let root = root.finish().map_err(|e| seal(&e))?;
    let mut out = w.finish(root).map_err(|e| seal(&e))?.into_inner();
    let digest = ring::digest::digest(&ring::digest::SHA256, &out);
    out.extend_from_slice(digest.as_ref());
    Ok(out)
}

/// Reads snapshot `file`, checking its digest and structure and opening
/// its seals with `master`.
pub fn decode_file(file: &[u8], master: Option<&MasterKey>) -> Result<Decoded, Error> {
    if file.len() < DIGEST_LEN {
        return Err(Error::Invalid("not a Cairn snapshot"));
    }
    let (body, digest) = file.split_at(file.len() - DIGEST_LEN);
    if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != digest {
        return Err(Error::Invalid("checksum mismatch (truncated or damaged)"));
    }
    if body.starts_with(LEGACY_MAGIC) {
        return decode_legacy(body, master);
    }
    let db = Db::open(body)?;
    let bucket = |name: &[u8]| {
        db.bucket(name)?
            .ok_or(Error::Invalid("not a Cairn snapshot"))
    };
    let (keys, cairn) = (bucket(KEY)?, bucket(CAIRN)?);
    let value = |name: &[u8]| match cairn.get(name)? {
        Some(Item::Value(v)) => Ok(Some(v)),
        _ => Ok::<_, Error>(None),
    };
    let index_bytes: [u8; 8] = value(INDEX)?
        .and_then(|v| v.try_into().ok())
        .ok_or(Error::Invalid("no applied index"))?;
    let index = u64::from_be_bytes(index_bytes);
    let ring = match value(FILE_KEY)? {
        None => None,
        Some(wrapped) => {
            let master = master.ok_or(Error::WrongKey)?;
            Some(KeyRing::unwrapped(master, wrapped, FILE_KEY_ID).map_err(|_| Error::WrongKey)?)
        }
    };
    let open = |cf: &str, k: &[u8], v: &[u8]| match &ring {
        Some(ring) => ring
            .open(cf, k, v)
            .map_err(|_| Error::Invalid("a sealed record fails authentication")),
        None => Ok(v.to_vec()),
    };
    let mut data = Vec::new();
    keys.for_each::<Error>(|k, item| match item {
        Item::Value(v) => {
            record(KV_CF, k, &open(KV_CF, k, v)?, &mut data);
            Ok(())
        }
        Item::Bucket(_) => Err(Error::Invalid("a bucket among the key records")),
    })?;
    let state = value(STATE)?.ok_or(Error::Invalid("no state"))?;
    data.extend_from_slice(&open(STATE_CF, &index_bytes, state)?);
    let mut other_keys = 0;
    cairn.for_each::<Error>(|_, _| {
        other_keys += 1;
        Ok(())
    })?;
    Ok(Decoded {
        index,
        data,
        other_keys,
    })
}

/// The earlier format's contents (`body`: the file without its digest,
/// already checked).
fn decode_legacy(body: &[u8], master: Option<&MasterKey>) -> Result<Decoded, Error> {
    if body.len() < LEGACY_HEADER {
        return Err(Error::Invalid("not a Cairn snapshot"));
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let index = word(LEGACY_MAGIC.len());
    let len =
        usize::try_from(word(LEGACY_MAGIC.len() + 8)).map_err(|_| Error::Invalid("bad length"))?;
    let state = body
        .get(LEGACY_HEADER..LEGACY_HEADER.saturating_add(len))
        .ok_or(Error::Invalid("length beyond the file"))?;
    let Some(rest) = state.strip_prefix(LEGACY_SEALED) else {
        return Ok(Decoded {
            index,
            data: state.to_vec(),
            other_keys: 0,
        });
    };
    let master = master.ok_or(Error::WrongKey)?;
    if rest.len() < WRAPPED_LEN {
        return Err(Error::Invalid("sealed state too short"));
    }
    let (wrapped, sealed) = rest.split_at(WRAPPED_LEN);
    let data = KeyRing::unwrapped(master, wrapped, FILE_KEY_ID)
        .map_err(|_| Error::WrongKey)?
        .open(STATE_CF, &index.to_be_bytes(), sealed)
        .map_err(|_| Error::Invalid("sealed state fails authentication"))?;
    Ok(Decoded {
        index,
        data,
        other_keys: 0,
    })
}

#[cfg(test)]
mod tests;
