//! `cairn migrate` end to end on an etcd-like file of 100,000+ key records built with
//! cairn-bbolt's writer (etcd's schema: revision keys, `mvccpb.KeyValue`
//! values, tombstones, a compaction done the way etcd does it, a lease with
//! keys): imported into a new data directory, served (reads at revisions
//! after the compaction against a model, the lease's keys, the next write's
//! revision), exported back (the same `key` and `lease` records, byte for
//! byte; `etcdutl snapshot status` when etcd 3.5.1's tools are installed).
//! The real-etcd round trip is `tests/compat/migrate.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::collections::BTreeMap;
use std::io::Cursor;

use cairn_bbolt::{Db, Entry, Item, Writer};
use cairn_client::{Get, Put};
use cairn_proto::cairnpb::Lease;
use cairn_proto::mvccpb::KeyValue;
use cairn_server::migrate;
use cairn_server::mvcc::Revision;
use prost::Message;

/// Writes in the history (`MIGRATE_TEST_WRITES` to time a bigger file).
fn records() -> i64 {
    std::env::var("MIGRATE_TEST_WRITES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(112_000)
}
const KEYS: i64 = 30_000;
const COMPACTED: i64 = 40_000;
const LEASE: i64 = 0x77;

/// One record of the history: (revision, tombstone, value).
type History = Vec<(i64, bool, KeyValue)>;

fn key_name(i: i64) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

/// Revisions 2..=records()+1, one write each: every tenth a deletion of a
/// live key, the rest puts; keys below 50 attached to LEASE.
fn history() -> History {
    let mut live: BTreeMap<i64, (i64, i64)> = BTreeMap::new(); // key -> (create, version)
    let mut out = Vec::new();
    for i in 0..records() {
        let rev = i + 2;
        let k = (i * 7919) % KEYS;
        if i % 10 == 9 && live.remove(&k).is_some() {
            let kv = KeyValue {
                key: key_name(k),
                ..KeyValue::default()
            };
            out.push((rev, true, kv));
            continue;
        }
        let (create, version) = live.get(&k).map_or((rev, 1), |(c, v)| (*c, v + 1));
        live.insert(k, (create, version));
        out.push((
            rev,
            false,
            KeyValue {
                key: key_name(k),
                create_revision: create,
                mod_revision: rev,
                version,
                value: format!("v{rev}")
                    .repeat(1 + (rev % 7) as usize)
                    .into_bytes(),
                lease: if k < 50 { LEASE } else { 0 },
            },
        ));
    }
    out
}

/// etcd's compaction at `at`: of each key's records at or below it only
/// the latest stays, and not if it is a deletion.
fn compact(history: History, at: i64) -> History {
    let mut latest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for (rev, _, kv) in &history {
        if *rev <= at {
            latest.insert(kv.key.clone(), *rev);
        }
    }
    history
        .into_iter()
        .filter(|(rev, tomb, kv)| *rev > at || (latest.get(&kv.key) == Some(rev) && !tomb))
        .collect()
}

/// The model: each live key's record at revision `at`.
fn model_at(history: &History, at: i64) -> BTreeMap<Vec<u8>, KeyValue> {
    let mut state = BTreeMap::new();
    for (rev, tomb, kv) in history {
        if *rev > at {
            break;
        }
        if *tomb {
            state.remove(&kv.key);
        } else {
            state.insert(kv.key.clone(), kv.clone());
        }
    }
    state
}

/// The etcd snapshot file of `history` (with `snapshot save`'s digest).
fn etcd_file(history: &History) -> Vec<u8> {
    let mut w = Writer::new(Cursor::new(Vec::new())).unwrap();
    let mut keys = w.bucket();
    for (rev, tomb, kv) in history {
        let k = Revision::new(*rev, 0).record_key(*tomb);
        keys.put_value(&k, &kv.encode_to_vec()).unwrap();
    }
    let keys = keys.finish().unwrap();
    let mut lease = w.bucket();
    let record = Lease {
        id: LEASE,
        ttl: 3600,
        remaining_ttl: 0,
    };
    lease
        .put_value(&LEASE.to_be_bytes(), &record.encode_to_vec())
        .unwrap();
    let lease = lease.finish().unwrap();
    let mut meta = w.bucket();
    let compacted = Revision::new(COMPACTED, 0).to_bytes();
    meta.put_value(b"consistent_index", &(records() as u64 + 10).to_be_bytes())
        .unwrap();
    meta.put_value(b"finishedCompactRev", &compacted).unwrap();
    meta.put_value(b"scheduledCompactRev", &compacted).unwrap();
    meta.put_value(b"term", &2u64.to_be_bytes()).unwrap();
    let meta = meta.finish().unwrap();
    let mut root = w.bucket();
    for (name, b) in [(&b"key"[..], keys), (b"lease", lease), (b"meta", meta)] {
        root.put(name, Entry::Bucket(b)).unwrap();
    }
    let root = root.finish().unwrap();
    let mut file = w.finish(root).unwrap().into_inner();
    let digest = ring::digest::digest(&ring::digest::SHA256, &file);
    file.extend_from_slice(digest.as_ref());
    file
}

/// The records of bucket `name` of an etcd file.
fn bucket(file: &[u8], name: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = Db::open(&file[..file.len() - 32]).unwrap();
    let mut out = Vec::new();
    db.bucket(name)
        .unwrap()
        .unwrap()
        .for_each::<cairn_bbolt::Error>(|k, item| {
            if let Item::Value(v) = item {
                out.push((k.to_vec(), v.to_vec()));
            }
            Ok(())
        })
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_record_etcd_file_round_trips_with_every_revision() {
    let full = history();
    let kept = compact(full.clone(), COMPACTED);
    assert!(kept.len() >= 100_000, "{} records", kept.len());
    let file = etcd_file(&kept);
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path());

    let started = std::time::Instant::now();
    let report = migrate::from_etcd(&file, &config).unwrap();
    eprintln!(
        "imported {} records ({} bytes) in {:?}",
        kept.len(),
        file.len(),
        started.elapsed()
    );
    assert_eq!(report.revision, records() + 1);
    assert_eq!(report.imported.key_records, kept.len() as u64);
    assert_eq!(report.imported.compacted, COMPACTED);
    // A second import into the same directory is refused.
    assert!(migrate::from_etcd(&file, &config).is_err());

    let member = cairn_server::embed::start(config.clone()).await.unwrap();
    let c = common::client(&member).await;
    for at in [COMPACTED, COMPACTED + 1, 77_777, records() + 1] {
        let want = model_at(&full, at);
        let got = c.get(Get::key("k").prefix().revision(at)).await.unwrap();
        assert_eq!(got.header.unwrap().revision, records() + 1);
        assert_eq!(got.count, want.len() as i64, "count at {at}");
        let got: BTreeMap<Vec<u8>, KeyValue> =
            got.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        assert!(got == want, "the keys at revision {at} differ");
    }
    let err = c
        .get(Get::key("k").prefix().revision(COMPACTED - 1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("compacted"), "{err}");
    let ttl = c.lease_time_to_live(LEASE, true).await.unwrap();
    assert_eq!(ttl.granted_ttl, 3600);
    let leased: Vec<Vec<u8>> = model_at(&full, records() + 1)
        .into_values()
        .filter(|kv| kv.lease == LEASE)
        .map(|kv| kv.key)
        .collect();
    assert_eq!(ttl.keys, leased);
    member.stop().await.unwrap();

    // Back to etcd: the same records.
    let out = dir.path().join("back.db");
    let started = std::time::Instant::now();
    let exported = migrate::to_etcd(&config.data_dir, None, &out, true).unwrap();
    eprintln!("exported in {:?}", started.elapsed());
    assert_eq!(exported.revision, records() + 1);
    assert_eq!(exported.compacted, COMPACTED);
    let back = std::fs::read(&out).unwrap();
    assert_eq!(back.len() % 512, 32);
    assert_eq!(bucket(&back, b"key"), bucket(&file, b"key"));
    assert_eq!(bucket(&back, b"lease"), bucket(&file, b"lease"));
    let reread = migrate::read_etcd(&back).unwrap();
    assert_eq!(reread.revision, records() + 1);
    if let Some(etcdutl) = etcdutl() {
        let status = std::process::Command::new(etcdutl)
            .args(["snapshot", "status", "-w", "json"])
            .arg(&out)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&status.stdout);
        assert!(status.status.success(), "{text}");
        assert!(
            text.contains(&format!("\"revision\":{},", records() + 1)),
            "{text}"
        );
    } else {
        eprintln!("etcdutl 3.5.1 not installed: skipping its snapshot status");
    }

    // The next write gets the revision etcd would have given it.
    let member = cairn_server::embed::start(config).await.unwrap();
    let c = common::client(&member).await;
    let put = c.put(Put::new("next", "1")).await.unwrap();
    assert_eq!(put.header.unwrap().revision, records() + 2);
    member.stop().await.unwrap();
}

fn etcdutl() -> Option<std::path::PathBuf> {
    let path = match std::env::var_os("CAIRN_ETCDUTL") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/cairn-tools/etcd-3.5.1/etcdutl"),
    };
    path.exists().then_some(path)
}
