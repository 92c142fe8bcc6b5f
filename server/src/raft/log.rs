//! raft-rs logs through `slog`; Cairn logs through `tracing`. This bridge
//! forwards every raft record to `tracing` (target `raft`), so one log stream
//! and one `--log-level` cover everything.

use std::fmt::Write as _;

use slog::{Drain, Key, Level, OwnedKVList, Record, Serializer, KV};

/// A `slog::Logger` whose records become `tracing` events.
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}

/// The drain behind [`logger`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingDrain;

/// Collects a record's key-values: `raft_id` apart (etcd's raft prefixes
/// every message with the member's id in hex), the rest as ` key=value`.
#[derive(Default)]
struct Pairs {
    /// The `raft_id` value, if the record has one.
    raft_id: Option<u64>,
    /// The other pairs, as ` key=value`.
    rest: Vec<(String, String)>,
}

impl Serializer for Pairs {
    fn emit_u64(&mut self, key: Key, val: u64) -> slog::Result {
        if key == "raft_id" {
            self.raft_id = Some(val);
            return Ok(());
        }
        self.rest.push((key.to_string(), val.to_string()));
        Ok(())
    }

    fn emit_arguments(&mut self, key: Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        if !CARRY_DATA.contains(&key) {
            self.rest.push((key.to_string(), val.to_string()));
        }
        Ok(())
    }
}

/// raft-rs's pairs that print whole messages or entries (at debug and
/// trace): their data are clients' keys and values, which never go to
/// the log.
const CARRY_DATA: &[&str] = &["msg", "m", "ents", "entries", "entry", "snapshot", "snap"];

/// etcd's raft wording: `<id in hex> <message>`, then the pairs the
/// message does not already show (raft-rs writes `became leader at term
/// {term}` and also passes `term`; etcd's line is `... at term 2`).
fn etcd_message(message: &str, pairs: Pairs) -> String {
    let mut out = match pairs.raft_id {
        Some(id) => format!("{id:x} {message}"),
        None => message.to_string(),
    };
    let words: Vec<&str> = message
        .split_whitespace()
        .map(|w| w.trim_end_matches(['.', ',', ':', ';']))
        .collect();
    for (key, value) in pairs.rest {
        if !words.contains(&value.as_str()) {
            // Writing to a String cannot fail.
            let _ = write!(out, " {key}={value}");
        }
    }
    out
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut pairs = Pairs::default();
        // The serializer above never fails.
        let _ = record.kv().serialize(record, &mut pairs);
        let _ = values.serialize(record, &mut pairs);
        let message = etcd_message(&record.msg().to_string(), pairs);
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{message}"),
            Level::Warning => tracing::warn!(target: "raft", "{message}"),
            Level::Info => tracing::info!(target: "raft", "{message}"),
            Level::Debug => tracing::debug!(target: "raft", "{message}"),
            Level::Trace => tracing::trace!(target: "raft", "{message}"),
        }
        Ok(())
    }
}

/// etcd's `raft.node` line when the leader this member knows changes
/// (etcd's node.go logs it from raft's soft state; raft-rs does not).
pub fn leader_changed(id: u64, from: u64, to: u64, term: u64) {
    match (from, to) {
        (_, 0) => tracing::info!(
            target: "raft",
            "raft.node: {id:x} lost leader {from:x} at term {term}"
        ),
        (0, _) => tracing::info!(
            target: "raft",
            "raft.node: {id:x} elected leader {to:x} at term {term}"
        ),
        _ => tracing::info!(
            target: "raft",
            "raft.node: {id:x} changed leader from {from:x} to {to:x} at term {term}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A tracing writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn raft_records_become_tracing_events_with_their_levels_and_pairs() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let log = logger().new(slog::o!("raft_id" => 255u64));
            slog::info!(log, "became leader at term {term}", term = 3);
            slog::warn!(log, "dropped a message"; "to" => 2);
            slog::debug!(log, "sent heartbeat");
            slog::debug!(log, "Sending from 255 to 2"; "msg" => ?"secret-value", "ents" => ?["secret"]);
            slog::trace!(log, "below the level");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[3].ends_with("ff Sending from 255 to 2"), "{out}");
        assert!(!out.contains("secret"), "{out}");
        assert!(
            lines[0].contains("INFO") && lines[0].contains("raft:"),
            "{out}"
        );
        assert!(lines[0].ends_with("ff became leader at term 3"), "{out}");
        assert!(
            lines[1].contains("WARN") && lines[1].ends_with("ff dropped a message to=2"),
            "{out}"
        );
        assert!(
            lines[2].contains("DEBUG") && lines[2].ends_with("ff sent heartbeat"),
            "{out}"
        );
    }
}
