//! etcd 3.5's backend schema, as far as a migration needs it (facts from
//! etcd's `server/mvcc/buckets.go`, `lease/lessor.go`, `auth/store.go`,
//! checked against files written by etcd 3.5.1):
//! - bucket `key`: record key = revision (8-byte big-endian main, `_`,
//!   8-byte big-endian sub, then `t` for a deletion), value = an encoded
//!   `mvccpb.KeyValue` (a deletion's holds only the key). Cairn's `kv`
//!   column family has the same keys and values ([`Revision`]).
//! - bucket `lease`: key = lease id (8-byte big-endian), value =
//!   `leasepb.Lease` {ID = 1, TTL = 2, RemainingTTL = 3}: Cairn's lease
//!   record.
//! - bucket `meta`: `consistent_index` and `term` (8-byte big-endian),
//!   `finishedCompactRev` and `scheduledCompactRev` (revision keys, sub 0),
//!   `confState` (JSON; not needed).
//! - buckets `auth` (`authEnabled`: one byte, 1 = on; `authRevision`:
//!   8-byte big-endian), `authUsers` (name -> `authpb.User`) and
//!   `authRoles` (name -> `authpb.Role`).
//! - `members`, `members_removed`, `cluster` (`clusterVersion`), `alarm`:
//!   the old cluster's; a restore replaces the membership.
//!
//! `etcdctl snapshot save` appends the SHA-256 of the database to the
//! file (so its size is 32 more than a multiple of 512); a member's own
//! `member/snap/db` has none.

use crate::mvcc::Revision;

/// Bucket names.
pub const KEY: &[u8] = b"key";
pub const LEASE: &[u8] = b"lease";
pub const META: &[u8] = b"meta";
pub const AUTH: &[u8] = b"auth";
pub const AUTH_USERS: &[u8] = b"authUsers";
pub const AUTH_ROLES: &[u8] = b"authRoles";
pub const MEMBERS: &[u8] = b"members";
pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
pub const CLUSTER: &[u8] = b"cluster";
pub const ALARM: &[u8] = b"alarm";

/// Keys of bucket `meta`.
pub const CONSISTENT_INDEX: &[u8] = b"consistent_index";
pub const TERM: &[u8] = b"term";
pub const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
pub const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";

/// Keys of bucket `auth`.
pub const AUTH_ENABLED: &[u8] = b"authEnabled";
pub const AUTH_REVISION: &[u8] = b"authRevision";

/// Key of bucket `cluster`, and the version a Cairn export declares (the
/// etcd API Cairn serves).
pub const CLUSTER_VERSION: &[u8] = b"clusterVersion";
pub const CLUSTER_VERSION_VALUE: &[u8] = b"3.5.0";

/// The length of the digest `etcdctl snapshot save` appends.
pub const DIGEST_LEN: usize = 32;

/// A snapshot file's database part, and whether a digest was found and
/// checked (etcd's rule: a size of 32 more than a multiple of 512 means a
/// digest follows the database).
pub fn split_digest(file: &[u8]) -> Result<(&[u8], bool), super::Error> {
    if file.len() % 512 != DIGEST_LEN {
        return Ok((file, false));
    }
    let (db, digest) = file.split_at(file.len() - DIGEST_LEN);
    if ring::digest::digest(&ring::digest::SHA256, db).as_ref() != digest {
        return Err(super::Error::Digest);
    }
    Ok((db, true))
}

/// A compaction revision as etcd stores it in `meta` (a revision key, sub 0).
pub fn compact_rev_bytes(main: i64) -> [u8; 17] {
    Revision::new(main, 0).to_bytes()
}

/// The main revision of a `meta` compaction record.
pub fn compact_rev(value: &[u8]) -> Option<i64> {
    match Revision::from_record_key(value) {
        Some((rev, false)) => Some(rev.main),
        _ => None,
    }
}

/// An 8-byte big-endian number.
pub fn be_u64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_rule() {
        let db = vec![5u8; 4096];
        assert_eq!(split_digest(&db).unwrap(), (&db[..], false));
        let mut file = db.clone();
        file.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &db).as_ref());
        assert_eq!(split_digest(&file).unwrap(), (&db[..], true));
        file[100] ^= 1;
        assert!(matches!(
            split_digest(&file),
            Err(super::super::Error::Digest)
        ));
    }

    #[test]
    fn compaction_records() {
        // etcd 3.5.1's meta bucket after `compaction 3`.
        let stored = b"\x00\x00\x00\x00\x00\x00\x00\x03_\x00\x00\x00\x00\x00\x00\x00\x00";
        assert_eq!(compact_rev(stored), Some(3));
        assert_eq!(&compact_rev_bytes(3), stored);
        assert_eq!(compact_rev(b"short"), None);
        assert_eq!(be_u64(&23u64.to_be_bytes()), Some(23));
        assert_eq!(be_u64(b"123"), None);
    }
}
