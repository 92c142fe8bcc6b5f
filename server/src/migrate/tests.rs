//! The import's checks on small etcd-shaped files built with cairn-bbolt's
//! writer: what is read, and every refusal (before anything is written).

use std::io::Cursor;

use cairn_bbolt::{Entry, Writer};
use cairn_proto::authpb::{Role, User};
use cairn_proto::cairnpb::{AuthState, Lease, SnapshotRecord};
use cairn_proto::mvccpb::KeyValue;
use prost::Message;

use super::*;
use crate::mvcc::Revision;

type Buckets = Vec<(&'static [u8], Vec<(Vec<u8>, Vec<u8>)>)>;

/// A bbolt file of `buckets` (sorted here), with etcd's digest if `digest`.
fn file(mut buckets: Buckets, digest: bool) -> Vec<u8> {
    buckets.sort_by_key(|b| b.0);
    let mut w = Writer::new(Cursor::new(Vec::new())).unwrap();
    let mut roots = Vec::new();
    for (name, mut entries) in buckets {
        entries.sort();
        let mut b = w.bucket();
        for (k, v) in &entries {
            b.put_value(k, v).unwrap();
        }
        roots.push((name, b.finish().unwrap()));
    }
    let mut root = w.bucket();
    for (name, r) in roots {
        root.put(name, Entry::Bucket(r)).unwrap();
    }
    let root = root.finish().unwrap();
    let mut bytes = w.finish(root).unwrap().into_inner();
    if digest {
        let d = ring::digest::digest(&ring::digest::SHA256, &bytes);
        bytes.extend_from_slice(d.as_ref());
    }
    bytes
}

fn kv(key: &str, create: i64, rev: i64, version: i64, lease: i64) -> Vec<u8> {
    KeyValue {
        key: key.into(),
        create_revision: create,
        mod_revision: rev,
        version,
        value: format!("{key}@{rev}").into(),
        lease,
    }
    .encode_to_vec()
}

/// a@2, a@3, b@4 (lease 7), delete a@5; compacted at 3; auth with one user.
fn history() -> Buckets {
    let rk = |main, tomb| Revision::new(main, 0).record_key(tomb);
    vec![
        (
            etcd::KEY,
            vec![
                (rk(3, false), kv("a", 2, 3, 2, 0)),
                (rk(4, false), kv("b", 4, 4, 1, 7)),
                (
                    rk(5, true),
                    KeyValue {
                        key: b"a".to_vec(),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                ),
            ],
        ),
        (
            etcd::LEASE,
            vec![(
                7i64.to_be_bytes().to_vec(),
                Lease {
                    id: 7,
                    ttl: 600,
                    remaining_ttl: 0,
                }
                .encode_to_vec(),
            )],
        ),
        (
            etcd::META,
            vec![
                (
                    etcd::CONSISTENT_INDEX.to_vec(),
                    42u64.to_be_bytes().to_vec(),
                ),
                (
                    etcd::FINISHED_COMPACT.to_vec(),
                    etcd::compact_rev_bytes(3).to_vec(),
                ),
                (
                    etcd::SCHEDULED_COMPACT.to_vec(),
                    etcd::compact_rev_bytes(3).to_vec(),
                ),
                (b"confState".to_vec(), b"{}".to_vec()),
            ],
        ),
        (
            etcd::AUTH,
            vec![
                (etcd::AUTH_ENABLED.to_vec(), vec![1]),
                (etcd::AUTH_REVISION.to_vec(), 9u64.to_be_bytes().to_vec()),
            ],
        ),
        (
            etcd::AUTH_USERS,
            vec![(
                b"root".to_vec(),
                User {
                    name: b"root".to_vec(),
                    password: b"$2a$10$hash".to_vec(),
                    roles: vec!["root".into()],
                    options: None,
                }
                .encode_to_vec(),
            )],
        ),
        (
            etcd::AUTH_ROLES,
            vec![(
                b"root".to_vec(),
                Role {
                    name: b"root".to_vec(),
                    key_permission: vec![],
                }
                .encode_to_vec(),
            )],
        ),
        (etcd::MEMBERS, vec![(b"1".to_vec(), b"{}".to_vec())]),
    ]
}

fn records(data: &[u8]) -> Vec<SnapshotRecord> {
    let mut buf = data;
    let mut out = Vec::new();
    while !buf.is_empty() {
        out.push(SnapshotRecord::decode_length_delimited(&mut buf).unwrap());
    }
    out
}

#[test]
fn reads_history_leases_compaction_and_auth() {
    for digest in [true, false] {
        let read = read_etcd(&file(history(), digest)).unwrap();
        assert_eq!(read.had_digest, digest);
        assert_eq!(
            (read.key_records, read.revision, read.compacted, read.leases),
            (3, 5, 3, 1)
        );
        assert_eq!((read.users, read.roles), (1, 1));
        let recs = records(&read.data);
        let get = |cf: &str, key: &[u8]| {
            recs.iter()
                .find(|r| r.cf == cf && r.key == key)
                .map(|r| r.value.clone())
        };
        // Records kept byte for byte; meta in Cairn's keys.
        assert_eq!(
            get("kv", &Revision::new(4, 0).record_key(false)),
            Some(kv("b", 4, 4, 1, 7))
        );
        assert!(get("kv", &Revision::new(5, 0).record_key(true)).is_some());
        assert_eq!(
            get("meta", crate::mvcc::META_FINISHED_COMPACT),
            Some(3i64.to_be_bytes().to_vec())
        );
        assert_eq!(
            get("meta", crate::mvcc::META_APPLIED_INDEX),
            Some(42u64.to_be_bytes().to_vec())
        );
        let auth = AuthState::decode(
            get("auth", crate::auth::store::RECORD_KEY)
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        assert!(auth.enabled);
        assert_eq!(auth.revision, 9);
        assert_eq!(auth.users[0].roles, vec!["root".to_string()]);
        // Membership is not carried.
        assert!(recs.iter().all(|r| r.cf != "members"));
    }
}

#[test]
fn refuses_damaged_truncated_and_foreign_files() {
    let good = file(history(), true);
    // The digest catches any change, the bbolt checks a cut.
    let mut flipped = good.clone();
    flipped[5000] ^= 1;
    assert!(matches!(read_etcd(&flipped), Err(Error::Digest)));
    // Cut anywhere (in the digest, in a page, at a page boundary). Only
    // the cut of the whole digest leaves a complete database, read as a
    // member's db is (reported as having no digest).
    let whole = good.len() - etcd::DIGEST_LEN;
    for cut in (0..good.len()).step_by(7).chain([whole - 4096, whole + 1]) {
        if cut != whole {
            assert!(read_etcd(&good[..cut]).is_err(), "cut {cut}");
        }
    }
    assert!(!read_etcd(&good[..whole]).unwrap().had_digest);
    assert!(matches!(
        read_etcd(b"CAIRNSNAP1 a Cairn snapshot is not an etcd one"),
        Err(Error::Bbolt(cairn_bbolt::Error::NotBbolt(_)))
    ));
    // Cairn's own snapshot (a bbolt file with a `key` bucket, sealed values).
    let mut state = Vec::new();
    SnapshotRecord {
        cf: "kv".into(),
        key: Revision::new(2, 0).record_key(false),
        value: kv("a", 2, 2, 1, 0),
    }
    .encode_length_delimited(&mut state)
    .unwrap();
    let master = crate::storage::crypto::MasterKey::from_bytes([3; 32]);
    let cairn = crate::snapshot::encode_file(2, &state, Some(&master)).unwrap();
    let err = read_etcd(&cairn).unwrap_err();
    assert!(err.to_string().contains("cairn snapshot restore"), "{err}");
    // bbolt, but not etcd's.
    let other = file(vec![(b"stuff", vec![(b"k".to_vec(), b"v".to_vec())])], true);
    assert!(matches!(read_etcd(&other), Err(Error::NotEtcd(_))));
    // Records that do not hold what etcd's schema says.
    let bad_records: [(usize, Vec<u8>, Vec<u8>); 4] = [
        (0, b"not-a-revision".to_vec(), kv("a", 1, 1, 1, 0)),
        (
            0,
            Revision::new(9, 0).record_key(false),
            b"\xff\xff".to_vec(),
        ),
        // mod_revision differs from its record's revision.
        (
            0,
            Revision::new(9, 0).record_key(false),
            kv("a", 1, 8, 1, 0),
        ),
        (1, 8i64.to_be_bytes().to_vec(), b"\x08\x07".to_vec()),
    ];
    for (bucket, k, v) in bad_records {
        let mut buckets = history();
        buckets[bucket].1.push((k, v));
        let err = read_etcd(&file(buckets, true)).unwrap_err();
        assert!(matches!(err, Error::Record { .. }), "{err}");
    }
}

#[test]
fn export_needs_consent_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.db");
    let err = to_etcd(dir.path(), None, &out, false).unwrap_err();
    assert!(matches!(err, Error::PlaintextRefused));
    assert!(err.to_string().contains("--plaintext"));
    std::fs::write(&out, b"x").unwrap();
    assert!(matches!(
        to_etcd(dir.path(), None, &out, true),
        Err(Error::OutputExists(_))
    ));
    assert_eq!(std::fs::read(&out).unwrap(), b"x");
}
