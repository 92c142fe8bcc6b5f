//! One log event as etcd 3.5 writes it: zap's production JSON (`level`,
//! `ts`, `logger`, `caller`, `msg`, then the event's fields) or, for a
//! terminal, zap's console shape (the same parts separated by tabs, the
//! fields as one JSON object).

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing_log::NormalizeEvent;

/// The tracing target whose events etcd tags `"logger":"raft"` (raft-rs's
/// records, bridged by [`crate::raft::log`]).
pub const RAFT_TARGET: &str = "raft";

/// One event, ready to be written in either shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// zap's lowercase level name.
    pub level: &'static str,
    /// The time, zap's ISO 8601 with milliseconds and the local offset.
    pub ts: String,
    /// zap's logger name: `raft` for raft's records, else none.
    pub logger: Option<&'static str>,
    /// `dir/file.rs:line`, as zap's short caller.
    pub caller: Option<String>,
    /// The message.
    pub msg: String,
    /// The event's other fields, in order, names in etcd's kebab-case, values
    /// as JSON.
    pub fields: Vec<(String, serde_json::Value)>,
}

impl Record {
    /// The record of `event`, stamped `now`.
    pub fn of(event: &tracing::Event<'_>, now: chrono::DateTime<chrono::Local>) -> Self {
        // A record of the `log` crate (raft-engine's) carries its caller
        // in fields of its own; the normalized metadata has it in place.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        Record {
            level: level_name(*meta.level()),
            ts: timestamp(now),
            logger: (meta.target() == RAFT_TARGET).then_some(RAFT_TARGET),
            caller: meta.file().map(|file| match meta.line() {
                Some(line) => format!("{}:{line}", short_caller(file)),
                None => short_caller(file).to_string(),
            }),
            msg: visitor.msg,
            fields: visitor.fields,
        }
    }

    /// zap's JSON line (with its newline).
    pub fn json(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push_str("{\"level\":");
        push_json_str(&mut out, self.level);
        out.push_str(",\"ts\":");
        push_json_str(&mut out, &self.ts);
        if let Some(logger) = self.logger {
            out.push_str(",\"logger\":");
            push_json_str(&mut out, logger);
        }
        if let Some(caller) = &self.caller {
            out.push_str(",\"caller\":");
            push_json_str(&mut out, caller);
        }
        out.push_str(",\"msg\":");
        push_json_str(&mut out, &self.msg);
        for (name, value) in &self.fields {
            out.push(',');
            push_json_str(&mut out, name);
            out.push(':');
            out.push_str(&value.to_string());
        }
        out.push_str("}\n");
        out
    }

    /// zap's console line (with its newline): tab-separated, the fields as
    /// one JSON object, for a human at a terminal.
    pub fn console(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push_str(&self.ts);
        out.push('\t');
        out.push_str(self.level);
        if let Some(logger) = self.logger {
            out.push('\t');
            out.push_str(logger);
        }
        if let Some(caller) = &self.caller {
            out.push('\t');
            out.push_str(caller);
        }
        out.push('\t');
        out.push_str(&self.msg);
        if !self.fields.is_empty() {
            out.push_str("\t{");
            for (i, (name, value)) in self.fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_json_str(&mut out, name);
                out.push_str(": ");
                out.push_str(&value.to_string());
            }
            out.push('}');
        }
        out.push('\n');
        out
    }
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

/// zap's level names; tracing's TRACE has no zap level and is zap's debug.
fn level_name(level: tracing::Level) -> &'static str {
    match level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG | tracing::Level::TRACE => "debug",
    }
}

/// zap's `ISO8601TimeEncoder` (Go layout `2006-01-02T15:04:05.000Z0700`):
/// local time, milliseconds, `Z` in UTC, else the offset as `+0200`.
pub fn timestamp(now: chrono::DateTime<chrono::Local>) -> String {
    let base = now.format("%Y-%m-%dT%H:%M:%S%.3f");
    if now.offset().local_minus_utc() == 0 {
        format!("{base}Z")
    } else {
        format!("{base}{}", now.format("%z"))
    }
}

/// zap's `ShortCallerEncoder` keeps the file's package directory and name
/// (`embed/etcd.go`): here the path below the crate's `src/`
/// (`raft/log.rs`, `embed.rs`), or the last two components elsewhere.
fn short_caller(file: &str) -> &str {
    if let Some(i) = file.rfind("/src/") {
        return &file[i + "/src/".len()..];
    }
    if let Some(rest) = file.strip_prefix("src/") {
        return rest;
    }
    let mut slashes = file.rmatch_indices('/').map(|(i, _)| i);
    match (slashes.next(), slashes.next()) {
        (Some(_), Some(i)) => &file[i + 1..],
        _ => file,
    }
}

/// Collects an event's message and fields.
#[derive(Debug, Default)]
struct Fields {
    /// The `message` field.
    msg: String,
    /// Every other field.
    fields: Vec<(String, serde_json::Value)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: serde_json::Value) {
        // The `log` crate's caller and target, already in the metadata.
        if field.name().starts_with("log.") {
            return;
        }
        // etcd's field names are kebab-case (`local-member-id`); Rust
        // identifiers cannot be, so `local_member_id` is written as etcd's.
        self.fields.push((field.name().replace('_', "-"), value));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            self.push(field, value.into());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.msg = text;
        } else {
            self.push(field, debug_value(text));
        }
    }
}

/// A `?field`'s value: a list whose Debug text is JSON (`["a", "b"]`, as
/// Debug prints a `Vec<String>`) becomes a JSON array, as zap writes
/// etcd's URL lists; a quoted string loses its quotes; anything else is
/// the text.
fn debug_value(text: String) -> serde_json::Value {
    if text.starts_with('[') || text.starts_with('"') {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
            if value.is_array() || value.is_string() {
                return value;
            }
        }
    }
    text.into()
}

/// Go's `time.Duration.String()`, as etcd's log lines print durations
/// (`100ms`, `1s`, `1m30s`, `1.206811ms`, `0s`).
pub fn go_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        let (unit, per) = match nanos {
            n if n < 1_000 => ("ns", 1),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", decimal(nanos, per));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = nanos % 60_000_000_000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", decimal(seconds, 1_000_000_000)));
    out
}

/// `n / per` in decimal, without trailing zeros (`per` a power of ten).
fn decimal(n: u128, per: u128) -> String {
    let (whole, frac) = (n / per, n % per);
    if frac == 0 {
        return whole.to_string();
    }
    let width = per.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_prints_them() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(go_duration(ms(0)), "0s");
        assert_eq!(go_duration(ms(100)), "100ms");
        assert_eq!(go_duration(ms(1000)), "1s");
        assert_eq!(go_duration(ms(7000)), "7s");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(90_000)), "1m30s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
        assert_eq!(go_duration(ms(300_000)), "5m0s");
        assert_eq!(
            go_duration(std::time::Duration::from_nanos(1_206_811)),
            "1.206811ms"
        );
        assert_eq!(go_duration(std::time::Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(go_duration(std::time::Duration::from_nanos(42)), "42ns");
    }

    #[test]
    fn timestamps_are_zaps_iso8601() {
        use chrono::TimeZone;
        let utc = chrono::FixedOffset::east_opt(0).unwrap();
        let t = utc
            .with_ymd_and_hms(2021, 9, 21, 10, 28, 24)
            .unwrap()
            .with_timezone(&chrono::Local);
        let ts = timestamp(t);
        // The local zone decides the digits; the shape is fixed.
        assert_eq!(ts.len(), if ts.ends_with('Z') { 24 } else { 28 }, "{ts}");
        assert_eq!(&ts[10..11], "T");
        assert_eq!(&ts[19..20], ".");
    }

    #[test]
    fn callers_are_short() {
        assert_eq!(short_caller("server/src/embed.rs"), "embed.rs");
        assert_eq!(short_caller("server/src/raft/log.rs"), "raft/log.rs");
        assert_eq!(short_caller("src/main.rs"), "main.rs");
        assert_eq!(short_caller("a/b/c.rs"), "b/c.rs");
        assert_eq!(short_caller("c.rs"), "c.rs");
    }

    #[test]
    fn debug_values_keep_lists_as_lists() {
        let urls = vec!["http://a:1".to_string(), "http://b:2".to_string()];
        assert_eq!(
            debug_value(format!("{urls:?}")),
            serde_json::json!(["http://a:1", "http://b:2"])
        );
        assert_eq!(debug_value(format!("{:?}", "x\"y")), "x\"y");
        assert_eq!(
            debug_value("{Name:default ClientURLs:[http://a:1]}".into()),
            "{Name:default ClientURLs:[http://a:1]}"
        );
        assert_eq!(debug_value("[not json".into()), "[not json");
    }
}
