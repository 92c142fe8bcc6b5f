//! The verdict of a run and its HTML report.
//!
//! * `verdict.json` ([`write_verdict`]): the overall [`Validity`], the
//!   [`RunMeta`], every [`CheckResult`] and the op counts, for scripts and CI.
//! * `report.html` ([`write_html`], [`render_html`]): one self-contained page
//!   (inline CSS and inline SVG, no script, nothing fetched) for people:
//!   1. the verdict in big colored text, the seed, the command that re-runs
//!      this exact run, the workloads, nemeses, duration and members;
//!   2. per checker its verdict and summary, and per anomaly (the first
//!      [`MAX_ANOMALIES_SHOWN`]) its kind, description and the ops of its
//!      smallest failing window as a table sorted by invocation;
//!   3. latency over time: one point per op (x: invocation, y: latency on a
//!      log scale), colored by outcome, shaped by workload; unknown ops (no
//!      completion) in a strip along the top edge; fault windows shaded;
//!      anomaly windows outlined;
//!   4. throughput over time: ops per second per outcome, same shading;
//!   5. the faults;
//!   6. ops by workload and outcome (with ok latency quantiles), and what
//!      each watcher received.
//!
//! Both are pure functions of the history, the checkers' results and the run
//! metadata, so `cairn-jepsen check DIR` can rewrite them from a saved
//! `history.jsonl`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checker::{Anomaly, CheckResult, Validity};
use crate::history::{
    Call, FaultRecord, Nanos, Op, Outcome, Record, Ret, WatchEvent, REFERENCE_WATCHER,
};

/// The latency plot draws at most this many points: beyond it the ok ops
/// are subsampled (deterministically), every non-ok op is kept.
pub const MAX_LATENCY_POINTS: usize = 20_000;
/// Anomalies shown per checker (the rest are counted).
pub const MAX_ANOMALIES_SHOWN: usize = 20;
/// Op rows shown per anomaly window (the rest are counted).
const MAX_WINDOW_ROWS: usize = 200;
/// Longest error or answer text shown in a table cell, in chars.
const MAX_CELL_CHARS: usize = 400;

/// What the run was (printed at the top of the report and in verdict.json).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub seed: u64,
    pub workloads: Vec<String>,
    pub nemeses: Vec<String>,
    /// Workload duration, in seconds.
    pub duration_s: f64,
    pub members: Vec<MemberMeta>,
    /// The `cairn` binary the run launched.
    pub cairn_binary: String,
    /// How to re-run this exact run (includes `--seed`).
    pub command_line: String,
    /// UTC timestamp text.
    pub started_at: String,
}

/// One member of the cluster under test.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMeta {
    pub name: String,
    pub zone: String,
    pub client_url: String,
    pub peer_url: String,
}

/// Ops counted by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    pub total: u64,
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
}

impl OutcomeCounts {
    fn add(&mut self, outcome: Outcome) {
        self.total += 1;
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Unknown => self.unknown += 1,
        }
    }
}

/// What a history holds, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Every op, by outcome.
    pub ops: OutcomeCounts,
    /// Ops by workload, by outcome.
    pub ops_by_workload: BTreeMap<String, OutcomeCounts>,
    /// Watch records (of every watcher).
    pub watch_records: u64,
    /// Fault windows.
    pub faults: u64,
}

/// Counts the records of a history.
pub fn counts(records: &[Record]) -> Counts {
    let mut c = Counts::default();
    for r in records {
        match r {
            Record::Op(op) => {
                c.ops.add(op.outcome);
                c.ops_by_workload
                    .entry(op.workload.clone())
                    .or_default()
                    .add(op.outcome);
            }
            Record::Watch(_) => c.watch_records += 1,
            Record::Fault(_) => c.faults += 1,
        }
    }
    c
}

/// The content of `verdict.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// [`overall`] of the results.
    pub valid: Validity,
    pub meta: RunMeta,
    pub results: Vec<CheckResult>,
    pub counts: Counts,
}

/// The overall verdict: invalid if any result is; unknown if none is
/// invalid but some are unknown, or if there is no result at all (nothing
/// checked proves nothing); valid otherwise.
pub fn overall(results: &[CheckResult]) -> Validity {
    if results.iter().any(|r| r.validity == Validity::Invalid) {
        Validity::Invalid
    } else if results.is_empty() || results.iter().any(|r| r.validity == Validity::Unknown) {
        Validity::Unknown
    } else {
        Validity::Valid
    }
}

/// Writes `dir/verdict.json` (a [`Verdict`], pretty-printed): `{"valid":
/// "valid"|"invalid"|"unknown", "meta": .., "results": [..], "counts": ..}`.
/// The file is written whole or not at all (temporary file, then rename).
pub fn write_verdict(
    dir: &Path,
    meta: &RunMeta,
    results: &[CheckResult],
    records: &[Record],
) -> io::Result<()> {
    let mut meta = meta.clone();
    if !meta.duration_s.is_finite() {
        // serde_json would write null, which does not read back as an f64.
        meta.duration_s = 0.0;
    }
    let verdict = Verdict {
        valid: overall(results),
        meta,
        results: results.to_vec(),
        counts: counts(records),
    };
    let mut json = serde_json::to_vec_pretty(&verdict).map_err(io::Error::other)?;
    json.push(b'\n');
    write_file(dir, "verdict.json", &json)
}

/// Writes `dir/report.html` ([`render_html`]), whole or not at all.
pub fn write_html(
    dir: &Path,
    meta: &RunMeta,
    results: &[CheckResult],
    records: &[Record],
) -> io::Result<()> {
    write_file(
        dir,
        "report.html",
        render_html(meta, results, records).as_bytes(),
    )
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Appends formatted text to a `String` (which cannot fail).
macro_rules! out {
    ($dst:expr, $($arg:tt)*) => {{
        let _ = write!($dst, $($arg)*);
    }};
}

/// The report page (see the module doc).
pub fn render_html(meta: &RunMeta, results: &[CheckResult], records: &[Record]) -> String {
    let verdict = overall(results);
    let mut ops: Vec<&Op> = crate::history::ops(records).collect();
    ops.sort_by_key(|op| (op.invoke, op.id));
    let mut faults: Vec<&FaultRecord> = crate::history::faults(records).collect();
    faults.sort_by_key(|f| (f.start, f.end));
    let span_s = span_seconds(records, meta.duration_s);
    let workloads = workload_names(&ops);
    let counts = counts(records);

    let mut h = String::with_capacity(64 * 1024 + ops.len().min(MAX_LATENCY_POINTS) * 64);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out!(
        h,
        "<title>cairn-jepsen {} — seed {}</title>\n",
        verdict_word(verdict),
        meta.seed
    );
    h.push_str(CSS);
    h.push_str("</head>\n<body>\n");

    // 1. Header.
    out!(
        h,
        "<header>\n<div class=\"verdict {}\">{}</div>\n",
        validity_class(verdict),
        verdict_word(verdict)
    );
    out!(
        h,
        "<p class=\"sub\">cairn-jepsen run, seed <b>{}</b>, started {}</p>\n</header>\n",
        meta.seed,
        esc(&meta.started_at)
    );
    h.push_str("<h2>Run</h2>\n<table class=\"kv\">\n");
    out!(h, "<tr><th>seed</th><td>{}</td></tr>\n", meta.seed);
    out!(
        h,
        "<tr><th>re-run</th><td><pre>{}</pre></td></tr>\n",
        esc(&meta.command_line)
    );
    out!(
        h,
        "<tr><th>workloads</th><td>{}</td></tr>\n",
        esc(&list_or_none(&meta.workloads))
    );
    out!(
        h,
        "<tr><th>nemeses</th><td>{}</td></tr>\n",
        esc(&list_or_none(&meta.nemeses))
    );
    out!(
        h,
        "<tr><th>duration</th><td>{} s of workload; history spans {} s</td></tr>\n",
        num(meta.duration_s),
        num(span_s)
    );
    out!(
        h,
        "<tr><th>started at</th><td>{}</td></tr>\n",
        esc(&meta.started_at)
    );
    out!(
        h,
        "<tr><th>cairn binary</th><td><code>{}</code></td></tr>\n",
        esc(&meta.cairn_binary)
    );
    out!(
        h,
        "<tr><th>history</th><td>{} ops ({} ok, {} fail, {} unknown), {} watch records, {} faults</td></tr>\n",
        counts.ops.total,
        counts.ops.ok,
        counts.ops.fail,
        counts.ops.unknown,
        counts.watch_records,
        counts.faults
    );
    h.push_str("</table>\n");
    h.push_str("<h3>Members</h3>\n");
    if meta.members.is_empty() {
        h.push_str("<p class=\"none\">none recorded</p>\n");
    } else {
        h.push_str(
            "<table>\n<tr><th>name</th><th>zone</th><th>client URL</th><th>peer URL</th></tr>\n",
        );
        for m in &meta.members {
            out!(
                h,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>\n",
                esc(&m.name),
                esc(&m.zone),
                esc(&m.client_url),
                esc(&m.peer_url)
            );
        }
        h.push_str("</table>\n");
    }

    // 2. Checkers.
    h.push_str("<h2>Checkers</h2>\n");
    if results.is_empty() {
        h.push_str("<p class=\"none\">no checker ran</p>\n");
    } else {
        h.push_str(
            "<table>\n<tr><th>checker</th><th>verdict</th><th>anomalies</th><th>summary</th></tr>\n",
        );
        for r in results {
            out!(
                h,
                "<tr><td><a href=\"#c-{}\">{}</a></td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>\n",
                anchor(&r.checker),
                esc(&r.checker),
                badge(r.validity),
                r.anomalies.len(),
                esc(&r.summary)
            );
        }
        h.push_str("</table>\n");
    }
    let by_id: HashMap<u64, &Op> = ops.iter().map(|op| (op.id, *op)).collect();
    for r in results {
        render_checker(&mut h, r, &by_id);
    }

    // 3. Latency.
    h.push_str("<h2>Latency over time</h2>\n");
    let sample = latency_sample(&ops, MAX_LATENCY_POINTS);
    let mut shown_anomalies = Vec::new();
    for r in results {
        for (i, a) in r.anomalies.iter().take(MAX_ANOMALIES_SHOWN).enumerate() {
            if let Some(window) = a.window {
                shown_anomalies.push((
                    format!("{} #{}: {}", r.checker, i + 1, a.kind),
                    anomaly_anchor(&r.checker, i),
                    window,
                ));
            }
        }
    }
    h.push_str(&latency_svg(
        &sample,
        &faults,
        &shown_anomalies,
        span_s,
        &workloads,
    ));
    out!(
        h,
        "<p class=\"note\">One point per op at its invocation; latency = completion − invocation. \
         Unknown ops have no completion and sit in the strip along the top edge. \
         Shaded: fault windows (hover for details); dashed outlines: windows of the anomalies above. {}</p>\n",
        if sample.len() < ops.len() {
            format!(
                "Showing {} of {} ops: every non-ok op, the slowest ok ops and an even sample of the rest.",
                sample.len(),
                ops.len()
            )
        } else {
            format!("{} ops.", ops.len())
        }
    );

    // 4. Throughput.
    h.push_str("<h2>Throughput over time</h2>\n");
    let (svg, bin_s) = throughput_svg(&ops, &faults, span_s);
    h.push_str(&svg);
    out!(
        h,
        "<p class=\"note\">Ops per second in bins of {} s: ok and fail ops at their completion, unknown ops at their invocation.</p>\n",
        num(bin_s)
    );

    // 5. Faults.
    render_faults(&mut h, &faults, span_s);

    // 6. Counts.
    render_counts(&mut h, &ops, &counts, &workloads);
    render_watchers(&mut h, records);

    h.push_str("</body>\n</html>\n");
    h
}

const CSS: &str = "<style>
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#222;max-width:1120px;margin:0 auto;padding:12px 24px 48px}
h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{margin:18px 0 6px}
h4{margin:4px 0}
.verdict{font-size:56px;font-weight:800;letter-spacing:.05em;line-height:1.1;margin-top:8px}
.valid{color:#1a7f37}.invalid{color:#c62828}.unknown{color:#b26a00}
.sub{color:#555;margin-top:2px}
.badge{display:inline-block;padding:0 8px;border-radius:10px;color:#fff;font-weight:600;font-size:12px}
.b-valid{background:#1a7f37}.b-invalid{background:#c62828}.b-unknown{background:#b26a00}
table{border-collapse:collapse;margin:6px 0 14px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f5f7;font-weight:600}
table.kv th{width:120px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{max-width:420px;word-break:break-word}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{margin:0;white-space:pre-wrap;word-break:break-all}
.anomaly{border-left:4px solid #c62828;background:#fff7f7;padding:4px 12px;margin:10px 0}
.anomaly p{margin:4px 0}
.o-ok{color:#1f77b4}.o-fail{color:#d86c00}.o-unknown{color:#c62828;font-weight:600}
.none,.note{color:#666}
.note{font-size:12.5px;margin-top:2px}
svg{display:block;max-width:100%;height:auto;font:11px system-ui,sans-serif;background:#fff}
</style>
";

fn verdict_word(v: Validity) -> &'static str {
    match v {
        Validity::Valid => "VALID",
        Validity::Invalid => "INVALID",
        Validity::Unknown => "UNKNOWN",
    }
}

fn validity_class(v: Validity) -> &'static str {
    match v {
        Validity::Valid => "valid",
        Validity::Invalid => "invalid",
        Validity::Unknown => "unknown",
    }
}

fn badge(v: Validity) -> String {
    format!("<span class=\"badge b-{0}\">{0}</span>", validity_class(v))
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Unknown => "unknown",
    }
}

const OK_COLOR: &str = "#1f77b4";
const FAIL_COLOR: &str = "#ff7f0e";
const UNKNOWN_COLOR: &str = "#d62728";
const FAULT_COLORS: [&str; 8] = [
    "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#2ca02c", "#393b79",
];

/// Escapes text for HTML (and SVG) content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An id fragment made only of `[a-z0-9-]`.
fn anchor(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn anomaly_anchor(checker: &str, i: usize) -> String {
    format!("a-{}-{}", anchor(checker), i + 1)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// A number for people: up to 6 decimals, trailing zeros dropped; never
/// "NaN" or "inf".
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    let s = format!("{v:.6}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".to_string()
    } else {
        s
    }
}

/// An SVG coordinate: one decimal, 0 for anything not finite.
fn c(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "0".to_string()
    }
}

fn ms(ns: Nanos) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn secs(ns: Nanos) -> String {
    format!("{:.3}", ns as f64 / 1e9)
}

/// The x extent of the plots in seconds: the last time in the history or
/// the workload duration, whichever is later; 1 s for an empty, zero-length
/// run.
fn span_seconds(records: &[Record], duration_s: f64) -> f64 {
    let mut end: Nanos = 0;
    for r in records {
        let t = match r {
            Record::Op(op) => op.complete.unwrap_or(0).max(op.invoke),
            Record::Watch(w) => w.at,
            Record::Fault(f) => f.end.unwrap_or(0).max(f.start),
        };
        end = end.max(t);
    }
    let mut span = end as f64 / 1e9;
    if duration_s.is_finite() && duration_s > span {
        span = duration_s;
    }
    if span.is_finite() && span > 0.0 {
        span
    } else {
        1.0
    }
}

fn workload_names(ops: &[&Op]) -> Vec<String> {
    ops.iter()
        .map(|op| op.workload.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// An op's latency, `None` when it has no completion (unknown).
fn latency(op: &Op) -> Option<Nanos> {
    match op.outcome {
        Outcome::Unknown => None,
        _ => op.complete.map(|c| c.saturating_sub(op.invoke)),
    }
}

/// The ops drawn in the latency plot: all of them if at most `max`;
/// otherwise every non-ok op, the slowest ok ops (a tenth of the room left)
/// and an even stride over the other ok ops to fill the rest. Deterministic;
/// in the order of `ops`.
pub fn latency_sample<'a>(ops: &[&'a Op], max: usize) -> Vec<&'a Op> {
    if ops.len() <= max {
        return ops.to_vec();
    }
    let ok: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].outcome == Outcome::Ok && latency(ops[i]).is_some())
        .collect();
    let non_ok = ops.len() - ok.len();
    let room = max.saturating_sub(non_ok);
    let mut keep = vec![true; ops.len()];
    for &i in &ok {
        keep[i] = false;
    }
    if room > 0 && !ok.is_empty() {
        // The slowest: the outliers are the point of a latency plot.
        let mut by_latency = ok.clone();
        by_latency.sort_by_key(|&i| (std::cmp::Reverse(latency(ops[i])), ops[i].id));
        let slowest = (room / 10).min(ok.len());
        for &i in &by_latency[..slowest] {
            keep[i] = true;
        }
        // An even stride over the rest.
        let rest: Vec<usize> = ok.iter().copied().filter(|&i| !keep[i]).collect();
        let budget = room - slowest;
        if budget > 0 && !rest.is_empty() {
            let stride = rest.len().div_ceil(budget).max(1);
            for &i in rest.iter().step_by(stride) {
                keep[i] = true;
            }
        }
    }
    ops.iter()
        .zip(keep)
        .filter_map(|(op, k)| k.then_some(*op))
        .collect()
}

/// A plot's geometry: the SVG size and the plot area within it.
struct Frame {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    span_s: f64,
}

impl Frame {
    fn new(height: f64, span_s: f64) -> Frame {
        Frame {
            width: 1000.0,
            height,
            left: 64.0,
            right: 16.0,
            top: 26.0,
            bottom: 38.0,
            span_s: if span_s.is_finite() && span_s > 0.0 {
                span_s
            } else {
                1.0
            },
        }
    }

    fn x0(&self) -> f64 {
        self.left
    }

    fn x1(&self) -> f64 {
        self.width - self.right
    }

    fn y0(&self) -> f64 {
        self.top
    }

    fn y1(&self) -> f64 {
        self.height - self.bottom
    }

    /// The x of a time in seconds, clamped to the plot area.
    fn x(&self, t_s: f64) -> f64 {
        let f = (t_s / self.span_s).clamp(0.0, 1.0);
        let f = if f.is_finite() { f } else { 0.0 };
        self.x0() + f * (self.x1() - self.x0())
    }

    fn x_ns(&self, t: Nanos) -> f64 {
        self.x(t as f64 / 1e9)
    }

    fn open(&self, h: &mut String, label: &str) {
        out!(
            h,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"{l}\">\n",
            w = c(self.width),
            ht = c(self.height),
            l = esc(label)
        );
        out!(
            h,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fcfcfd\" stroke=\"#bbb\"/>\n",
            c(self.x0()),
            c(self.y0()),
            c(self.x1() - self.x0()),
            c(self.y1() - self.y0())
        );
    }

    /// The time axis: ticks, grid lines and its label.
    fn x_axis(&self, h: &mut String) {
        let step = nice_step(self.span_s, 10.0);
        h.push_str("<g class=\"x-axis\" stroke=\"#e4e4e4\">\n");
        let mut i = 0u32;
        loop {
            let t = f64::from(i) * step;
            if t > self.span_s * (1.0 + 1e-9) || i > 1000 {
                break;
            }
            let x = self.x(t);
            out!(
                h,
                "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" stroke=\"none\" fill=\"#444\">{}</text>\n",
                c(self.y0()),
                c(self.y1()),
                c(self.y1() + 14.0),
                num(t),
                x = c(x)
            );
            i += 1;
        }
        out!(
            h,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" stroke=\"none\" fill=\"#222\">time since start (s)</text>\n</g>\n",
            c((self.x0() + self.x1()) / 2.0),
            c(self.height - 6.0)
        );
    }

    fn no_data(&self, h: &mut String) {
        out!(
            h,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\" font-size=\"16\">no ops</text>\n",
            c((self.x0() + self.x1()) / 2.0),
            c((self.y0() + self.y1()) / 2.0)
        );
    }

    fn y_label(&self, h: &mut String, text: &str) {
        let y = (self.y0() + self.y1()) / 2.0;
        out!(
            h,
            "<text transform=\"translate(14 {}) rotate(-90)\" text-anchor=\"middle\" fill=\"#222\">{}</text>\n",
            c(y),
            esc(text)
        );
    }
}

/// A round step (1, 2 or 5 times a power of ten) giving about `ticks`
/// ticks over `range`.
fn nice_step(range: f64, ticks: f64) -> f64 {
    if !(range.is_finite() && range > 0.0 && ticks > 0.0) {
        return 1.0;
    }
    let step = nice_ceil(range / ticks);
    if step.is_finite() && step > 0.0 {
        step
    } else {
        1.0
    }
}

/// The largest 1/2/5 × 10^k not above `v` (`v` > 0).
fn nice_floor(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    let norm = v / mag;
    let m = if norm >= 5.0 {
        5.0
    } else if norm >= 2.0 {
        2.0
    } else {
        1.0
    };
    m * mag
}

/// The smallest 1/2/5 × 10^k not below `v` (`v` > 0).
fn nice_ceil(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    let norm = v / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// The x and width of a fault window (at least 1 px; an open one runs to
/// the right edge).
fn fault_x(f: &Frame, fault: &FaultRecord) -> (f64, f64) {
    let xa = f.x_ns(fault.start);
    let xb = match fault.end {
        Some(end) => f.x_ns(end.max(fault.start)),
        None => f.x1(),
    };
    (xa, (xb - xa).max(1.0))
}

/// A fault's color: one per fault name.
fn fault_color(faults: &[&FaultRecord], name: &str) -> &'static str {
    let names: BTreeSet<&str> = faults.iter().map(|f| f.name.as_str()).collect();
    let i = names.iter().position(|n| *n == name).unwrap_or(0);
    FAULT_COLORS[i % FAULT_COLORS.len()]
}

/// The shaded fault windows, spanning `y0..y1`, each with its name, detail,
/// times and targets as tooltip. Drawn under the data.
fn fault_layer(h: &mut String, f: &Frame, faults: &[&FaultRecord], y0: f64, y1: f64) {
    h.push_str("<g class=\"faults\">\n");
    for fault in faults {
        let (x, w) = fault_x(f, fault);
        let col = fault_color(faults, &fault.name);
        let end_text = match fault.end {
            Some(end) => format!("{} s", secs(end)),
            None => "end of run".to_string(),
        };
        out!(
            h,
            "<g class=\"fault\"><title>{}: {}\n{} s – {}\ntargets: {}</title>\
             <rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{col}\" fill-opacity=\"0.16\" stroke=\"{col}\" stroke-opacity=\"0.5\"/></g>\n",
            esc(&fault.name),
            esc(&fault.detail),
            secs(fault.start),
            esc(&end_text),
            esc(&fault.targets.join(", ")),
            c(x),
            c(y0),
            c(w),
            c((y1 - y0).max(0.0)),
        );
    }
    h.push_str("</g><!-- /faults -->\n");
}

/// The fault names at the top of their windows, in lanes from `label_y`
/// down so that labels of overlapping windows do not collide. Drawn over
/// the data.
fn fault_labels(h: &mut String, f: &Frame, faults: &[&FaultRecord], label_y: f64) {
    const LANES: usize = 4;
    let mut lane_end = [f64::NEG_INFINITY; LANES];
    h.push_str("<g class=\"fault-labels\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\" font-weight=\"600\">\n");
    for fault in faults {
        let (x, w) = fault_x(f, fault);
        let lane = lane_end.iter().position(|&e| e <= x).unwrap_or_else(|| {
            let mut best = 0;
            for (i, e) in lane_end.iter().enumerate() {
                if *e < lane_end[best] {
                    best = i;
                }
            }
            best
        });
        let label_w = 6.5 * fault.name.chars().count() as f64 + 6.0;
        lane_end[lane] = x + label_w.max(w);
        out!(
            h,
            "<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>\n",
            c(x + 2.0),
            c(label_y + 11.0 * lane as f64),
            fault_color(faults, &fault.name),
            esc(&fault.name),
        );
    }
    h.push_str("</g><!-- /fault-labels -->\n");
}

/// A marker of workload `shape` at (x, y); the fill comes from its group.
fn marker(h: &mut String, shape: usize, x: f64, y: f64) {
    match shape % 4 {
        0 => out!(h, "<circle cx=\"{}\" cy=\"{}\" r=\"2.2\"/>", c(x), c(y)),
        1 => out!(
            h,
            "<rect x=\"{}\" y=\"{}\" width=\"4\" height=\"4\"/>",
            c(x - 2.0),
            c(y - 2.0)
        ),
        2 => out!(h, "<path d=\"M{} {}l2.6 4.5h-5.2z\"/>", c(x), c(y - 2.8)),
        _ => out!(
            h,
            "<path d=\"M{} {}l2.7 2.7-2.7 2.7-2.7-2.7z\"/>",
            c(x),
            c(y - 2.7)
        ),
    }
}

/// The legend along the top margin: outcome colors, workload shapes.
fn legend(h: &mut String, f: &Frame, outcomes: &[(&str, &str)], workloads: &[String], lines: bool) {
    let mut x = f.x0();
    let y = 14.0;
    h.push_str("<g class=\"legend\">");
    for (name, color) in outcomes {
        if lines {
            out!(
                h,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{color}\" stroke-width=\"2\"/>",
                c(x),
                c(y - 4.0),
                c(x + 14.0),
                c(y - 4.0)
            );
        } else {
            out!(
                h,
                "<circle cx=\"{}\" cy=\"{}\" r=\"4\" fill=\"{color}\"/>",
                c(x + 5.0),
                c(y - 4.0)
            );
        }
        out!(
            h,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            c(x + 18.0),
            c(y),
            esc(name)
        );
        x += 30.0 + 6.5 * name.len() as f64;
    }
    if !workloads.is_empty() {
        x += 16.0;
        for (i, w) in workloads.iter().enumerate() {
            h.push_str("<g fill=\"#555\">");
            marker(h, i, x + 4.0, y - 4.0);
            h.push_str("</g>");
            out!(
                h,
                "<text x=\"{}\" y=\"{}\">{}</text>",
                c(x + 12.0),
                c(y),
                esc(w)
            );
            x += 24.0 + 6.5 * w.chars().count() as f64;
        }
    }
    h.push_str("</g>\n");
}

/// Plot 1: latency of each op against its invocation.
fn latency_svg(
    ops: &[&Op],
    faults: &[&FaultRecord],
    anomalies: &[(String, String, (Nanos, Nanos))],
    span_s: f64,
    workloads: &[String],
) -> String {
    let f = Frame::new(380.0, span_s);
    let mut h = String::with_capacity(8192 + ops.len() * 48);
    f.open(&mut h, "latency over time");

    // The unknown strip along the top, then the log area.
    let strip_y = f.y0() + 8.0;
    let log_top = f.y0() + 24.0;
    let log_bottom = f.y1();
    let lat_ms: Vec<f64> = ops
        .iter()
        .filter_map(|op| latency(op))
        .map(|l| (l as f64 / 1e6).max(0.001))
        .collect();
    let (mut lmin, mut lmax) = if lat_ms.is_empty() {
        (-1.0, 3.0)
    } else {
        let lo = lat_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = lat_ms.iter().copied().fold(0.0, f64::max);
        (lo.log10().floor(), hi.log10().ceil())
    };
    if !(lmin.is_finite() && lmax.is_finite()) {
        (lmin, lmax) = (-1.0, 3.0);
    }
    lmin = lmin.max(-3.0);
    if lmax <= lmin {
        lmax = lmin + 1.0;
    }
    let y_of = |ms: f64| -> f64 {
        let l = ms.max(0.001).log10();
        let frac = ((l - lmin) / (lmax - lmin)).clamp(0.0, 1.0);
        let frac = if frac.is_finite() { frac } else { 0.0 };
        log_bottom - frac * (log_bottom - log_top)
    };

    fault_layer(&mut h, &f, faults, f.y0(), f.y1());

    // Decades.
    h.push_str("<g class=\"y-axis\" stroke=\"#e4e4e4\">\n");
    let mut k = lmin;
    while k <= lmax + 1e-9 {
        let y = y_of(10f64.powf(k));
        out!(
            h,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" stroke=\"none\" fill=\"#444\">{}</text>\n",
            c(f.x0()),
            c(f.x1()),
            c(f.x0() - 4.0),
            c(y + 4.0),
            num(10f64.powf(k)),
            y = c(y)
        );
        k += 1.0;
    }
    out!(
        h,
        "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#999\" stroke-dasharray=\"3 3\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" stroke=\"none\" fill=\"{UNKNOWN_COLOR}\">unknown</text>\n</g>\n",
        c(f.x0()),
        c(f.x1()),
        c(f.x0() - 4.0),
        c(strip_y + 4.0),
        y = c(f.y0() + 17.0)
    );
    f.x_axis(&mut h);
    f.y_label(&mut h, "latency (ms, log scale)");

    // Anomaly windows.
    if !anomalies.is_empty() {
        h.push_str("<g class=\"anomalies\">\n");
        for (label, id, (a, b)) in anomalies {
            let xa = f.x_ns(*a);
            let xb = f.x_ns((*b).max(*a));
            out!(
                h,
                "<a href=\"#{}\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{UNKNOWN_COLOR}\" stroke-width=\"1.5\" stroke-dasharray=\"5 3\"><title>{} ({} – {} ms)</title></rect></a>\n",
                esc(id),
                c(xa - 1.0),
                c(log_top),
                c((xb - xa).max(0.0) + 2.0),
                c(log_bottom - log_top),
                esc(label),
                ms(*a),
                ms(*b)
            );
        }
        h.push_str("</g>\n");
    }

    // Points: ok underneath, then fail, then unknown.
    let shape_of = |op: &Op| {
        workloads
            .iter()
            .position(|w| *w == op.workload)
            .unwrap_or(0)
    };
    for (outcome, color) in [
        (Outcome::Ok, OK_COLOR),
        (Outcome::Fail, FAIL_COLOR),
        (Outcome::Unknown, UNKNOWN_COLOR),
    ] {
        out!(
            h,
            "<g class=\"points-{}\" fill=\"{color}\" fill-opacity=\"0.8\">\n",
            outcome_word(outcome)
        );
        for op in ops {
            let lat = latency(op);
            let drawn_as = if lat.is_some() {
                op.outcome
            } else {
                Outcome::Unknown
            };
            if drawn_as != outcome {
                continue;
            }
            let x = f.x_ns(op.invoke);
            let y = match lat {
                Some(l) => y_of(l as f64 / 1e6),
                None => strip_y,
            };
            if outcome == Outcome::Ok {
                marker(&mut h, shape_of(op), x, y);
            } else {
                // Few, and worth a tooltip.
                h.push_str("<g>");
                out!(
                    h,
                    "<title>op {} ({}, process {}) {}: {}</title>",
                    op.id,
                    esc(&op.workload),
                    op.process,
                    outcome_word(op.outcome),
                    esc(&truncate(op.error.as_deref().unwrap_or(""), 120))
                );
                marker(&mut h, shape_of(op), x, y);
                h.push_str("</g>");
            }
            h.push('\n');
        }
        h.push_str("</g>\n");
    }
    fault_labels(&mut h, &f, faults, log_top + 12.0);
    if ops.is_empty() {
        f.no_data(&mut h);
    }
    legend(
        &mut h,
        &f,
        &[
            ("ok", OK_COLOR),
            ("fail", FAIL_COLOR),
            ("unknown", UNKNOWN_COLOR),
        ],
        workloads,
        false,
    );
    h.push_str("</svg>\n");
    h
}

/// Plot 2: ops per second per outcome. Returns the SVG and the bin width
/// in seconds.
fn throughput_svg(ops: &[&Op], faults: &[&FaultRecord], span_s: f64) -> (String, f64) {
    let f = Frame::new(280.0, span_s);
    let span = f.span_s;
    // 1 s bins, finer for short runs (at least 20 bins), coarser for long
    // ones (at most about 2000).
    let bin_s = if span / 20.0 <= 1.0 {
        nice_floor(span / 20.0)
    } else if span <= 2000.0 {
        1.0
    } else {
        nice_ceil(span / 2000.0)
    };
    let bin_s = if bin_s.is_finite() && bin_s > 0.0 {
        bin_s
    } else {
        1.0
    };
    // The last bin runs to the end of the span: between half a bin and a
    // bin and a half wide, so that it does not dip or spike for being short.
    let nbins = ((span / bin_s).round() as usize).clamp(1, 10_000);
    let bin_start = |i: usize| i as f64 * bin_s;
    let bin_width = |i: usize| -> f64 {
        let w = if i + 1 == nbins {
            span - bin_start(i)
        } else {
            bin_s
        };
        if w.is_finite() && w > 0.0 {
            w
        } else {
            bin_s
        }
    };
    let mut bins = vec![[0u64; 3]; nbins];
    for op in ops {
        let (t, slot) = match (op.outcome, op.complete) {
            (Outcome::Ok, Some(t)) => (t, 0),
            (Outcome::Fail, Some(t)) => (t, 1),
            _ => (op.invoke, 2),
        };
        let i = ((t as f64 / 1e9 / bin_s).floor() as usize).min(nbins - 1);
        bins[i][slot] += 1;
    }
    let rate = |i: usize, slot: usize| bins[i][slot] as f64 / bin_width(i);
    let max_rate = (0..nbins)
        .flat_map(|i| (0..3).map(move |slot| (i, slot)))
        .map(|(i, slot)| rate(i, slot))
        .fold(0.0, f64::max);
    let base = if max_rate > 0.0 { max_rate } else { 1.0 };
    let y_step = nice_step(base, 5.0);
    let y_max = {
        let m = (base / y_step).ceil() * y_step;
        if m.is_finite() && m > 0.0 {
            m
        } else {
            y_step
        }
    };
    let y_of = |rate: f64| -> f64 {
        let frac = (rate / y_max).clamp(0.0, 1.0);
        let frac = if frac.is_finite() { frac } else { 0.0 };
        f.y1() - frac * (f.y1() - f.y0())
    };

    let mut h = String::with_capacity(8192 + nbins * 40);
    f.open(&mut h, "throughput over time");
    fault_layer(&mut h, &f, faults, f.y0(), f.y1());
    h.push_str("<g class=\"y-axis\" stroke=\"#e4e4e4\">\n");
    let mut i = 0u32;
    loop {
        let v = f64::from(i) * y_step;
        if v > y_max * (1.0 + 1e-9) || i > 100 {
            break;
        }
        let y = y_of(v);
        out!(
            h,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" stroke=\"none\" fill=\"#444\">{}</text>\n",
            c(f.x0()),
            c(f.x1()),
            c(f.x0() - 4.0),
            c(y + 4.0),
            num(v),
            y = c(y)
        );
        i += 1;
    }
    h.push_str("</g>\n");
    f.x_axis(&mut h);
    f.y_label(&mut h, "ops/s");
    for (slot, name, color) in [
        (0, "ok", OK_COLOR),
        (1, "fail", FAIL_COLOR),
        (2, "unknown", UNKNOWN_COLOR),
    ] {
        if bins.iter().all(|b| b[slot] == 0) {
            continue;
        }
        out!(
            h,
            "<polyline class=\"rate-{name}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" stroke-linejoin=\"round\" points=\""
        );
        for i in 0..nbins {
            let t = bin_start(i) + bin_width(i) / 2.0;
            out!(h, "{},{} ", c(f.x(t)), c(y_of(rate(i, slot))));
        }
        h.push_str("\"/>\n");
    }
    fault_labels(&mut h, &f, faults, f.y0() + 12.0);
    if ops.is_empty() {
        f.no_data(&mut h);
    }
    legend(
        &mut h,
        &f,
        &[
            ("ok", OK_COLOR),
            ("fail", FAIL_COLOR),
            ("unknown", UNKNOWN_COLOR),
        ],
        &[],
        true,
    );
    h.push_str("</svg>\n");
    (h, bin_s)
}

fn render_checker(h: &mut String, r: &CheckResult, by_id: &HashMap<u64, &Op>) {
    out!(
        h,
        "<h3 id=\"c-{}\">{} {}</h3>\n<p>{}</p>\n",
        anchor(&r.checker),
        esc(&r.checker),
        badge(r.validity),
        esc(&r.summary)
    );
    for (i, a) in r.anomalies.iter().take(MAX_ANOMALIES_SHOWN).enumerate() {
        render_anomaly(h, &r.checker, i, a, by_id);
    }
    if r.anomalies.len() > MAX_ANOMALIES_SHOWN {
        out!(
            h,
            "<p class=\"note\">… and {} more anomalies not shown (all are in verdict.json).</p>\n",
            r.anomalies.len() - MAX_ANOMALIES_SHOWN
        );
    }
}

fn render_anomaly(h: &mut String, checker: &str, i: usize, a: &Anomaly, by_id: &HashMap<u64, &Op>) {
    out!(
        h,
        "<div class=\"anomaly\" id=\"{}\">\n<h4>#{} {}</h4>\n<p>{}</p>\n",
        anomaly_anchor(checker, i),
        i + 1,
        esc(&a.kind),
        esc(&a.description)
    );
    if let Some((from, to)) = a.window {
        out!(
            h,
            "<p class=\"note\">window: {} ms – {} ms</p>\n",
            ms(from),
            ms(to)
        );
    }
    let mut seen = BTreeSet::new();
    let mut found: Vec<&Op> = Vec::new();
    let mut missing: Vec<u64> = Vec::new();
    for id in &a.ops {
        if !seen.insert(*id) {
            continue;
        }
        match by_id.get(id) {
            Some(op) => found.push(op),
            None => missing.push(*id),
        }
    }
    found.sort_by_key(|op| (op.invoke, op.id));
    if !found.is_empty() {
        out!(
            h,
            "<p><b>The smallest failing window</b> ({} op{}):</p>\n",
            found.len(),
            if found.len() == 1 { "" } else { "s" }
        );
        h.push_str(
            "<table class=\"ops\">\n<tr><th>id</th><th>process</th><th>workload</th><th>invoke ms</th><th>complete ms</th><th>outcome</th><th>call</th><th>ret / error</th></tr>\n",
        );
        for op in found.iter().take(MAX_WINDOW_ROWS) {
            let answer = match (&op.ret, &op.error) {
                (Some(ret), _) => ret_text(ret),
                (None, Some(e)) => e.clone(),
                (None, None) => String::new(),
            };
            out!(
                h,
                "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"o-{o}\">{o}</td><td><code>{}</code></td><td class=\"wrap\"><code>{}</code></td></tr>\n",
                op.id,
                op.process,
                esc(&op.workload),
                ms(op.invoke),
                op.complete.map(ms).unwrap_or_else(|| "—".to_string()),
                esc(&call_text(&op.call)),
                esc(&truncate(&answer, MAX_CELL_CHARS)),
                o = outcome_word(op.outcome)
            );
        }
        h.push_str("</table>\n");
        if found.len() > MAX_WINDOW_ROWS {
            out!(
                h,
                "<p class=\"note\">… and {} more ops.</p>\n",
                found.len() - MAX_WINDOW_ROWS
            );
        }
    }
    if !missing.is_empty() {
        let ids: Vec<String> = missing.iter().map(u64::to_string).collect();
        out!(
            h,
            "<p class=\"note\">Ops not in the history: {}</p>\n",
            ids.join(", ")
        );
    }
    h.push_str("</div>\n");
}

/// An op's call in words.
fn call_text(call: &Call) -> String {
    match call {
        Call::Read { key } => format!("read {key}"),
        Call::Write { key, value } => format!("write {key} = {value}"),
        Call::Cas {
            key,
            expect,
            value,
            by_revision,
        } => match by_revision {
            Some(rev) => format!("cas {key} {expect} → {value} (if mod_revision = {rev})"),
            None => format!("cas {key} {expect} → {value}"),
        },
        Call::Add { key } => format!("add {key}"),
        Call::ReadAll { prefix } => format!("read-all {prefix}"),
        Call::LeaseGrant { ttl } => format!("lease-grant ttl {ttl} s"),
        Call::LeasePut { key, lease } => format!("lease-put {key} lease {lease}"),
        Call::LeaseKeepAlive { lease } => format!("keep-alive lease {lease}"),
        Call::LeaseRevoke { lease } => format!("lease-revoke {lease}"),
        Call::Txn { ops } => format!("txn {}", micro_ops_text(ops)),
    }
}

/// An ok op's answer in words.
fn ret_text(ret: &Ret) -> String {
    match ret {
        Ret::Read {
            value,
            mod_revision,
            revision,
        } => match value {
            Some(v) => format!("{v} (mod_revision {mod_revision}, revision {revision})"),
            None => format!("absent (revision {revision})"),
        },
        Ret::Write { revision } => format!("revision {revision}"),
        Ret::Cas {
            succeeded,
            revision,
        } => format!(
            "{} (revision {revision})",
            if *succeeded {
                "succeeded"
            } else {
                "compare failed"
            }
        ),
        Ret::Add { created, revision } => format!(
            "{} (revision {revision})",
            if *created { "created" } else { "existed" }
        ),
        Ret::ReadAll { keys, revision } => {
            const SHOWN: usize = 8;
            let mut s = format!("{} keys (revision {revision})", keys.len());
            for (i, k) in keys.iter().take(SHOWN).enumerate() {
                s.push_str(if i == 0 { ": " } else { ", " });
                out!(s, "{} v{}", k.key, k.version);
                if k.lease != 0 {
                    out!(s, " lease {}", k.lease);
                }
            }
            if keys.len() > SHOWN {
                s.push_str(", …");
            }
            s
        }
        Ret::LeaseGrant { lease, ttl } => format!("lease {lease}, ttl {ttl} s"),
        Ret::LeaseKeepAlive { ttl } => {
            if *ttl <= 0 {
                format!("ttl {ttl} (lease gone)")
            } else {
                format!("ttl {ttl} s")
            }
        }
        Ret::LeasePut { revision } | Ret::LeaseRevoke { revision } => {
            format!("revision {revision}")
        }
        Ret::Txn { ops, revision } => format!("{} (revision {revision})", micro_ops_text(ops)),
    }
}

/// An append transaction's micro-ops in words: `[append a/1 5, read a/2 [1 3]]`.
fn micro_ops_text(ops: &[crate::history::MicroOp]) -> String {
    use crate::history::MicroOp;
    let parts: Vec<String> = ops
        .iter()
        .map(|op| match op {
            MicroOp::Append { key, value } => format!("append {key} {value}"),
            MicroOp::Read { key, value: None } => format!("read {key}"),
            MicroOp::Read {
                key,
                value: Some(list),
            } => {
                let items: Vec<String> = list.iter().map(u64::to_string).collect();
                format!("read {key} [{}]", items.join(" "))
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn render_faults(h: &mut String, faults: &[&FaultRecord], span_s: f64) {
    h.push_str("<h2>Faults</h2>\n");
    if faults.is_empty() {
        h.push_str("<p class=\"none\">no fault was injected</p>\n");
        return;
    }
    h.push_str(
        "<table>\n<tr><th>name</th><th>detail</th><th>targets</th><th>start s</th><th>end s</th><th>duration s</th></tr>\n",
    );
    for f in faults {
        let (end, duration) = match f.end {
            Some(end) => (
                secs(end),
                format!("{:.3}", end.saturating_sub(f.start) as f64 / 1e9),
            ),
            None => (
                "— (end of run)".to_string(),
                format!("≥ {}", num((span_s - f.start as f64 / 1e9).max(0.0))),
            ),
        };
        out!(
            h,
            "<tr><td>{}</td><td class=\"wrap\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\n",
            esc(&f.name),
            esc(&f.detail),
            esc(&f.targets.join(", ")),
            secs(f.start),
            esc(&end),
            esc(&duration)
        );
    }
    h.push_str("</table>\n");
}

/// The `q` quantile (nearest rank) of sorted values.
fn quantile(sorted: &[Nanos], q: f64) -> Option<Nanos> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn render_counts(h: &mut String, ops: &[&Op], counts: &Counts, workloads: &[String]) {
    h.push_str("<h2>Ops</h2>\n");
    if ops.is_empty() {
        h.push_str("<p class=\"none\">no op was recorded</p>\n");
        return;
    }
    h.push_str(
        "<table>\n<tr><th>workload</th><th>total</th><th>ok</th><th>fail</th><th>unknown</th><th>ok p50 ms</th><th>ok p99 ms</th><th>ok max ms</th></tr>\n",
    );
    let lat_cells = |wl: Option<&str>| -> String {
        let mut lats: Vec<Nanos> = ops
            .iter()
            .filter(|op| op.outcome == Outcome::Ok && wl.is_none_or(|w| op.workload == w))
            .filter_map(|op| latency(op))
            .collect();
        lats.sort_unstable();
        [0.5, 0.99, 1.0]
            .iter()
            .map(|&q| {
                format!(
                    "<td class=\"num\">{}</td>",
                    quantile(&lats, q)
                        .map(ms)
                        .unwrap_or_else(|| "—".to_string())
                )
            })
            .collect()
    };
    let row = |h: &mut String, name: &str, n: &OutcomeCounts, lat: String, bold: bool| {
        let (a, b) = if bold { ("<b>", "</b>") } else { ("", "") };
        out!(
            h,
            "<tr><td>{a}{}{b}</td><td class=\"num\">{a}{}{b}</td><td class=\"num\">{}</td><td class=\"num o-fail\">{}</td><td class=\"num o-unknown\">{}</td>{lat}</tr>\n",
            esc(name),
            n.total,
            n.ok,
            n.fail,
            n.unknown
        );
    };
    for w in workloads {
        if let Some(n) = counts.ops_by_workload.get(w) {
            row(h, w, n, lat_cells(Some(w)), false);
        }
    }
    row(h, "all", &counts.ops, lat_cells(None), true);
    h.push_str("</table>\n");
}

#[derive(Default)]
struct WatcherStats {
    prefix: Option<String>,
    responses: u64,
    events: u64,
    progress: u64,
    resumes: u64,
    compactions: u64,
    broken: u64,
    first: Option<Nanos>,
    last: Option<Nanos>,
}

fn render_watchers(h: &mut String, records: &[Record]) {
    h.push_str("<h2>Watchers</h2>\n");
    let mut stats: BTreeMap<u32, WatcherStats> = BTreeMap::new();
    for r in records {
        let Record::Watch(w) = r else { continue };
        let s = stats.entry(w.watcher).or_default();
        s.first = Some(s.first.map_or(w.at, |t| t.min(w.at)));
        s.last = Some(s.last.map_or(w.at, |t| t.max(w.at)));
        match &w.what {
            WatchEvent::Created {
                prefix, resumed, ..
            } => {
                if s.prefix.is_none() {
                    s.prefix = Some(prefix.clone());
                }
                if *resumed {
                    s.resumes += 1;
                }
            }
            WatchEvent::Events { events, .. } => {
                s.responses += 1;
                s.events += events.len() as u64;
            }
            WatchEvent::Progress { .. } => s.progress += 1,
            WatchEvent::Compacted { .. } => s.compactions += 1,
            WatchEvent::Broken { .. } => s.broken += 1,
            WatchEvent::Stopped => {}
        }
    }
    if stats.is_empty() {
        h.push_str("<p class=\"none\">no watch record</p>\n");
        return;
    }
    h.push_str(
        "<table>\n<tr><th>watcher</th><th>prefix</th><th>responses</th><th>events received</th><th>progress notifications</th><th>resumes</th><th>compactions</th><th>broken streams</th><th>first s</th><th>last s</th></tr>\n",
    );
    for (id, s) in &stats {
        let name = if *id == REFERENCE_WATCHER {
            "reference".to_string()
        } else {
            id.to_string()
        };
        out!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\n",
            esc(&name),
            esc(s.prefix.as_deref().unwrap_or("")),
            s.responses,
            s.events,
            s.progress,
            s.resumes,
            s.compactions,
            s.broken,
            s.first.map(secs).unwrap_or_default(),
            s.last.map(secs).unwrap_or_default()
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{KvEvent, KvEventKind, WatchRecord};

    const MS: Nanos = 1_000_000;

    fn op(
        id: u64,
        workload: &str,
        invoke_ms: u64,
        complete_ms: Option<u64>,
        outcome: Outcome,
    ) -> Op {
        Op {
            id,
            process: (id % 3) as u32,
            workload: workload.into(),
            invoke: invoke_ms * MS,
            complete: complete_ms.map(|c| c * MS),
            outcome,
            call: Call::Write {
                key: "r/0".into(),
                value: id,
            },
            ret: (outcome == Outcome::Ok).then_some(Ret::Write {
                revision: id as i64,
            }),
            error: match outcome {
                Outcome::Ok => None,
                Outcome::Fail => Some("etcdserver: no leader".into()),
                Outcome::Unknown => Some("deadline exceeded <script>alert('x')</script>".into()),
            },
        }
    }

    fn meta() -> RunMeta {
        RunMeta {
            seed: 42,
            workloads: vec!["register".into(), "watch".into()],
            nemeses: vec!["kill".into(), "partition".into()],
            duration_s: 2.0,
            members: vec![MemberMeta {
                name: "m1".into(),
                zone: "az-a".into(),
                client_url: "http://127.0.0.11:2379".into(),
                peer_url: "http://127.0.0.11:2380".into(),
            }],
            cairn_binary: "target/debug/cairn".into(),
            command_line: "cairn-jepsen run --seed 42 --workload register".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn history() -> Vec<Record> {
        let mut records = vec![
            Record::Fault(FaultRecord {
                name: "kill".into(),
                detail: "kill -9 m2 (az-b, leader)".into(),
                targets: vec!["m2".into()],
                start: 300 * MS,
                end: Some(800 * MS),
            }),
            Record::Fault(FaultRecord {
                name: "partition".into(),
                detail: "az-a | az-b az-c".into(),
                targets: vec!["az-a".into()],
                start: 1200 * MS,
                end: None,
            }),
        ];
        for i in 0..40u64 {
            let outcome = match i {
                7 => Outcome::Fail,
                11 => Outcome::Unknown,
                _ => Outcome::Ok,
            };
            let complete = (outcome != Outcome::Unknown).then_some(i * 40 + 5 + i % 7);
            records.push(Record::Op(op(i, "register", i * 40, complete, outcome)));
        }
        records.push(Record::Watch(WatchRecord {
            watcher: 0,
            at: 10 * MS,
            what: WatchEvent::Created {
                prefix: "r/".into(),
                start_revision: 1,
                resumed: false,
            },
        }));
        records.push(Record::Watch(WatchRecord {
            watcher: 0,
            at: 20 * MS,
            what: WatchEvent::Events {
                header_revision: 3,
                events: vec![KvEvent {
                    revision: 3,
                    key: "r/0".into(),
                    kind: KvEventKind::Put,
                    value: Some(1),
                    create_revision: 2,
                    version: 2,
                }],
            },
        }));
        records.push(Record::Watch(WatchRecord {
            watcher: REFERENCE_WATCHER,
            at: 1900 * MS,
            what: WatchEvent::Compacted {
                compact_revision: 2,
            },
        }));
        records
    }

    fn result(checker: &str, validity: Validity, anomalies: Vec<Anomaly>) -> CheckResult {
        CheckResult {
            checker: checker.into(),
            validity,
            summary: format!("{checker}: checked"),
            anomalies,
        }
    }

    fn invalid_results() -> Vec<CheckResult> {
        vec![
            result(
                "register",
                Validity::Invalid,
                vec![Anomaly {
                    kind: "nonlinearizable".into(),
                    description: "read of r/0 saw 9 <b>after</b> 10 & more".into(),
                    ops: vec![11, 9, 10, 424_242],
                    window: Some((360 * MS, 450 * MS)),
                }],
            ),
            result("watch", Validity::Valid, vec![]),
        ]
    }

    /// The text of every `<g class="{class}">` layer, up to its closing comment.
    fn layers<'a>(html: &'a str, class: &str) -> Vec<&'a str> {
        html.split(&format!("<g class=\"{class}\""))
            .skip(1)
            .filter_map(|s| s.split(&format!("</g><!-- /{class} -->")).next())
            .collect()
    }

    #[test]
    fn render_shows_verdict_faults_anomaly_window_and_escapes() {
        let html = render_html(&meta(), &invalid_results(), &history());
        assert!(html.contains("<div class=\"verdict invalid\">INVALID</div>"));
        assert!(html.contains("cairn-jepsen run --seed 42 --workload register"));
        assert!(html.contains("http://127.0.0.11:2379"));
        // Both plots shade both faults, labeled, with the detail as tooltip.
        let shading = layers(&html, "faults");
        assert_eq!(shading.len(), 2, "one fault layer per plot");
        for layer in &shading {
            assert_eq!(layer.matches("<rect").count(), 2);
            assert!(layer.contains("<title>kill: kill -9 m2 (az-b, leader)"));
            assert!(layer.contains("<title>partition: az-a | az-b az-c"));
        }
        let labels = layers(&html, "fault-labels");
        assert_eq!(labels.len(), 2);
        for layer in &labels {
            assert!(layer.contains(">kill</text>"));
            assert!(layer.contains(">partition</text>"));
        }
        // The anomaly's window: ops 9, 10, 11 sorted by invoke; the missing id named.
        let anomaly = html
            .split("<div class=\"anomaly\"")
            .nth(1)
            .and_then(|s| s.split("</div>").next())
            .unwrap();
        let rows: Vec<&str> = anomaly.split("<tr><td class=\"num\">").skip(1).collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].starts_with("9<"));
        assert!(rows[1].starts_with("10<"));
        assert!(rows[2].starts_with("11<"));
        assert!(rows[2].contains(">unknown<"));
        assert!(anomaly.contains("Ops not in the history: 424242"));
        assert!(anomaly.contains("read of r/0 saw 9 &lt;b&gt;after&lt;/b&gt; 10 &amp; more"));
        // Escaping.
        assert!(!html.contains("<script"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(!html.contains("NaN"));
        assert!(!html.contains("inf\""));
        // Counts and watchers.
        assert!(html.contains(">reference<"));
        assert!(html.contains("class=\"points-unknown\""));
        assert!(html.contains("class=\"rate-ok\""));
    }

    #[test]
    fn render_empty_history_and_zero_length_run() {
        let mut m = meta();
        m.duration_s = 0.0;
        let html = render_html(&m, &[], &[]);
        assert!(html.contains("UNKNOWN"), "no result: nothing proven");
        assert!(html.contains("no op was recorded"));
        assert!(!html.contains("NaN"));
        assert!(html.ends_with("</html>\n"));

        // Everything at time zero, latency zero; a NaN duration.
        m.duration_s = f64::NAN;
        let records = vec![
            Record::Op(op(0, "set", 0, Some(0), Outcome::Ok)),
            Record::Op(op(1, "set", 0, None, Outcome::Unknown)),
            Record::Fault(FaultRecord {
                name: "pause".into(),
                detail: String::new(),
                targets: vec![],
                start: 0,
                end: Some(0),
            }),
        ];
        let results = [result("set", Validity::Unknown, vec![])];
        let html = render_html(&m, &results, &records);
        assert!(html.contains("UNKNOWN"));
        assert!(!html.contains("NaN"));
        let shading = layers(&html, "faults");
        assert_eq!(shading.len(), 2);
        assert!(shading.iter().all(|l| l.contains("<title>pause: ")));
        let labels = layers(&html, "fault-labels");
        assert_eq!(labels.len(), 2);
        assert!(labels.iter().all(|l| l.contains(">pause</text>")));
    }

    #[test]
    fn overall_combines_results() {
        assert_eq!(overall(&[]), Validity::Unknown);
        let v = result("a", Validity::Valid, vec![]);
        let u = result("b", Validity::Unknown, vec![]);
        let i = result("c", Validity::Invalid, vec![]);
        assert_eq!(overall(&[v.clone(), v.clone()]), Validity::Valid);
        assert_eq!(overall(&[v.clone(), u.clone()]), Validity::Unknown);
        assert_eq!(
            overall(&[u.clone(), i.clone(), v.clone()]),
            Validity::Invalid
        );
    }

    #[test]
    fn write_verdict_writes_parseable_json() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let records = history();
        for (results, word) in [
            (vec![result("register", Validity::Valid, vec![])], "valid"),
            (
                vec![
                    result("register", Validity::Valid, vec![]),
                    result("set", Validity::Unknown, vec![]),
                ],
                "unknown",
            ),
            (invalid_results(), "invalid"),
        ] {
            write_verdict(dir.path(), &meta(), &results, &records)?;
            let text = std::fs::read_to_string(dir.path().join("verdict.json"))?;
            let json: serde_json::Value = serde_json::from_str(&text)?;
            assert_eq!(json["valid"], word);
            assert_eq!(json["meta"]["seed"], 42);
            assert_eq!(
                json["results"].as_array().map(Vec::len),
                Some(results.len())
            );
            assert_eq!(json["counts"]["ops"]["total"], 40);
            assert_eq!(json["counts"]["ops"]["ok"], 38);
            assert_eq!(json["counts"]["ops"]["fail"], 1);
            assert_eq!(json["counts"]["ops"]["unknown"], 1);
            assert_eq!(json["counts"]["ops_by_workload"]["register"]["total"], 40);
            let back: Verdict = serde_json::from_str(&text)?;
            assert_eq!(back.results, results);
        }
        assert!(!dir.path().join("verdict.json.tmp").exists());

        write_html(dir.path(), &meta(), &invalid_results(), &records)?;
        let html = std::fs::read_to_string(dir.path().join("report.html"))?;
        assert!(html.contains("INVALID"));
        Ok(())
    }

    #[test]
    fn subsampling_keeps_every_non_ok_op_and_the_slowest() {
        let n = 50_000u64;
        let ops: Vec<Op> = (0..n)
            .map(|i| {
                let outcome = match i % 97 {
                    0 => Outcome::Fail,
                    1 => Outcome::Unknown,
                    _ => Outcome::Ok,
                };
                let lat = if i == 31_337 { 5_000 } else { 1 + i % 13 };
                let complete = (outcome != Outcome::Unknown).then_some(i + lat);
                op(i, "register", i, complete, outcome)
            })
            .collect();
        let refs: Vec<&Op> = ops.iter().collect();
        let sample = latency_sample(&refs, MAX_LATENCY_POINTS);
        assert!(sample.len() <= MAX_LATENCY_POINTS, "{}", sample.len());
        assert!(
            sample.len() > MAX_LATENCY_POINTS * 9 / 10,
            "{}",
            sample.len()
        );
        let non_ok = ops.iter().filter(|o| o.outcome != Outcome::Ok).count();
        assert_eq!(
            sample.iter().filter(|o| o.outcome != Outcome::Ok).count(),
            non_ok
        );
        assert!(
            sample.iter().any(|o| o.id == 31_337),
            "the slowest op is kept"
        );
        assert!(sample.windows(2).all(|w| w[0].id < w[1].id), "in order");
        // Deterministic.
        let again = latency_sample(&refs, MAX_LATENCY_POINTS);
        assert!(sample.iter().zip(&again).all(|(a, b)| a.id == b.id));
        // Small histories are drawn whole.
        assert_eq!(latency_sample(&refs[..100], MAX_LATENCY_POINTS).len(), 100);
        // More non-ok ops than room: all of them, no ok op.
        let few = latency_sample(&refs, 10);
        assert_eq!(few.len(), non_ok);

        let records: Vec<Record> = ops.iter().cloned().map(Record::Op).collect();
        let html = render_html(&meta(), &[], &records);
        assert!(html.contains(&format!("Showing {} of {n} ops", sample.len())));
        assert!(!html.contains("NaN"));
    }
}
