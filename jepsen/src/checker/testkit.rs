//! Builders shared by the checkers' tests: terse hand-made histories.

use super::CheckResult;
use crate::history::{Call, Nanos, Op, Outcome, Record, Ret};

/// An op of `workload` (process = `process`).
#[allow(clippy::too_many_arguments)]
pub fn op(
    workload: &str,
    process: u32,
    id: u64,
    invoke: Nanos,
    complete: Option<Nanos>,
    outcome: Outcome,
    call: Call,
    ret: Option<Ret>,
) -> Record {
    Record::Op(Op {
        id,
        process,
        workload: workload.into(),
        invoke,
        complete,
        outcome,
        call,
        ret,
        error: None,
    })
}

/// The result of `check` on `history`, or an error if it gave none.
pub fn run(
    check: fn(&[Record]) -> Option<CheckResult>,
    history: &[Record],
) -> Result<CheckResult, String> {
    check(history).ok_or_else(|| "no result".to_owned())
}

/// The kinds of the anomalies found.
pub fn kinds(result: &CheckResult) -> Vec<&str> {
    result.anomalies.iter().map(|a| a.kind.as_str()).collect()
}
