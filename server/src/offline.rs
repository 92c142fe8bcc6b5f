//! The offline tools, etcdutl's: `cairn snapshot status FILE` on a
//! `snapshot save` file, and `cairn defrag --data-dir DIR` on a stopped
//! member's data directory. Neither talks to a running member; both refuse
//! (with nothing written) a damaged input or a wrong master key.
//!
//! `snapshot status` prints etcdutl's four figures, defined for Cairn's
//! format ([`crate::snapshot`]):
//! - hash: the CRC-32C (Castagnoli, etcdutl's polynomial) of the snapshot's
//!   plain state, i.e. its records after unsealing, in the order a restore
//!   reads them. The same state hashes the same whatever file key sealed it.
//! - revision: the revision a member restored from the file starts at (the
//!   store is rebuilt in memory from the records, as a restore would).
//! - total keys: as etcdutl counts them in the same file (a bbolt
//!   database, [`crate::snapshot`]): the MVCC key records, one per revision
//!   of a key, deletions included (bucket `key`), plus the keys of Cairn's
//!   own bucket (`cairn`: index, file key, state). So `etcdutl snapshot
//!   status` on the file prints the same revision and total keys; its hash
//!   is of the sealed bytes (another figure).
//! - total size: the file's size in bytes.
//!
//! `defrag` compacts every column family of the stopped member's RocksDB
//! fully and logs the sizes before and after with etcdutl's messages.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_proto::cairnpb::SnapshotRecord;
use prost::Message;

use crate::storage::crypto::MasterKey;
use crate::storage::{Cf, Engine, MemoryEngine, RocksEngine, SealedEngine, SizeInfo, WriteBatch};

/// Errors of the offline tools.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The snapshot file is not a Cairn snapshot, is damaged or truncated,
    /// or was sealed with another master key.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::Error),
    /// The snapshot is sealed and no key file was given.
    #[error("the snapshot is sealed: give the saving member's --encryption-key-file")]
    KeyNeeded,
    /// The snapshot's checksum holds but its records do not decode.
    #[error("invalid snapshot file: {0}")]
    Records(String),
    /// The directory is not a Cairn member's data directory.
    #[error("{} is not a Cairn data directory: {reason}", path.display())]
    NotADataDir {
        /// The directory given.
        path: PathBuf,
        /// What is missing.
        reason: &'static str,
    },
    /// A running member holds the data directory.
    #[error(
        "the data directory {} is in use by a running member; stop it first \
         (to defragment a running member, use `etcdctl defrag`)",
        .0.display()
    )]
    InUse(PathBuf),
    /// A snapshot install was cut short in the data directory: its state
    /// is half old, half new until the member finishes it.
    #[error(
        "the data directory {} holds a snapshot install cut short; start the member \
         once to finish it (it does so before serving), then stop it and try again",
        .0.display()
    )]
    InstallUnfinished(PathBuf),
    /// The master key file cannot be used.
    #[error(transparent)]
    KeyFile(#[from] crate::storage::crypto::KeyFileError),
    /// The data directory could not be read or compacted (a wrong master key
    /// is one of these: [`crate::storage::Error::WrongMasterKey`]).
    #[error(transparent)]
    Storage(crate::storage::Error),
}

impl From<crate::storage::Error> for Error {
    fn from(e: crate::storage::Error) -> Self {
        match e {
            crate::storage::Error::InUse(path) => Error::InUse(path),
            other => Error::Storage(other),
        }
    }
}

/// What `snapshot status` reports of a snapshot file (etcdutl's
/// `snapshot.Status`; see the module doc for how each is defined).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// CRC-32C of the plain state records.
    pub hash: u32,
    /// The revision a member restored from the file starts at.
    pub revision: i64,
    /// The MVCC key records (every revision of every key, deletions included).
    pub total_key: u64,
    /// The file's size in bytes.
    pub total_size: u64,
}

/// Reads the status of snapshot `file` (its bytes), unsealing it with
/// `master`. A damaged, truncated or foreign file, or a wrong key, is an
/// error.
pub fn snapshot_status(file: &[u8], master: Option<&MasterKey>) -> Result<SnapshotStatus, Error> {
    let decoded = crate::snapshot::decode_file(file, master).map_err(|e| match e {
        crate::snapshot::Error::WrongKey if master.is_none() => Error::KeyNeeded,
        other => Error::Snapshot(other),
    })?;
    let data = decoded.data;
    let engine = MemoryEngine::new();
    let mut batch = WriteBatch::new();
    let mut total_key = 0u64;
    let mut buf = data.as_slice();
    while !buf.is_empty() {
        let record = SnapshotRecord::decode_length_delimited(&mut buf)
            .map_err(|e| Error::Records(format!("snapshot record: {e}")))?;
        let cf = crate::machine::snapshot_cf(&record.cf)
            .ok_or_else(|| Error::Records(format!("unknown column family {:?}", record.cf)))?;
        if cf == Cf::Kv {
            total_key += 1;
        }
        batch.put(cf, record.key, record.value);
    }
    engine.write(batch, false)?;
    // The store a restore would load: decodes every record (a bad one is an
    // error) and yields the revision the restored member reports.
    let store = crate::mvcc::Store::open(Arc::new(engine), false)
        .map_err(|e| Error::Records(e.to_string()))?;
    Ok(SnapshotStatus {
        hash: crc32c(&data),
        revision: store.current_revision(),
        total_key: total_key + decoded.other_keys,
        total_size: file.len() as u64,
    })
}

/// `-w`/`--write-out`: etcdutl's output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteOut {
    /// `hash, revision, total keys, total size` on one line.
    #[default]
    Simple,
    /// A table with a header row.
    Table,
    /// One JSON object.
    Json,
    /// One `"Name" : value` line per figure.
    Fields,
}

impl std::str::FromStr for WriteOut {
    type Err = String;

    /// etcdutl's names and its two refusals, word for word.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "simple" => Ok(WriteOut::Simple),
            "table" => Ok(WriteOut::Table),
            "json" => Ok(WriteOut::Json),
            "fields" => Ok(WriteOut::Fields),
            "protobuf" => Err("protobuf not supported as output format".into()),
            _ => Err("unsupported output format".into()),
        }
    }
}

impl SnapshotStatus {
    /// The status as etcdutl 3.5 prints it in `format`, ending in a newline.
    pub fn render(&self, format: WriteOut) -> String {
        // etcdutl formats the hash with Go's %x: lower case, no padding.
        let row = [
            format!("{:x}", self.hash),
            self.revision.to_string(),
            self.total_key.to_string(),
            humanize_bytes(self.total_size),
        ];
        match format {
            WriteOut::Simple => format!("{}\n", row.join(", ")),
            WriteOut::Table => table(&["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"], &row),
            WriteOut::Json => format!(
                "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
                self.hash, self.revision, self.total_key, self.total_size
            ),
            WriteOut::Fields => format!(
                "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
                self.hash, self.revision, self.total_key, self.total_size
            ),
        }
    }
}

/// etcdutl's table (Go's tablewriter, right-aligned cells): the header
/// centred (an odd space goes right), one space of padding in every cell.
fn table(header: &[&str], row: &[String]) -> String {
    let widths: Vec<usize> = header
        .iter()
        .zip(row)
        .map(|(h, c)| h.chars().count().max(c.chars().count()))
        .collect();
    let rule: String = widths.iter().fold("+".to_string(), |mut s, w| {
        s.push_str(&"-".repeat(w + 2));
        s.push('+');
        s
    });
    let mut head = String::from("|");
    let mut cells = String::from("|");
    for ((h, c), w) in header.iter().zip(row).zip(&widths) {
        let gap = w - h.chars().count();
        let left = gap / 2;
        head.push_str(&format!(
            " {}{h}{} |",
            " ".repeat(left),
            " ".repeat(gap - left)
        ));
        cells.push_str(&format!(" {c:>w$} |"));
    }
    format!("{rule}\n{head}\n{rule}\n{cells}\n{rule}\n")
}

/// Go's `humanize.Bytes` (SI units), as etcd prints sizes: `29 kB`,
/// `2.1 MB`; one decimal below 10 units, none above; under 10 bytes, `N B`.
pub fn humanize_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let value = n as f64;
    let exp = (value.ln() / 1000f64.ln()).floor();
    let unit = UNITS[(exp as usize).min(UNITS.len() - 1)];
    let scaled = (value / 1000f64.powf(exp) * 10.0 + 0.5).floor() / 10.0;
    if scaled < 10.0 {
        format!("{scaled:.1} {unit}")
    } else {
        format!("{scaled:.0} {unit}")
    }
}

/// CRC-32C (Castagnoli), the checksum etcdutl hashes a snapshot with.
fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// What [`defrag`] did.
#[derive(Debug, Clone)]
pub struct DefragReport {
    /// The database directory compacted (`<data-dir>/db`).
    pub path: PathBuf,
    /// Sizes before.
    pub before: SizeInfo,
    /// Sizes after.
    pub after: SizeInfo,
    /// How long the compaction took.
    pub took: std::time::Duration,
}

/// etcdutl's `defrag --data-dir`: fully compacts every column family of
/// the stopped member's database in `data_dir`. `key_file` is the member's
/// `--encryption-key-file` (None: `<data-dir>.key`, as the member uses); it
/// must open the data directory's keys before anything is compacted. Refuses
/// a running member's directory and a directory that is not a Cairn member's.
pub fn defrag(data_dir: &Path, key_file: Option<&Path>) -> Result<DefragReport, Error> {
    let StoppedMember { path, raw, .. } = open_stopped(data_dir, key_file)?;
    let before = raw.size();
    tracing::info!(
        path = %path.display(),
        "current-db-size-bytes" = before.total,
        "current-db-size" = %humanize_bytes(before.total),
        "current-db-size-in-use-bytes" = before.in_use,
        "current-db-size-in-use" = %humanize_bytes(before.in_use),
        "defragmenting"
    );
    let start = std::time::Instant::now();
    raw.defragment()?;
    let took = start.elapsed();
    let after = raw.size();
    tracing::info!(
        path = %path.display(),
        "current-db-size-bytes-diff" = diff(after.total, before.total),
        "current-db-size-bytes" = after.total,
        "current-db-size" = %humanize_bytes(after.total),
        "current-db-size-in-use-bytes-diff" = diff(after.in_use, before.in_use),
        "current-db-size-in-use-bytes" = after.in_use,
        "current-db-size-in-use" = %humanize_bytes(after.in_use),
        took = ?took,
        "finished defragmenting directory"
    );
    Ok(DefragReport {
        path,
        before,
        after,
        took,
    })
}

/// A stopped member's database, opened for an offline tool.
pub struct StoppedMember {
    /// The database directory (`<data-dir>/db`).
    pub path: PathBuf,
    /// The engine as stored (sealed values stay sealed): for whole-database
    /// operations such as compaction.
    pub raw: Arc<dyn Engine>,
    /// The engine that opens sealed values with the member's keys (the raw
    /// one in `bench-plaintext` builds).
    pub engine: Arc<dyn Engine>,
}

/// Opens the database of the stopped member in `data_dir` with its master
/// key (`key_file`, else `<data-dir>.key`, as the member uses: loaded,
/// never generated), which must open its data keys. Creates and writes
/// nothing. Refuses a running member's directory and a directory that is
/// not a Cairn member's.
pub fn open_stopped(data_dir: &Path, key_file: Option<&Path>) -> Result<StoppedMember, Error> {
    let not_cairn = |reason| Error::NotADataDir {
        path: data_dir.to_path_buf(),
        reason,
    };
    if !data_dir.is_dir() {
        return Err(not_cairn("no such directory"));
    }
    let path = data_dir.join("db");
    let config = crate::config::Config {
        data_dir: data_dir.to_path_buf(),
        encryption_key_file: key_file.map(Path::to_path_buf),
        ..crate::config::Config::default()
    };
    let master = MasterKey::load(crate::bootstrap::key_file_path(&config))?;
    let raw = RocksEngine::open_existing(&path)?
        .ok_or_else(|| not_cairn("it holds no Cairn database (db/)"))?;
    let raw: Arc<dyn Engine> = Arc::new(raw);
    if crate::machine::install::unfinished(raw.as_ref())? {
        return Err(Error::InstallUnfinished(data_dir.to_path_buf()));
    }
    let engine: Arc<dyn Engine> = if cfg!(feature = "bench-plaintext") {
        Arc::clone(&raw)
    } else {
        if !SealedEngine::has_keys(raw.as_ref())? {
            return Err(not_cairn("its database holds no encryption keys"));
        }
        // Opens (and so checks) every data key with the master key; writes
        // nothing, since the keys exist.
        Arc::new(SealedEngine::open(Arc::clone(&raw), master)?)
    };
    Ok(StoppedMember { path, raw, engine })
}

/// `after - before` as a signed number (etcd logs the shrink as negative).
fn diff(after: u64, before: u64) -> i64 {
    // Sizes fit i64 (files, not exabytes); saturate rather than wrap.
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    signed(after).saturating_sub(signed(before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::crypto::MasterKey;

    /// A sealed snapshot file of a store that saw `a=1, a=2, b=1, delete a`
    /// (revisions 2 to 5: four key records, one of them a deletion).
    fn snapshot(master: &MasterKey) -> (Vec<u8>, Vec<u8>) {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let store = Arc::new(crate::mvcc::Store::open(engine, false).unwrap());
        for (key, value) in [("a", "1"), ("a", "2"), ("b", "1")] {
            let mut txn = store.write();
            txn.put(key.as_bytes(), value.as_bytes().to_vec(), 0);
            txn.commit(None).unwrap();
        }
        let mut txn = store.write();
        txn.delete_range(&crate::mvcc::KeyRange::new(b"a", b""));
        txn.commit(None).unwrap();
        let config = crate::config::Config::default();
        let lessor = Arc::new(crate::lease::Lessor::new(
            config.lessor_config(),
            Arc::new(crate::lease::TokioClock),
        ));
        let data = crate::machine::Machine::new(store, lessor)
            .snapshot_data()
            .unwrap();
        (
            crate::snapshot::encode_file(9, &data, Some(master)).unwrap(),
            data,
        )
    }

    #[test]
    fn status_counts_the_records_and_hashes_the_plain_state() {
        let master = MasterKey::from_bytes([7; 32]);
        let (file, data) = snapshot(&master);
        let status = snapshot_status(&file, Some(&master)).unwrap();
        assert_eq!(status.revision, 5);
        // Four key records, and index, file key and state.
        assert_eq!(status.total_key, 7);
        assert_eq!(status.total_size, file.len() as u64);
        assert_eq!(status.hash, crc32c(&data));
        // Another save of the same state has another file key, same hash.
        let (again, _) = snapshot(&master);
        assert_ne!(again, file);
        assert_eq!(snapshot_status(&again, Some(&master)).unwrap(), status);
    }

    #[test]
    fn status_refuses_damage_truncation_and_wrong_keys() {
        let master = MasterKey::from_bytes([7; 32]);
        let (file, _) = snapshot(&master);
        let other = MasterKey::from_bytes([8; 32]);
        let wrong = snapshot_status(&file, Some(&other)).unwrap_err();
        assert!(matches!(
            wrong,
            Error::Snapshot(crate::snapshot::Error::WrongKey)
        ));
        assert!(matches!(
            snapshot_status(&file, None),
            Err(Error::KeyNeeded)
        ));
        let mut damaged = file.clone();
        damaged[40] ^= 0x10;
        let truncated = &file[..file.len() - 100];
        for bad in [&damaged[..], truncated, b"CAIRNSNAP1", b""] {
            let err = snapshot_status(bad, Some(&master)).unwrap_err();
            assert!(
                matches!(err, Error::Snapshot(crate::snapshot::Error::Invalid(_))),
                "{err}"
            );
        }
        // A valid checksum over records that do not decode.
        let mut junk = Vec::new();
        SnapshotRecord {
            cf: "kv".into(),
            key: crate::mvcc::Revision::new(2, 0).record_key(false),
            value: b"\xff\xff".to_vec(),
        }
        .encode_length_delimited(&mut junk)
        .unwrap();
        let garbage = crate::snapshot::encode_file(1, &junk, None).unwrap();
        assert!(matches!(
            snapshot_status(&garbage, None),
            Err(Error::Records(_))
        ));
    }

    #[test]
    fn renders_like_etcdutl() {
        // etcdutl 3.5.1's output for a five-key etcd snapshot.
        let status = SnapshotStatus {
            hash: 0x5c45_ef03,
            revision: 6,
            total_key: 11,
            total_size: 28672,
        };
        assert_eq!(status.render(WriteOut::Simple), "5c45ef03, 6, 11, 29 kB\n");
        assert_eq!(
            status.render(WriteOut::Table),
            "+----------+----------+------------+------------+\n\
             |   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +----------+----------+------------+------------+\n\
             | 5c45ef03 |        6 |         11 |      29 kB |\n\
             +----------+----------+------------+------------+\n"
        );
        assert_eq!(
            status.render(WriteOut::Json),
            "{\"hash\":1548087043,\"revision\":6,\"totalKey\":11,\"totalSize\":28672}\n"
        );
        assert_eq!(
            status.render(WriteOut::Fields),
            "\"Hash\" : 1548087043\n\"Revision\" : 6\n\"Keys\" : 11\n\"Size\" : 28672\n"
        );
        // Go's %x does not pad; a wide cell widens its column, and an odd
        // gap in a header puts the extra space on the right.
        let wide = SnapshotStatus {
            hash: 0xabc,
            revision: 123_456_789,
            total_key: 1,
            total_size: 5,
        };
        assert_eq!(wide.render(WriteOut::Simple), "abc, 123456789, 1, 5 B\n");
        assert!(wide
            .render(WriteOut::Table)
            .contains("| HASH | REVISION  | TOTAL KEYS | TOTAL SIZE |\n"));
        assert_eq!(
            "protobuf".parse::<WriteOut>().unwrap_err(),
            "protobuf not supported as output format"
        );
        assert_eq!(
            "yaml".parse::<WriteOut>().unwrap_err(),
            "unsupported output format"
        );
    }

    #[test]
    fn humanize_and_crc_match_go() {
        for (n, want) in [
            (0, "0 B"),
            (9, "9 B"),
            (10, "10 B"),
            (999, "999 B"),
            (1000, "1.0 kB"),
            (9_950, "10 kB"),
            (28_672, "29 kB"),
            (2_100_000, "2.1 MB"),
            (2_147_483_648, "2.1 GB"),
            (u64::MAX, "18 EB"),
        ] {
            assert_eq!(humanize_bytes(n), want, "{n}");
        }
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    /// A stopped member's data directory, as the member writes it: sealed
    /// RocksDB under `db/`, the master key in `<dir>.key`.
    fn data_dir(root: &Path) -> PathBuf {
        let dir = root.join("m.cairn");
        let master = MasterKey::generate_file(root.join("m.cairn.key")).unwrap();
        let raw: Arc<dyn Engine> = Arc::new(RocksEngine::open(&dir.join("db")).unwrap());
        let sealed = SealedEngine::open(raw, master).unwrap();
        for round in 0..3u8 {
            let mut batch = WriteBatch::new();
            for i in 0..200u32 {
                let key = [&i.to_be_bytes()[..], &[round]].concat();
                batch.put(Cf::Kv, key, vec![round; 512]);
            }
            sealed.write(batch, true).unwrap();
        }
        dir
    }

    #[test]
    fn defrag_compacts_a_stopped_member_and_keeps_its_data() {
        let root = tempfile::tempdir().unwrap();
        let dir = data_dir(root.path());
        let report = defrag(&dir, None).unwrap();
        assert_eq!(report.path, dir.join("db"));
        assert!(report.before.total > 0 && report.after.total > 0);
        let master = MasterKey::load(root.path().join("m.cairn.key")).unwrap();
        let raw: Arc<dyn Engine> = Arc::new(RocksEngine::open(&dir.join("db")).unwrap());
        let sealed = SealedEngine::open(raw, master).unwrap();
        let key = [&7u32.to_be_bytes()[..], &[2]].concat();
        assert_eq!(sealed.get(Cf::Kv, &key).unwrap(), Some(vec![2; 512]));
    }

    #[test]
    fn defrag_refuses_and_changes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dir = data_dir(root.path());
        let other = root.path().join("other.key");
        drop(MasterKey::generate_file(&other).unwrap());
        assert!(matches!(
            defrag(&dir, Some(&other)),
            Err(Error::Storage(crate::storage::Error::WrongMasterKey))
        ));
        assert!(matches!(
            defrag(&dir, Some(&root.path().join("missing.key"))),
            Err(Error::KeyFile(_))
        ));
        {
            let _running = RocksEngine::open(&dir.join("db")).unwrap();
            match defrag(&dir, None) {
                Err(Error::InUse(path)) => assert_eq!(path, dir.join("db")),
                other => panic!("expected InUse, got {other:?}"),
            }
        }
        // RocksDB's own files (logs, manifest) change on any open; the
        // records do not.
        let report = defrag(&dir, None).unwrap();
        assert!(report.after.total > 0);
        // A snapshot install cut short: refused until the member finishes it.
        {
            let raw = RocksEngine::open(&dir.join("db")).unwrap();
            let mut batch = WriteBatch::new();
            batch.put(Cf::Meta, crate::machine::install::MARKER, [0; 16]);
            raw.write(batch, true).unwrap();
        }
        match defrag(&dir, None) {
            Err(e @ Error::InstallUnfinished(_)) => {
                assert!(e.to_string().contains("start the member once"), "{e}")
            }
            other => panic!("expected InstallUnfinished, got {other:?}"),
        }
        // Not a data directory: missing, or without a database (and none
        // is created there).
        let missing = root.path().join("nope");
        assert!(matches!(
            defrag(&missing, Some(&other)),
            Err(Error::NotADataDir { .. })
        ));
        assert!(!missing.exists());
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = defrag(&empty, Some(&other)).unwrap_err();
        assert!(matches!(err, Error::NotADataDir { .. }), "{err}");
        assert!(!empty.join("db").exists());
    }
}
