//! The history of a run: what every client asked and saw, what every watcher
//! received, and when each fault was in force.
//!
//! A run writes one [`Record`] per line (JSON lines, `history.jsonl`). The
//! checkers and the HTML report read nothing else, so a history saved by one
//! run can be checked again (`cairn-jepsen check DIR`) after a checker is fixed.
//!
//! Times are nanoseconds since the start of the run ([`Nanos`]), taken from one
//! monotonic clock in the harness process: an op's `invoke` is taken just
//! before its request is sent and `complete` just after its answer arrived, so
//! the real interval in which the server acted lies inside `[invoke, complete]`.
//!
//! # Outcomes
//!
//! * [`Outcome::Ok`]: the server answered; `ret` holds what it said.
//! * [`Outcome::Fail`]: the op certainly did not take effect (the server
//!   refused it before doing anything, e.g. "etcdserver: no leader", or the
//!   client could not connect). Checkers may drop it.
//! * [`Outcome::Unknown`]: it may or may not have taken effect (timeout,
//!   connection lost after sending). Its `complete` is `None`: for the
//!   checkers it stays concurrent with everything after its invocation.

use std::io::{self, BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Nanoseconds since the start of the run.
pub type Nanos = u64;

/// One line of `history.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A client operation, written when it completed (or, for an op still
    /// pending at the end of the run, as unknown).
    Op(Op),
    /// Something a watcher received (or did: created, resumed).
    Watch(WatchRecord),
    /// A fault window of the nemesis.
    Fault(FaultRecord),
}

/// A client operation with its interval and result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Unique in the run, in invocation order.
    pub id: u64,
    /// The logical client that issued it. A process has one op in flight at a
    /// time; after an unknown outcome the workload moves on to a new process
    /// number, as Jepsen does, so that a process's ops never overlap.
    pub process: u32,
    /// The workload that issued it (`register`, `set`, `lease`, `watch`).
    pub workload: String,
    /// When the request was about to be sent.
    pub invoke: Nanos,
    /// When the answer arrived; `None` iff the outcome is unknown.
    pub complete: Option<Nanos>,
    /// Ok, fail or unknown (see the module doc).
    pub outcome: Outcome,
    /// What was asked.
    pub call: Call,
    /// What the server answered; `Some` iff the outcome is ok.
    pub ret: Option<Ret>,
    /// The error, for fail and unknown outcomes (as the client reported it).
    pub error: Option<String>,
}

/// How an op ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Fail,
    Unknown,
}

/// What an op asked for. Register values are unique per key (each write
/// writes a value never written to that key before), which lets a
/// compare-and-set on a mod revision be checked as one on the value that the
/// revision holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// register: linearizable get of one key.
    Read { key: String },
    /// register: put of a fresh value.
    Write { key: String, value: u64 },
    /// register: Txn(if value(key) == expect then put value), or with
    /// `by_revision` Txn(if mod_revision(key) == revision then put value),
    /// where `revision` is the mod revision a read saw holding `expect`.
    Cas {
        key: String,
        expect: u64,
        value: u64,
        by_revision: Option<i64>,
    },
    /// set: create `key` only if absent (Txn on create_revision == 0).
    Add { key: String },
    /// set and lease: linearizable get of every key under `prefix`.
    ReadAll { prefix: String },
    /// lease: grant a lease of `ttl` seconds.
    LeaseGrant { ttl: i64 },
    /// lease: put `key` attached to `lease`.
    LeasePut { key: String, lease: i64 },
    /// lease: one keep-alive round for `lease`.
    LeaseKeepAlive { lease: i64 },
    /// lease: revoke `lease` (its keys are deleted with it).
    LeaseRevoke { lease: i64 },
    /// append: a transaction of micro-ops on several keys (reads carry no
    /// value here).
    Txn { ops: Vec<MicroOp> },
}

/// What the server answered to an op whose outcome is ok.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Ret {
    /// `value` is `None` when the key is absent; `mod_revision` is 0 then.
    Read {
        value: Option<u64>,
        mod_revision: i64,
        revision: i64,
    },
    /// The revision of the write (header revision).
    Write {
        revision: i64,
    },
    /// Whether the comparison held (and the put was done).
    Cas {
        succeeded: bool,
        revision: i64,
    },
    /// Whether the key was created (false: it existed already).
    Add {
        created: bool,
        revision: i64,
    },
    /// Every key under the prefix with its version and lease id (0 = none).
    ReadAll {
        keys: Vec<KeyState>,
        revision: i64,
    },
    /// The granted lease id and TTL.
    LeaseGrant {
        lease: i64,
        ttl: i64,
    },
    /// The lease's remaining TTL; <= 0 means the lease no longer exists.
    LeaseKeepAlive {
        ttl: i64,
    },
    /// The revision of the put / revoke.
    LeasePut {
        revision: i64,
    },
    LeaseRevoke {
        revision: i64,
    },
    /// The micro-ops as done, reads with the list they saw, and the header
    /// revision of the write (of the read, for a read-only transaction).
    Txn {
        ops: Vec<MicroOp>,
        revision: i64,
    },
}

/// One micro-op of an `append` transaction ([`Call::Txn`], [`Ret::Txn`]).
/// A key's value is a list of unique u64s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum MicroOp {
    /// Append `value` to the list of `key`.
    Append { key: String, value: u64 },
    /// Read the list of `key`: `None` in a call, the list seen in an answer
    /// (empty for an absent key).
    Read {
        key: String,
        value: Option<Vec<u64>>,
    },
}

/// A key as a [`Ret::ReadAll`] saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    pub key: String,
    /// Number of writes since the key was created (1 = written once).
    pub version: i64,
    pub mod_revision: i64,
    /// The attached lease, 0 for none.
    pub lease: i64,
}

/// What a watcher received or did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WatchRecord {
    /// Which watcher. Watcher ids are unique in a run; [`REFERENCE_WATCHER`]
    /// is the one the run opens after the workload has stopped, from the
    /// first revision still available, to see the whole history.
    pub watcher: u32,
    /// When it was received (or done).
    pub at: Nanos,
    pub what: WatchEvent,
}

/// The id of the watcher that reads the whole history after the workload.
pub const REFERENCE_WATCHER: u32 = u32::MAX;

/// The things a watcher records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WatchEvent {
    /// A watch on `prefix` was (re)created starting at `start_revision`
    /// (the first open and every resume after a broken stream: last revision
    /// seen + 1).
    Created {
        prefix: String,
        start_revision: i64,
        /// true for a resume after a broken stream.
        resumed: bool,
    },
    /// One WatchResponse with events. Events of one revision must never be
    /// split across responses.
    Events {
        header_revision: i64,
        events: Vec<KvEvent>,
    },
    /// A progress notification: every event up to `header_revision` has been
    /// sent already.
    Progress { header_revision: i64 },
    /// The server said the start revision was compacted.
    Compacted { compact_revision: i64 },
    /// The stream broke; the watcher will resume.
    Broken { error: String },
    /// The watcher stopped (end of the run).
    Stopped,
}

/// One event of a watch response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEvent {
    /// The event's revision (the kv's mod revision; for a delete, the
    /// revision of the delete).
    pub revision: i64,
    pub key: String,
    pub kind: KvEventKind,
    /// The value as written (the workloads write decimal u64s); `None` for a
    /// delete or a value that is not a number.
    pub value: Option<u64>,
    pub create_revision: i64,
    pub version: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvEventKind {
    Put,
    Delete,
}

/// A fault of the nemesis, from `start` to `end`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// The nemesis (`kill`, `pause`, `partition`, ...).
    pub name: String,
    /// In words: what was done to whom ("kill -9 m2 (az-b, leader)").
    pub detail: String,
    /// Members or zones affected.
    pub targets: Vec<String>,
    pub start: Nanos,
    /// When it was healed; `None` if it lasted to the end of the run.
    pub end: Option<Nanos>,
}

/// Writes records as JSON lines.
pub struct HistoryWriter<W: Write> {
    out: W,
}

impl<W: Write> HistoryWriter<W> {
    pub fn new(out: W) -> Self {
        HistoryWriter { out }
    }

    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The run's clock: nanoseconds since the run started, monotonic.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Clock {
            start: std::time::Instant::now(),
        }
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> Nanos {
        self.start.elapsed().as_nanos() as Nanos
    }
}

/// Where workloads and the nemesis send their records: a cheap, cloneable
/// handle on the one task that owns the history (file and memory), so that
/// recording never blocks a client on disk.
#[derive(Clone, Debug)]
pub struct Recorder {
    clock: Clock,
    tx: tokio::sync::mpsc::UnboundedSender<Record>,
    /// Op ids, unique in the run.
    next_id: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The task behind a [`Recorder`]: writes each record to the file as it
/// comes and returns them all once every `Recorder` is gone.
pub type RecorderTask = tokio::task::JoinHandle<io::Result<Vec<Record>>>;

impl Recorder {
    /// A recorder writing JSON lines to `path`.
    pub fn create(path: &Path, clock: Clock) -> io::Result<(Recorder, RecorderTask)> {
        let file = std::fs::File::create(path)?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Record>();
        let task = tokio::spawn(async move {
            let mut writer = HistoryWriter::new(io::BufWriter::new(file));
            let mut records = Vec::new();
            while let Some(record) = rx.recv().await {
                writer.write(&record)?;
                records.push(record);
            }
            writer.flush()?;
            Ok(records)
        });
        Ok((
            Recorder {
                clock,
                tx,
                next_id: std::sync::Arc::default(),
            },
            task,
        ))
    }

    /// The run's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// A fresh op id.
    pub fn next_op_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Records one record (dropped silently once the run is over).
    pub fn record(&self, record: Record) {
        let _ = self.tx.send(record);
    }
}

/// Reads a `history.jsonl`; a malformed line is an error naming its number.
pub fn read_history(path: &Path) -> io::Result<Vec<Record>> {
    let file = std::fs::File::open(path)?;
    let mut records = Vec::new();
    for (n, line) in io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}:{}: {e}", path.display(), n + 1),
            )
        })?;
        records.push(record);
    }
    Ok(records)
}

/// The ops of a history, in the order they were recorded.
pub fn ops(records: &[Record]) -> impl Iterator<Item = &Op> {
    records.iter().filter_map(|r| match r {
        Record::Op(op) => Some(op),
        _ => None,
    })
}

/// The fault windows of a history.
pub fn faults(records: &[Record]) -> impl Iterator<Item = &FaultRecord> {
    records.iter().filter_map(|r| match r {
        Record::Fault(f) => Some(f),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json_lines() -> Result<(), Box<dyn std::error::Error>> {
        let records = vec![
            Record::Op(Op {
                id: 1,
                process: 0,
                workload: "register".into(),
                invoke: 10,
                complete: Some(20),
                outcome: Outcome::Ok,
                call: Call::Cas {
                    key: "r/0".into(),
                    expect: 3,
                    value: 4,
                    by_revision: Some(7),
                },
                ret: Some(Ret::Cas {
                    succeeded: true,
                    revision: 9,
                }),
                error: None,
            }),
            Record::Watch(WatchRecord {
                watcher: 2,
                at: 30,
                what: WatchEvent::Events {
                    header_revision: 9,
                    events: vec![KvEvent {
                        revision: 9,
                        key: "r/0".into(),
                        kind: KvEventKind::Put,
                        value: Some(4),
                        create_revision: 2,
                        version: 3,
                    }],
                },
            }),
            Record::Fault(FaultRecord {
                name: "kill".into(),
                detail: "kill -9 m1".into(),
                targets: vec!["m1".into()],
                start: 5,
                end: None,
            }),
        ];
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("history.jsonl");
        let mut w = HistoryWriter::new(std::fs::File::create(&path)?);
        for r in &records {
            w.write(r)?;
        }
        w.flush()?;
        assert_eq!(read_history(&path)?, records);
        let text = std::fs::read_to_string(&path)?;
        assert!(text.starts_with(r#"{"type":"op","id":1,"#), "{text}");
        Ok(())
    }
}
