//! `cairn migrate to-etcd`: a stopped member's data directory written as
//! an etcd snapshot file (a bbolt database in etcd 3.5's schema, then the
//! SHA-256 `etcdctl snapshot save` appends), which `etcdutl snapshot
//! restore` turns into an etcd member with the same keys, values,
//! revisions, leases, compacted revision and auth.
//!
//! etcd has no encryption at rest: the file holds everything in plain
//! text, which the caller must have asked for ([`to_etcd`] takes no file
//! without it). It is written as `<out>.part` (mode 0600) and renamed when
//! complete, so a failed export leaves no file that looks whole.
//!
//! Deletions Cairn keeps at the compacted revision (etcd drops them when it
//! compacts) are left out, so the file is the one etcd would have.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use cairn_bbolt::{BucketRoot, Entry, Writer};
use cairn_proto::cairnpb::AuthState;
use prost::Message;

use super::etcd;
use super::Error;
use crate::mvcc::{Revision, META_APPLIED_INDEX, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT};
use crate::storage::{try_scan, Cf, Engine, Scan};

/// What [`to_etcd`] wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// `key` records written (every revision of every key, deletions
    /// included).
    pub key_records: u64,
    /// The revision of the last record (etcd's `snapshot status` revision).
    pub revision: i64,
    /// The compacted revision (0: never compacted).
    pub compacted: i64,
    /// Leases written.
    pub leases: u64,
    /// Auth users and roles written.
    pub users: usize,
    /// (see `users`)
    pub roles: usize,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// Why an export was refused before anything was written: etcd keeps its
/// data in plain text.
pub const PLAINTEXT_REFUSAL: &str =
    "etcd has no encryption at rest: the file would hold every key, value \
     and auth record of the store in plain text (Cairn's data is sealed); pass --plaintext to \
     write it anyway, and keep the file where only etcd's operators can read it";

/// Writes the stopped member's data directory `data_dir` (master key
/// `key_file`, else `<data-dir>.key`) to the new etcd snapshot file `out`.
/// `plaintext` is the caller's explicit consent (see [`PLAINTEXT_REFUSAL`]).
pub fn to_etcd(
    data_dir: &Path,
    key_file: Option<&Path>,
    out: &Path,
    plaintext: bool,
) -> Result<ExportReport, Error> {
    if !plaintext {
        return Err(Error::PlaintextRefused);
    }
    if out.exists() {
        return Err(Error::OutputExists(out.to_path_buf()));
    }
    let member = crate::offline::open_stopped(data_dir, key_file)?;
    let mut part = out.as_os_str().to_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    let file = create_private(&part)?;
    match write_file(member.engine.as_ref(), file) {
        Ok(mut report) => {
            std::fs::rename(&part, out).map_err(|e| io(out, e))?;
            report.bytes = std::fs::metadata(out).map_err(|e| io(out, e))?.len();
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A new file readable by its owner only (it holds plain text).
fn create_private(path: &Path) -> Result<File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))
}

fn meta_i64(engine: &dyn Engine, key: &[u8]) -> Result<Option<i64>, Error> {
    match engine.get(Cf::Meta, key)? {
        None => Ok(None),
        Some(v) => Ok(Some(i64::from_be_bytes(v.as_slice().try_into().map_err(
            |_| Error::Record {
                what: format!("meta {}", key.escape_ascii()),
                reason: "not an 8-byte number".into(),
            },
        )?))),
    }
}

/// The whole file: the buckets, the metas, then the digest.
fn write_file(engine: &dyn Engine, file: File) -> Result<ExportReport, Error> {
    let mut report = ExportReport::default();
    let finished = meta_i64(engine, META_FINISHED_COMPACT)?;
    let scheduled = meta_i64(engine, META_SCHEDULED_COMPACT)?;
    report.compacted = finished.unwrap_or(0).max(0);
    let mut w = Writer::new(BufWriter::new(file))?;
    let mut roots: Vec<(&[u8], BucketRoot)> = Vec::new();

    let mut keys = w.bucket();
    try_scan::<Error>(engine, Cf::Kv, &[], None, |k, v| {
        let (rev, tombstone) = Revision::from_record_key(k).ok_or_else(|| Error::Record {
            what: format!("kv record {}", k.escape_ascii()),
            reason: "not a revision".into(),
        })?;
        if tombstone && rev.main <= report.compacted {
            return Ok(Scan::Continue);
        }
        keys.put_value(k, v)?;
        report.key_records += 1;
        report.revision = rev.main;
        Ok(Scan::Continue)
    })?;
    roots.push((etcd::KEY, keys.finish()?));

    let mut leases = w.bucket();
    try_scan::<Error>(engine, Cf::Lease, &[], None, |k, v| {
        leases.put_value(k, v)?;
        report.leases += 1;
        Ok(Scan::Continue)
    })?;
    roots.push((etcd::LEASE, leases.finish()?));

    let mut meta = w.bucket();
    let applied = meta_i64(engine, META_APPLIED_INDEX)?.unwrap_or(0);
    meta.put_value(etcd::CONSISTENT_INDEX, &applied.to_be_bytes())?;
    if let Some(rev) = finished.filter(|r| *r >= 0) {
        meta.put_value(etcd::FINISHED_COMPACT, &etcd::compact_rev_bytes(rev))?;
    }
    if let Some(rev) = scheduled.filter(|r| *r >= 0) {
        meta.put_value(etcd::SCHEDULED_COMPACT, &etcd::compact_rev_bytes(rev))?;
    }
    roots.push((etcd::META, meta.finish()?));

    write_auth(engine, &mut w, &mut roots, &mut report)?;
    let mut cluster = w.bucket();
    cluster.put_value(etcd::CLUSTER_VERSION, etcd::CLUSTER_VERSION_VALUE)?;
    roots.push((etcd::CLUSTER, cluster.finish()?));
    for name in [etcd::ALARM, etcd::MEMBERS, etcd::MEMBERS_REMOVED] {
        roots.push((name, w.bucket().finish()?));
    }
    roots.sort_by_key(|(name, _)| *name);
    let mut root = w.bucket();
    for (name, bucket) in roots {
        root.put(name, Entry::Bucket(bucket))?;
    }
    let root = root.finish()?;
    let file = w
        .finish(root)?
        .into_inner()
        .map_err(|e| Error::Bbolt(cairn_bbolt::Error::Io(e.into_error())))?;
    append_digest(file)?;
    report.revision = report.revision.max(report.compacted);
    Ok(report)
}

/// etcd's three auth buckets from Cairn's one auth record.
fn write_auth<W: Write + Seek>(
    engine: &dyn Engine,
    w: &mut Writer<W>,
    roots: &mut Vec<(&'static [u8], BucketRoot)>,
    report: &mut ExportReport,
) -> Result<(), Error> {
    let state = match engine.get(Cf::Auth, crate::auth::store::RECORD_KEY)? {
        Some(v) => AuthState::decode(v.as_slice()).map_err(|e| Error::Record {
            what: "auth record".into(),
            reason: e.to_string(),
        })?,
        // Cairn's (and etcd's) auth store before any change.
        None => AuthState {
            revision: 1,
            ..AuthState::default()
        },
    };
    let mut auth = w.bucket();
    auth.put_value(etcd::AUTH_ENABLED, &[u8::from(state.enabled)])?;
    auth.put_value(etcd::AUTH_REVISION, &state.revision.to_be_bytes())?;
    roots.push((etcd::AUTH, auth.finish()?));
    let users: BTreeMap<Vec<u8>, Vec<u8>> = state
        .users
        .iter()
        .map(|u| (u.name.clone(), u.encode_to_vec()))
        .collect();
    let roles: BTreeMap<Vec<u8>, Vec<u8>> = state
        .roles
        .iter()
        .map(|r| (r.name.clone(), r.encode_to_vec()))
        .collect();
    report.users = users.len();
    report.roles = roles.len();
    for (name, records) in [(etcd::AUTH_USERS, users), (etcd::AUTH_ROLES, roles)] {
        let mut bucket = w.bucket();
        for (k, v) in &records {
            bucket.put_value(k, v)?;
        }
        roots.push((name, bucket.finish()?));
    }
    Ok(())
}

/// Appends the SHA-256 of the file's bytes (the bbolt database), as
/// `etcdctl snapshot save` does, and syncs the file.
fn append_digest(mut file: File) -> Result<(), Error> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    file.seek(SeekFrom::Start(0))
        .map_err(cairn_bbolt::Error::Io)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(cairn_bbolt::Error::Io)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    file.write_all(ctx.finish().as_ref())
        .map_err(cairn_bbolt::Error::Io)?;
    file.sync_all().map_err(cairn_bbolt::Error::Io)?;
    Ok(())
}
