//! Test support: a member on a temporary directory and a free port.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
#![allow(dead_code)]

use std::path::Path;

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
pub mod cluster;

/// Starts the `cairn` binary with `args` plus free loopback ports, and
/// returns it with its client URL, read from its log (the log is drained in
/// the background afterwards).
pub fn spawn_cairn<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "--listen-client-urls",
            "http://127.0.0.1:0",
            "--listen-peer-urls",
            "http://127.0.0.1:0",
        ])
        .args(args)
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("cairn exited before serving").unwrap();
        if let Some(url) = ready_url(&line) {
            break url;
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, url)
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
