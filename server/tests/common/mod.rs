//! Test support: a member on a temporary directory and a free port.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cairn_client::Client;
use cairn_server::embed::{self, Config, Handle};

/// A config for a member in `dir` (data in `dir/member`, its generated key
/// file `dir/member.key` beside it), listening on free loopback ports.
pub fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.join("member"),
        listen_client_urls: vec!["http://127.0.0.1:0".into()],
        listen_peer_urls: vec!["http://127.0.0.1:0".into()],
        ..Config::default()
    }
}

/// Starts a member on `dir`.
pub async fn start(dir: &Path) -> Handle {
    embed::start(config(dir)).await.expect("member starts")
}

/// A client connected to `member`.
pub async fn client(member: &Handle) -> Client {
    Client::connect(member.client_urls()[0].clone())
        .await
        .expect("client connects")
}
pub mod auth;
pub mod cluster;

/// Polls `f` until it returns true, failing after `secs`.
pub async fn eventually(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Changes the record `key` got at revision `rev` on `member`'s disk behind
/// its store's back (a value of "garbage"), so that its data, and its hash,
/// differ from its peers'.
pub fn damage_record(member: &cairn_server::member::Apis, key: &[u8], rev: i64) {
    let kv = cairn_proto::mvccpb::KeyValue {
        key: key.to_vec(),
        value: b"garbage".to_vec(),
        create_revision: rev,
        mod_revision: rev,
        version: 1,
        lease: 0,
    };
    let mut batch = cairn_server::storage::WriteBatch::new();
    batch.put(
        cairn_server::storage::Cf::Kv,
        cairn_server::mvcc::Revision::new(rev, 0).record_key(false),
        prost::Message::encode_to_vec(&kv),
    );
    member.store().engine().write(batch, true).unwrap();
}

/// The `cairn` binary as the tests run it: its log on a piped stderr, in
/// plain JSON lines (`NO_COLOR`). The caller adds the flags, [`FREE_PORTS`]
/// among them unless it picks its own listeners.
pub fn cairn() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped());
    command
}

/// Flags that let a `cairn` child pick free loopback ports.
pub const FREE_PORTS: [&str; 4] = [
    "--listen-client-urls",
    "http://127.0.0.1:0",
    "--listen-peer-urls",
    "http://127.0.0.1:0",
];

/// Starts the `cairn` binary with `args` plus free loopback ports, and
/// returns it with its client URL, read from its log (the log is drained in
/// the background afterwards).
pub fn spawn_cairn<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> (std::process::Child, String) {
    let (child, url, _) = serve(cairn().args(FREE_PORTS).args(args));
    (child, url)
}

/// Starts `command` (see [`cairn`]) and reads its log until it serves:
/// returns it with its client URL and the log up to that line (the rest of
/// the log is drained in the background).
pub fn serve(command: &mut std::process::Command) -> (std::process::Child, String, Vec<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let url = loop {
        let line = lines.next().expect("cairn exited before serving").unwrap();
        log.push(line.clone());
        if let Some(url) = ready_url(&line) {
            break url;
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, url, log)
}

/// The client URL in the binary's log line `line`, if it is etcd's "ready
/// to serve client requests" (a JSON line; Cairn adds the `address`).
pub fn ready_url(line: &str) -> Option<String> {
    let line: serde_json::Value = serde_json::from_str(line).ok()?;
    if line["msg"] != "ready to serve client requests" {
        return None;
    }
    Some(format!("http://{}", line["address"].as_str()?))
}

/// Sends SIGTERM to a `cairn` child and waits (with a deadline) for it to
/// exit successfully.
pub async fn sigterm_and_wait(mut child: std::process::Child) {
    use std::time::{Duration, Instant};
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "cairn exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "cairn did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file under `dir`, recursively (the plaintext scans of encryption
/// and auth).
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}
