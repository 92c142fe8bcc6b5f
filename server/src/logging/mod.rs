//! etcd 3.5's logging, for the `cairn` binary: `--logger zap` (the only
//! logger 3.5 has), `--log-outputs` (stderr, stdout, files,
//! systemd/journal; several at once) and `--log-level`, writing zap's JSON
//! lines (see [`format`]) so that tooling written for etcd's logs reads
//! Cairn's. A terminal gets zap's console shape instead: JSON is for
//! programs, and a person at a terminal is not one.

pub mod format;
pub mod journal;
pub mod lifecycle;

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::locks::lock;

pub use format::{go_duration, Record};

/// Why logging could not be set up (etcd refuses to start then, too).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--logger capnslog`, which etcd 3.5 removed.
    #[error("--logger=capnslog is removed in v3.5")]
    Capnslog,
    /// `--logger` names no logger.
    #[error("unknown logger option {0:?}")]
    UnknownLogger(String),
    /// `--log-level` names no level.
    #[error("invalid --log-level {0:?}: expected debug, info, warn, error, panic or fatal")]
    Level(String),
    /// `default` listed with other outputs (etcd's rule and words).
    #[error("multi logoutput for \"default\" is not supported yet")]
    MultiDefault,
    /// `systemd/journal` listed with other outputs (etcd refuses it too).
    #[error("--log-outputs systemd/journal must be the only output (got {0:?})")]
    JournalNotAlone(Vec<String>),
    /// journald's socket cannot be reached.
    #[error("can't find journal ({0})")]
    Journal(String),
    /// A log file cannot be opened.
    #[error("cannot open log output {path:?}: {source}")]
    File {
        /// The path given.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A global subscriber was set already.
    #[error("logging is already set up: {0}")]
    Init(String),
}

/// `--log-outputs`' special names.
const DEFAULT: &str = "default";
const STDERR: &str = "stderr";
const STDOUT: &str = "stdout";
const JOURNAL: &str = "systemd/journal";

/// Checks `--logger`: `zap` only, with etcd 3.5's errors for the others.
pub fn check_logger(logger: &str) -> Result<(), Error> {
    match logger {
        "zap" => Ok(()),
        "capnslog" => Err(Error::Capnslog),
        other => Err(Error::UnknownLogger(other.to_string())),
    }
}

/// `--log-level` as a filter. zap's panic and fatal levels have no events
/// of their own here: they keep errors only.
pub fn level_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, Error> {
    let level = match level {
        "debug" | "info" | "warn" | "error" => level,
        "panic" | "fatal" => "error",
        other => return Err(Error::Level(other.to_string())),
    };
    // The HTTP/2 stack's own debug events can carry request details
    // (headers, tokens): they stay out of the log even at debug.
    let filter = format!("{level},h2=warn,hyper=warn,hyper_util=warn,tower=warn,tonic=warn");
    Ok(tracing_subscriber::EnvFilter::new(filter))
}

/// Where a line goes.
#[derive(Debug)]
enum Sink {
    /// The process's standard error.
    Stderr,
    /// The process's standard output.
    Stdout,
    /// A file, appended to.
    File(Mutex<std::fs::File>),
    /// journald.
    Journal(journal::Journal),
    /// A buffer (tests).
    Memory(Arc<Mutex<Vec<u8>>>),
}

/// One `--log-outputs` destination.
#[derive(Debug)]
pub struct Output {
    /// Where its lines go.
    sink: Sink,
    /// Console lines instead of JSON (the destination is a terminal).
    human: bool,
}

impl Output {
    /// An output into `buffer`, in JSON (for tests).
    pub fn memory(buffer: Arc<Mutex<Vec<u8>>>) -> Self {
        Output {
            sink: Sink::Memory(buffer),
            human: false,
        }
    }

    /// Writes `record` (already rendered as `json` or `console`, whichever
    /// this output takes). One write per line, so that lines from several
    /// threads do not interleave.
    fn write(&self, record: &Record, json: &str, console: &str) {
        let line = if self.human { console } else { json };
        // A log line that cannot be written has nowhere to be reported.
        let _ = match &self.sink {
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).and_then(|()| out.flush())
            }
            Sink::File(file) => lock(file).write_all(line.as_bytes()),
            Sink::Journal(journal) => {
                journal.send(record, json);
                Ok(())
            }
            Sink::Memory(buffer) => {
                lock(buffer).extend_from_slice(line.as_bytes());
                Ok(())
            }
        };
    }
}

/// Opens `--log-outputs` as etcd 3.5 reads it: a set of names (repeats
/// count once); `default` (= stderr) only alone; `systemd/journal` only
/// alone; anything else is a file, created if missing and appended to.
pub fn open_outputs(names: &[String]) -> Result<Vec<Output>, Error> {
    let mut names: Vec<String> = names
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        names.push(DEFAULT.to_string());
    }
    if names.len() > 1 && names.iter().any(|n| n == DEFAULT) {
        return Err(Error::MultiDefault);
    }
    if names.len() > 1 && names.iter().any(|n| n == JOURNAL) {
        return Err(Error::JournalNotAlone(names));
    }
    names
        .iter()
        .map(|name| {
            use std::io::IsTerminal as _;
            Ok(match name.as_str() {
                DEFAULT | STDERR => Output {
                    sink: Sink::Stderr,
                    human: std::io::stderr().is_terminal(),
                },
                STDOUT => Output {
                    sink: Sink::Stdout,
                    human: std::io::stdout().is_terminal(),
                },
                JOURNAL => Output {
                    sink: Sink::Journal(journal::Journal::connect()?),
                    human: false,
                },
                path => {
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|source| Error::File {
                            path: path.to_string(),
                            source,
                        })?;
                    Output {
                        sink: Sink::File(Mutex::new(file)),
                        human: false,
                    }
                }
            })
        })
        .collect()
}

/// The layer that writes every event to each output.
#[derive(Debug)]
pub struct ZapLayer {
    /// The destinations.
    outputs: Vec<Output>,
}

impl ZapLayer {
    /// A layer writing to `outputs`.
    pub fn new(outputs: Vec<Output>) -> Self {
        ZapLayer { outputs }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ZapLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let record = Record::of(event, chrono::Local::now());
        let json = record.json();
        let console = if self.outputs.iter().any(|o| o.human) {
            record.console()
        } else {
            String::new()
        };
        for output in &self.outputs {
            output.write(&record, &json, &console);
        }
    }
}

/// Sets up the process's logging from the three flags.
pub fn init(logger: &str, outputs: &[String], level: &str) -> Result<(), Error> {
    check_logger(logger)?;
    let filter = level_filter(level)?;
    let outputs = open_outputs(outputs)?;
    tracing_subscriber::registry()
        .with(filter)
        .with(ZapLayer::new(outputs))
        .try_init()
        .map_err(|e| Error::Init(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Runs `f` with a zap layer into a buffer; returns the lines.
    fn capture(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(level_filter("debug").unwrap())
            .with(ZapLayer::new(vec![Output::memory(Arc::clone(&buffer))]));
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn a_line_is_zaps_json_with_the_fields_at_the_top() {
        let lines = capture(|| {
            let urls = vec!["http://127.0.0.1:2379".to_string()];
            tracing::info!(
                local_member_id = "8e9e05c52164694d",
                "quota-size-bytes" = 2147483648u64,
                pre_vote = true,
                listen_client_urls = ?urls,
                took = %go_duration(std::time::Duration::from_millis(7)),
                "starting an etcd server"
            );
        });
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // serde_json sorts keys; the order on the wire is checked below.
        assert!(keys.contains(&"ts") && keys.contains(&"caller"), "{line}");
        assert_eq!(line["level"], "info");
        assert_eq!(line["msg"], "starting an etcd server");
        assert!(
            line["caller"]
                .as_str()
                .unwrap()
                .starts_with("logging/mod.rs:"),
            "{line}"
        );
        assert_eq!(line["local-member-id"], "8e9e05c52164694d");
        assert_eq!(line["quota-size-bytes"], 2147483648u64);
        assert_eq!(line["pre-vote"], true);
        assert_eq!(
            line["listen-client-urls"],
            serde_json::json!(["http://127.0.0.1:2379"])
        );
        assert_eq!(line["took"], "7ms");
        assert!(line.get("logger").is_none());
    }

    #[test]
    fn keys_come_in_zaps_order_and_raft_is_a_named_logger() {
        let record = Record {
            level: "info",
            ts: "2021-09-21T10:28:24.123+0200".into(),
            logger: Some("raft"),
            caller: Some("raft/log.rs:43".into()),
            msg: "8e9e05c52164694d became leader at term 2".into(),
            fields: vec![("address".into(), "127.0.0.1:2379".into())],
        };
        assert_eq!(
            record.json(),
            "{\"level\":\"info\",\"ts\":\"2021-09-21T10:28:24.123+0200\",\"logger\":\"raft\",\
             \"caller\":\"raft/log.rs:43\",\"msg\":\"8e9e05c52164694d became leader at term 2\",\
             \"address\":\"127.0.0.1:2379\"}\n"
        );
        assert_eq!(
            record.console(),
            "2021-09-21T10:28:24.123+0200\tinfo\traft\traft/log.rs:43\t\
             8e9e05c52164694d became leader at term 2\t{\"address\": \"127.0.0.1:2379\"}\n"
        );
        let lines = capture(|| tracing::warn!(target: "raft", "x"));
        assert_eq!(lines[0]["logger"], "raft");
        assert_eq!(lines[0]["level"], "warn");
    }

    #[test]
    fn a_record_of_the_log_crate_has_its_caller_and_no_fields_of_its_own() {
        // raft-engine logs through the `log` crate.
        let lines = capture(|| {
            tracing_log::format_trace(
                &log::Record::builder()
                    .level(log::Level::Warn)
                    .target("raft_engine::purge")
                    .file(Some("/registry/raft-engine-0.4.2/src/purge.rs"))
                    .line(Some(101))
                    .args(format_args!("Unable to purge expired files: locked"))
                    .build(),
            )
            .unwrap();
        });
        let line = &lines[0];
        assert_eq!(line["caller"], "purge.rs:101");
        assert_eq!(line["level"], "warn");
        assert_eq!(line["msg"], "Unable to purge expired files: locked");
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["caller", "level", "msg", "ts"], "(sorted)");
    }

    #[test]
    fn levels_filter_and_name_as_zap_does() {
        let lines = capture(|| {
            tracing::trace!("t");
            tracing::debug!("d");
            tracing::error!(error = %std::io::Error::other("boom"), "e");
        });
        let levels: Vec<&str> = lines.iter().map(|l| l["level"].as_str().unwrap()).collect();
        // --log-level debug is zap's lowest: tracing's TRACE stays out.
        assert_eq!(levels, ["debug", "error"]);
        assert_eq!(lines[1]["error"], "boom");
        assert!(level_filter("verbose").is_err());
        assert!(level_filter("fatal").is_ok());
    }

    #[test]
    fn loggers_and_outputs_are_checked_as_etcd_checks_them() {
        assert!(check_logger("zap").is_ok());
        assert_eq!(
            check_logger("capnslog").unwrap_err().to_string(),
            "--logger=capnslog is removed in v3.5"
        );
        assert_eq!(
            check_logger("foo").unwrap_err().to_string(),
            "unknown logger option \"foo\""
        );
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            open_outputs(&names(&["default", "stdout"])),
            Err(Error::MultiDefault)
        ));
        assert!(matches!(
            open_outputs(&names(&["stderr", "systemd/journal"])),
            Err(Error::JournalNotAlone(_))
        ));
        assert_eq!(
            open_outputs(&names(&["stderr", "stderr"])).unwrap().len(),
            1
        );
        assert_eq!(open_outputs(&[]).unwrap().len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.log").to_string_lossy().into_owned();
        assert_eq!(open_outputs(&names(&["stdout", &file])).unwrap().len(), 2);
        assert!(dir.path().join("a.log").exists());
        let missing = dir.path().join("no/such/dir.log");
        assert!(matches!(
            open_outputs(&[missing.to_string_lossy().into_owned()]),
            Err(Error::File { .. })
        ));
    }
}
