//! Checkers: each reads a history and returns a [`CheckResult`].
//!
//! * [`linearizable`]: Wing–Gong/Lowe search over per-key registers (the
//!   engine); [`register`] feeds it the `register` workload's ops.
//! * [`set`]: every acknowledged add is in the final read, once.
//! * [`watch`]: watchers saw every revision of their prefix, in order, once,
//!   whole, and progress notifications never ran ahead of events.
//! * [`lease`]: keys of a lease vanish together, and never while the lease is
//!   alive and kept alive.
//! * [`append`]: Elle's list-append: version orders from the lists read, a
//!   dependency graph (ww, wr, rw, real time), cycles = anomalies.
//!
//! Checkers are pure functions of the history: no clock, no network.

use serde::{Deserialize, Serialize};

use crate::history::{Nanos, Record};

pub mod append;
pub mod lease;
pub mod linearizable;
pub mod register;
pub mod set;
#[cfg(test)]
mod testkit;
pub mod watch;

/// A checker's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    /// Checked: no anomaly.
    Valid,
    /// At least one anomaly.
    Invalid,
    /// Could not decide (search bound hit, or nothing to check).
    Unknown,
}

/// One thing a checker found wrong.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Short kind, e.g. `nonlinearizable`, `lost-write`, `duplicate-event`,
    /// `gap`, `reordered`, `split-revision`, `early-progress`,
    /// `lease-key-vanished`, `lease-key-survived`.
    pub kind: String,
    /// In words, with the keys, values and revisions involved.
    pub description: String,
    /// Ids of the ops involved, smallest failing window first (the ops the
    /// report shows for this anomaly).
    pub ops: Vec<u64>,
    /// The time window of those ops (or watch records), for the report.
    pub window: Option<(Nanos, Nanos)>,
}

/// What one checker concluded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The checker (`register`, `set`, `watch`, `lease`).
    pub checker: String,
    pub validity: Validity,
    /// One line: what was checked and the result ("1,234 ops on 5 keys:
    /// linearizable").
    pub summary: String,
    /// Empty iff valid; capped at a few dozen.
    pub anomalies: Vec<Anomaly>,
}

/// A checker's result with its anomalies capped (see
/// `register::cap_anomalies`); the summary says how many there were.
pub(crate) fn result(
    checker: &str,
    validity: Validity,
    mut summary: String,
    anomalies: Vec<Anomaly>,
) -> CheckResult {
    use std::fmt::Write as _;
    let (anomalies, total) = register::cap_anomalies(anomalies);
    if total > anomalies.len() {
        let _ = write!(summary, "; {} of {total} anomalies shown", anomalies.len());
    } else if total > 0 {
        let _ = write!(summary, "; {total} anomalies");
    }
    CheckResult {
        checker: checker.to_owned(),
        validity,
        summary,
        anomalies,
    }
}

/// Runs every checker that has something to check in `records` (a checker
/// whose workload did not run is skipped).
pub fn check_all(records: &[Record]) -> Vec<CheckResult> {
    [
        register::check(records),
        set::check(records),
        watch::check(records),
        lease::check(records),
        append::check(records),
    ]
    .into_iter()
    .flatten()
    .collect()
}
