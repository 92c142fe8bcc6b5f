//! Encryption at rest, end to end: no plaintext anywhere under the data
//! directory or in a saved snapshot; a wrong or unsafe key is refused;
//! tampering is detected and raises CORRUPT; data key rotation survives a
//! kill -9 half-way through re-sealing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_client::{Client, Get, Put};
use cairn_proto::etcdserverpb::AlarmType;
use cairn_server::embed;

/// Strings that must never appear on disk in plain text.
const CANARIES: [&[u8]; 3] = [
    b"CAIRN-CANARY-KEY",
    b"CAIRN-CANARY-VALUE",
    // From the Secret below: its name, and its base64 password.
    b"canary-db-credentials",
];

/// A value shaped like a Kubernetes Secret as kube-apiserver stores it.
const SECRET: &str = r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"canary-db-credentials","namespace":"default"},"data":{"password":"Q0FJUk4tQ0FOQVJZLVZBTFVF"},"type":"Opaque"}"#;

/// (file, canary) for every canary found in a file under `dir`.
fn scan_for_canaries(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut hits = Vec::new();
    for file in common::files(dir) {
        let bytes = std::fs::read(&file).unwrap();
        for canary in CANARIES {
            if bytes.windows(canary.len()).any(|w| w == canary) {
                hits.push((file.clone(), String::from_utf8_lossy(canary).into_owned()));
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_under_the_data_directory_or_in_a_saved_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    // A short raft log, so compaction runs too.
    config.snapshot_count = 500;
    config.snapshot_catchup_entries = 100;
    let member = embed::start(config.clone()).await.unwrap();
    let c = common::client(&member).await;
    let lease = c.lease_grant(600, 0).await.unwrap().id;
    for i in 0..3000 {
        let key = format!("/registry/secrets/default/CAIRN-CANARY-KEY-{i:05}");
        let value = if i % 3 == 0 {
            SECRET.to_string()
        } else {
            format!("CAIRN-CANARY-VALUE-{i}")
        };
        let put = Put::new(key, value);
        let put = if i % 10 == 0 { put.lease(lease) } else { put };
        c.put(put).await.unwrap();
    }
    let rev = c.get(Get::key("x")).await.unwrap().header.unwrap().revision;
    c.compact(rev - 1000, true).await.unwrap();
    let snapshot = c.snapshot_to_vec().await.unwrap();
    std::fs::write(config.data_dir.join("snapshot.db"), &snapshot).unwrap();
    drop(c);
    member.stop().await.unwrap();

    // Every file: RocksDB's WAL, SST, MANIFEST, OPTIONS, LOG (and the raft
    // log, which lives in the same RocksDB), plus the saved snapshot.
    let scanned = common::files(&config.data_dir);
    let names: Vec<String> = scanned
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for kind in ["MANIFEST", "OPTIONS", "LOG", ".log", "snapshot.db"] {
        assert!(
            names.iter().any(|n| n.contains(kind)),
            "expected a {kind} file among {names:?}"
        );
    }
    let hits = scan_for_canaries(&config.data_dir);
    assert!(hits.is_empty(), "plaintext found on disk: {hits:?}");

    // Control: the same scan finds the canaries in a plain file, so it
    // cannot pass by looking at nothing.
    let control = dir.path().join("control");
    std::fs::create_dir(&control).unwrap();
    std::fs::write(control.join("plain.txt"), SECRET.as_bytes()).unwrap();
    std::fs::write(
        control.join("plain2.txt"),
        b"xx CAIRN-CANARY-KEY-1 CAIRN-CANARY-VALUE-2",
    )
    .unwrap();
    assert_eq!(scan_for_canaries(&control).len(), 3);

    // And the data is all there after a restart (the key index is rebuilt
    // from sealed records).
    let member = embed::start(config).await.unwrap();
    let c = common::client(&member).await;
    let all = c
        .get(Get::key("/registry/").prefix().count_only())
        .await
        .unwrap();
    assert_eq!(all.count, 3000);
    drop(c);
    member.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_unsafe_or_missing_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path());
    let member = embed::start(config.clone()).await.unwrap();
    common::client(&member)
        .await
        .put(Put::new("k", "v"))
        .await
        .unwrap();
    member.stop().await.unwrap();
    let generated = embed::key_file_path(&config);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&generated).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Another key: refused, with a clear message.
    let other = dir.path().join("other.key");
    std::fs::write(&other, [9u8; 32]).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut wrong = config.clone();
    wrong.encryption_key_file = Some(other.clone());
    let err = embed::start(wrong).await.unwrap_err().to_string();
    assert!(err.contains("master key does not match"), "{err}");

    // A key file others can read: refused.
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut open = config.clone();
    open.encryption_key_file = Some(other);
    let err = embed::start(open).await.unwrap_err().to_string();
    assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");

    // A key file that is not there: refused (never generated when named).
    let mut missing = config.clone();
    missing.encryption_key_file = Some(dir.path().join("nope.key"));
    assert!(embed::start(missing).await.is_err());

    // Nothing was changed: the right key still opens everything.
    let member = embed::start(config).await.unwrap();
    let r = common::client(&member)
        .await
        .get(Get::key("k"))
        .await
        .unwrap();
    assert_eq!(r.kvs[0].value, b"v");
    member.stop().await.unwrap();
}

#[tokio::test]
async fn a_tampered_record_is_detected_and_raises_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let member = embed::start(common::config(dir.path())).await.unwrap();
    let c = common::client(&member).await;
    c.put(Put::new("k", "value")).await.unwrap();
    let rev = c.get(Get::key("k")).await.unwrap().kvs[0].mod_revision;
    // Flip one bit of the record on disk (RocksDB, under the sealing layer).
    let keys = member.member().proposer().machine().keys().unwrap();
    let key = cairn_server::mvcc::Revision::new(rev, 0).record_key(false);
    let inner = keys.engine().inner();
    let mut raw = inner
        .get(cairn_server::storage::Cf::Kv, &key)
        .unwrap()
        .unwrap();
    let n = raw.len();
    raw[n / 2] ^= 0x10;
    let mut batch = cairn_server::storage::WriteBatch::new();
    batch.put(cairn_server::storage::Cf::Kv, key, raw);
    inner.write(batch, true).unwrap();
    // The read fails with etcd's corrupt error, never garbage...
    let err = c.get(Get::key("k")).await.unwrap_err();
    assert!(err.to_string().contains("corrupt cluster"), "{err}");
    // ...and the member raised the CORRUPT alarm.
    let alarms = c.alarms().await.unwrap().alarms;
    assert!(
        alarms.iter().any(|a| a.alarm == AlarmType::Corrupt as i32),
        "{alarms:?}"
    );
    drop(c);
    member.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_survives_kill_9_half_way() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("master.key");
    cairn_server::storage::crypto::MasterKey::generate_file(&key).unwrap();
    let mut args: Vec<std::ffi::OsString> =
        vec!["--encryption-key-file".into(), key.clone().into()];
    args.extend(["--data-dir".into(), data.clone().into()]);
    let (mut child, url) = common::spawn_cairn(args);
    let c = Client::connect(url.clone()).await.unwrap();
    // Enough records that re-sealing them takes seconds at its bounded rate.
    let batch = 25;
    let writers: Vec<_> = (0..batch)
        .map(|w| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..400 {
                    c.put(Put::new(format!("k{w:02}-{i:03}"), format!("v{i}")))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    // Rotate while a client keeps writing.
    let writer_client = c.clone();
    let writing = tokio::spawn(async move {
        let mut n = 0;
        loop {
            if writer_client
                .put(Put::new(format!("during{n:05}"), "x"))
                .await
                .is_err()
            {
                return n;
            }
            n += 1;
        }
    });
    let mut admin = cairn_proto::cairnpb::admin_client::AdminClient::connect(url)
        .await
        .unwrap();
    let rotated = admin
        .rotate_data_key(cairn_proto::cairnpb::RotateDataKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.key_id, 2);
    // Half-way through re-sealing (~2,000 records a second of 10,000+): kill -9.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let during = writing.await.unwrap();
    assert!(during > 0, "writes went on during the rotation");

    // Restart (in-process, to watch the keys): every key reads back, and
    // the re-sealing finishes and drops the old key.
    let config = embed::Config {
        data_dir: data,
        encryption_key_file: Some(key),
        listen_client_urls: vec!["http://127.0.0.1:0".into()],
        listen_peer_urls: vec!["http://127.0.0.1:0".into()],
        ..embed::Config::default()
    };
    let member = embed::start(config).await.unwrap();
    let sealed_keys = || {
        member
            .member()
            .proposer()
            .machine()
            .keys()
            .unwrap()
            .key_ids()
    };
    assert_eq!(
        sealed_keys(),
        vec![1, 2],
        "killed before the re-sealing finished (make the data larger)"
    );
    let c = common::client(&member).await;
    let all = c.get(Get::key("k").prefix().count_only()).await.unwrap();
    assert_eq!(all.count, batch * 400);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sealed_keys() != vec![2] {
        assert!(
            Instant::now() < deadline,
            "old key never dropped: {:?}",
            sealed_keys()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = c.get(Get::key("k").prefix()).await.unwrap();
    assert_eq!(all.kvs.len() as i64, batch * 400);
    assert!(all.kvs.iter().all(|kv| kv.value.starts_with(b"v")));
    drop(c);
    member.stop().await.unwrap();
}
