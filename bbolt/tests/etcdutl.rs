//! A file from the writer opened by bbolt itself: `etcdutl snapshot status`
//! (etcd 3.5.1) walks every bucket of an etcd-shaped file (a `key` bucket
//! of revision keys across many branch and overflow pages, and `meta`) and
//! reports its revision and key count. Skipped, saying so, when etcdutl is
//! not installed (`CAIRN_ETCDUTL`, else `~/.cache/cairn-tools/etcd-3.5.1`,
//! where tests/compat/lib.sh puts it).

use std::io::BufWriter;
use std::path::PathBuf;

use cairn_bbolt::{Db, Entry, Item, Writer};

fn etcdutl() -> Option<PathBuf> {
    let path = match std::env::var_os("CAIRN_ETCDUTL") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(std::env::var_os("HOME")?).join(".cache/cairn-tools/etcd-3.5.1/etcdutl")
        }
    };
    path.exists().then_some(path)
}

/// etcd's revision key: 8-byte big-endian main, `_`, 8-byte sub.
fn revision(main: u64) -> Vec<u8> {
    [&main.to_be_bytes()[..], b"_", &0u64.to_be_bytes()[..]].concat()
}

#[test]
fn etcdutl_reads_a_written_file() {
    const KEYS: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.db");
    let file = std::fs::File::create(&path).unwrap();
    let mut w = Writer::new(BufWriter::new(file)).unwrap();
    let mut key = w.bucket();
    for main in 2..KEYS + 2 {
        let size = if main % 1000 == 0 { 10_000 } else { 40 };
        key.put_value(&revision(main), &vec![b'v'; size]).unwrap();
    }
    let key = key.finish().unwrap();
    let mut meta = w.bucket();
    meta.put_value(b"consistent_index", &5u64.to_be_bytes())
        .unwrap();
    let meta = meta.finish().unwrap();
    let mut root = w.bucket();
    root.put(b"key", Entry::Bucket(key)).unwrap();
    root.put(b"meta", Entry::Bucket(meta)).unwrap();
    let root = root.finish().unwrap();
    drop(w.finish(root).unwrap());

    // Read back here first.
    let bytes = std::fs::read(&path).unwrap();
    let db = Db::open(&bytes).unwrap();
    let mut n = 0u64;
    db.bucket(b"key")
        .unwrap()
        .unwrap()
        .for_each::<cairn_bbolt::Error>(|k, item| {
            n += 1;
            assert_eq!(k, revision(n + 1));
            assert!(matches!(item, Item::Value(_)));
            Ok(())
        })
        .unwrap();
    assert_eq!(n, KEYS);

    let Some(etcdutl) = etcdutl() else {
        eprintln!("etcdutl 3.5.1 not installed: skipping the check by bbolt itself");
        return;
    };
    let out = std::process::Command::new(etcdutl)
        .args(["snapshot", "status", "-w", "json"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The last revision of `key`, and every key of every bucket.
    assert!(
        stdout.contains(&format!("\"revision\":{},", KEYS + 1)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("\"totalKey\":{},", KEYS + 1)),
        "{stdout}"
    );
}
