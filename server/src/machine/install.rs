//! Installing snapshot data: the whole replicated state replaced in
//! batches of bounded size, and finished after a crash half-way.
//!
//! # Why in batches
//!
//! At a million keys a snapshot's state is ~300 MB. Written as one atomic
//! batch it was held three more times beside the data: the decoded
//! records, RocksDB's copy of the batch, and the memtable the batch lands
//! in whole (measured with `cairn snapshot restore` of such a state: the
//! install added ~830 MiB to the process's peak). Written in batches of
//! [`BATCH_BYTES`], an install holds one batch beside the data, and RocksDB
//! flushes its memtables as they fill.
//!
//! # Why a crash half-way loses nothing
//!
//! Between the first batch and the last, the engine holds part of the old
//! state and part of the new one, and the old one cannot come back. So,
//! before the first batch, the data is *staged*: written to a file in the
//! data directory ([`FILE_NAME`], sealed as the records are, under a fresh
//! key wrapped by the master key) and synced; then a marker in `meta`
//! ([`MARKER`], synced; a member's own record, never in a snapshot) says
//! what the file holds. The batches skip RocksDB's WAL (writes replayed
//! from the staged file, as the applied entries are from the raft log);
//! once the last is written the engine persists them all, and only then
//! is the marker deleted (synced). At start, before anything reads the
//! store, [`finish_interrupted`] sees a marker as an install cut short and
//! does it again from the file; a file without a marker is a staging that
//! never began, and goes. etcd keeps the same order: a received snapshot
//! is on disk before it replaces the backend.
//!
//! # The staged file
//!
//! ```text
//! b"CAIRNSTG" | sealed (1 byte: 1, or 0 where nothing is sealed) |
//! wrapped file key (WRAPPED_LEN bytes, when sealed) |
//! chunks: length (u32 BE) | chunk (sealed: key id | nonce | data | tag)
//! ```
//!
//! Each chunk is up to [`CHUNK_BYTES`] of the data, sealed bound to its
//! position; the marker holds the number of chunks and the data's length
//! (`u64` BE each), so a short, long or reordered file is refused.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use cairn_proto::cairnpb::SnapshotRecord;
use prost::Message;

use super::snapshot::{replicated, snapshot_cf, REPLICATED};
use super::Error;
use crate::mvcc::IndexBuilder;
use crate::storage::crypto::{KeyRing, MasterKey, OVERHEAD, WRAPPED_LEN};
use crate::storage::{Cf, Engine, Scan, WriteBatch};

/// Bytes of records (keys, values and [`OP_BYTES`] each) per write of an
/// install: large enough that a batch's fixed costs (a sync-free RocksDB
/// write, the sealing threads) vanish, small enough that a million keys
/// are ~20 writes.
pub(super) const BATCH_BYTES: usize = 16 << 20;
/// What one operation of a batch holds beside its key and value.
const OP_BYTES: usize = 64;
/// Bytes of data per chunk of the staged file.
const CHUNK_BYTES: usize = 4 << 20;
/// First bytes of a staged file.
const MAGIC: &[u8; 8] = b"CAIRNSTG";
/// `meta` key of the marker of an install under way (listed with the
/// member's own records in `snapshot`: it never travels).
pub const MARKER: &[u8] = b"install";
/// The staged file, in the data directory.
pub const FILE_NAME: &str = "install.staged";
/// The file key's id in its wrapping's associated data.
const FILE_KEY_ID: u32 = 0;
/// The associated data's "column family" of a staged chunk.
const CHUNK_CF: &str = "install";

fn corrupt(reason: impl ToString) -> Error {
    Error::Corrupt {
        what: "snapshot record",
        reason: reason.to_string(),
    }
}

fn staging(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Staging {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The records of snapshot `data`, decoded one at a time; nothing after
/// the first error.
fn records(data: &[u8]) -> impl Iterator<Item = Result<(Cf, Vec<u8>, Vec<u8>), Error>> + '_ {
    let mut buf = data;
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let record = SnapshotRecord::decode_length_delimited(&mut buf).map_err(corrupt);
        if record.is_err() {
            buf = &[];
        }
        Some(record.and_then(|r| match snapshot_cf(&r.cf) {
            Some(cf) => Ok((cf, r.key, r.value)),
            None => Err(corrupt(format!("unknown column family {:?}", r.cf))),
        }))
    })
}

/// Checks that every record of `data` decodes, before anything is
/// replaced (a `kv` record into what the key index needs, in revision
/// order); returns how many there are and the `kv` records' index, to be
/// built.
fn check(data: &[u8]) -> Result<(usize, IndexBuilder), Error> {
    let mut index = IndexBuilder::new();
    let mut count = 0;
    for record in records(data) {
        let (cf, key, value) = record?;
        if cf == Cf::Kv {
            index.add(&key, &value)?;
        }
        count += 1;
    }
    Ok((count, index))
}

/// What [`check_and_stage`] found: the data is whole, and what to write.
pub(super) struct Checked {
    /// How many records the data holds.
    pub(super) records: usize,
    /// Its `kv` records, handed over for the key index.
    pub(super) index: IndexBuilder,
    /// The batch that puts the marker, if the data was staged.
    pub(super) marker: Option<WriteBatch>,
}

/// Checks `data` (its `kv` records handed to the key index's builder) and,
/// given `staging` (the file, and the master key if the member seals),
/// stages it there: both at once, the check on a thread of its own (it is
/// CPU; the staging mostly waits for the disk's sync). Data that fails the
/// check leaves no staged file.
pub(super) fn check_and_stage(
    data: &[u8],
    staging: Option<(&Path, Option<&MasterKey>)>,
) -> Result<Checked, Error> {
    let Some((path, master)) = staging else {
        let (records, index) = check(data)?;
        return Ok(Checked {
            records,
            index,
            marker: None,
        });
    };
    let (checked, staged) = std::thread::scope(|scope| {
        let checking = std::thread::Builder::new()
            .name("install-check".into())
            .spawn_scoped(scope, || check(data));
        let staged = stage(path, data, master);
        let checked = match checking {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(corrupt("the check's thread panicked"))),
            // No thread to spare: one after the other.
            Err(_) => check(data),
        };
        (checked, staged)
    });
    match checked {
        Ok((records, index)) => Ok(Checked {
            records,
            index,
            marker: Some(staged?),
        }),
        Err(e) => {
            remove_staged(path);
            Err(e)
        }
    }
}

/// Replaces every replicated record of `engine` with those of `data`
/// (checked already), in batches of about `batch_bytes`, written as
/// [`Engine::write_replayed`] (the staged file is what a crash replays
/// them from: not through RocksDB's WAL, which wrote the whole state once
/// more), then persists them and only then writes `last` (the marker's
/// deletion), synced.
pub(super) fn write_state(
    engine: &dyn Engine,
    data: &[u8],
    batch_bytes: usize,
    last: WriteBatch,
) -> Result<(), Error> {
    engine.bulk_writes(true)?;
    let written = write_batches(engine, data, batch_bytes, last);
    // Back to caching what is written, after a failed install too.
    let restored = engine.bulk_writes(false);
    written?;
    Ok(restored?)
}

/// [`write_state`]'s writes.
fn write_batches(
    engine: &dyn Engine,
    data: &[u8],
    batch_bytes: usize,
    last: WriteBatch,
) -> Result<(), Error> {
    replace_records(engine, data, batch_bytes)?;
    // The state on disk before the marker goes: until then a crash
    // finishes the install again from the staged file.
    engine.persist()?;
    if !last.is_empty() {
        engine.write(last, true)?;
    }
    Ok(())
}

/// The old replicated records deleted and `data`'s written, as writes
/// replayed (not yet persisted).
fn replace_records(engine: &dyn Engine, data: &[u8], batch_bytes: usize) -> Result<(), Error> {
    for cf in REPLICATED {
        delete_all(engine, cf, batch_bytes)?;
    }
    let mut batch = WriteBatch::new();
    let mut bytes = 0;
    for record in records(data) {
        let (cf, key, value) = record?;
        // This member's own records are never replaced by a snapshot's
        // (which never carries them; a crafted file might).
        if !replicated(cf, &key) {
            continue;
        }
        bytes += key.len() + value.len() + OP_BYTES;
        batch.put(cf, key, value);
        if bytes >= batch_bytes {
            engine.write_replayed(std::mem::take(&mut batch))?;
            bytes = 0;
        }
    }
    engine.write_replayed(batch)?;
    Ok(())
}

/// Deletes every replicated record of `cf`, a batch of about `batch_bytes`
/// at a time (each scan stops before its batch is written: a scan never
/// runs beside a write of the same engine).
fn delete_all(engine: &dyn Engine, cf: Cf, batch_bytes: usize) -> Result<(), Error> {
    let mut from = Vec::new();
    loop {
        let mut batch = WriteBatch::new();
        let mut bytes = 0;
        let mut next = None;
        // Keys only: nothing to unseal.
        engine.scan_raw(cf, &from, None, &mut |k, _| {
            if bytes >= batch_bytes {
                next = Some(k.to_vec());
                return Scan::Stop;
            }
            if replicated(cf, k) {
                bytes += k.len() + OP_BYTES;
                batch.delete(cf, k.to_vec());
            }
            Scan::Continue
        })?;
        if !batch.is_empty() {
            engine.write_replayed(batch)?;
        }
        match next {
            Some(key) => from = key,
            None => return Ok(()),
        }
    }
}

/// The marker's value: chunks, then the data's length.
fn marker(chunks: u64, len: u64) -> Vec<u8> {
    [chunks.to_be_bytes(), len.to_be_bytes()].concat()
}

/// Writes `data` to the staged file at `path` (sealed under a fresh key
/// wrapped by `master`, if any) and syncs it and its directory; returns
/// the batch that puts the marker.
fn stage(path: &Path, data: &[u8], master: Option<&MasterKey>) -> Result<WriteBatch, Error> {
    let fail = |e: &dyn std::fmt::Display| staging(path, e);
    let ring = match master {
        Some(master) => Some(KeyRing::fresh_wrapped(master, FILE_KEY_ID).map_err(|e| fail(&e))?),
        None => None,
    };
    let file = File::create(path).map_err(|e| fail(&e))?;
    let mut out = BufWriter::new(file);
    let mut write = |bytes: &[u8]| out.write_all(bytes).map_err(|e| fail(&e));
    write(MAGIC)?;
    match &ring {
        Some((_, wrapped)) => {
            write(&[1])?;
            write(wrapped)?;
        }
        None => write(&[0])?,
    }
    let mut chunks: u64 = 0;
    for chunk in data.chunks(CHUNK_BYTES) {
        let sealed;
        let bytes = match &ring {
            Some((ring, _)) => {
                sealed = ring
                    .seal(CHUNK_CF, &chunks.to_be_bytes(), chunk)
                    .map_err(|e| fail(&e))?;
                &sealed[..]
            }
            None => chunk,
        };
        let len = u32::try_from(bytes.len()).map_err(|e| fail(&e))?;
        write(&len.to_be_bytes())?;
        write(bytes)?;
        chunks += 1;
    }
    let file = out.into_inner().map_err(|e| fail(e.error()))?;
    file.sync_all().map_err(|e| fail(&e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail(&e))?;
    }
    let mut batch = WriteBatch::new();
    batch.put(Cf::Meta, MARKER, marker(chunks, data.len() as u64));
    Ok(batch)
}

/// Reads back the data staged at `path`, as `marker` describes it.
fn read_staged(path: &Path, marker: &[u8], masters: &[&MasterKey]) -> Result<Vec<u8>, Error> {
    let fail = |e: &dyn std::fmt::Display| staging(path, e);
    let field = |at: usize| {
        marker
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
    };
    let (Some(chunks), Some(len), 16) = (field(0), field(8), marker.len()) else {
        return Err(fail(&"the install marker is not 16 bytes"));
    };
    let file = File::open(path).map_err(|e| fail(&e))?;
    // Lengths read from the disk bound nothing until checked: the data is
    // never longer than its file, a chunk never longer than a sealed one.
    let file_len = file.metadata().map_err(|e| fail(&e))?.len();
    if len > file_len {
        return Err(fail(&"the marker names more data than the file holds"));
    }
    let mut input = BufReader::new(file);
    let mut read = |n: usize| -> Result<Vec<u8>, Error> {
        let mut buf = vec![0; n];
        input
            .read_exact(&mut buf)
            .map_err(|e| fail(&format!("{e} (the file is short)")))?;
        Ok(buf)
    };
    if read(MAGIC.len())? != MAGIC {
        return Err(fail(&"not a staged install"));
    }
    let ring = match (read(1)?[0], masters.is_empty()) {
        (1, false) => {
            let wrapped = read(WRAPPED_LEN)?;
            let ring = masters
                .iter()
                .find_map(|master| KeyRing::unwrapped(master, &wrapped, FILE_KEY_ID).ok())
                .ok_or_else(|| fail(&"no master key given opens it"))?;
            Some(ring)
        }
        (0, true) => None,
        (1, true) => return Err(fail(&"sealed, and this member seals nothing")),
        (0, false) => return Err(fail(&"not sealed, and this member seals")),
        _ => return Err(fail(&"not a staged install")),
    };
    let mut data = Vec::with_capacity(usize::try_from(len).map_err(|e| fail(&e))?);
    for n in 0..chunks {
        let size = u32::from_be_bytes(read(4)?.try_into().map_err(|_| fail(&"a chunk's length"))?);
        if size as usize > CHUNK_BYTES + OVERHEAD {
            return Err(fail(&"a chunk longer than any staged one"));
        }
        let chunk = read(size as usize)?;
        match &ring {
            Some(ring) => data.extend_from_slice(
                &ring
                    .open(CHUNK_CF, &n.to_be_bytes(), &chunk)
                    .map_err(|e| fail(&e))?,
            ),
            None => data.extend_from_slice(&chunk),
        }
    }
    let mut rest = [0; 1];
    let at_end = matches!(input.read(&mut rest), Ok(0));
    if data.len() as u64 != len || !at_end {
        return Err(fail(&"the file does not hold what the marker says"));
    }
    Ok(data)
}

/// Removes the staged file at `path`, if there is one; a failure is only
/// logged (the next start removes it).
pub(super) fn remove_staged(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a staged install")
        }
    }
}

/// Whether `engine` holds an install cut short (its marker): what an
/// offline tool must refuse, since the state is half old and half new.
pub fn unfinished(engine: &dyn Engine) -> Result<bool, crate::storage::Error> {
    Ok(engine.get(Cf::Meta, MARKER)?.is_some())
}

/// At start, before the store is opened: finishes an install that a crash
/// cut short (a marker in `meta`), from the data staged at `path`, opened
/// with the first of `masters` that can (the member's master key, then the
/// one it replaces at this start, if any; none where nothing is sealed);
/// otherwise removes a staged file left over. True when an install was
/// finished.
pub fn finish_interrupted(
    engine: &dyn Engine,
    path: &Path,
    masters: &[&MasterKey],
) -> Result<bool, Error> {
    let Some(marker) = engine.get(Cf::Meta, MARKER)? else {
        remove_staged(path);
        return Ok(false);
    };
    tracing::warn!(path = %path.display(), "finishing a snapshot install cut short");
    let data = read_staged(path, &marker, masters)?;
    // The store, opened after this, rebuilds its index from the records.
    check(&data)?;
    let mut last = WriteBatch::new();
    last.delete(Cf::Meta, MARKER);
    write_state(engine, &data, BATCH_BYTES, last)?;
    remove_staged(path);
    Ok(true)
}

#[cfg(test)]
#[path = "install_tests.rs"]
mod tests;
