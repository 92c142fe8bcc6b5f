//! A member whose disk fills up is never left alive and broken: its raft
//! loop fails on the write, it stops serving, and the `cairn` binary exits
//! with a clear message so that a supervisor restarts it (etcd exits too).
//!
//! The full disk is real: a small tmpfs, which needs root to mount. Where it
//! cannot be mounted the test says so and passes without running (CI runs as
//! root).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::{Client, Put};
use common::ready_url;

mod common;

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_member_whose_disk_fills_up_exits_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("small"), "24m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let mut child = common::cairn()
        .args(common::FREE_PORTS)
        .arg("--data-dir")
        .arg(disk.0.join("data"))
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = ready_url(&line) {
                    let _ = url_tx.send(url);
                }
                log.lock().unwrap().push(line);
            }
        })
    };
    let url = url_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("cairn serves");

    // Write 64 KiB values until the member refuses or goes away.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = runtime.block_on(async {
        let client = Client::connect(url).await.unwrap();
        let value = vec![b'x'; 64 * 1024];
        for i in 0..2_000 {
            if let Err(e) = client.put(Put::new(format!("k{i}"), value.clone())).await {
                return Some(e.to_string());
            }
        }
        None
    });
    assert!(refused.is_some(), "24 MiB took 125 MiB of writes");

    // The process exits on its own, with a failure status.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "cairn kept running after its disk filled up; log:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    reader.join().unwrap();
    let log = log.lock().unwrap().join("\n");
    assert!(!status.success(), "exit status {status:?}; log:\n{log}");
    assert!(
        log.contains("exiting so that it can be restarted"),
        "no exit message; log:\n{log}"
    );
    assert!(
        log.contains("No space left on device") || log.contains("space"),
        "the cause is not logged; log:\n{log}"
    );
}
