//! The `set` workload's checker: every acknowledged add is in the final read,
//! once, and nothing else is.
//!
//! Each [`Call::Add`] is a create-if-absent Txn of a fresh key; the workload
//! ends with [`Call::ReadAll`]s of its prefix, the last ok one being the final
//! read. Against it:
//!
//! * `lost-write`: a key acknowledged (created, or reported existing) by an
//!   add that completed before the final read was invoked is absent.
//! * `duplicate`: a key of the final read with version != 1 (the create was
//!   applied twice, or retried as a plain put), listed twice, or two adds of
//!   one key both reported that they created it.
//! * `phantom`: a key of the final read that no add (ok, unknown or failed)
//!   ever tried; `failed-write-applied`: a key present (or reported existing)
//!   whose only adds certainly failed.
//! * `phantom-existing`: an add reported the key existed although no other add
//!   of it had been invoked by then.
//!
//! An add whose outcome is unknown may be present or not; adds concurrent with
//! the final read too.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::register::op_window;
use super::{Anomaly, CheckResult, Validity};
use crate::history::{self, Call, KeyState, Op, Outcome, Record, Ret};

/// The workload this checker reads.
pub const WORKLOAD: &str = "set";

/// What an add is known to have done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AddStatus {
    /// Ok, created the key.
    Created,
    /// Ok, the key existed already.
    Existed,
    /// Certainly had no effect.
    Failed,
    /// Unknown outcome (or a malformed ok, checked as unknown).
    Unknown,
}

struct Add<'a> {
    op: &'a Op,
    status: AddStatus,
}

/// `None` when the history has no op of this workload.
pub fn check(records: &[Record]) -> Option<CheckResult> {
    let ops: Vec<&Op> = history::ops(records)
        .filter(|op| op.workload == WORKLOAD)
        .collect();
    if ops.is_empty() {
        return None;
    }

    let mut malformed: Vec<(u64, &'static str)> = Vec::new();
    let mut adds: BTreeMap<&str, Vec<Add<'_>>> = BTreeMap::new();
    let mut final_read: Option<(&Op, &[KeyState], &str)> = None;
    for &op in &ops {
        match &op.call {
            Call::Add { key } => {
                let status = match (op.outcome, &op.ret) {
                    (Outcome::Ok, Some(Ret::Add { created: true, .. })) => AddStatus::Created,
                    (Outcome::Ok, Some(Ret::Add { created: false, .. })) => AddStatus::Existed,
                    (Outcome::Ok, _) => {
                        malformed.push((op.id, "ok add without an add answer"));
                        AddStatus::Unknown
                    }
                    (Outcome::Fail, _) => AddStatus::Failed,
                    (Outcome::Unknown, _) => AddStatus::Unknown,
                };
                let acked = matches!(status, AddStatus::Created | AddStatus::Existed);
                let status = if acked && op.complete.is_none() {
                    malformed.push((op.id, "ok add without a completion time"));
                    AddStatus::Unknown
                } else {
                    status
                };
                adds.entry(key.as_str())
                    .or_default()
                    .push(Add { op, status });
            }
            Call::ReadAll { prefix } if op.outcome == Outcome::Ok => match (&op.ret, op.complete) {
                (Some(Ret::ReadAll { keys, .. }), Some(complete)) => {
                    let later = final_read
                        .is_none_or(|(last, _, _)| last.complete.is_none_or(|c| complete >= c));
                    if later {
                        final_read = Some((op, keys, prefix));
                    }
                }
                _ => malformed.push((op.id, "ok read without a read answer or completion time")),
            },
            Call::ReadAll { .. } => {}
            _ => malformed.push((op.id, "not a set call")),
        }
    }

    let mut anomalies = Vec::new();
    // Checks that need no final read.
    for (key, tries) in &adds {
        let created: Vec<&Add<'_>> = tries
            .iter()
            .filter(|a| a.status == AddStatus::Created)
            .collect();
        if created.len() > 1 {
            anomalies.push(anomaly(
                "duplicate",
                format!(
                    "{} adds of key {key:?} all reported creating it (ops {})",
                    created.len(),
                    ids(created.iter().map(|a| a.op))
                ),
                created.iter().map(|a| a.op),
            ));
        }
        for existed in tries.iter().filter(|a| a.status == AddStatus::Existed) {
            let done = existed.op.complete.unwrap_or(existed.op.invoke);
            let before: Vec<&Add<'_>> = tries
                .iter()
                .filter(|a| a.op.id != existed.op.id && a.op.invoke < done)
                .collect();
            let explained = before
                .iter()
                .any(|a| matches!(a.status, AddStatus::Created | AddStatus::Unknown));
            if explained {
                continue;
            }
            let failed: Vec<&Add<'_>> = before
                .iter()
                .copied()
                .filter(|a| a.status == AddStatus::Failed)
                .collect();
            let (kind, why) = if failed.is_empty() {
                (
                    "phantom-existing",
                    "no other add of it had been invoked".to_owned(),
                )
            } else {
                (
                    "failed-write-applied",
                    format!(
                        "the only other adds of it invoked by then failed (ops {})",
                        ids(failed.iter().map(|a| a.op))
                    ),
                )
            };
            anomalies.push(anomaly(
                kind,
                format!(
                    "add op {} of key {key:?} reported that the key existed, but {why}",
                    existed.op.id
                ),
                failed
                    .iter()
                    .map(|a| a.op)
                    .chain(std::iter::once(existed.op)),
            ));
        }
    }

    let n_adds: usize = adds.values().map(Vec::len).sum();
    let mut summary;
    let validity;
    if let Some((read, keys, prefix)) = final_read {
        let read_invoke = read.invoke;
        let mut present: BTreeMap<&str, Vec<&KeyState>> = BTreeMap::new();
        for state in keys {
            present.entry(state.key.as_str()).or_default().push(state);
        }
        let mut counts = Counts::default();
        for (key, tries) in &adds {
            if !key.starts_with(prefix) {
                counts.outside += tries.len();
                continue;
            }
            let any = |status| tries.iter().any(|a| a.status == status);
            let acked: Vec<&Add<'_>> = tries
                .iter()
                .filter(|a| matches!(a.status, AddStatus::Created | AddStatus::Existed))
                .collect();
            counts.acknowledged += usize::from(any(AddStatus::Created));
            match present.get(key) {
                Some(states) => {
                    if any(AddStatus::Created) {
                        counts.acknowledged_present += 1;
                    } else if any(AddStatus::Unknown) {
                        counts.unknown_present += 1;
                    } else if !any(AddStatus::Existed) {
                        anomalies.push(anomaly(
                            "failed-write-applied",
                            format!(
                                "key {key:?} is in the final read (op {}, {}) although every \
                                 add of it failed (ops {})",
                                read.id,
                                fmt_states(states),
                                ids(tries.iter().map(|a| a.op))
                            ),
                            tries.iter().map(|a| a.op).chain(std::iter::once(read)),
                        ));
                    }
                    if states.len() > 1 || states.iter().any(|s| s.version != 1) {
                        anomalies.push(anomaly(
                            "duplicate",
                            format!(
                                "key {key:?} is in the final read (op {}) as {}: it was written \
                                 more than once, but it was only ever created (adds: ops {})",
                                read.id,
                                fmt_states(states),
                                ids(tries.iter().map(|a| a.op))
                            ),
                            tries.iter().map(|a| a.op).chain(std::iter::once(read)),
                        ));
                    }
                }
                None => {
                    let lost: Vec<&Add<'_>> = acked
                        .iter()
                        .copied()
                        .filter(|a| a.op.complete.is_some_and(|c| c < read_invoke))
                        .collect();
                    if !lost.is_empty() {
                        counts.lost += 1;
                        anomalies.push(anomaly(
                            "lost-write",
                            format!(
                                "key {key:?} was acknowledged by op {} ({}), which completed \
                                 before the final read (op {}, at revision {}) was invoked, but \
                                 that read does not have it",
                                ids(lost.iter().map(|a| a.op)),
                                if lost.iter().any(|a| a.status == AddStatus::Created) {
                                    "created"
                                } else {
                                    "reported existing"
                                },
                                read.id,
                                read_revision(read)
                            ),
                            lost.iter().map(|a| a.op).chain(std::iter::once(read)),
                        ));
                    } else if !acked.is_empty() {
                        counts.concurrent_absent += 1;
                    } else if any(AddStatus::Unknown) {
                        counts.unknown_absent += 1;
                    }
                }
            }
        }
        for (key, states) in &present {
            if !key.starts_with(prefix) || adds.contains_key(key) {
                continue;
            }
            anomalies.push(anomaly(
                "phantom",
                format!(
                    "key {key:?} is in the final read (op {}, {}) but no add ever tried it",
                    read.id,
                    fmt_states(states)
                ),
                std::iter::once(read),
            ));
        }
        summary = format!(
            "{n_adds} adds of {} keys, final read op {} at revision {} with {} keys: {} \
             acknowledged ({} present, {} lost), {} unknown and present, {} unknown and absent",
            adds.len(),
            read.id,
            read_revision(read),
            keys.len(),
            counts.acknowledged,
            counts.acknowledged_present,
            counts.lost,
            counts.unknown_present,
            counts.unknown_absent
        );
        if counts.concurrent_absent > 0 {
            let _ = write!(
                summary,
                ", {} acknowledged concurrently with the final read and absent",
                counts.concurrent_absent
            );
        }
        if counts.outside > 0 {
            let _ = write!(
                summary,
                ", {} adds outside the read prefix {prefix:?} not checked",
                counts.outside
            );
        }
        validity = if anomalies.is_empty() {
            Validity::Valid
        } else {
            Validity::Invalid
        };
    } else {
        summary = format!(
            "{n_adds} adds of {} keys: no final read, so lost writes were not checked",
            adds.len()
        );
        validity = if anomalies.is_empty() {
            Validity::Unknown
        } else {
            Validity::Invalid
        };
    }
    if let Some((id, reason)) = malformed.first() {
        let _ = write!(
            summary,
            "; {} malformed ops (op {id}: {reason})",
            malformed.len()
        );
    }
    let validity = if validity == Validity::Valid && !malformed.is_empty() {
        Validity::Unknown
    } else {
        validity
    };
    Some(super::result(WORKLOAD, validity, summary, anomalies))
}

#[derive(Default)]
struct Counts {
    acknowledged: usize,
    acknowledged_present: usize,
    lost: usize,
    concurrent_absent: usize,
    unknown_present: usize,
    unknown_absent: usize,
    outside: usize,
}

fn anomaly<'a>(kind: &str, description: String, ops: impl Iterator<Item = &'a Op>) -> Anomaly {
    let ops: Vec<&Op> = ops.collect();
    Anomaly {
        kind: kind.to_owned(),
        description,
        ops: ops.iter().map(|op| op.id).collect(),
        window: op_window(ops.iter().copied()),
    }
}

fn ids<'a>(ops: impl Iterator<Item = &'a Op>) -> String {
    ops.map(|op| op.id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_states(states: &[&KeyState]) -> String {
    states
        .iter()
        .map(|s| format!("version {} mod revision {}", s.version, s.mod_revision))
        .collect::<Vec<_>>()
        .join(" and ")
}

fn read_revision(read: &Op) -> i64 {
    match &read.ret {
        Some(Ret::ReadAll { revision, .. }) => *revision,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit;
    use super::*;
    use crate::history::Nanos;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn op(
        id: u64,
        invoke: Nanos,
        complete: Option<Nanos>,
        outcome: Outcome,
        call: Call,
        ret: Option<Ret>,
    ) -> Record {
        let process = 0;
        testkit::op(WORKLOAD, process, id, invoke, complete, outcome, call, ret)
    }
    fn add_call(key: &str) -> Call {
        Call::Add {
            key: format!("s/{key}"),
        }
    }
    /// An add of `s/{key}` over `[id*10, id*10+5]` that created it.
    fn added(id: u64, key: &str) -> Record {
        let ret = Ret::Add {
            created: true,
            revision: i64::try_from(id).unwrap_or(0),
        };
        op(
            id,
            id * 10,
            Some(id * 10 + 5),
            Outcome::Ok,
            add_call(key),
            Some(ret),
        )
    }
    /// An add that found the key existing.
    fn existed(id: u64, key: &str) -> Record {
        let ret = Ret::Add {
            created: false,
            revision: 0,
        };
        op(
            id,
            id * 10,
            Some(id * 10 + 5),
            Outcome::Ok,
            add_call(key),
            Some(ret),
        )
    }
    fn unknown(id: u64, key: &str) -> Record {
        op(id, id * 10, None, Outcome::Unknown, add_call(key), None)
    }
    fn failed(id: u64, key: &str) -> Record {
        op(
            id,
            id * 10,
            Some(id * 10 + 5),
            Outcome::Fail,
            add_call(key),
            None,
        )
    }
    /// A read of `s/` returning `keys` as (key, version).
    fn read(id: u64, keys: &[(&str, i64)]) -> Record {
        let keys = keys
            .iter()
            .map(|(key, version)| KeyState {
                key: format!("s/{key}"),
                version: *version,
                mod_revision: 1,
                lease: 0,
            })
            .collect();
        let ret = Ret::ReadAll { keys, revision: 99 };
        let call = Call::ReadAll {
            prefix: "s/".into(),
        };
        op(id, id * 10, Some(id * 10 + 5), Outcome::Ok, call, Some(ret))
    }

    fn run(history: &[Record]) -> Result<CheckResult, String> {
        testkit::run(check, history)
    }
    use super::super::testkit::kinds;

    #[test]
    fn hand_made_histories_accepted_and_rejected_exactly() -> TestResult {
        // (name, history, expected anomaly kinds; empty: valid)
        let cases: Vec<(&str, Vec<Record>, Vec<&str>)> = vec![
            (
                "every acknowledged add present once",
                vec![added(1, "a"), added(2, "b"), read(3, &[("a", 1), ("b", 1)])],
                vec![],
            ),
            (
                "unknown adds present or absent",
                vec![
                    added(1, "a"),
                    unknown(2, "b"),
                    unknown(3, "c"),
                    read(4, &[("a", 1), ("b", 1)]),
                ],
                vec![],
            ),
            (
                "failed add absent",
                vec![added(1, "a"), failed(2, "b"), read(3, &[("a", 1)])],
                vec![],
            ),
            (
                "lost write: acknowledged add absent",
                vec![added(1, "a"), added(2, "b"), read(3, &[("a", 1)])],
                vec!["lost-write"],
            ),
            (
                "acknowledged add concurrent with the final read may be absent",
                vec![
                    added(1, "a"),
                    op(
                        2,
                        20,
                        Some(40),
                        Outcome::Ok,
                        add_call("b"),
                        Some(Ret::Add {
                            created: true,
                            revision: 2,
                        }),
                    ),
                    read(3, &[("a", 1)]),
                ],
                vec![],
            ),
            (
                "duplicate: created twice (version 2)",
                vec![added(1, "a"), read(2, &[("a", 2)])],
                vec!["duplicate"],
            ),
            (
                "duplicate: unknown add applied twice",
                vec![unknown(1, "a"), read(2, &[("a", 2)])],
                vec!["duplicate"],
            ),
            (
                "duplicate: listed twice",
                vec![added(1, "a"), read(2, &[("a", 1), ("a", 1)])],
                vec!["duplicate"],
            ),
            (
                "duplicate: two adds both created",
                vec![added(1, "a"), added(2, "a"), read(3, &[("a", 1)])],
                vec!["duplicate"],
            ),
            (
                "phantom: never added",
                vec![added(1, "a"), read(2, &[("a", 1), ("z", 1)])],
                vec!["phantom"],
            ),
            (
                "failed write applied",
                vec![
                    added(1, "a"),
                    failed(2, "b"),
                    read(3, &[("a", 1), ("b", 1)]),
                ],
                vec!["failed-write-applied"],
            ),
            (
                "existing after an unknown add of the same key",
                vec![unknown(1, "a"), existed(2, "a"), read(3, &[("a", 1)])],
                vec![],
            ),
            (
                "existing after an acknowledged add of the same key",
                vec![added(1, "a"), existed(2, "a"), read(3, &[("a", 1)])],
                vec![],
            ),
            (
                "phantom existing: no other add",
                vec![existed(1, "a"), read(2, &[("a", 1)])],
                vec!["phantom-existing"],
            ),
            (
                "phantom existing: the other add came later",
                vec![existed(1, "a"), unknown(2, "a"), read(3, &[("a", 1)])],
                vec!["phantom-existing"],
            ),
            (
                "existing after a failed add",
                vec![failed(1, "a"), existed(2, "a"), read(3, &[("a", 1)])],
                vec!["failed-write-applied"],
            ),
            (
                "reported existing, then gone",
                vec![unknown(1, "a"), existed(2, "a"), read(3, &[])],
                vec!["lost-write"],
            ),
            (
                "the last read is the final one",
                vec![added(1, "a"), read(2, &[]), read(3, &[("a", 1)])],
                vec![],
            ),
            (
                "the last read is the final one (lost)",
                vec![added(1, "a"), read(2, &[("a", 1)]), read(3, &[])],
                vec!["lost-write"],
            ),
        ];
        for (name, history, expected) in cases {
            let result = run(&history)?;
            assert_eq!(result.checker, "set");
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
    fn summary_counts_the_outcomes() -> TestResult {
        let history = [
            added(1, "a"),
            added(2, "b"),
            unknown(3, "c"),
            unknown(4, "d"),
            unknown(5, "e"),
            failed(6, "f"),
            read(7, &[("a", 1), ("c", 1)]),
        ];
        let result = run(&history)?;
        assert_eq!(result.validity, Validity::Invalid);
        assert!(
            result.summary.contains(
                "2 acknowledged (1 present, 1 lost), 1 unknown and present, 2 unknown and absent"
            ),
            "{}",
            result.summary
        );
        let lost = &result.anomalies[0];
        assert_eq!(lost.ops, [2, 7]);
        assert_eq!(lost.window, Some((20, 75)));
        assert!(lost.description.contains("\"s/b\""), "{}", lost.description);
        Ok(())
    }

    #[test]
    fn no_final_read_is_unknown() -> TestResult {
        let result = run(&[added(1, "a"), unknown(2, "b")])?;
        assert_eq!(result.validity, Validity::Unknown, "{result:#?}");
        assert!(
            result.summary.contains("no final read"),
            "{}",
            result.summary
        );
        // A failed read is no final read either.
        let call = Call::ReadAll {
            prefix: "s/".into(),
        };
        let result = run(&[
            added(1, "a"),
            op(2, 20, Some(30), Outcome::Fail, call, None),
        ])?;
        assert_eq!(result.validity, Validity::Unknown, "{result:#?}");
        // But what needs no read is still checked.
        let result = run(&[added(1, "a"), added(2, "a")])?;
        assert_eq!(result.validity, Validity::Invalid, "{result:#?}");
        assert_eq!(kinds(&result), ["duplicate"]);
        Ok(())
    }

    #[test]
    fn malformed_ops_do_not_panic() -> TestResult {
        let no_answer = op(1, 10, Some(15), Outcome::Ok, add_call("a"), None);
        // Checked as unknown: present or absent, fine.
        for keys in [vec![("a", 1)], vec![]] {
            let result = run(&[no_answer.clone(), read(2, &keys)])?;
            assert_eq!(result.validity, Validity::Unknown, "{result:#?}");
            assert!(result.summary.contains("malformed"), "{}", result.summary);
        }
        Ok(())
    }

    #[test]
    fn no_set_ops_means_no_result() {
        assert!(check(&[]).is_none());
        let mut other = added(1, "a");
        if let Record::Op(op) = &mut other {
            op.workload = "register".into();
        }
        assert!(check(&[other]).is_none());
    }
}
