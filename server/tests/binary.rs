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

/// Kills a `cairn` child at once (what happens to its data is not the test).
fn kill(mut child: Child) {
    child.kill().unwrap();
    let _ = child.wait();
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
    common::sigterm_and_wait(child).await;

    let (child, url) = spawn(&dir.path().join("data"));
    let c = Client::connect(url).await.unwrap();
    let all = c.get(Get::key("k").prefix()).await.unwrap();
    assert_eq!(all.count, 20);
    assert_eq!(all.header.unwrap().revision, 21);
    assert_eq!(c.get(Get::key("k7")).await.unwrap().kvs[0].value, b"v7");
    drop(c);
    common::sigterm_and_wait(child).await;
}

#[test]
fn bad_flags_are_refused() {
    let table: &[(&[&str], &str)] = &[
        (
            &["--peer-auto-tls=maybe"],
            "invalid value 'maybe' for '--peer-auto-tls",
        ),
        (
            &["--enable-pprof"],
            "--enable-pprof: Cairn is not a Go program",
        ),
        (
            &["--metrics", "full"],
            "invalid value 'full' for '--metrics",
        ),
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
        (
            &["--logger", "capnslog"],
            "--logger=capnslog is removed in v3.5",
        ),
        (&["--logger", "foo"], "unknown logger option \"foo\""),
        (
            &["--log-outputs", "default,stdout"],
            "multi logoutput for \"default\" is not supported yet",
        ),
        (
            &["--log-outputs", "stderr,systemd/journal"],
            "systemd/journal must be the only output",
        ),
        (
            &["--log-level", "verbose"],
            "invalid --log-level \"verbose\"",
        ),
    ];
    for &(args, want) in table {
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
    let mut child = common::cairn()
        .args(common::FREE_PORTS)
        .arg("--data-dir")
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
    let dir = tempfile::tempdir().unwrap();
    let (child, url, log) = common::serve(
        common::cairn()
            .args(["--listen-peer-urls", "http://127.0.0.1:0"])
            .args(["--name", "from-flag"])
            .env("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:0")
            .env("ETCD_DATA_DIR", dir.path().join("data"))
            .env("ETCD_NAME", "from-env")
            .env("ETCD_NO_SUCH_FLAG", "secret-in-a-variable"),
    );
    let has = |msg: &str, key: &str, value: &str| {
        log.iter().any(|l| {
            let l: serde_json::Value = serde_json::from_str(l).unwrap();
            l["msg"] == msg && l[key] == value
        })
    };
    assert!(
        has(
            "recognized environment variable, but unused: shadowed by corresponding flag",
            "variable-name",
            "ETCD_NAME"
        ),
        "{log:#?}"
    );
    assert!(
        has(
            "recognized and used environment variable",
            "variable-name",
            "ETCD_DATA_DIR"
        ),
        "{log:#?}"
    );
    assert!(
        has(
            "unrecognized environment variable",
            "environment-variable",
            "ETCD_NO_SUCH_FLAG"
        ),
        "{log:#?}"
    );
    let log = log.join("\n");
    assert!(!log.contains("secret-in-a-variable"), "{log}");
    assert!(
        dir.path().join("data").exists(),
        "ETCD_DATA_DIR was not used"
    );
    let client = cairn_client::Client::connect(url).await.unwrap();
    let members = client.member_list().await.unwrap().members;
    assert_eq!(members[0].name, "from-flag");
    kill(child);
}

/// Lines read from a child's pipe, as they come.
fn line_channel(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads `rx` until `n` "ready to serve client requests" lines came (or
/// the deadline passed); returns every line read.
fn read_until_ready(rx: &std::sync::mpsc::Receiver<String>, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines: Vec<String> = Vec::new();
    while lines
        .iter()
        .filter(|l| common::ready_url(l).is_some())
        .count()
        < n
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(e) => panic!("cairn not ready ({e}); log:\n{}", lines.join("\n")),
        }
    }
    lines
}

/// Every line is zap's JSON: level, ts (ISO 8601 with milliseconds),
/// caller and msg, in that order, then the fields.
fn parse_zap_line(line: &str) -> serde_json::Value {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    for key in ["level", "ts", "caller", "msg"] {
        assert!(value[key].is_string(), "no {key}: {line}");
    }
    assert!(line.starts_with("{\"level\":\""), "{line}");
    let ts = value["ts"].as_str().unwrap();
    assert!(
        ts.len() >= 24 && &ts[10..11] == "T" && &ts[19..20] == ".",
        "{line}"
    );
    assert!(
        ["debug", "info", "warn", "error"].contains(&value["level"].as_str().unwrap()),
        "{line}"
    );
    value
}

/// etcd's log lines: JSON to a file and stderr at once, the lifecycle
/// lines with etcd's words (one "ready" per client listener, with its
/// address), raft's elections in etcd's wording, the closing line on
/// SIGTERM, and neither keys nor values in any line.
#[tokio::test]
async fn logs_are_etcds_json_lines_to_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cairn.log");
    let mut child = common::cairn()
        .args([
            "--listen-client-urls",
            "http://127.0.0.1:0,http://127.0.0.1:0",
        ])
        .args(["--listen-peer-urls", "http://127.0.0.1:0"])
        .arg("--log-outputs")
        .arg(format!("{},stderr", file.display()))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .spawn()
        .unwrap();
    let rx = line_channel(child.stderr.take().unwrap());
    let mut lines = read_until_ready(&rx, 2);
    let url = lines.iter().find_map(|l| common::ready_url(l)).unwrap();
    let client = Client::connect(url).await.unwrap();
    client
        .put(Put::new("secret-key-name", "secret-value-bytes"))
        .await
        .unwrap();
    drop(client);
    common::sigterm_and_wait(child).await;
    // The child has exited: the pipe ends, the reader thread too.
    lines.extend(rx.iter());

    let parsed: Vec<serde_json::Value> = lines.iter().map(|l| parse_zap_line(l)).collect();
    let with_msg = |msg: &str| -> Vec<&serde_json::Value> {
        parsed.iter().filter(|l| l["msg"] == msg).collect()
    };
    let ready: Vec<&str> = with_msg("ready to serve client requests")
        .iter()
        .map(|l| l["address"].as_str().unwrap())
        .collect();
    assert_eq!(ready.len(), 2, "{lines:#?}");
    assert_ne!(ready[0], ready[1]);
    let insecure = with_msg("serving client traffic insecurely; this is strongly discouraged!");
    for address in &ready {
        assert!(address.starts_with("127.0.0.1:"), "{address}");
        assert!(
            insecure.iter().any(|l| l["address"] == *address),
            "{lines:#?}"
        );
    }
    for msg in [
        "starting an etcd server",
        "starting local member",
        "starting etcd server",
        "published local member to cluster through raft",
        "received signal; shutting down",
        "closing etcd server",
        "closed etcd server",
    ] {
        assert_eq!(with_msg(msg).len(), 1, "{msg}: {lines:#?}");
    }
    assert_eq!(
        with_msg("received signal; shutting down")[0]["signal"],
        "terminated"
    );
    let id = with_msg("starting local member")[0]["local-member-id"]
        .as_str()
        .unwrap()
        .to_string();
    let raft: Vec<&str> = parsed
        .iter()
        .filter(|l| l["logger"] == "raft")
        .map(|l| l["msg"].as_str().unwrap())
        .collect();
    assert!(
        raft.iter()
            .any(|m| m.starts_with(&format!("{id} became leader at term "))),
        "{raft:#?}"
    );
    assert!(
        raft.iter()
            .any(|m| m.starts_with(&format!("raft.node: {id} elected leader {id} at term "))),
        "{raft:#?}"
    );
    let all = lines.join("\n");
    assert!(!all.contains("secret-key-name"), "{all}");
    assert!(!all.contains("secret-value-bytes"), "{all}");

    // The file got the same lines.
    let in_file = std::fs::read_to_string(&file).unwrap();
    let file_msgs: Vec<String> = in_file
        .lines()
        .map(|l| parse_zap_line(l)["msg"].as_str().unwrap().to_string())
        .collect();
    let stderr_msgs: Vec<String> = parsed
        .iter()
        .map(|l| l["msg"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(file_msgs, stderr_msgs);
}

/// `--log-outputs stdout`: the lines go to stdout, none to stderr.
#[tokio::test]
async fn logs_go_to_stdout_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::cairn()
        .args(common::FREE_PORTS)
        .args(["--log-outputs", "stdout", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = line_channel(child.stderr.take().unwrap());
    let stdout = line_channel(child.stdout.take().unwrap());
    let mut lines = read_until_ready(&stdout, 1);
    common::sigterm_and_wait(child).await;
    lines.extend(stdout.iter());
    for line in &lines {
        parse_zap_line(line);
    }
    assert!(lines
        .iter()
        .any(|l| l.contains("\"msg\":\"closed etcd server\"")));
    let on_stderr: Vec<String> = stderr.iter().collect();
    assert!(on_stderr.is_empty(), "{on_stderr:#?}");
}

/// With `--config-file` (etcd's YAML keys), the file is the whole
/// configuration, as in etcd 3.5: flags and ETCD_* variables given anyway
/// are ignored, and the log says so.
#[tokio::test]
async fn a_config_file_is_the_whole_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("etcd.conf.yml");
    std::fs::write(
        &file,
        format!(
            "name: from-file\n\
             data-dir: {}\n\
             listen-client-urls: [http://127.0.0.1:0]\n\
             listen-peer-urls: http://127.0.0.1:0\n\
             snapshot-count: 5000\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let (child, url, log) = common::serve(
        common::cairn()
            .arg("--config-file")
            .arg(&file)
            .args(["--name", "from-flag"])
            .env("ETCD_NAME", "from-env")
            .env("ETCD_SNAPSHOT_COUNT", "banana"),
    );
    let log = log.join("\n");
    assert!(
        log.contains("loaded server configuration, other configuration command line flags and environment variables will be ignored if provided"),
        "{log}"
    );
    assert!(
        log.contains("--name is ignored: the configuration file is used"),
        "{log}"
    );
    assert!(dir.path().join("data").exists(), "data-dir was not used");
    let client = cairn_client::Client::connect(url).await.unwrap();
    let members = client.member_list().await.unwrap().members;
    assert_eq!(members[0].name, "from-file");
    kill(child);

    // A bad file stops the start with its key named, nothing written.
    std::fs::write(&file, "name: x\nsnapshot_count: 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown key \"snapshot_count\"") && stderr.contains("etcd.conf.yml"),
        "{stderr}"
    );
    assert!(!std::path::Path::new("x.cairn").exists());
}

/// `--enable-v2` and `--experimental-enable-v2v3` are accepted (etcd 3.5
/// command lines keep working) with a warning that v2 is not served;
/// `--enable-v2=false` says nothing.
#[test]
fn enable_v2_is_accepted_with_a_warning() {
    let start = |args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let (child, _, log) = common::serve(
            common::cairn()
                .args(common::FREE_PORTS)
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args(args),
        );
        kill(child);
        log.join("\n")
    };
    let log = start(&["--enable-v2", "--experimental-enable-v2v3", "/v2/"]);
    assert!(
        log.contains("--enable-v2 is set, but the v2 API is not served"),
        "{log}"
    );
    assert!(
        log.contains("--experimental-enable-v2v3 is set, but the v2 API is not served"),
        "{log}"
    );
    let log = start(&["--enable-v2=false"]);
    assert!(!log.contains("v2 API"), "{log}");
}
