//! The `cairn` binary: flags, readiness, graceful SIGTERM, restart on the same data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cairn_client::{Client, Get, Put};

mod common;

/// Starts the binary on `data_dir` (see [`common::spawn_cairn`]).
fn spawn(data_dir: &std::path::Path) -> (Child, String) {
    let mut args: Vec<std::ffi::OsString> =
        ["--name", "bin-test", "--log-level", "info", "--data-dir"]
            .iter()
            .map(Into::into)
            .collect();
    args.push(data_dir.into());
    common::spawn_cairn(args)
}

async fn sigterm_and_wait(mut child: Child) {
    let status = Command::new("kill")
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

#[tokio::test]
async fn sigterm_stops_gracefully_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = spawn(&dir.path().join("data"));
    let c = Client::connect(url).await.unwrap();
    for i in 0..20 {
        c.put(Put::new(format!("k{i}"), format!("v{i}")))
            .await
            .unwrap();
    }
    drop(c);
    sigterm_and_wait(child).await;

    let (child, url) = spawn(&dir.path().join("data"));
    let c = Client::connect(url).await.unwrap();
    let all = c.get(Get::key("k").prefix()).await.unwrap();
    assert_eq!(all.count, 20);
    assert_eq!(all.header.unwrap().revision, 21);
    assert_eq!(c.get(Get::key("k7")).await.unwrap().kvs[0].value, b"v7");
    drop(c);
    sigterm_and_wait(child).await;
}

#[test]
fn bad_flags_are_refused() {
    let table: [(&[&str], &str); 4] = [
        (&["--listen-client-urls", "127.0.0.1:2379"], "invalid URL"),
        (
            &["--auto-compaction-retention", "soon"],
            "invalid --auto-compaction-retention \"soon\"",
        ),
        (
            &[
                "--auto-compaction-mode",
                "revision",
                "--auto-compaction-retention",
                "5m",
            ],
            "expected a number of revisions",
        ),
        (
            &["--experimental-watch-progress-notify-interval", "1x"],
            "invalid duration \"1x\"",
        ),
    ];
    for (args, want) in table {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// A `Type=notify` systemd unit hears READY=1 once the member serves and
/// STOPPING=1 when it shuts down, on `$NOTIFY_SOCKET`.
#[test]
fn the_service_manager_is_notified() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "--listen-client-urls",
            "http://127.0.0.1:0",
            "--listen-peer-urls",
            "http://127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).expect("READY=1 arrives");
    assert_eq!(&buf[..n], b"READY=1");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let n = socket.recv(&mut buf).expect("STOPPING=1 arrives");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}

/// Every flag can come from its ETCD_* variable (etcd's rule); a flag on the
/// command line wins, and etcd's warnings say so.
#[tokio::test]
async fn flags_come_from_etcd_variables_and_the_command_line_wins() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "--listen-peer-urls",
            "http://127.0.0.1:0",
            "--name",
            "from-flag",
        ])
        .env("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:0")
        .env("ETCD_DATA_DIR", dir.path().join("data"))
        .env("ETCD_NAME", "from-env")
        .env("ETCD_NO_SUCH_FLAG", "x")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let url = loop {
        let line = lines.next().expect("cairn serves").unwrap();
        log.push(line.clone());
        if let Some(rest) = line.split("address=").nth(1) {
            break format!("http://{}", rest.split_whitespace().next().unwrap());
        }
    };
    let log = log.join("\n");
    assert!(
        log.contains(
            "recognized environment variable ETCD_NAME, but unused: shadowed by corresponding flag"
        ),
        "{log}"
    );
    assert!(
        log.contains("recognized and used environment variable ETCD_DATA_DIR"),
        "{log}"
    );
    assert!(
        log.contains("unrecognized environment variable ETCD_NO_SUCH_FLAG"),
        "{log}"
    );
    assert!(
        dir.path().join("data").exists(),
        "ETCD_DATA_DIR was not used"
    );
    let client = cairn_client::Client::connect(url).await.unwrap();
    let members = client.member_list().await.unwrap().members;
    assert_eq!(members[0].name, "from-flag");
    child.kill().unwrap();
    let _ = child.wait();
}

/// Starts the binary with `args` on a data directory in `dir`, returns it
/// with everything it logged before serving clients.
fn log_until_serving(dir: &std::path::Path, args: &[&str]) -> (Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "--listen-client-urls",
            "http://127.0.0.1:0",
            "--listen-peer-urls",
            "http://127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .args(args)
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    loop {
        let line = lines.next().expect("cairn serves").unwrap();
        let serving = line.contains("address=");
        log.push(line);
        if serving {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    (child, log.join("\n"))
}

/// `--enable-v2` and `--experimental-enable-v2v3` are accepted (etcd 3.5
/// command lines keep working) with a warning that v2 is not served;
/// `--enable-v2=false` says nothing.
#[test]
fn enable_v2_is_accepted_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log) = log_until_serving(
        dir.path(),
        &["--enable-v2", "--experimental-enable-v2v3", "/v2/"],
    );
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        log.contains("--enable-v2 is set, but the v2 API is not served"),
        "{log}"
    );
    assert!(
        log.contains("--experimental-enable-v2v3 is set, but the v2 API is not served"),
        "{log}"
    );
    let (mut child, log) = log_until_serving(dir.path(), &["--enable-v2=false"]);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(!log.contains("v2 API"), "{log}");
}
