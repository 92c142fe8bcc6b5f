//! The offline tools through the `cairn` binary: `snapshot status` of a
//! file saved from a member, and `defrag` of a member's data directory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::path::Path;
use std::process::{Command, Output};

use cairn_client::{Client, Delete, Get, Put};

mod common;

/// Runs `cairn` with `args` to completion.
fn cairn<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap()
}

/// Asserts that `out` failed, printed nothing on stdout, and said `want`.
fn assert_refused(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded; stderr: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    assert!(stderr.contains(want), "expected {want:?} in: {stderr}");
}

/// Starts the binary on `data_dir` (its key file: `<data_dir>.key`).
fn spawn(data_dir: &Path) -> (std::process::Child, String) {
    let mut args: Vec<std::ffi::OsString> = vec!["--data-dir".into()];
    args.push(data_dir.into());
    common::spawn_cairn(args)
}

/// Twenty puts and one delete: revision 22, 21 key records.
async fn write(client: &Client) {
    for i in 0..20 {
        client
            .put(Put::new(format!("k{i:02}"), format!("v{i}")))
            .await
            .unwrap();
    }
    client.delete(Delete::key("k00")).await.unwrap();
}

/// A JSON number field of etcdutl's one-line status object.
fn field(json: &str, name: &str) -> u64 {
    let at = json.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
    let digits: String = json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[tokio::test]
async fn snapshot_status_reports_the_saved_state_and_refuses_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("data.key");
    let (child, url) = spawn(&data);
    let client = Client::connect(url).await.unwrap();
    write(&client).await;
    let snapshot = client.snapshot_to_vec().await.unwrap();
    drop(client);
    common::sigterm_and_wait(child).await;
    let file = dir.path().join("snap.db");
    std::fs::write(&file, &snapshot).unwrap();
    let status = |file: &Path, key: &Path, format: &str| {
        cairn([
            "snapshot".as_ref(),
            "status".as_ref(),
            file.as_os_str(),
            "--encryption-key-file".as_ref(),
            key.as_os_str(),
            "-w".as_ref(),
            format.as_ref(),
        ])
    };

    let out = status(&file, &key, "json");
    assert!(out.status.success(), "{out:?}");
    let json = String::from_utf8(out.stdout).unwrap();
    assert_eq!(field(&json, "revision"), 22, "{json}");
    // 21 key records, and the index, file key and state of bucket `cairn`.
    assert_eq!(field(&json, "totalKey"), 24, "{json}");
    assert_eq!(field(&json, "totalSize"), snapshot.len() as u64, "{json}");
    let hash = field(&json, "hash");
    assert!(
        json.starts_with("{\"hash\":") && json.ends_with("}\n"),
        "{json}"
    );

    // etcd's own tools open the file (a bbolt database) and agree on the
    // revision and key count (their hash is of the sealed bytes).
    if let Some(etcdutl) = etcdutl() {
        let out = std::process::Command::new(etcdutl)
            .args(["snapshot", "status", "-w", "json"])
            .arg(&file)
            .output()
            .unwrap();
        let theirs = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(field(&theirs, "revision"), 22, "{theirs}");
        assert_eq!(field(&theirs, "totalKey"), 24, "{theirs}");
        assert_eq!(field(&theirs, "totalSize"), snapshot.len() as u64 - 32);
    } else {
        eprintln!("etcdutl 3.5.1 not installed: skipping its snapshot status");
    }

    // The simple line and the table carry the same figures.
    let out = status(&file, &key, "simple");
    let simple = String::from_utf8(out.stdout).unwrap();
    let size = cairn_server::offline::humanize_bytes(snapshot.len() as u64);
    assert_eq!(simple, format!("{hash:x}, 22, 24, {size}\n"));
    let out = status(&file, &key, "table");
    let table = String::from_utf8(out.stdout).unwrap();
    // (The hash column is as wide as the hash, which has fewer than 8 hex
    // digits one time in 16: etcdutl prints it with %x, unpadded.)
    let cells =
        |line: &str| -> Vec<String> { line.split('|').map(|c| c.trim().to_string()).collect() };
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        cells(lines[1]),
        ["", "HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE", ""],
        "{table}"
    );
    assert_eq!(cells(lines[3])[1], format!("{hash:x}"), "{table}");
    assert_eq!(table.lines().count(), 5, "{table}");

    // Damaged, truncated, a wrong key, no key, an unknown format.
    let mut damaged = snapshot.clone();
    let n = damaged.len();
    damaged[n / 2] ^= 0x40;
    let damaged_file = dir.path().join("damaged.db");
    std::fs::write(&damaged_file, &damaged).unwrap();
    assert_refused(&status(&damaged_file, &key, "simple"), "checksum mismatch");
    let truncated_file = dir.path().join("truncated.db");
    std::fs::write(&truncated_file, &snapshot[..n - 200]).unwrap();
    assert_refused(
        &status(&truncated_file, &key, "simple"),
        "checksum mismatch",
    );
    let other = dir.path().join("other.key");
    std::fs::write(&other, [9u8; 32]).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert_refused(
        &status(&file, &other, "simple"),
        "sealed with another master key",
    );
    assert_refused(
        &cairn(["snapshot".as_ref(), "status".as_ref(), file.as_os_str()]),
        "the snapshot is sealed: give the saving member's --encryption-key-file",
    );
    assert_refused(
        &status(&file, &key, "protobuf"),
        "protobuf not supported as output format",
    );
    assert_refused(
        &status(&dir.path().join("missing.db"), &key, "simple"),
        "missing.db",
    );
}

#[tokio::test]
async fn defrag_refuses_a_running_member_and_a_wrong_key_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, url) = spawn(&data);
    let client = Client::connect(url).await.unwrap();
    write(&client).await;
    // Compaction leaves garbage for the defragmentation to drop.
    client.compact(21, true).await.unwrap();

    let defrag = |key: Option<&Path>| {
        let mut args = vec!["defrag".as_ref(), "--data-dir".as_ref(), data.as_os_str()];
        if let Some(key) = key {
            args.extend(["--encryption-key-file".as_ref(), key.as_os_str()]);
        }
        cairn(args)
    };
    assert_refused(
        &defrag(None),
        "is in use by a running member; stop it first",
    );
    drop(client);
    common::sigterm_and_wait(child).await;

    let other = dir.path().join("other.key");
    std::fs::write(&other, [9u8; 32]).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert_refused(
        &defrag(Some(&other)),
        "the encryption master key does not match this data directory",
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_refused(
        &cairn([
            "defrag".as_ref(),
            "--data-dir".as_ref(),
            empty.as_os_str(),
            "--encryption-key-file".as_ref(),
            other.as_os_str(),
        ]),
        "is not a Cairn data directory",
    );
    assert!(!empty.join("db").exists());

    let out = defrag(Some(&dir.path().join("data.key")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("defragmenting"), "{stderr}");
    assert!(
        stderr.contains("finished defragmenting directory"),
        "{stderr}"
    );
    // etcdutl's fields, numbers as numbers.
    let finished: serde_json::Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["msg"] == "finished defragmenting directory")
        .expect("the finished line is JSON");
    assert!(finished["current-db-size-bytes"].is_u64(), "{finished}");
    assert!(
        finished["current-db-size-bytes-diff"].is_i64(),
        "{finished}"
    );

    // The member starts on the defragmented directory and serves its data.
    let (child, url) = spawn(&data);
    let client = Client::connect(url).await.unwrap();
    let all = client.get(Get::key("k").prefix()).await.unwrap();
    assert_eq!(all.count, 19);
    assert_eq!(all.header.unwrap().revision, 22);
    assert_eq!(
        client.get(Get::key("k07")).await.unwrap().kvs[0].value,
        b"v7"
    );
    drop(client);
    common::sigterm_and_wait(child).await;
}

/// etcd 3.5.1's etcdutl (`CAIRN_ETCDUTL`, else where tests/compat/lib.sh
/// puts it), if installed.
fn etcdutl() -> Option<std::path::PathBuf> {
    let path = match std::env::var_os("CAIRN_ETCDUTL") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/cairn-tools/etcd-3.5.1/etcdutl"),
    };
    path.exists().then_some(path)
}
