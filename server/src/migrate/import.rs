//! `cairn migrate from-etcd`: an etcd database file read into Cairn's
//! replicated state (snapshot records), every record checked before any of
//! it is written; then [`restore_state`] writes a new data directory from
//! it, as `cairn snapshot restore` does.
//!
//! What is kept: every `key` record as it is (same revision keys, same
//! `mvccpb.KeyValue` bytes: create/mod revisions, versions, leases,
//! tombstones), the compacted revision (`finishedCompactRev` and
//! `scheduledCompactRev`: a compaction etcd had not finished is finished by
//! Cairn at its first start), the leases (id, TTL, checkpointed remaining
//! TTL; the attached keys follow from the keys' lease fields), auth
//! (enabled, revision, users with their bcrypt hashes, roles), and
//! `consistent_index` as the applied index the new cluster starts at. The
//! revision counter follows from the records and the compacted revision,
//! as in etcd (the highest record, at least the compacted revision), so a
//! client's next write gets the revision etcd would have given it. The
//! membership, cluster version and alarms are the old cluster's and are
//! dropped (the new membership comes from the flags), as etcd's restore
//! does.

use cairn_bbolt::{Bucket, Db, Item};
use cairn_proto::authpb::{Role, User};
use cairn_proto::cairnpb::{AuthState, Lease, SnapshotRecord};
use cairn_proto::mvccpb::KeyValue;
use prost::Message;

use super::etcd;
use super::Error;
use crate::bootstrap::restore_state;
use crate::config::Config;
use crate::mvcc::{Revision, META_APPLIED_INDEX, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT};

/// An etcd file read into Cairn's replicated state.
#[derive(Debug, Default)]
pub struct Imported {
    /// The state as snapshot records (what a restore writes).
    pub data: Vec<u8>,
    /// Whether the file carried `etcdctl snapshot save`'s digest (checked);
    /// a member's `member/snap/db` has none.
    pub had_digest: bool,
    /// `key` records (every revision of every key, deletions included).
    pub key_records: u64,
    /// The revision the store will be at: the highest record's, at least
    /// the compacted revision.
    pub revision: i64,
    /// The compacted revision (0: never compacted).
    pub compacted: i64,
    /// Leases.
    pub leases: u64,
    /// Auth users and roles.
    pub users: usize,
    /// (see `users`)
    pub roles: usize,
}

/// What [`from_etcd`] did.
#[derive(Debug)]
pub struct ImportReport {
    /// What was read.
    pub imported: Imported,
    /// The revision the new member's store is at.
    pub revision: i64,
}

/// Reads etcd database `file` (a `snapshot save` file or a member's
/// `member/snap/db`) and writes it into the new data directory of
/// `config` with the membership of `config` (run once per member of the new
/// cluster, as a restore). Nothing is written unless the whole file reads.
pub fn from_etcd(file: &[u8], config: &Config) -> Result<ImportReport, Error> {
    let mut imported = read_etcd(file)?;
    let data = std::mem::take(&mut imported.data);
    let revision = restore_state(&data, config)?;
    Ok(ImportReport { imported, revision })
}

fn record(what: &str, key: &[u8], reason: impl std::fmt::Display) -> Error {
    Error::Record {
        what: format!("{what} {}", key.escape_ascii()),
        reason: reason.to_string(),
    }
}

/// Appends one snapshot record.
fn push(out: &mut Vec<u8>, cf: &str, key: &[u8], value: &[u8]) {
    let rec = SnapshotRecord {
        cf: cf.to_string(),
        key: key.to_vec(),
        value: value.to_vec(),
    };
    // Growing a Vec cannot run out of room: the encoding cannot fail.
    let _ = rec.encode_length_delimited(out);
}

/// The plain values of `bucket` (a nested bucket inside is damage).
fn values<'a>(
    bucket: Bucket<'a>,
    what: &str,
    mut visit: impl FnMut(&'a [u8], &'a [u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    bucket.for_each(|k, item| match item {
        Item::Value(v) => visit(k, v),
        Item::Bucket(_) => Err(record(what, k, "a bucket where a value belongs")),
    })
}

/// Reads etcd database `file` into Cairn's replicated state, checking every
/// record. Writes nothing.
pub fn read_etcd(file: &[u8]) -> Result<Imported, Error> {
    let (db_bytes, had_digest) = etcd::split_digest(file)?;
    let db = Db::open(db_bytes)?;
    if !had_digest && db_bytes.len() % db.page_size() != 0 {
        return Err(Error::Size {
            len: db_bytes.len(),
            page_size: db.page_size(),
        });
    }
    let mut out = Imported {
        had_digest,
        ..Imported::default()
    };
    if db.bucket(b"cairn")?.is_some() {
        return Err(Error::NotEtcd(
            "it is a Cairn snapshot (restore it with `cairn snapshot restore`)".into(),
        ));
    }
    let keys = db
        .bucket(etcd::KEY)?
        .ok_or_else(|| Error::NotEtcd("it has no `key` bucket".into()))?;
    let mut data = Vec::new();
    values(keys, "key record", |k, v| {
        let (rev, tombstone) = Revision::from_record_key(k)
            .ok_or_else(|| record("key record", k, "not a revision"))?;
        let kv = KeyValue::decode(v).map_err(|e| record("key record", k, e))?;
        let sane = rev.main >= 1
            && !kv.key.is_empty()
            && (tombstone
                || (kv.mod_revision == rev.main
                    && (1..=rev.main).contains(&kv.create_revision)
                    && kv.version >= 1));
        if !sane {
            return Err(record("key record", k, "revisions do not match its key"));
        }
        out.key_records += 1;
        out.revision = out.revision.max(rev.main);
        push(&mut data, "kv", k, v);
        Ok(())
    })?;
    if let Some(leases) = db.bucket(etcd::LEASE)? {
        values(leases, "lease", |k, v| {
            let lease = Lease::decode(v).map_err(|e| record("lease", k, e))?;
            if lease.id == 0 || k != lease.id.to_be_bytes() {
                return Err(record("lease", k, format!("holds lease {}", lease.id)));
            }
            out.leases += 1;
            push(&mut data, "lease", k, v);
            Ok(())
        })?;
    }
    if let Some(meta) = db.bucket(etcd::META)? {
        read_meta(meta, &mut out, &mut data)?;
    }
    out.revision = out.revision.max(out.compacted);
    read_auth(&db, &mut out, &mut data)?;
    out.data = data;
    Ok(out)
}

/// The compaction records and the consistent index.
fn read_meta(meta: Bucket<'_>, out: &mut Imported, data: &mut Vec<u8>) -> Result<(), Error> {
    values(meta, "meta", |k, v| {
        let target = match k {
            etcd::FINISHED_COMPACT => META_FINISHED_COMPACT,
            etcd::SCHEDULED_COMPACT => META_SCHEDULED_COMPACT,
            etcd::CONSISTENT_INDEX => {
                let index =
                    etcd::be_u64(v).ok_or_else(|| record("meta", k, "not an 8-byte number"))?;
                push(data, "meta", META_APPLIED_INDEX, &index.to_be_bytes());
                return Ok(());
            }
            _ => return Ok(()),
        };
        let rev = etcd::compact_rev(v).ok_or_else(|| record("meta", k, "not a revision"))?;
        if k == etcd::FINISHED_COMPACT {
            out.compacted = rev;
        }
        push(data, "meta", target, &rev.to_be_bytes());
        Ok(())
    })
}

/// Auth: one Cairn record from etcd's three buckets.
fn read_auth(db: &Db<'_>, out: &mut Imported, data: &mut Vec<u8>) -> Result<(), Error> {
    let Some(auth) = db.bucket(etcd::AUTH)? else {
        return Ok(());
    };
    let mut state = AuthState {
        revision: 1,
        ..AuthState::default()
    };
    values(auth, "auth", |k, v| {
        match k {
            etcd::AUTH_ENABLED => state.enabled = v == [1],
            etcd::AUTH_REVISION => {
                state.revision =
                    etcd::be_u64(v).ok_or_else(|| record("auth", k, "not an 8-byte number"))?;
            }
            _ => {}
        }
        Ok(())
    })?;
    if let Some(users) = db.bucket(etcd::AUTH_USERS)? {
        values(users, "auth user", |k, v| {
            let user = User::decode(v).map_err(|e| record("auth user", k, e))?;
            if user.name != k {
                return Err(record("auth user", k, "holds another user"));
            }
            state.users.push(user);
            Ok(())
        })?;
    }
    if let Some(roles) = db.bucket(etcd::AUTH_ROLES)? {
        values(roles, "auth role", |k, v| {
            let role = Role::decode(v).map_err(|e| record("auth role", k, e))?;
            if role.name != k {
                return Err(record("auth role", k, "holds another role"));
            }
            state.roles.push(role);
            Ok(())
        })?;
    }
    out.users = state.users.len();
    out.roles = state.roles.len();
    push(
        data,
        "auth",
        crate::auth::store::RECORD_KEY,
        &state.encode_to_vec(),
    );
    Ok(())
}
