//! The watch checker: watchers saw every revision of their prefix, in order,
//! once, whole, and progress notifications never ran ahead of events
//! (etcd's watch guarantees: ordered, unique, reliable, atomic, resumable,
//! bookmarkable).
//!
//! The records of each watcher are read in order; a
//! [`WatchEvent::Created`] starts its stream or resumes it. The *reference*
//! is every event any watcher received, by revision and key, the
//! [`REFERENCE_WATCHER`]'s first (it reads the whole history after the
//! workload). Two watchers that received one revision must agree on its
//! events under both their prefixes (`inconsistent-revision`). Then, per
//! watcher:
//!
//! * `reordered`: an event of a lower revision than one received before;
//! * `duplicate-event`: one (revision, key) received twice (resumes included);
//! * `split-revision`: the events of one revision in two responses;
//! * `gap`: a reference event under the watcher's prefix, in the revisions it
//!   was due — from its first start revision to the last revision it saw
//!   (event or progress notification) — that it never received. Revisions
//!   below a [`WatchEvent::Compacted`] revision, from the start refused, are
//!   excused (the compacted revision itself is served, whole); so a resume
//!   after a compaction may skip them, any other resume may not;
//! * `early-progress`: an event of revision <= R received after a progress
//!   notification at R;
//! * `watch-start`: an event below the start revision of its (re)created
//!   stream.
//!
//! Finally (`lost-acknowledged-write`), every acknowledged write that makes an
//! event (a register write or successful CAS, a created set key, a lease put)
//! must be in the reference, at its revision, with its key (and value, for
//! the register), when its revision and key are in the range the reference
//! watcher covers. Without a reference watcher this is not checked.
//!
//! Pure watch anomalies name no ops; their window is the time of the watch
//! records involved.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::register::op_window;
use super::{Anomaly, CheckResult, Validity};
use crate::history::{
    self, Call, KvEvent, KvEventKind, Nanos, Op, Outcome, Record, Ret, WatchEvent, WatchRecord,
    REFERENCE_WATCHER,
};

/// The checker's name.
pub const CHECKER: &str = "watch";

/// How many items (events, keys) an anomaly lists.
const LISTED: usize = 10;

/// Events by revision, then key.
type Revisions<'a, T> = BTreeMap<i64, BTreeMap<&'a str, T>>;

/// What one watcher received, and what was wrong with it on its own.
struct Stream<'a> {
    watcher: u32,
    /// The prefix of its first [`WatchEvent::Created`].
    prefix: Option<&'a str>,
    /// The first delivery of every (revision, key), with its time.
    events: Revisions<'a, (&'a KvEvent, Nanos)>,
    /// The first revision it was due (its first start revision; for a start
    /// of 0, "from now", its first event or progress notification).
    first_start: Option<i64>,
    /// The highest revision it saw (event or progress notification).
    last_seen: Option<i64>,
    /// Revisions it was excused from by a compaction (inclusive ranges).
    excused: Vec<(i64, i64)>,
    /// After each record: `last_seen` then, and the record's time.
    timeline: Vec<(Option<i64>, Nanos)>,
    n_events: usize,
    anomalies: Vec<Anomaly>,
}

impl<'a> Stream<'a> {
    fn has(&self, revision: i64, key: &str) -> bool {
        self.events
            .get(&revision)
            .is_some_and(|keys| keys.contains_key(key))
    }

    /// Whether `revision` is in the range the watcher was due.
    fn covers(&self, revision: i64) -> bool {
        match (self.first_start, self.last_seen) {
            (Some(lo), Some(hi)) => {
                lo <= revision
                    && revision <= hi
                    && !self
                        .excused
                        .iter()
                        .any(|&(a, b)| a <= revision && revision <= b)
            }
            _ => false,
        }
    }

    fn name(&self) -> String {
        let who = if self.watcher == REFERENCE_WATCHER {
            "reference watcher".to_owned()
        } else {
            format!("watcher {}", self.watcher)
        };
        match self.prefix {
            Some(prefix) => format!("{who} (prefix {prefix:?})"),
            None => who,
        }
    }

    /// Reads one watcher's records and checks what needs nothing else.
    fn analyze(watcher: u32, records: &[&'a WatchRecord]) -> Self {
        let mut stream = Stream {
            watcher,
            prefix: None,
            events: BTreeMap::new(),
            first_start: None,
            last_seen: None,
            excused: Vec::new(),
            timeline: Vec::with_capacity(records.len()),
            n_events: 0,
            anomalies: Vec::new(),
        };
        // The start revision of the current stream, if given (> 0).
        let mut start: Option<i64> = None;
        let mut last_event: Option<i64> = None;
        let mut progress: Option<(i64, Nanos)> = None;
        // The response in which each revision was first received.
        let mut response_of: HashMap<i64, usize> = HashMap::new();
        let mut response = 0usize;
        let mut prev_at: Option<Nanos> = None;
        for record in records {
            let at = record.at;
            match &record.what {
                WatchEvent::Created {
                    prefix,
                    start_revision,
                    ..
                } => {
                    stream.prefix.get_or_insert(prefix.as_str());
                    start = (*start_revision > 0).then_some(*start_revision);
                    if stream.first_start.is_none() {
                        stream.first_start = start;
                    }
                }
                WatchEvent::Events {
                    header_revision,
                    events,
                } => {
                    response += 1;
                    let mut issues: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
                    let mut issue = |kind, item| issues.entry(kind).or_default().push(item);
                    for event in events {
                        stream.n_events += 1;
                        let revision = event.revision;
                        let key = event.key.as_str();
                        if stream.has(revision, key) {
                            issue("duplicate-event", format!("{key}@{revision}"));
                            continue;
                        }
                        if let Some(last) = last_event.filter(|&last| revision < last) {
                            issue(
                                "reordered",
                                format!("{key}@{revision} after revision {last}"),
                            );
                        } else if response_of
                            .get(&revision)
                            .is_some_and(|&first| first != response)
                        {
                            issue("split-revision", format!("{key}@{revision}"));
                        }
                        if let Some((promised, _)) = progress.filter(|&(p, _)| revision <= p) {
                            issue(
                                "early-progress",
                                format!("{key}@{revision} after progress at {promised}"),
                            );
                        }
                        if let Some(start) = start.filter(|&s| revision < s) {
                            issue(
                                "watch-start",
                                format!("{key}@{revision} below start revision {start}"),
                            );
                        }
                        stream
                            .events
                            .entry(revision)
                            .or_default()
                            .insert(key, (event, at));
                        response_of.entry(revision).or_insert(response);
                        last_event = last_event.max(Some(revision));
                        if stream.first_start.is_none() {
                            stream.first_start = Some(revision);
                        }
                    }
                    for (kind, items) in issues {
                        let what = match kind {
                            "duplicate-event" => "events it had already received",
                            "reordered" => "events of a revision lower than one it had received",
                            "split-revision" => {
                                "more events of a revision it had received in an earlier response"
                            }
                            "early-progress" => {
                                "events at or below a progress notification it had received"
                            }
                            _ => "events below the start revision of its watch",
                        };
                        let from = match kind {
                            "early-progress" => progress.map_or(at, |(_, at)| at),
                            _ => prev_at.unwrap_or(at),
                        };
                        stream.anomalies.push(Anomaly {
                            kind: kind.to_owned(),
                            description: format!(
                                "{} received, in the response at {at} ns (header revision \
                                 {header_revision}), {what}: {}",
                                stream.name(),
                                list(&items)
                            ),
                            ops: Vec::new(),
                            window: Some((from.min(at), at)),
                        });
                    }
                }
                WatchEvent::Progress { header_revision } => {
                    if progress.is_none_or(|(p, _)| *header_revision > p) {
                        progress = Some((*header_revision, at));
                    }
                    if stream.first_start.is_none() {
                        stream.first_start = Some(header_revision.saturating_add(1));
                    }
                }
                WatchEvent::Compacted { compact_revision } => {
                    // Only what lies below the compacted revision is gone: a
                    // watch at it is served, with that revision whole.
                    stream
                        .excused
                        .push((start.unwrap_or(i64::MIN), compact_revision - 1));
                }
                WatchEvent::Broken { .. } | WatchEvent::Stopped => {}
            }
            stream.last_seen = last_event.max(progress.map(|(p, _)| p));
            stream.timeline.push((stream.last_seen, at));
            prev_at = Some(at);
        }
        stream
    }

    /// The events of the reference this watcher was due and did not receive,
    /// one anomaly per place in its stream where they were skipped.
    fn gaps(&self, reference: &Revisions<'a, (&'a KvEvent, u32)>) -> Vec<Anomaly> {
        let (Some(prefix), Some(lo), Some(hi)) = (self.prefix, self.first_start, self.last_seen)
        else {
            return Vec::new();
        };
        if lo > hi {
            return Vec::new();
        }
        // By the index of the record at which the watcher went past them.
        let mut missing: BTreeMap<usize, Vec<(i64, &str, u32)>> = BTreeMap::new();
        for (&revision, keys) in reference.range(lo..=hi) {
            if !self.covers(revision) {
                continue;
            }
            for (&key, &(_, source)) in keys {
                if key.starts_with(prefix) && !self.has(revision, key) {
                    let index = self
                        .timeline
                        .partition_point(|&(seen, _)| seen < Some(revision));
                    missing
                        .entry(index)
                        .or_default()
                        .push((revision, key, source));
                }
            }
        }
        let at = |index: usize| self.timeline.get(index).map(|&(_, at)| at);
        missing
            .into_iter()
            .map(|(index, events)| {
                let first = events.first().map_or(0, |e| e.0);
                let last = events.last().map_or(0, |e| e.0);
                let before = index
                    .checked_sub(1)
                    .and_then(|i| self.timeline.get(i))
                    .and_then(|&(seen, _)| seen);
                let after = self.timeline.get(index).and_then(|&(seen, _)| seen);
                let items: Vec<String> = events
                    .iter()
                    .map(|(revision, key, source)| {
                        format!("{key}@{revision} (seen by {})", watcher_name(*source))
                    })
                    .collect();
                let end = at(index)
                    .or_else(|| self.timeline.last().map(|&(_, at)| at))
                    .unwrap_or(0);
                let start = index.checked_sub(1).and_then(at).unwrap_or(end);
                Anomaly {
                    kind: "gap".to_owned(),
                    description: format!(
                        "{} never received {} events of revisions {first}..={last} it was due \
                         (between revision {} and revision {} of its stream): {}",
                        self.name(),
                        events.len(),
                        before.map_or_else(|| "none".to_owned(), |r| r.to_string()),
                        after.map_or_else(|| "none".to_owned(), |r| r.to_string()),
                        list(&items)
                    ),
                    ops: Vec::new(),
                    window: Some((start.min(end), end)),
                }
            })
            .collect()
    }
}

fn watcher_name(watcher: u32) -> String {
    if watcher == REFERENCE_WATCHER {
        "the reference watcher".to_owned()
    } else {
        format!("watcher {watcher}")
    }
}

fn list(items: &[String]) -> String {
    let mut out = items
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > LISTED {
        let _ = write!(out, ", and {} more", items.len() - LISTED);
    }
    out
}

fn fmt_event(event: &KvEvent) -> String {
    match event.kind {
        KvEventKind::Put => format!(
            "put {}={} (created {}, version {})",
            event.key,
            event
                .value
                .map_or_else(|| "?".to_owned(), |v| v.to_string()),
            event.create_revision,
            event.version
        ),
        KvEventKind::Delete => format!("delete {}", event.key),
    }
}

/// The key, revision and (for the register) value of an acknowledged write
/// that must have made a put event.
fn acknowledged_write(op: &Op) -> Option<(&str, i64, Option<u64>)> {
    if op.outcome != Outcome::Ok {
        return None;
    }
    match (&op.call, op.ret.as_ref()?) {
        (Call::Write { key, value }, Ret::Write { revision }) => {
            Some((key, *revision, Some(*value)))
        }
        (
            Call::Cas { key, value, .. },
            Ret::Cas {
                succeeded: true,
                revision,
            },
        ) => Some((key, *revision, Some(*value))),
        (
            Call::Add { key },
            Ret::Add {
                created: true,
                revision,
            },
        ) => Some((key, *revision, None)),
        (Call::LeasePut { key, .. }, Ret::LeasePut { revision }) => Some((key, *revision, None)),
        _ => None,
    }
}

/// `None` when the history has no watch record.
pub fn check(records: &[Record]) -> Option<CheckResult> {
    let mut by_watcher: BTreeMap<u32, Vec<&WatchRecord>> = BTreeMap::new();
    for record in records {
        if let Record::Watch(watch) = record {
            by_watcher.entry(watch.watcher).or_default().push(watch);
        }
    }
    if by_watcher.is_empty() {
        return None;
    }
    // Ascending watcher ids: the reference watcher (u32::MAX) is last.
    let streams: Vec<Stream<'_>> = by_watcher
        .iter()
        .map(|(&watcher, records)| Stream::analyze(watcher, records))
        .collect();

    // The reference: the reference watcher's events first, then the others'.
    let mut reference: Revisions<'_, (&KvEvent, u32)> = BTreeMap::new();
    for stream in streams.iter().rev() {
        for (&revision, keys) in &stream.events {
            let merged = reference.entry(revision).or_default();
            for (&key, &(event, _)) in keys {
                merged.entry(key).or_insert((event, stream.watcher));
            }
        }
    }

    let mut anomalies = inconsistent_revisions(&streams, &reference);
    for stream in &streams {
        anomalies.extend(stream.anomalies.iter().cloned());
        anomalies.extend(stream.gaps(&reference));
    }

    let reference_stream = streams.iter().find(|s| s.watcher == REFERENCE_WATCHER);
    let mut acknowledged = String::new();
    match reference_stream {
        Some(stream) => {
            let (mut checked, mut skipped) = (0usize, 0usize);
            let prefix = stream.prefix.unwrap_or("");
            for op in history::ops(records) {
                let Some((key, revision, value)) = acknowledged_write(op) else {
                    continue;
                };
                if !stream.covers(revision) || !key.starts_with(prefix) {
                    skipped += 1;
                    continue;
                }
                checked += 1;
                let found = reference.get(&revision).and_then(|keys| keys.get(key));
                let fine = found.is_some_and(|(event, _)| {
                    event.kind == KvEventKind::Put && value.is_none_or(|v| event.value == Some(v))
                });
                if fine {
                    continue;
                }
                let what = match (found, reference.get(&revision)) {
                    (Some((event, source)), _) => {
                        format!("{} saw {} there", watcher_name(*source), fmt_event(event))
                    }
                    (None, Some(keys)) => format!(
                        "the events of that revision are {}",
                        list(&keys.values().map(|(e, _)| fmt_event(e)).collect::<Vec<_>>())
                    ),
                    (None, None) => "no watcher saw any event of that revision".to_owned(),
                };
                let wrote = match value {
                    Some(value) => format!("{key}={value}"),
                    None => key.to_owned(),
                };
                anomalies.push(Anomaly {
                    kind: "lost-acknowledged-write".to_owned(),
                    description: format!(
                        "op {} ({}) wrote {wrote}, acknowledged at revision {revision}, which the \
                         reference watcher covers, but {what}",
                        op.id, op.workload
                    ),
                    ops: vec![op.id],
                    window: op_window([op]),
                });
            }
            let covered = match (stream.first_start, stream.last_seen) {
                (Some(lo), Some(hi)) if lo <= hi => format!("revisions {lo}..={hi}"),
                _ => "no revision".to_owned(),
            };
            let _ = write!(
                acknowledged,
                "reference watcher covers {covered}: {checked} acknowledged writes checked \
                 against it ({skipped} outside it)"
            );
        }
        None => acknowledged.push_str("no reference watcher: acknowledged writes not checked"),
    }

    let n_events: usize = streams.iter().map(|s| s.n_events).sum();
    let mut summary = format!(
        "{} watchers, {n_events} events received over {} revisions; {acknowledged}",
        streams.len(),
        reference.len()
    );
    let unknown_prefix = streams.iter().filter(|s| s.prefix.is_none()).count();
    if unknown_prefix > 0 {
        let _ = write!(
            summary,
            "; {unknown_prefix} watchers never created: not checked for gaps"
        );
    }
    let validity = if anomalies.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    Some(super::result(CHECKER, validity, summary, anomalies))
}

/// The events of `events` whose key is under both prefixes.
fn restrict<'a>(
    events: &BTreeMap<&'a str, (&'a KvEvent, Nanos)>,
    pa: &str,
    pb: &str,
) -> BTreeMap<&'a str, &'a KvEvent> {
    events
        .iter()
        .filter(|(key, _)| key.starts_with(pa) && key.starts_with(pb))
        .map(|(&key, &(event, _))| (key, event))
        .collect()
}

/// Two watchers that received a revision must agree on its events under both
/// their prefixes: one anomaly per revision where some pair does not.
fn inconsistent_revisions(
    streams: &[Stream<'_>],
    reference: &Revisions<'_, (&KvEvent, u32)>,
) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for &revision in reference.keys() {
        let holders: Vec<_> = streams
            .iter()
            .rev()
            .filter_map(|s| Some((s, s.events.get(&revision)?)))
            .collect();
        'pairs: for (i, (a, a_events)) in holders.iter().enumerate() {
            for (b, b_events) in holders.iter().skip(i + 1) {
                let (pa, pb) = (a.prefix.unwrap_or(""), b.prefix.unwrap_or(""));
                let (sa, sb) = (restrict(a_events, pa, pb), restrict(b_events, pa, pb));
                if sa == sb {
                    continue;
                }
                let show = |events: &BTreeMap<&str, &KvEvent>| {
                    if events.is_empty() {
                        "nothing".to_owned()
                    } else {
                        list(&events.values().map(|e| fmt_event(e)).collect::<Vec<_>>())
                    }
                };
                let times = a_events
                    .values()
                    .chain(b_events.values())
                    .map(|&(_, at)| at);
                let window = times.clone().min().zip(times.max());
                anomalies.push(Anomaly {
                    kind: "inconsistent-revision".to_owned(),
                    description: format!(
                        "revision {revision}: {} received [{}] but {} received [{}] \
                         (keys under both prefixes)",
                        a.name(),
                        show(&sa),
                        b.name(),
                        show(&sb)
                    ),
                    ops: Vec::new(),
                    window,
                });
                break 'pairs;
            }
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const REF: u32 = REFERENCE_WATCHER;

    fn rec(watcher: u32, at: Nanos, what: WatchEvent) -> Record {
        Record::Watch(WatchRecord { watcher, at, what })
    }
    fn created(watcher: u32, at: Nanos, prefix: &str, start: i64) -> Record {
        rec(
            watcher,
            at,
            WatchEvent::Created {
                prefix: prefix.into(),
                start_revision: start,
                resumed: false,
            },
        )
    }
    fn resumed(watcher: u32, at: Nanos, prefix: &str, start: i64) -> Record {
        rec(
            watcher,
            at,
            WatchEvent::Created {
                prefix: prefix.into(),
                start_revision: start,
                resumed: true,
            },
        )
    }
    /// A put event of `key` = `value` at `revision` (a create).
    fn put(revision: i64, key: &str, value: u64) -> KvEvent {
        KvEvent {
            revision,
            key: key.into(),
            kind: KvEventKind::Put,
            value: Some(value),
            create_revision: revision,
            version: 1,
        }
    }
    fn del(revision: i64, key: &str) -> KvEvent {
        KvEvent {
            revision,
            key: key.into(),
            kind: KvEventKind::Delete,
            value: None,
            create_revision: 0,
            version: 0,
        }
    }
    /// One response with `events`.
    fn events(watcher: u32, at: Nanos, events: Vec<KvEvent>) -> Record {
        let header_revision = events.iter().map(|e| e.revision).max().unwrap_or(0);
        rec(
            watcher,
            at,
            WatchEvent::Events {
                header_revision,
                events,
            },
        )
    }
    /// One response per revision in `revisions`, each putting `k{revision}` =
    /// `revision`.
    fn puts(watcher: u32, at: Nanos, revisions: std::ops::RangeInclusive<i64>) -> Vec<Record> {
        revisions
            .map(|r| {
                let offset = u64::try_from(r).unwrap_or(0);
                events(watcher, at + offset, vec![put(r, &format!("k{r}"), offset)])
            })
            .collect()
    }
    fn progress(watcher: u32, at: Nanos, revision: i64) -> Record {
        rec(
            watcher,
            at,
            WatchEvent::Progress {
                header_revision: revision,
            },
        )
    }
    fn compacted(watcher: u32, at: Nanos, revision: i64) -> Record {
        rec(
            watcher,
            at,
            WatchEvent::Compacted {
                compact_revision: revision,
            },
        )
    }
    fn broken(watcher: u32, at: Nanos) -> Record {
        rec(
            watcher,
            at,
            WatchEvent::Broken {
                error: "connection reset".into(),
            },
        )
    }
    /// The reference watcher seeing revisions `1..=n`, one key each.
    fn reference(n: i64) -> Vec<Record> {
        let mut history = vec![created(REF, 1_000, "", 1)];
        history.extend(puts(REF, 1_000, 1..=n));
        history.push(rec(REF, 2_000, WatchEvent::Stopped));
        history
    }
    fn with_reference(n: i64, rest: Vec<Record>) -> Vec<Record> {
        let mut history = rest;
        history.extend(reference(n));
        history
    }
    /// An acknowledged register write of `key` = `value` at `revision`.
    fn write(id: u64, key: &str, value: u64, revision: i64) -> Record {
        Record::Op(Op {
            id,
            process: 0,
            workload: "register".into(),
            invoke: 10,
            complete: Some(20),
            outcome: Outcome::Ok,
            call: Call::Write {
                key: key.into(),
                value,
            },
            ret: Some(Ret::Write { revision }),
            error: None,
        })
    }

    fn run(history: &[Record]) -> Result<CheckResult, String> {
        super::super::testkit::run(check, history)
    }
    use super::super::testkit::kinds;
    fn concat(parts: Vec<Vec<Record>>) -> Vec<Record> {
        parts.into_iter().flatten().collect()
    }

    #[test]
    fn hand_made_histories_accepted_and_rejected_exactly() -> TestResult {
        // (name, history, expected anomaly kinds; empty: valid)
        let cases: Vec<(&str, Vec<Record>, Vec<&str>)> = vec![
            (
                "watcher sees everything",
                with_reference(
                    5,
                    concat(vec![vec![created(1, 0, "", 1)], puts(1, 0, 1..=5)]),
                ),
                vec![],
            ),
            (
                "resume at last seen + 1",
                with_reference(
                    5,
                    concat(vec![
                        vec![created(1, 0, "", 1)],
                        puts(1, 0, 1..=2),
                        vec![broken(1, 50), resumed(1, 60, "", 3)],
                        puts(1, 60, 3..=5),
                    ]),
                ),
                vec![],
            ),
            (
                "gap: a revision skipped",
                with_reference(
                    5,
                    concat(vec![
                        vec![created(1, 0, "", 1)],
                        puts(1, 0, 1..=2),
                        puts(1, 0, 4..=5),
                    ]),
                ),
                vec!["gap"],
            ),
            (
                "gap: resume later than last seen + 1",
                with_reference(
                    5,
                    concat(vec![
                        vec![created(1, 0, "", 1)],
                        puts(1, 0, 1..=2),
                        vec![broken(1, 50), resumed(1, 60, "", 4)],
                        puts(1, 60, 4..=5),
                    ]),
                ),
                vec!["gap"],
            ),
            (
                "compaction excuses the revisions it removed",
                with_reference(
                    6,
                    concat(vec![
                        vec![created(1, 0, "", 1)],
                        puts(1, 0, 1..=2),
                        vec![
                            broken(1, 50),
                            resumed(1, 60, "", 3),
                            compacted(1, 61, 5),
                            resumed(1, 62, "", 5),
                        ],
                        puts(1, 62, 5..=6),
                    ]),
                ),
                vec![],
            ),
            (
                "gap: after the compacted resume",
                with_reference(
                    7,
                    concat(vec![
                        vec![created(1, 0, "", 1)],
                        puts(1, 0, 1..=2),
                        vec![
                            broken(1, 50),
                            resumed(1, 60, "", 3),
                            compacted(1, 61, 5),
                            resumed(1, 62, "", 5),
                        ],
                        puts(1, 62, 7..=7),
                    ]),
                ),
                vec!["gap"],
            ),
            (
                "gap: the compacted revision itself is owed",
                with_reference(
                    6,
                    concat(vec![
                        vec![created(1, 0, "", 1)],
                        puts(1, 0, 1..=2),
                        vec![
                            broken(1, 50),
                            resumed(1, 60, "", 3),
                            compacted(1, 61, 5),
                            resumed(1, 62, "", 5),
                        ],
                        puts(1, 62, 6..=6),
                    ]),
                ),
                vec!["gap"],
            ),
            (
                "gap: missed revisions covered by a progress notification",
                with_reference(
                    3,
                    concat(vec![
                        vec![created(1, 0, "", 1)],
                        puts(1, 0, 1..=1),
                        vec![progress(1, 50, 3)],
                    ]),
                ),
                vec!["gap"],
            ),
            (
                "no gap beyond the last revision seen",
                with_reference(
                    5,
                    concat(vec![vec![created(1, 0, "", 1)], puts(1, 0, 1..=3)]),
                ),
                vec![],
            ),
            (
                "no gap outside the prefix",
                with_reference(
                    3,
                    vec![
                        created(1, 0, "k2", 1),
                        events(1, 5, vec![put(2, "k2", 2)]),
                        progress(1, 6, 3),
                    ],
                ),
                vec![],
            ),
            (
                "progress after the events it covers",
                with_reference(
                    3,
                    concat(vec![
                        vec![created(1, 0, "", 1)],
                        puts(1, 0, 1..=3),
                        vec![progress(1, 50, 3)],
                    ]),
                ),
                vec![],
            ),
            (
                "early progress: events after a progress notification covering them",
                with_reference(
                    3,
                    concat(vec![
                        vec![created(1, 0, "", 1)],
                        puts(1, 0, 1..=1),
                        vec![progress(1, 50, 3)],
                        vec![events(1, 60, vec![put(2, "k2", 2), put(3, "k3", 3)])],
                    ]),
                ),
                vec!["early-progress"],
            ),
            (
                "reordered",
                with_reference(
                    3,
                    concat(vec![
                        vec![created(1, 0, "", 1)],
                        puts(1, 0, 1..=1),
                        puts(1, 0, 3..=3),
                        puts(1, 0, 2..=2),
                    ]),
                ),
                vec!["reordered"],
            ),
            (
                "reordered within a response",
                with_reference(
                    3,
                    vec![
                        created(1, 0, "", 1),
                        events(
                            1,
                            5,
                            vec![put(1, "k1", 1), put(3, "k3", 3), put(2, "k2", 2)],
                        ),
                    ],
                ),
                vec!["reordered"],
            ),
            (
                "duplicate event after a resume",
                with_reference(
                    3,
                    concat(vec![
                        vec![created(1, 0, "", 1)],
                        puts(1, 0, 1..=2),
                        vec![broken(1, 50), resumed(1, 60, "", 2)],
                        puts(1, 60, 2..=3),
                    ]),
                ),
                vec!["duplicate-event"],
            ),
            (
                "duplicate event in one response",
                with_reference(
                    1,
                    vec![
                        created(1, 0, "", 1),
                        events(1, 5, vec![put(1, "k1", 1), put(1, "k1", 1)]),
                    ],
                ),
                vec!["duplicate-event"],
            ),
            (
                "one revision, two keys, one response",
                vec![
                    created(1, 0, "", 1),
                    events(1, 5, vec![put(1, "a", 1), put(1, "b", 1)]),
                ],
                vec![],
            ),
            (
                "split revision",
                vec![
                    created(1, 0, "", 1),
                    events(1, 5, vec![put(1, "a", 1)]),
                    events(1, 6, vec![put(1, "b", 1)]),
                ],
                vec!["split-revision"],
            ),
            (
                "watch start: event below the start revision",
                with_reference(
                    5,
                    concat(vec![vec![created(1, 0, "", 4)], puts(1, 0, 3..=5)]),
                ),
                vec!["watch-start"],
            ),
            (
                "start revision 0 means from now",
                with_reference(
                    5,
                    concat(vec![vec![created(1, 0, "", 0)], puts(1, 0, 4..=5)]),
                ),
                vec![],
            ),
            (
                "inconsistent revision: different values",
                with_reference(
                    2,
                    vec![
                        created(1, 0, "", 1),
                        events(1, 5, vec![put(1, "k1", 1), put(2, "k2", 99)]),
                    ],
                ),
                vec!["inconsistent-revision"],
            ),
            (
                "inconsistent revision: an event missing under both prefixes",
                vec![
                    created(REF, 0, "", 1),
                    events(REF, 5, vec![put(1, "a/1", 1), put(1, "a/2", 1)]),
                    created(1, 0, "a/", 1),
                    events(1, 5, vec![put(1, "a/1", 1)]),
                ],
                // Watcher 1 also missed a/2: a gap.
                vec!["inconsistent-revision", "gap"],
            ),
            (
                "consistent under the intersection of prefixes",
                vec![
                    created(REF, 0, "", 1),
                    events(REF, 5, vec![put(1, "a/1", 1), put(1, "b/1", 1)]),
                    created(1, 0, "a/", 1),
                    events(1, 5, vec![put(1, "a/1", 1)]),
                    created(2, 0, "b/", 1),
                    events(2, 5, vec![put(1, "b/1", 1)]),
                ],
                vec![],
            ),
            (
                "deletes compare too",
                vec![
                    created(REF, 0, "", 1),
                    events(REF, 5, vec![put(1, "a", 1), del(2, "a")]),
                    created(1, 0, "", 1),
                    events(1, 5, vec![put(1, "a", 1)]),
                    events(1, 6, vec![del(2, "a")]),
                ],
                vec![],
            ),
            (
                "acknowledged write in the reference",
                concat(vec![vec![write(7, "k2", 2, 2)], reference(3)]),
                vec![],
            ),
            (
                "lost acknowledged write: revision without the key",
                concat(vec![vec![write(7, "zz", 2, 2)], reference(3)]),
                vec!["lost-acknowledged-write"],
            ),
            (
                "lost acknowledged write: wrong value",
                concat(vec![vec![write(7, "k2", 5, 2)], reference(3)]),
                vec!["lost-acknowledged-write"],
            ),
            (
                "acknowledged write beyond the reference is not checked",
                concat(vec![vec![write(7, "zz", 9, 9)], reference(3)]),
                vec![],
            ),
        ];
        for (name, history, expected) in cases {
            let result = run(&history)?;
            assert_eq!(result.checker, "watch");
            assert_eq!(kinds(&result), expected, "{name}: {result:#?}");
            let validity = if expected.is_empty() {
                Validity::Valid
            } else {
                Validity::Invalid
            };
            assert_eq!(result.validity, validity, "{name}: {result:#?}");
        }
        Ok(())
    }

    #[test]
    fn gap_names_the_watcher_revisions_and_window() -> TestResult {
        let history = with_reference(
            5,
            concat(vec![
                vec![created(1, 0, "", 1)],
                puts(1, 100, 1..=2),
                puts(1, 200, 5..=5),
            ]),
        );
        let result = run(&history)?;
        let gap = result.anomalies.first().ok_or("no anomaly")?;
        assert_eq!(gap.kind, "gap");
        assert!(gap.ops.is_empty());
        assert!(gap.description.contains("watcher 1"), "{}", gap.description);
        assert!(gap.description.contains("k3@3"), "{}", gap.description);
        assert!(gap.description.contains("k4@4"), "{}", gap.description);
        assert!(
            gap.description.contains("revisions 3..=4"),
            "{}",
            gap.description
        );
        // From the response with revision 2 to the one with revision 5.
        assert_eq!(gap.window, Some((102, 205)));
        Ok(())
    }

    #[test]
    fn reference_watcher_gaps_show_through_other_watchers() -> TestResult {
        let history = vec![
            created(1, 0, "", 1),
            events(1, 5, vec![put(1, "a", 1)]),
            events(1, 6, vec![put(2, "b", 2)]),
            created(REF, 10, "", 1),
            events(REF, 11, vec![put(1, "a", 1)]),
            progress(REF, 12, 2),
        ];
        let result = run(&history)?;
        assert_eq!(kinds(&result), ["gap"], "{result:#?}");
        assert!(result.anomalies[0]
            .description
            .contains("reference watcher"));
        Ok(())
    }

    #[test]
    fn without_a_reference_acknowledged_writes_are_not_checked() -> TestResult {
        let history = vec![
            write(7, "zz", 2, 2),
            created(1, 0, "", 1),
            events(1, 5, vec![put(1, "a", 1)]),
            events(1, 6, vec![put(2, "b", 2)]),
        ];
        let result = run(&history)?;
        assert_eq!(result.validity, Validity::Valid, "{result:#?}");
        assert!(
            result.summary.contains("no reference watcher"),
            "{}",
            result.summary
        );
        Ok(())
    }

    #[test]
    fn lost_acknowledged_write_names_the_op() -> TestResult {
        let mut history = vec![write(7, "zz", 2, 2)];
        history.extend(reference(3));
        let result = run(&history)?;
        let lost = result.anomalies.first().ok_or("no anomaly")?;
        assert_eq!(lost.ops, [7]);
        assert_eq!(lost.window, Some((10, 20)));
        assert!(lost.description.contains("zz=2"), "{}", lost.description);
        assert!(
            lost.description.contains("revision 2"),
            "{}",
            lost.description
        );
        assert!(
            result.summary.contains("1 acknowledged writes checked"),
            "{}",
            result.summary
        );
        Ok(())
    }

    #[test]
    fn other_acknowledged_writes_are_checked_too() -> TestResult {
        let op = |id, workload: &str, call, ret| {
            Record::Op(Op {
                id,
                process: 0,
                workload: workload.into(),
                invoke: 10,
                complete: Some(20),
                outcome: Outcome::Ok,
                call,
                ret: Some(ret),
                error: None,
            })
        };
        let cas = |key: &str, value| Call::Cas {
            key: key.into(),
            expect: 0,
            value,
            by_revision: None,
        };
        let lease_put = |key: &str| Call::LeasePut {
            key: key.into(),
            lease: 5,
        };
        // (op, must be in the reference)
        let cases = [
            (
                op(
                    1,
                    "register",
                    cas("k1", 1),
                    Ret::Cas {
                        succeeded: true,
                        revision: 1,
                    },
                ),
                true,
            ),
            (
                op(
                    1,
                    "register",
                    cas("k1", 9),
                    Ret::Cas {
                        succeeded: true,
                        revision: 1,
                    },
                ),
                false,
            ),
            (
                op(
                    1,
                    "register",
                    cas("zz", 9),
                    Ret::Cas {
                        succeeded: false,
                        revision: 1,
                    },
                ),
                true,
            ),
            (
                op(
                    1,
                    "set",
                    Call::Add { key: "k2".into() },
                    Ret::Add {
                        created: true,
                        revision: 2,
                    },
                ),
                true,
            ),
            (
                op(
                    1,
                    "set",
                    Call::Add { key: "zz".into() },
                    Ret::Add {
                        created: true,
                        revision: 2,
                    },
                ),
                false,
            ),
            (
                op(
                    1,
                    "set",
                    Call::Add { key: "zz".into() },
                    Ret::Add {
                        created: false,
                        revision: 2,
                    },
                ),
                true,
            ),
            (
                op(1, "lease", lease_put("k3"), Ret::LeasePut { revision: 3 }),
                true,
            ),
            (
                op(1, "lease", lease_put("zz"), Ret::LeasePut { revision: 3 }),
                false,
            ),
        ];
        for (op, fine) in cases {
            let mut history = vec![op.clone()];
            history.extend(reference(3));
            let result = run(&history)?;
            assert_eq!(result.anomalies.is_empty(), fine, "{op:?}: {result:#?}");
        }
        Ok(())
    }

    #[test]
    fn no_watch_records_means_no_result() {
        assert!(check(&[]).is_none());
        assert!(check(&[write(1, "a", 1, 1)]).is_none());
    }

    #[test]
    fn anomaly_output_is_deterministic() -> TestResult {
        let history = with_reference(
            6,
            concat(vec![
                vec![created(2, 0, "", 1)],
                puts(2, 0, 1..=1),
                puts(2, 0, 3..=3),
                vec![created(1, 0, "", 1)],
                puts(1, 0, 2..=2),
                puts(1, 0, 1..=1),
                vec![progress(1, 40, 6)],
            ]),
        );
        let first = run(&history)?;
        assert_eq!(run(&history)?, first);
        assert_eq!(kinds(&first), ["reordered", "gap", "gap"], "{first:#?}");
        Ok(())
    }
}
