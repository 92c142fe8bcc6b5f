//! The `register` workload's checker: the history of every key must be
//! linearizable (a register holding the last value written to it).
//!
//! * Every `register` op becomes a [`linearizable::Operation`]: a
//!   [`Call::Read`] a read, a [`Call::Write`] a write, a [`Call::Cas`] a
//!   compare-and-set on `expect` — also with `by_revision`: values are unique
//!   per key, so the revision a read saw holding `expect` holds exactly
//!   `expect`, and comparing the mod revision is comparing the value.
//! * Fail: the op certainly did not happen (dropped). Unknown: it may have
//!   happened at any time after its invocation, or never.
//! * A malformed op (Ok without an answer or a completion time, or with an
//!   answer of another kind) is checked as one of unknown outcome, which can
//!   never cause a false alarm, and the verdict is at best unknown.
//! * Keys are checked one by one, so every key that is not linearizable gets
//!   its own anomaly, with the smallest failing window the search found: the
//!   last ops of the longest linearizable prefix, the op that could not be
//!   placed, and the ops pending then.
//! * Also, cheaply, header revisions follow real time: an ok op invoked after
//!   another ok op completed has a header revision at least as large (strictly
//!   larger if it is a write), since the revision of a linearizable store
//!   never goes back ("revision-order").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use super::linearizable::{self, CheckError, Output, Violation};
use super::{Anomaly, CheckResult, Validity};
use crate::history::{self, Call, Nanos, Op, Outcome, Record, Ret};

/// The workload this checker reads.
pub const WORKLOAD: &str = "register";

/// At most this many anomalies are kept in a [`CheckResult`] (shared by the
/// checkers of this module).
pub(super) const MAX_ANOMALIES: usize = 50;

/// `None` when the history has no op of this workload.
pub fn check(records: &[Record]) -> Option<CheckResult> {
    check_with_limit(records, linearizable::DEFAULT_MAX_STATES)
}

/// [`check`] with a bound on the linearizability search states per key.
fn check_with_limit(records: &[Record], max_states: usize) -> Option<CheckResult> {
    let ops: Vec<&Op> = history::ops(records)
        .filter(|op| op.workload == WORKLOAD)
        .collect();
    if ops.is_empty() {
        return None;
    }

    let mut malformed: Vec<(u64, String)> = Vec::new();
    let mut by_key: BTreeMap<&str, Vec<(linearizable::Operation, &Op)>> = BTreeMap::new();
    let (mut n_ok, mut n_fail, mut n_unknown) = (0usize, 0usize, 0usize);
    for &op in &ops {
        match op.outcome {
            Outcome::Ok => n_ok += 1,
            Outcome::Fail => n_fail += 1,
            Outcome::Unknown => n_unknown += 1,
        }
        match convert(op) {
            Converted::Op { key, operation } => {
                by_key.entry(key).or_default().push((operation, op))
            }
            Converted::Malformed { fallback, reason } => {
                malformed.push((op.id, reason));
                if let Some((key, operation)) = fallback {
                    by_key.entry(key).or_default().push((operation, op));
                }
            }
        }
    }

    let mut anomalies = Vec::new();
    let mut inconclusive = Vec::new();
    let mut bad_keys = 0usize;
    for (key, entries) in &by_key {
        let history: Vec<linearizable::Operation> = entries
            .iter()
            .map(|(operation, _)| operation.clone())
            .collect();
        let originals: Vec<&Op> = entries.iter().map(|(_, op)| *op).collect();
        match linearizable::check_with_limit(&history, max_states) {
            Ok(()) => {}
            Err(CheckError::NotLinearizable(violation)) => {
                bad_keys += 1;
                anomalies.push(violation_anomaly(&violation, &originals));
            }
            Err(CheckError::Inconclusive {
                ops,
                states_explored,
                ..
            }) => inconclusive.push(format!(
                "key {key:?} ({ops} ops) inconclusive after {states_explored} search states"
            )),
            Err(CheckError::Malformed { index, reason }) => {
                let id = originals.get(index).map_or(0, |op| op.id);
                malformed.push((id, reason));
            }
        }
    }

    let (revision_anomalies, revision_checked) = revision_order(&ops);
    anomalies.extend(revision_anomalies);

    let mut summary = format!(
        "{} ops on {} keys ({n_ok} ok, {n_fail} failed, {n_unknown} unknown): ",
        ops.len(),
        by_key.len()
    );
    if bad_keys == 0 {
        summary.push_str(if inconclusive.is_empty() {
            "linearizable"
        } else {
            "no violation found"
        });
    } else {
        let _ = write!(summary, "{bad_keys} keys not linearizable");
    }
    let _ = write!(
        summary,
        "; header revisions of {revision_checked} ok ops checked against real time"
    );
    let revision_bad = anomalies.len() - bad_keys;
    if revision_bad > 0 {
        let _ = write!(summary, " ({revision_bad} out of order)");
    }
    if let Some(first) = inconclusive.first() {
        let _ = write!(
            summary,
            "; {} keys inconclusive ({first})",
            inconclusive.len()
        );
    }
    if let Some((id, reason)) = malformed.first() {
        let _ = write!(
            summary,
            "; {} malformed ops checked as unknown (op {id}: {reason})",
            malformed.len()
        );
    }

    let validity = if !anomalies.is_empty() {
        Validity::Invalid
    } else if !inconclusive.is_empty() || !malformed.is_empty() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    Some(super::result(WORKLOAD, validity, summary, anomalies))
}

/// A history op as the linearizability checker sees it.
enum Converted<'a> {
    Op {
        key: &'a str,
        operation: linearizable::Operation,
    },
    /// Not checkable as recorded: checked as `fallback` (unknown outcome), if
    /// any, and the verdict can be no better than unknown.
    Malformed {
        fallback: Option<(&'a str, linearizable::Operation)>,
        reason: String,
    },
}

fn convert(op: &Op) -> Converted<'_> {
    let client = usize::try_from(op.process).unwrap_or(usize::MAX);
    let (key, lin_op) = match &op.call {
        Call::Read { key } => (key.as_str(), linearizable::Op::Read),
        Call::Write { key, value } => (key.as_str(), linearizable::Op::Write(*value)),
        // With `by_revision`, `expect` is the value the read saw at that
        // revision (values are unique per key): the same comparison.
        Call::Cas {
            key, expect, value, ..
        } => (
            key.as_str(),
            linearizable::Op::Cas {
                expect: Some(*expect),
                new: *value,
            },
        ),
        other => {
            return Converted::Malformed {
                fallback: None,
                reason: format!("not a register call: {other:?}"),
            }
        }
    };
    let unknown = || linearizable::Operation::unknown(client, key, lin_op.clone(), op.invoke);
    match op.outcome {
        Outcome::Fail => Converted::Op {
            key,
            operation: linearizable::Operation::failed(
                client,
                key,
                lin_op.clone(),
                op.invoke,
                op.complete.unwrap_or(op.invoke),
            ),
        },
        Outcome::Unknown => Converted::Op {
            key,
            operation: unknown(),
        },
        Outcome::Ok => {
            let output = match (&lin_op, &op.ret) {
                (linearizable::Op::Read, Some(Ret::Read { value, .. })) => Ok(Output::Read(*value)),
                (linearizable::Op::Write(_), Some(Ret::Write { .. })) => Ok(Output::Write),
                (linearizable::Op::Cas { .. }, Some(Ret::Cas { succeeded, .. })) => {
                    Ok(Output::Cas(*succeeded))
                }
                (_, None) => Err("ok without an answer".to_owned()),
                (_, Some(ret)) => Err(format!("answer does not match the call: {ret:?}")),
            };
            let output = output.and_then(|output| match op.complete {
                Some(complete) if complete >= op.invoke => Ok((complete, output)),
                Some(_) => Err("completes before it is invoked".to_owned()),
                None => Err("ok without a completion time".to_owned()),
            });
            match output {
                Ok((complete, output)) => Converted::Op {
                    key,
                    operation: linearizable::Operation {
                        client,
                        key: key.to_owned(),
                        op: lin_op.clone(),
                        invoke: op.invoke,
                        complete: Some(complete),
                        outcome: linearizable::Outcome::Ok(output),
                    },
                },
                Err(reason) => Converted::Malformed {
                    fallback: Some((key, unknown())),
                    reason,
                },
            }
        }
    }
}

fn fmt_value(value: Option<u64>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| v.to_string())
}

/// The anomaly for a key's violation; `originals[i]` is the history op of the
/// checked slice's index `i`.
fn violation_anomaly(violation: &Violation, originals: &[&Op]) -> Anomaly {
    let id = |index: usize| originals.get(index).map_or(u64::MAX, |op| op.id);
    let mut description = format!(
        "history of key {:?} is not linearizable: the longest linearizable prefix found \
         has {} ops and leaves the register {}",
        violation.key,
        violation.prefix.len(),
        fmt_value(violation.state)
    );
    if !violation.prefix_tail.is_empty() {
        let _ = write!(
            description,
            "\n  its last {} ops (==> state after):",
            violation.prefix_tail.len()
        );
        for op in &violation.prefix_tail {
            let _ = write!(
                description,
                "\n    op {} {}  ==> {}",
                id(op.index),
                op.op,
                fmt_value(op.state_after)
            );
        }
    }
    let _ = write!(
        description,
        "\n  could not place before it returned: op {} {}",
        id(violation.blocked.index),
        violation.blocked.op
    );
    const PENDING_SHOWN: usize = 20;
    if violation.pending.is_empty() {
        description.push_str("\n  no other op was pending");
    } else {
        description.push_str("\n  other ops pending then:");
        for op in violation.pending.iter().take(PENDING_SHOWN) {
            let _ = write!(description, "\n    op {} {}", id(op.index), op.op);
        }
        if violation.pending.len() > PENDING_SHOWN {
            let _ = write!(
                description,
                "\n    ... and {} more",
                violation.pending.len() - PENDING_SHOWN
            );
        }
    }

    let mut involved: Vec<&Op> = Vec::new();
    let indices = violation
        .prefix_tail
        .iter()
        .map(|op| op.index)
        .chain(std::iter::once(violation.blocked.index))
        .chain(violation.pending.iter().map(|op| op.index));
    for index in indices {
        if let Some(&op) = originals.get(index) {
            if !involved.iter().any(|seen| seen.id == op.id) {
                involved.push(op);
            }
        }
    }
    Anomaly {
        kind: "nonlinearizable".to_owned(),
        description,
        ops: involved.iter().map(|op| op.id).collect(),
        window: op_window(involved.iter().copied()),
    }
}

/// The revision a register op's answer carries, and whether the op wrote.
fn header_revision(op: &Op) -> Option<(i64, bool)> {
    match (&op.call, &op.ret) {
        (Call::Read { .. }, Some(Ret::Read { revision, .. })) => Some((*revision, false)),
        (Call::Write { .. }, Some(Ret::Write { revision })) => Some((*revision, true)),
        (
            Call::Cas { .. },
            Some(Ret::Cas {
                succeeded,
                revision,
            }),
        ) => Some((*revision, *succeeded)),
        _ => None,
    }
}

/// Header revisions never go back in real time: if `a` completed before `b`
/// was invoked, `rev(b) >= rev(a)`, and `rev(b) > rev(a)` if `b` wrote. Two
/// writes never share a revision. Returns the anomalies and how many ops were
/// checked. Each op is blamed as the earlier op at most once, so one bogus
/// revision does not flag every later op.
fn revision_order(ops: &[&Op]) -> (Vec<Anomaly>, usize) {
    struct Timed<'a> {
        op: &'a Op,
        complete: Nanos,
        revision: i64,
        writes: bool,
    }
    let timed: Vec<Timed<'_>> = ops
        .iter()
        .filter(|op| op.outcome == Outcome::Ok)
        .filter_map(|&op| {
            let (revision, writes) = header_revision(op)?;
            let complete = op.complete.filter(|&complete| complete >= op.invoke)?;
            Some(Timed {
                op,
                complete,
                revision,
                writes,
            })
        })
        .collect();
    let mut anomalies = Vec::new();
    let mut blamed: BTreeSet<u64> = BTreeSet::new();

    let mut by_complete: Vec<&Timed<'_>> = timed.iter().collect();
    by_complete.sort_by_key(|t| (t.complete, t.op.id));
    let mut by_invoke: Vec<&Timed<'_>> = timed.iter().collect();
    by_invoke.sort_by_key(|t| (t.op.invoke, t.op.id));
    let mut next = 0;
    let mut latest: Option<&Timed<'_>> = None;
    for b in by_invoke {
        while let Some(a) = by_complete.get(next).filter(|a| a.complete < b.op.invoke) {
            if latest.is_none_or(|l| a.revision > l.revision) {
                latest = Some(a);
            }
            next += 1;
        }
        let Some(a) = latest else { continue };
        let bad = if b.writes {
            b.revision <= a.revision
        } else {
            b.revision < a.revision
        };
        if bad && blamed.insert(a.op.id) {
            anomalies.push(Anomaly {
                kind: "revision-order".to_owned(),
                description: format!(
                    "op {} ({}) was invoked after op {} ({}) completed, but its header \
                     revision {} is {} op {}'s revision {}",
                    b.op.id,
                    describe_call(&b.op.call),
                    a.op.id,
                    describe_call(&a.op.call),
                    b.revision,
                    if b.writes { "not above" } else { "below" },
                    a.op.id,
                    a.revision
                ),
                ops: vec![a.op.id, b.op.id],
                window: op_window([a.op, b.op]),
            });
        }
    }

    let mut writes: HashMap<i64, &Timed<'_>> = HashMap::new();
    for t in timed.iter().filter(|t| t.writes) {
        if let Some(first) = writes.get(&t.revision) {
            if blamed.insert(t.op.id) {
                anomalies.push(Anomaly {
                    kind: "revision-order".to_owned(),
                    description: format!(
                        "two writes were acknowledged at the same revision {}: op {} ({}) \
                         and op {} ({})",
                        t.revision,
                        first.op.id,
                        describe_call(&first.op.call),
                        t.op.id,
                        describe_call(&t.op.call)
                    ),
                    ops: vec![first.op.id, t.op.id],
                    window: op_window([first.op, t.op]),
                });
            }
        } else {
            writes.insert(t.revision, t);
        }
    }
    (anomalies, timed.len())
}

fn describe_call(call: &Call) -> String {
    match call {
        Call::Read { key } => format!("read {key}"),
        Call::Write { key, value } => format!("write {key}={value}"),
        Call::Cas {
            key,
            expect,
            value,
            by_revision: None,
        } => format!("cas {key} {expect}->{value}"),
        Call::Cas {
            key,
            expect,
            value,
            by_revision: Some(revision),
        } => format!("cas {key} {expect}->{value} at mod revision {revision}"),
        other => format!("{other:?}"),
    }
}

/// The time window `(min invoke, max complete)` of `ops`; an op without a
/// completion time counts as its invocation.
pub(super) fn op_window<'a>(ops: impl IntoIterator<Item = &'a Op>) -> Option<(Nanos, Nanos)> {
    ops.into_iter().fold(None, |window, op| {
        let end = op.complete.unwrap_or(op.invoke).max(op.invoke);
        Some(match window {
            None => (op.invoke, end),
            Some((lo, hi)) => (lo.min(op.invoke), hi.max(end)),
        })
    })
}

/// Keeps at most [`MAX_ANOMALIES`] anomalies, in their order, sharing the
/// slots fairly among kinds (so that one flood does not hide a rarer kind).
/// Returns the kept ones and how many there were.
pub(super) fn cap_anomalies(anomalies: Vec<Anomaly>) -> (Vec<Anomaly>, usize) {
    let total = anomalies.len();
    if total <= MAX_ANOMALIES {
        return (anomalies, total);
    }
    let kinds: BTreeSet<&str> = anomalies.iter().map(|a| a.kind.as_str()).collect();
    let per_kind = (MAX_ANOMALIES / kinds.len()).max(1);
    let mut keep = vec![false; total];
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kept = 0;
    for (i, anomaly) in anomalies.iter().enumerate() {
        let n = per.entry(anomaly.kind.as_str()).or_default();
        if *n < per_kind && kept < MAX_ANOMALIES {
            *n += 1;
            kept += 1;
            keep[i] = true;
        }
    }
    for slot in keep.iter_mut() {
        if kept >= MAX_ANOMALIES {
            break;
        }
        if !*slot {
            *slot = true;
            kept += 1;
        }
    }
    let anomalies = anomalies
        .into_iter()
        .zip(keep)
        .filter_map(|(anomaly, keep)| keep.then_some(anomaly))
        .collect();
    (anomalies, total)
}

#[cfg(test)]
mod tests {
    use super::super::testkit;
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    // ---- terse history builders (revision = completion time, which is
    // always consistent with real time) ----

    fn op(
        id: u64,
        invoke: Nanos,
        complete: Option<Nanos>,
        outcome: Outcome,
        call: Call,
        ret: Option<Ret>,
    ) -> Record {
        let process = u32::try_from(id).unwrap_or(0);
        testkit::op(WORKLOAD, process, id, invoke, complete, outcome, call, ret)
    }
    fn rev(t: Nanos) -> i64 {
        i64::try_from(t).unwrap_or(i64::MAX)
    }
    fn write_call(key: &str, value: u64) -> Call {
        Call::Write {
            key: key.into(),
            value,
        }
    }
    fn cas_call(key: &str, expect: u64, value: u64, by_revision: Option<i64>) -> Call {
        Call::Cas {
            key: key.into(),
            expect,
            value,
            by_revision,
        }
    }
    /// Acknowledged write of `v` to `key` over `[i, c]`.
    fn w(id: u64, key: &str, v: u64, i: Nanos, c: Nanos) -> Record {
        op(
            id,
            i,
            Some(c),
            Outcome::Ok,
            write_call(key, v),
            Some(Ret::Write { revision: rev(c) }),
        )
    }
    /// Write with unknown outcome invoked at `i`.
    fn w_unknown(id: u64, key: &str, v: u64, i: Nanos) -> Record {
        op(id, i, None, Outcome::Unknown, write_call(key, v), None)
    }
    /// Write that certainly failed.
    fn w_fail(id: u64, key: &str, v: u64, i: Nanos, c: Nanos) -> Record {
        op(id, i, Some(c), Outcome::Fail, write_call(key, v), None)
    }
    /// Read of `key` that returned `v`.
    fn r(id: u64, key: &str, v: Option<u64>, i: Nanos, c: Nanos) -> Record {
        op(
            id,
            i,
            Some(c),
            Outcome::Ok,
            Call::Read { key: key.into() },
            Some(Ret::Read {
                value: v,
                mod_revision: 0,
                revision: rev(c),
            }),
        )
    }
    /// Acknowledged compare-and-set.
    #[allow(clippy::too_many_arguments)]
    fn cas(
        id: u64,
        key: &str,
        expect: u64,
        v: u64,
        by: Option<i64>,
        ok: bool,
        i: Nanos,
        c: Nanos,
    ) -> Record {
        op(
            id,
            i,
            Some(c),
            Outcome::Ok,
            cas_call(key, expect, v, by),
            Some(Ret::Cas {
                succeeded: ok,
                revision: rev(c),
            }),
        )
    }

    fn run(history: &[Record]) -> Result<CheckResult, String> {
        testkit::run(check, history)
    }
    use super::super::testkit::kinds;

    /// (name, history, whether it is linearizable).
    fn cases() -> Vec<(&'static str, Vec<Record>, bool)> {
        vec![
            (
                "sequential write then read",
                vec![w(1, "a", 1, 0, 10), r(2, "a", Some(1), 20, 30)],
                true,
            ),
            (
                "read before any write sees absent",
                vec![
                    r(1, "a", None, 0, 5),
                    w(2, "a", 1, 10, 20),
                    r(3, "a", Some(1), 30, 40),
                ],
                true,
            ),
            (
                "stale read after a completed overwrite",
                vec![
                    w(1, "a", 1, 0, 10),
                    w(2, "a", 2, 20, 30),
                    r(3, "a", Some(1), 40, 50),
                ],
                false,
            ),
            (
                "read concurrent with a write sees the old value",
                vec![
                    w(1, "a", 1, 0, 10),
                    w(2, "a", 2, 20, 40),
                    r(3, "a", Some(1), 25, 35),
                ],
                true,
            ),
            (
                "read concurrent with a write sees the new value",
                vec![
                    w(1, "a", 1, 0, 10),
                    w(2, "a", 2, 20, 40),
                    r(3, "a", Some(2), 25, 35),
                ],
                true,
            ),
            (
                "new value seen, then old value seen (non-monotonic reads)",
                vec![
                    w(1, "a", 1, 0, 10),
                    w(2, "a", 2, 20, 100),
                    r(3, "a", Some(2), 30, 40),
                    r(4, "a", Some(1), 50, 60),
                ],
                false,
            ),
            (
                "lost write: acknowledged write never visible",
                vec![w(1, "a", 1, 0, 10), r(2, "a", None, 20, 30)],
                false,
            ),
            (
                "unknown write seen later",
                vec![
                    w(1, "a", 1, 0, 10),
                    w_unknown(2, "a", 2, 20),
                    r(3, "a", Some(2), 50, 60),
                ],
                true,
            ),
            (
                "unknown write never seen",
                vec![
                    w(1, "a", 1, 0, 10),
                    w_unknown(2, "a", 2, 20),
                    r(3, "a", Some(1), 50, 60),
                ],
                true,
            ),
            (
                "unknown write seen before it was invoked",
                vec![r(1, "a", Some(2), 0, 10), w_unknown(2, "a", 2, 20)],
                false,
            ),
            (
                "failed write not seen",
                vec![
                    w(1, "a", 1, 0, 10),
                    w_fail(2, "a", 2, 20, 30),
                    r(3, "a", Some(1), 40, 50),
                ],
                true,
            ),
            (
                "failed write seen",
                vec![
                    w(1, "a", 1, 0, 10),
                    w_fail(2, "a", 2, 20, 30),
                    r(3, "a", Some(2), 40, 50),
                ],
                false,
            ),
            (
                "read of a value never written",
                vec![w(1, "a", 1, 0, 10), r(2, "a", Some(7), 20, 30)],
                false,
            ),
            (
                "cas on the current value",
                vec![
                    w(1, "a", 1, 0, 10),
                    cas(2, "a", 1, 2, None, true, 20, 30),
                    r(3, "a", Some(2), 40, 50),
                ],
                true,
            ),
            (
                "cas by revision on the value read at that revision",
                vec![
                    w(1, "a", 1, 0, 10),
                    r(2, "a", Some(1), 15, 18),
                    cas(3, "a", 1, 2, Some(10), true, 20, 30),
                    r(4, "a", Some(2), 40, 50),
                ],
                true,
            ),
            (
                "cas by revision succeeded on an overwritten revision",
                vec![
                    w(1, "a", 1, 0, 10),
                    w(2, "a", 3, 12, 14),
                    cas(3, "a", 1, 2, Some(10), true, 20, 30),
                ],
                false,
            ),
            (
                "cas failed although the value matched",
                vec![w(1, "a", 1, 0, 10), cas(2, "a", 1, 2, None, false, 20, 30)],
                false,
            ),
            (
                "cas failed because a concurrent write changed the value",
                vec![
                    w(1, "a", 1, 0, 10),
                    w(2, "a", 3, 15, 40),
                    cas(3, "a", 1, 2, Some(10), false, 20, 30),
                ],
                true,
            ),
            (
                "unknown cas took effect",
                vec![
                    w(1, "a", 1, 0, 10),
                    op(
                        2,
                        20,
                        None,
                        Outcome::Unknown,
                        cas_call("a", 1, 2, None),
                        None,
                    ),
                    r(3, "a", Some(2), 50, 60),
                ],
                true,
            ),
            (
                "keys are independent registers",
                vec![
                    w(1, "a", 1, 0, 10),
                    w(2, "b", 1, 0, 12),
                    r(3, "a", Some(1), 20, 30),
                    r(4, "b", Some(1), 20, 31),
                ],
                true,
            ),
        ]
    }

    #[test]
    fn hand_made_histories_accepted_and_rejected_exactly() -> TestResult {
        for (name, history, linearizable) in cases() {
            let result = run(&history)?;
            assert_eq!(result.checker, "register");
            if linearizable {
                assert_eq!(result.validity, Validity::Valid, "{name}: {result:#?}");
                assert!(result.anomalies.is_empty(), "{name}: {result:#?}");
                assert!(
                    result.summary.contains("linearizable"),
                    "{name}: {}",
                    result.summary
                );
            } else {
                assert_eq!(result.validity, Validity::Invalid, "{name}: {result:#?}");
                assert_eq!(kinds(&result), ["nonlinearizable"], "{name}: {result:#?}");
            }
        }
        Ok(())
    }

    #[test]
    fn stale_read_anomaly_names_the_window() -> TestResult {
        let history = [
            w(1, "a", 1, 0, 10),
            w(2, "a", 2, 20, 30),
            r(3, "a", Some(1), 40, 50),
            r(4, "b", None, 0, 5),
        ];
        let result = run(&history)?;
        let anomaly = result.anomalies.first().ok_or("no anomaly")?;
        assert!(anomaly.ops.contains(&3), "{anomaly:#?}");
        assert!(anomaly.ops.contains(&2), "{anomaly:#?}");
        assert!(!anomaly.ops.contains(&4), "{anomaly:#?}");
        assert_eq!(anomaly.window, Some((0, 50)));
        assert!(
            anomaly.description.contains("\"a\""),
            "{}",
            anomaly.description
        );
        assert!(
            anomaly
                .description
                .contains("could not place before it returned: op 3"),
            "{}",
            anomaly.description
        );
        assert!(
            result.summary.contains("1 keys not linearizable"),
            "{}",
            result.summary
        );
        Ok(())
    }

    #[test]
    fn every_bad_key_gets_an_anomaly() -> TestResult {
        let history = [
            w(1, "a", 1, 0, 10),
            r(2, "a", None, 20, 30),
            w(3, "b", 1, 0, 11),
            r(4, "b", Some(9), 20, 31),
            w(5, "c", 1, 0, 12),
            r(6, "c", Some(1), 20, 32),
        ];
        let result = run(&history)?;
        assert_eq!(kinds(&result), ["nonlinearizable", "nonlinearizable"]);
        assert!(result.anomalies[0].description.contains("\"a\""));
        assert!(result.anomalies[1].description.contains("\"b\""));
        Ok(())
    }

    #[test]
    fn no_register_ops_means_no_result() {
        assert!(check(&[]).is_none());
        let mut other = w(1, "a", 1, 0, 10);
        if let Record::Op(op) = &mut other {
            op.workload = "set".into();
        }
        assert!(check(&[other]).is_none());
    }

    #[test]
    fn malformed_ops_make_the_verdict_unknown_not_a_panic() -> TestResult {
        let cases = [
            (
                "ok without an answer",
                op(2, 20, Some(30), Outcome::Ok, write_call("a", 2), None),
            ),
            (
                "ok without a completion",
                op(
                    2,
                    20,
                    None,
                    Outcome::Ok,
                    write_call("a", 2),
                    Some(Ret::Write { revision: 30 }),
                ),
            ),
            (
                "answer of another kind",
                op(
                    2,
                    20,
                    Some(30),
                    Outcome::Ok,
                    write_call("a", 2),
                    Some(Ret::Cas {
                        succeeded: true,
                        revision: 30,
                    }),
                ),
            ),
            (
                "completes before invoked",
                op(
                    2,
                    20,
                    Some(19),
                    Outcome::Ok,
                    write_call("a", 2),
                    Some(Ret::Write { revision: 30 }),
                ),
            ),
            (
                "not a register call",
                op(
                    2,
                    20,
                    Some(30),
                    Outcome::Ok,
                    Call::Add { key: "a".into() },
                    None,
                ),
            ),
        ];
        for (name, bad) in cases {
            // The malformed write is checked as unknown: seeing 2 or 1 is fine.
            for seen in [1, 2] {
                let history = [
                    w(1, "a", 1, 0, 10),
                    bad.clone(),
                    r(3, "a", Some(seen), 40, 50),
                ];
                let result = run(&history)?;
                if name == "not a register call" && seen == 2 {
                    // Nothing could have written 2.
                    assert_eq!(result.validity, Validity::Invalid, "{name}: {result:#?}");
                    continue;
                }
                assert_eq!(result.validity, Validity::Unknown, "{name}: {result:#?}");
                assert!(result.anomalies.is_empty(), "{name}: {result:#?}");
                assert!(
                    result.summary.contains("malformed"),
                    "{name}: {}",
                    result.summary
                );
                assert!(
                    result.summary.contains("op 2"),
                    "{name}: {}",
                    result.summary
                );
            }
        }
        Ok(())
    }

    #[test]
    fn inconclusive_search_is_unknown() -> TestResult {
        let mut history: Vec<Record> = (0..8).map(|i| w(i, "a", i, 0, 100 + i)).collect();
        history.push(r(99, "a", Some(3), 200, 300));
        let result = check_with_limit(&history, 5).ok_or("no result")?;
        assert_eq!(result.validity, Validity::Unknown, "{result:#?}");
        assert!(
            result.summary.contains("inconclusive"),
            "{}",
            result.summary
        );
        assert_eq!(run(&history)?.validity, Validity::Valid);
        Ok(())
    }

    #[test]
    fn header_revisions_must_follow_real_time() -> TestResult {
        let read = |id, revision, i, c| {
            op(
                id,
                i,
                Some(c),
                Outcome::Ok,
                Call::Read { key: "b".into() },
                Some(Ret::Read {
                    value: None,
                    mod_revision: 0,
                    revision,
                }),
            )
        };
        let write = |id, key: &str, v, revision, i, c| {
            op(
                id,
                i,
                Some(c),
                Outcome::Ok,
                write_call(key, v),
                Some(Ret::Write { revision }),
            )
        };
        // (name, history, revision-order anomaly expected)
        let cases = [
            (
                "read after a write sees its revision",
                vec![write(1, "a", 1, 5, 0, 10), read(2, 5, 20, 30)],
                false,
            ),
            (
                "read after a write has an older revision",
                vec![write(1, "a", 1, 5, 0, 10), read(2, 4, 20, 30)],
                true,
            ),
            (
                "concurrent read may have an older revision",
                vec![write(1, "a", 1, 5, 0, 25), read(2, 4, 20, 30)],
                false,
            ),
            (
                "touching intervals are concurrent",
                vec![write(1, "a", 1, 5, 0, 20), read(2, 4, 20, 30)],
                false,
            ),
            (
                "write after a write has a larger revision",
                vec![write(1, "a", 1, 5, 0, 10), write(2, "b", 1, 6, 20, 30)],
                false,
            ),
            (
                "write after a write at the same revision",
                vec![write(1, "a", 1, 5, 0, 10), write(2, "b", 1, 5, 20, 30)],
                true,
            ),
            (
                "concurrent writes at the same revision",
                vec![write(1, "a", 1, 5, 0, 30), write(2, "b", 1, 5, 10, 40)],
                true,
            ),
            (
                "read after a read went back",
                vec![read(1, 9, 0, 10), read(2, 8, 20, 30)],
                true,
            ),
        ];
        for (name, history, bad) in cases {
            let result = run(&history)?;
            let found = kinds(&result).contains(&"revision-order");
            assert_eq!(found, bad, "{name}: {result:#?}");
            assert_eq!(
                result.validity == Validity::Invalid,
                bad,
                "{name}: {result:#?}"
            );
        }
        Ok(())
    }

    #[test]
    fn one_bogus_revision_is_blamed_once() -> TestResult {
        let mut history = vec![op(
            1,
            0,
            Some(10),
            Outcome::Ok,
            write_call("a", 1),
            Some(Ret::Write { revision: 1_000 }),
        )];
        history.extend((2..10).map(|id| r(id, "a", Some(1), id * 100, id * 100 + 10)));
        let result = run(&history)?;
        assert_eq!(kinds(&result), ["revision-order"], "{result:#?}");
        assert_eq!(result.anomalies[0].ops, [1, 2]);
        Ok(())
    }

    #[test]
    fn anomalies_are_capped_fairly() {
        let anomaly = |kind: &str, i: u64| Anomaly {
            kind: kind.into(),
            description: String::new(),
            ops: vec![i],
            window: None,
        };
        let mut all: Vec<Anomaly> = (0..100).map(|i| anomaly("flood", i)).collect();
        all.push(anomaly("rare", 1000));
        let (kept, total) = cap_anomalies(all);
        assert_eq!(total, 101);
        assert_eq!(kept.len(), MAX_ANOMALIES);
        assert!(kept.iter().any(|a| a.kind == "rare"));
        assert_eq!(kept[0].ops, [0]);
        let (kept, total) = cap_anomalies(vec![anomaly("x", 1)]);
        assert_eq!((kept.len(), total), (1, 1));
    }

    #[test]
    fn op_window_spans_invoke_to_complete() {
        let a = Op {
            id: 1,
            process: 0,
            workload: WORKLOAD.into(),
            invoke: 5,
            complete: None,
            outcome: Outcome::Unknown,
            call: Call::Read { key: "a".into() },
            ret: None,
            error: None,
        };
        let mut b = a.clone();
        b.invoke = 7;
        b.complete = Some(20);
        assert_eq!(op_window([&a, &b]), Some((5, 20)));
        assert_eq!(op_window([]), None);
    }
}
