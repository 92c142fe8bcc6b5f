//! The results of a run and etcd's report of them (`pkg/report`), plus the
//! one-line JSON form.
//!
//! The rules follow etcd v3.4/v3.5's report:
//!
//! - Only successful requests count as latencies; a failed one goes to the
//!   error distribution, keyed by its message. Requests/sec is successes
//!   divided by the run's wall time.
//! - Average and standard deviation are over the successes (population
//!   deviation: divided by n, not n-1).
//! - Histogram: 11 upper bounds, `fastest + i*(slowest-fastest)/10` for
//!   i = 0..9 and `slowest` last; a latency falls in the first bucket whose
//!   bound it does not exceed (so bucket 0 holds the latencies equal to the
//!   fastest). Bars are `count*40/max` characters `∎`.
//! - Percentiles 10, 25, 50, 75, 90, 95, 99 and 99.9 walk the sorted
//!   latencies once: at 0-based index i the current rank is `i*100/n`
//!   (floating point), and the first index whose rank reaches the next
//!   wanted percentile gives it, ONE percentile per index. A percentile that
//!   is never reached stays 0 (and is not printed): with 100 samples, p99 is
//!   the 100th value and p99.9 is 0. (etcd's main branch has since moved to a
//!   nearest-rank rule; the released 3.4/3.5 tools use this one.)
//! - Numbers print with Go's `%4.4f`, or `%g` with `--precise`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The percentiles etcd reports.
pub const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

/// How each percentile is written (Go's `%v` of the float; also the JSON
/// keys of `percentiles_ms`).
pub const PERCENTILE_LABELS: [&str; 8] = ["10", "25", "50", "75", "90", "95", "99", "99.9"];

/// The bar character of the histogram.
const BAR: &str = "∎";

/// Histogram buckets between the fastest and the slowest (the slowest adds
/// one more bound: 11 in all).
const BUCKETS: usize = 10;

/// Maps `Instant`s to Unix seconds, for `--sample`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    unix_nanos: i128,
}

impl Clock {
    /// The clock as of now.
    pub fn now() -> Clock {
        let unix_nanos = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
            Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
        };
        Clock {
            instant: Instant::now(),
            unix_nanos,
        }
    }

    /// The Unix second (rounded down, Go's `Time.Unix`) of `at`.
    fn unix_second(&self, at: Instant) -> i64 {
        let offset = if at >= self.instant {
            i128::try_from(at.duration_since(self.instant).as_nanos()).unwrap_or(i128::MAX)
        } else {
            -i128::try_from(self.instant.duration_since(at).as_nanos()).unwrap_or(i128::MAX)
        };
        let nanos = self.unix_nanos.saturating_add(offset);
        i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(i64::MAX)
    }
}

/// What one task saw: the latencies of its successful requests, its errors,
/// and (with `--sample`) when each success started.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    lats: Vec<f64>,
    errors: BTreeMap<String, u64>,
    samples: Option<Vec<(Instant, Duration)>>,
}

impl Recorder {
    /// An empty recorder; `sample` keeps start times for the per-second
    /// series.
    pub fn new(sample: bool) -> Recorder {
        Recorder {
            lats: Vec::new(),
            errors: BTreeMap::new(),
            samples: sample.then(Vec::new),
        }
    }

    /// Records one request that ran from `start` to `end`.
    pub fn record(&mut self, start: Instant, end: Instant, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                let took = end.saturating_duration_since(start);
                self.lats.push(took.as_secs_f64());
                if let Some(samples) = &mut self.samples {
                    samples.push((start, took));
                }
            }
            Err(message) => *self.errors.entry(message).or_insert(0) += 1,
        }
    }

    /// Records a success that took `took` (for latencies measured elsewhere).
    pub fn record_ok(&mut self, start: Instant, took: Duration) {
        self.record(start, start + took, Ok(()));
    }

    /// One of the recorded error messages, if any.
    pub fn first_error(&self) -> Option<&str> {
        self.errors.keys().next().map(String::as_str)
    }

    /// How many requests were recorded.
    pub fn count(&self) -> u64 {
        self.lats.len() as u64 + self.errors.values().sum::<u64>()
    }

    fn merge(&mut self, other: Recorder) {
        self.lats.extend(other.lats);
        for (message, n) in other.errors {
            *self.errors.entry(message).or_insert(0) += n;
        }
        if let (Some(mine), Some(theirs)) = (&mut self.samples, other.samples) {
            mine.extend(theirs);
        }
    }
}

/// One second of the `--sample` series (etcd's `DataPoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPoint {
    /// Unix second.
    pub timestamp: i64,
    /// Fastest latency started in that second, in nanoseconds.
    pub min_nanos: u64,
    /// Average latency, in nanoseconds (integer division, as Go's).
    pub avg_nanos: u64,
    /// Slowest latency, in nanoseconds.
    pub max_nanos: u64,
    /// Successful requests started in that second.
    pub throughput: u64,
}

/// The figures of one report, computed as etcd does.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Wall time of the run.
    pub total: Duration,
    /// Latencies of the successful requests, in seconds, sorted.
    pub lats: Vec<f64>,
    /// Error message -> how many requests failed with it.
    pub errors: BTreeMap<String, u64>,
    /// Fastest latency, seconds (0 without successes).
    pub fastest: f64,
    /// Slowest latency, seconds.
    pub slowest: f64,
    /// Mean latency, seconds.
    pub average: f64,
    /// Population standard deviation of the latencies, seconds.
    pub stddev: f64,
    /// Successful requests per second of wall time.
    pub rps: f64,
    /// The per-second series, with `--sample`.
    pub series: Option<Vec<DataPoint>>,
}

impl Stats {
    /// Merges the recorders of a run that took `total`.
    pub fn build(total: Duration, recorders: impl IntoIterator<Item = Recorder>) -> Stats {
        Self::build_with_clock(total, recorders, None)
    }

    /// [`Stats::build`], turning start times into Unix seconds with `clock`
    /// for the `--sample` series.
    pub fn build_with_clock(
        total: Duration,
        recorders: impl IntoIterator<Item = Recorder>,
        clock: Option<&Clock>,
    ) -> Stats {
        let mut all = Recorder::new(clock.is_some());
        for recorder in recorders {
            all.merge(recorder);
        }
        let n = all.lats.len();
        let secs = total.as_secs_f64();
        let mut stats = Stats {
            total,
            errors: all.errors,
            rps: if secs > 0.0 { n as f64 / secs } else { 0.0 },
            ..Stats::default()
        };
        if n > 0 {
            stats.average = all.lats.iter().sum::<f64>() / n as f64;
            let squares: f64 = all
                .lats
                .iter()
                .map(|l| (l - stats.average) * (l - stats.average))
                .sum();
            stats.stddev = (squares / n as f64).sqrt();
            all.lats.sort_by(f64::total_cmp);
            stats.fastest = all.lats[0];
            stats.slowest = all.lats[n - 1];
        }
        stats.lats = all.lats;
        if let (Some(clock), Some(samples)) = (clock, all.samples) {
            stats.series = Some(series(clock, samples));
        }
        stats
    }

    /// Successful requests.
    pub fn successes(&self) -> u64 {
        self.lats.len() as u64
    }

    /// Failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// All requests, successful or not.
    pub fn count(&self) -> u64 {
        self.successes() + self.error_count()
    }

    /// The eight percentiles, in seconds, by etcd's rule (0 = not reached).
    pub fn percentiles(&self) -> [f64; 8] {
        percentiles(&self.lats)
    }

    /// The histogram: (upper bound in seconds, count) for 11 buckets, or
    /// nothing without successes.
    pub fn histogram(&self) -> Vec<(f64, u64)> {
        histogram(&self.lats, self.fastest, self.slowest)
    }

    /// etcd's text report (empty summary without successes; the error
    /// distribution whenever there are errors).
    pub fn render(&self, precise: bool) -> String {
        let num = |x: f64| {
            if precise {
                go_g(x)
            } else {
                format!("{x:4.4}")
            }
        };
        let mut s = String::new();
        if !self.lats.is_empty() {
            s.push_str("\nSummary:\n");
            let _ = writeln!(s, "  Total:\t{} secs.", num(self.total.as_secs_f64()));
            let _ = writeln!(s, "  Slowest:\t{} secs.", num(self.slowest));
            let _ = writeln!(s, "  Fastest:\t{} secs.", num(self.fastest));
            let _ = writeln!(s, "  Average:\t{} secs.", num(self.average));
            let _ = writeln!(s, "  Stddev:\t{} secs.", num(self.stddev));
            let _ = writeln!(s, "  Requests/sec:\t{}", num(self.rps));

            s.push_str("\nResponse time histogram:\n");
            let buckets = self.histogram();
            let max = buckets.iter().map(|&(_, c)| c).max().unwrap_or(0);
            for (bound, count) in buckets {
                let bar = (count * 40).checked_div(max).unwrap_or(0);
                let bar = BAR.repeat(usize::try_from(bar).unwrap_or(0));
                let _ = writeln!(s, "  {} [{count}]\t|{bar}", num(bound));
            }

            s.push_str("\nLatency distribution:\n");
            for (label, value) in PERCENTILE_LABELS.iter().zip(self.percentiles()) {
                if value > 0.0 {
                    let _ = writeln!(s, "  {label}% in {} secs.", num(value));
                }
            }
            if let Some(series) = &self.series {
                s.push_str(&render_series(series));
                s.push('\n');
            }
        }
        if !self.errors.is_empty() {
            s.push_str("\nError distribution:\n");
            for (message, n) in &self.errors {
                let _ = writeln!(s, "  [{n}]\t{message}");
            }
        }
        s
    }
}

/// etcd v3.4/v3.5's percentile rule over sorted latencies (see the module
/// docs).
pub fn percentiles(sorted: &[f64]) -> [f64; 8] {
    let mut out = [0.0; 8];
    let n = sorted.len() as f64;
    let mut next = 0;
    for (i, &value) in sorted.iter().enumerate() {
        let Some(&wanted) = PERCENTILES.get(next) else {
            break;
        };
        let rank = i as f64 * 100.0 / n;
        if rank >= wanted {
            out[next] = value;
            next += 1;
        }
    }
    out
}

/// etcd's 11-bucket histogram over sorted latencies (see the module docs).
pub fn histogram(sorted: &[f64], fastest: f64, slowest: f64) -> Vec<(f64, u64)> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let width = (slowest - fastest) / BUCKETS as f64;
    let mut bounds: Vec<f64> = (0..BUCKETS).map(|i| fastest + width * i as f64).collect();
    bounds.push(slowest);
    let mut counts = vec![0u64; bounds.len()];
    let mut bucket = 0;
    for &lat in sorted {
        while lat > bounds[bucket] && bucket < bounds.len() - 1 {
            bucket += 1;
        }
        // A latency above the slowest cannot happen (it is the maximum);
        // it would land in the last bucket rather than loop forever.
        counts[bucket] += 1;
    }
    bounds.into_iter().zip(counts).collect()
}

/// Go's `%g` (shortest representation): `%e` when the decimal exponent is
/// below -4 or at least 6 (`1.234567e+06`, `1e-05`), plain digits otherwise.
pub fn go_g(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x == 0.0 {
        return format!("{sign}0");
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.2345e-5".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..6).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}{rest}e{esign}{:02}", exponent.abs());
    }
    if exponent < 0 {
        let zeros = "0".repeat(usize::try_from(-exponent - 1).unwrap_or(0));
        return format!("{sign}0.{zeros}{digits}");
    }
    let int_len = usize::try_from(exponent + 1).unwrap_or(1);
    if digits.len() <= int_len {
        let zeros = "0".repeat(int_len - digits.len());
        format!("{sign}{digits}{zeros}")
    } else {
        let (int, frac) = digits.split_at(int_len);
        format!("{sign}{int}.{frac}")
    }
}

/// Go's `time.Duration.String` of a non-negative duration: `0s`, `850ns`,
/// `1.5µs`, `12.345ms`, `1.5s`, `2m3.5s`, `1h0m0s`.
pub fn go_duration(nanos: u64) -> String {
    /// `value` as `int.frac` with `digits` fraction digits, trailing zeros
    /// (and a bare dot) dropped; returns the text and the integer part.
    fn split(value: u64, digits: u32) -> (u64, String) {
        let scale = 10u64.pow(digits);
        let frac = format!("{:0width$}", value % scale, width = digits as usize);
        let frac = frac.trim_end_matches('0');
        let text = if frac.is_empty() {
            String::new()
        } else {
            format!(".{frac}")
        };
        (value / scale, text)
    }
    match nanos {
        0 => "0s".into(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => {
            let (int, frac) = split(n, 3);
            format!("{int}{frac}µs")
        }
        n if n < 1_000_000_000 => {
            let (int, frac) = split(n, 6);
            format!("{int}{frac}ms")
        }
        n => {
            let (secs, frac) = split(n, 9);
            let mut out = format!("{}{frac}s", secs % 60);
            let minutes = secs / 60;
            if minutes > 0 {
                out = format!("{}m{out}", minutes % 60);
                let hours = minutes / 60;
                if hours > 0 {
                    out = format!("{hours}h{out}");
                }
            }
            out
        }
    }
}

fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// etcd's per-second series: by Unix second of each success's start, the
/// min (first latency, then the smallest non-zero one), average and max
/// latency and the count; seconds without a request between the first and
/// the last are filled in as zeros.
fn series(clock: &Clock, mut samples: Vec<(Instant, Duration)>) -> Vec<DataPoint> {
    samples.sort_by_key(|&(start, _)| start);
    let mut by_second: BTreeMap<i64, (u64, u64, u128, u64)> = BTreeMap::new();
    for (start, took) in samples {
        let lat = nanos_of(took);
        by_second
            .entry(clock.unix_second(start))
            .and_modify(|(min, max, sum, count)| {
                if lat != 0 {
                    *min = (*min).min(lat);
                }
                *max = (*max).max(lat);
                *sum += u128::from(lat);
                *count += 1;
            })
            .or_insert((lat, lat, u128::from(lat), 1));
    }
    if let (Some(&first), Some(&last)) = (by_second.keys().next(), by_second.keys().last()) {
        for second in first..last {
            by_second.entry(second).or_insert((0, 0, 0, 0));
        }
    }
    by_second
        .into_iter()
        .map(|(timestamp, (min, max, sum, count))| DataPoint {
            timestamp,
            min_nanos: min,
            avg_nanos: if count > 0 {
                u64::try_from(sum / u128::from(count)).unwrap_or(u64::MAX)
            } else {
                0
            },
            max_nanos: max,
            throughput: count,
        })
        .collect()
}

/// The series as etcd prints it (a CSV table after a title line).
fn render_series(series: &[DataPoint]) -> String {
    let mut s = String::from("\nSample in one second (unix latency throughput):\n");
    s.push_str("UNIX-SECOND,MIN-LATENCY-MS,AVG-LATENCY-MS,MAX-LATENCY-MS,AVG-THROUGHPUT\n");
    for p in series {
        let _ = writeln!(
            s,
            "{},{},{},{},{}",
            p.timestamp,
            go_duration(p.min_nanos),
            go_duration(p.avg_nanos),
            go_duration(p.max_nanos),
            p.throughput
        );
    }
    s
}

/// One finished report: what ran, against what, and its figures.
#[derive(Debug, Clone)]
pub struct Report {
    /// The workload's name (`put`, `range`, `txn-mixed-read`, ...); the
    /// `workload` field of the JSON.
    pub workload: String,
    /// The `--endpoints` list as given.
    pub endpoints: Vec<String>,
    /// `--clients`.
    pub clients: usize,
    /// `--conns`.
    pub conns: usize,
    /// The figures.
    pub stats: Stats,
    /// Text etcd prints before the report ("Watch creation summary:\n").
    pub text_prefix: String,
    /// Text etcd prints after it (a newline where it uses `Println`).
    pub text_suffix: String,
}

impl Report {
    /// etcd's text form, with its surrounding lines.
    pub fn to_text(&self, precise: bool) -> String {
        format!(
            "{}{}{}",
            self.text_prefix,
            self.stats.render(precise),
            self.text_suffix
        )
    }

    /// The report as ONE line of JSON (no trailing newline):
    ///
    /// ```text
    /// {"workload": str, "endpoints": [str], "clients": n, "conns": n,
    ///  "total": n, "errors": n, "total_secs": f64, "slowest_ms": f64,
    ///  "fastest_ms": f64, "average_ms": f64, "stddev_ms": f64, "rps": f64,
    ///  "percentiles_ms": {"10": f64, "25": f64, "50": f64, "75": f64,
    ///                     "90": f64, "95": f64, "99": f64, "99.9": f64},
    ///  "histogram": [{"le_ms": f64, "count": n}],
    ///  "error_distribution": {str: n}}
    /// ```
    ///
    /// `total` counts every request (successes + errors); the latency
    /// figures and `rps` are over the successes, as etcd's. Without
    /// successes the latency figures are 0 and the histogram is empty. A
    /// percentile etcd's rule does not reach (too few samples) is 0.
    pub fn to_json(&self) -> String {
        let stats = &self.stats;
        let mut s = String::from("{");
        field(&mut s, "workload");
        json_str(&mut s, &self.workload);
        s.push(',');
        field(&mut s, "endpoints");
        s.push('[');
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            json_str(&mut s, endpoint);
        }
        s.push_str("],");
        let _ = write!(
            s,
            "\"clients\":{},\"conns\":{},\"total\":{},\"errors\":{},",
            self.clients,
            self.conns,
            stats.count(),
            stats.error_count()
        );
        let ms = |secs: f64| secs * 1000.0;
        for (name, value) in [
            ("total_secs", stats.total.as_secs_f64()),
            ("slowest_ms", ms(stats.slowest)),
            ("fastest_ms", ms(stats.fastest)),
            ("average_ms", ms(stats.average)),
            ("stddev_ms", ms(stats.stddev)),
            ("rps", stats.rps),
        ] {
            field(&mut s, name);
            json_f64(&mut s, value);
            s.push(',');
        }
        field(&mut s, "percentiles_ms");
        s.push('{');
        for (i, (label, value)) in PERCENTILE_LABELS
            .iter()
            .zip(stats.percentiles())
            .enumerate()
        {
            if i > 0 {
                s.push(',');
            }
            field(&mut s, label);
            json_f64(&mut s, ms(value));
        }
        s.push_str("},");
        field(&mut s, "histogram");
        s.push('[');
        for (i, (bound, count)) in stats.histogram().into_iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str("{\"le_ms\":");
            json_f64(&mut s, ms(bound));
            let _ = write!(s, ",\"count\":{count}}}");
        }
        s.push_str("],");
        field(&mut s, "error_distribution");
        s.push('{');
        for (i, (message, n)) in stats.errors.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            json_str(&mut s, message);
            let _ = write!(s, ":{n}");
        }
        s.push_str("}}");
        s
    }
}

/// Writes `"name":`.
fn field(s: &mut String, name: &str) {
    json_str(s, name);
    s.push(':');
}

/// Writes a JSON string literal.
pub fn json_str(s: &mut String, text: &str) {
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// Writes a JSON number; a non-finite value (no JSON form) is written as 0.
pub fn json_f64(s: &mut String, value: f64) {
    if value.is_finite() {
        // Rust's Display of f64 is the shortest round-trip decimal, never
        // with an exponent: always a valid JSON number.
        let _ = write!(s, "{value}");
    } else {
        s.push('0');
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn stats_of(lats: &[f64], total_secs: f64, errors: &[(&str, u64)]) -> Stats {
        let start = Instant::now();
        let mut rec = Recorder::new(false);
        for &l in lats {
            rec.record_ok(start, Duration::from_secs_f64(l));
        }
        for &(message, n) in errors {
            for _ in 0..n {
                rec.record(start, start, Err(message.to_string()));
            }
        }
        Stats::build(Duration::from_secs_f64(total_secs), [rec])
    }

    #[test]
    fn percentile_rule_one_per_index() {
        // n = 4: ranks 0, 25, 50, 75. Index 1 (25) reaches p10, index 2 (50)
        // reaches p25, index 3 (75) reaches p50; p75 and up are never reached.
        assert_eq!(
            percentiles(&[1.0, 2.0, 3.0, 4.0]),
            [2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        // n = 10, values 1..=10: ranks 0,10,...,90.
        // p10 at i=1 (2), p25 at i=3 (4), p50 at i=5 (6), p75 at i=8 (9),
        // p90 at i=9 (10); p95, p99, p99.9 never reached.
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentiles(&ten), [2.0, 4.0, 6.0, 9.0, 10.0, 0.0, 0.0, 0.0]);
        // n = 100, values 1..=100: p at index p, so value p+1; p99.9 not
        // reached.
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(
            percentiles(&hundred),
            [11.0, 26.0, 51.0, 76.0, 91.0, 96.0, 100.0, 0.0]
        );
        // n = 1000: p99.9 is the last (index 999: 999*100/1000 = 99.9).
        let thousand: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(
            percentiles(&thousand),
            [101.0, 251.0, 501.0, 751.0, 901.0, 951.0, 991.0, 1000.0]
        );
        // etcd's own test: one slow request in 100 is the 99th percentile.
        let mut one_slow = vec![0.0; 100];
        one_slow[99] = 1.0;
        assert_eq!(percentiles(&one_slow)[6], 1.0);
        // A single sample reaches nothing (rank 0 < 10).
        assert_eq!(percentiles(&[5.0]), [0.0; 8]);
        assert_eq!(percentiles(&[]), [0.0; 8]);
    }

    #[test]
    fn histogram_rule() {
        // fastest 0.5, slowest 5.5: width 0.5, bounds 0.5, 1.0, ..., 5.0, 5.5.
        let h = histogram(&[0.5, 0.5, 1.25, 3.0, 5.5], 0.5, 5.5);
        let bounds: Vec<f64> = h.iter().map(|b| b.0).collect();
        assert_eq!(
            bounds,
            [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5]
        );
        let counts: Vec<u64> = h.iter().map(|b| b.1).collect();
        // 0.5 twice in the first bucket (<= fastest), 1.25 in (1.0, 1.5],
        // 3.0 in (2.5, 3.0] (bounds are inclusive), 5.5 in the last.
        assert_eq!(counts, [2, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1]);
        // All equal: every bound is that value, all in the first bucket.
        let h = histogram(&[2.0, 2.0, 2.0], 2.0, 2.0);
        assert_eq!(h.len(), 11);
        assert_eq!(h[0], (2.0, 3));
        assert!(h[1..].iter().all(|&(b, c)| b == 2.0 && c == 0));
        assert!(histogram(&[], 0.0, 0.0).is_empty());
    }

    #[test]
    fn stats_figures() {
        let s = stats_of(&[1.0, 2.0, 3.0, 4.0], 2.0, &[("boom", 3)]);
        assert_eq!((s.fastest, s.slowest, s.average), (1.0, 4.0, 2.5));
        // Population deviation: sqrt((2.25+0.25+0.25+2.25)/4) = sqrt(1.25).
        assert_eq!(s.stddev, 1.25f64.sqrt());
        assert_eq!(s.rps, 2.0, "successes over wall time");
        assert_eq!((s.count(), s.successes(), s.error_count()), (7, 4, 3));
        let empty = stats_of(&[], 1.0, &[]);
        assert_eq!((empty.count(), empty.average, empty.rps), (0, 0.0, 0.0));
        assert_eq!(empty.render(false), "");
    }

    #[test]
    fn text_report_layout() {
        let s = stats_of(
            &[0.5, 0.5, 1.25, 3.0, 5.5],
            10.0,
            &[("etcdserver: boom", 2)],
        );
        let text = s.render(false);
        let expected = "\nSummary:\n\
            \x20 Total:\t10.0000 secs.\n\
            \x20 Slowest:\t5.5000 secs.\n\
            \x20 Fastest:\t0.5000 secs.\n\
            \x20 Average:\t2.1500 secs.\n\
            \x20 Stddev:\t1.9079 secs.\n\
            \x20 Requests/sec:\t0.5000\n\
            \nResponse time histogram:\n\
            \x20 0.5000 [2]\t|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎\n\
            \x20 1.0000 [0]\t|\n\
            \x20 1.5000 [1]\t|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎\n\
            \x20 2.0000 [0]\t|\n\
            \x20 2.5000 [0]\t|\n\
            \x20 3.0000 [1]\t|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎\n\
            \x20 3.5000 [0]\t|\n\
            \x20 4.0000 [0]\t|\n\
            \x20 4.5000 [0]\t|\n\
            \x20 5.0000 [0]\t|\n\
            \x20 5.5000 [1]\t|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎\n\
            \nLatency distribution:\n\
            \x20 10% in 0.5000 secs.\n\
            \x20 25% in 1.2500 secs.\n\
            \x20 50% in 3.0000 secs.\n\
            \x20 75% in 5.5000 secs.\n\
            \nError distribution:\n\
            \x20 [2]\tetcdserver: boom\n";
        assert_eq!(text, expected);
        // --precise: Go's %g.
        let precise = s.render(true);
        assert!(precise.contains("  Total:\t10 secs.\n"), "{precise}");
        assert!(precise.contains("  Average:\t2.15 secs.\n"), "{precise}");
        assert!(precise.contains("  1 [0]\t|\n"), "{precise}");
        assert!(precise.contains("  1.5 [1]\t|"), "{precise}");
        assert!(precise.contains("  25% in 1.25 secs.\n"), "{precise}");
    }

    #[test]
    fn go_number_formats() {
        assert_eq!(go_g(0.0), "0");
        assert_eq!(go_g(1.0), "1");
        assert_eq!(go_g(2.5), "2.5");
        assert_eq!(go_g(0.0001234), "0.0001234");
        assert_eq!(go_g(0.00001234), "1.234e-05");
        assert_eq!(go_g(123456.0), "123456");
        assert_eq!(go_g(1234567.0), "1.234567e+06");
        assert_eq!(go_g(1e21), "1e+21");
        assert_eq!(go_g(13399.8265), "13399.8265");
        assert_eq!(go_g(-0.5), "-0.5");
        assert_eq!(go_g(100.0), "100");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(850), "850ns");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(2_000_000), "2ms");
        assert_eq!(go_duration(12_345_678), "12.345678ms");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(123_500_000_000), "2m3.5s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    }

    #[test]
    fn sample_series() {
        let clock = Clock {
            instant: Instant::now(),
            unix_nanos: 1_000_000_000_500_000_000, // second 1e9, half way
        };
        let mut rec = Recorder::new(true);
        let at = |ms: u64| clock.instant + Duration::from_millis(ms);
        rec.record_ok(at(0), Duration::from_millis(4));
        rec.record_ok(at(100), Duration::from_millis(2));
        rec.record_ok(at(2600), Duration::from_millis(1)); // second 1e9+3
        let s = Stats::build_with_clock(Duration::from_secs(3), [rec], Some(&clock));
        let series = s.series.clone().unwrap();
        let seconds: Vec<i64> = series.iter().map(|p| p.timestamp).collect();
        let base = 1_000_000_000;
        assert_eq!(seconds, [base, base + 1, base + 2, base + 3]);
        assert_eq!(
            series[0],
            DataPoint {
                timestamp: base,
                min_nanos: 2_000_000,
                avg_nanos: 3_000_000,
                max_nanos: 4_000_000,
                throughput: 2
            }
        );
        assert_eq!(series[1].throughput, 0);
        let text = s.render(false);
        assert!(text.contains(
            "\nSample in one second (unix latency throughput):\n\
             UNIX-SECOND,MIN-LATENCY-MS,AVG-LATENCY-MS,MAX-LATENCY-MS,AVG-THROUGHPUT\n\
             1000000000,2ms,3ms,4ms,2\n\
             1000000001,0s,0s,0s,0\n"
        ));
    }

    #[test]
    fn json_shape() {
        let stats = stats_of(&[0.5, 0.5, 1.25, 3.0, 5.5], 10.0, &[("bad \"x\"\n", 2)]);
        let report = Report {
            workload: "put".into(),
            endpoints: vec!["127.0.0.1:2379".into(), "http://h:1".into()],
            clients: 10,
            conns: 2,
            stats,
            text_prefix: String::new(),
            text_suffix: String::new(),
        };
        // Deviations -1.65, -1.65, -0.9, 0.85, 3.35: sqrt(18.2 / 5) s.
        let stddev_ms = report.stats.stddev * 1000.0;
        assert!((stddev_ms - 3.64f64.sqrt() * 1000.0).abs() < 1e-9);
        let expected = [
            r#"{"workload":"put","endpoints":["127.0.0.1:2379","http://h:1"],"#,
            r#""clients":10,"conns":2,"total":7,"errors":2,"total_secs":10,"#,
            r#""slowest_ms":5500,"fastest_ms":500,"average_ms":2150,"#,
            &format!(r#""stddev_ms":{stddev_ms},"rps":0.5,"#),
            r#""percentiles_ms":{"10":500,"25":1250,"50":3000,"75":5500,"#,
            r#""90":0,"95":0,"99":0,"99.9":0},"#,
            r#""histogram":[{"le_ms":500,"count":2},{"le_ms":1000,"count":0},"#,
            r#"{"le_ms":1500,"count":1},{"le_ms":2000,"count":0},"#,
            r#"{"le_ms":2500,"count":0},{"le_ms":3000,"count":1},"#,
            r#"{"le_ms":3500,"count":0},{"le_ms":4000,"count":0},"#,
            r#"{"le_ms":4500,"count":0},{"le_ms":5000,"count":0},"#,
            r#"{"le_ms":5500,"count":1}],"#,
            r#""error_distribution":{"bad \"x\"\n":2}}"#,
        ]
        .concat();
        assert_eq!(report.to_json(), expected);
        assert!(!report.to_json().contains('\n'), "one line");

        let empty = Report {
            stats: Stats::build(Duration::ZERO, [Recorder::new(false)]),
            ..report
        };
        let json = empty.to_json();
        assert!(
            json.contains(r#""total":0,"errors":0,"total_secs":0,"#),
            "{json}"
        );
        assert!(
            json.contains(r#""histogram":[],"error_distribution":{}}"#),
            "{json}"
        );
    }

    #[test]
    fn json_escapes() {
        let mut s = String::new();
        json_str(&mut s, "a\u{1}b\\c\té");
        assert_eq!(s, r#""a\u0001b\\c\té""#);
        let mut n = String::new();
        json_f64(&mut n, f64::NAN);
        json_f64(&mut n, 0.000001);
        assert_eq!(n, "00.000001");
    }
}
