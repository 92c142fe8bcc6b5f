//! The `lease` workload's checker: keys of a lease vanish together, and never
//! while the lease is alive and kept alive; they do not outlive it.
//!
//! The workload grants leases, puts fresh keys attached to them (each key put
//! once), keeps some alive, revokes some and reads its prefix. Only what is
//! certain is flagged; times are the harness's `invoke`/`complete`:
//!
//! * A lease is certainly alive until its *deadline*: the latest `invoke + ttl`
//!   over its grant and its keep-alives that returned a TTL > 0 (the server
//!   (re)started the TTL after the request was sent).
//! * `lease-key-vanished`: a key put (ok) with lease L is absent from an ok
//!   read invoked after the put completed and completed before L's deadline,
//!   while no revoke of L that may have happened (any outcome but a definite
//!   failure) had been invoked before the read completed.
//! * `lease-key-survived`: a key of lease L (put with it, or listed with it) is
//!   in an ok read invoked after an ok revoke of L completed, or after a
//!   keep-alive of L reported it gone (TTL <= 0).
//! * `lease-not-atomic`: the keys of one lease were deleted at different
//!   revisions (per the delete events the watchers received, the reference
//!   watcher's first): a revoke or an expiry deletes them in one revision.
//! * `lease-ttl-too-long`: a keep-alive returned a TTL above the granted one.
//!
//! Keys put more than once are skipped (their fate is ambiguous).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::register::op_window;
use super::{Anomaly, CheckResult, Validity};
use crate::history::{
    self, Call, KeyState, KvEventKind, Nanos, Op, Outcome, Record, Ret, WatchEvent,
    REFERENCE_WATCHER,
};

/// The workload this checker reads.
pub const WORKLOAD: &str = "lease";

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// What the history says about one lease.
#[derive(Default)]
struct Lease<'a> {
    /// The ok grant and the TTL it granted.
    grant: Option<(&'a Op, i64)>,
    /// Until when the lease is certainly alive, and the op that says so.
    alive_until: Option<(Nanos, &'a Op)>,
    /// Revokes that may have taken effect (any outcome but a failure).
    revokes: Vec<&'a Op>,
    /// The ok revoke that completed first.
    revoked: Option<&'a Op>,
    /// The keep-alive reporting the lease gone (TTL <= 0) that completed
    /// first.
    gone: Option<&'a Op>,
}

impl<'a> Lease<'a> {
    /// The first op after whose completion the lease certainly no longer
    /// exists, and how it said so.
    fn ended(&self) -> Option<(&'a Op, &'static str)> {
        let revoked = self.revoked.map(|op| (op, "revoked by"));
        let gone = self.gone.map(|op| (op, "reported gone by keep-alive"));
        match (revoked, gone) {
            (Some(a), Some(b)) => Some(if completion(b.0) < completion(a.0) {
                b
            } else {
                a
            }),
            (a, b) => a.or(b),
        }
    }

    fn extend(&mut self, op: &'a Op, ttl: i64) {
        let Ok(ttl) = u64::try_from(ttl) else { return };
        if ttl == 0 {
            return;
        }
        let until = op
            .invoke
            .saturating_add(ttl.saturating_mul(NANOS_PER_SECOND));
        if self.alive_until.is_none_or(|(t, _)| until > t) {
            self.alive_until = Some((until, op));
        }
    }
}

fn completion(op: &Op) -> Nanos {
    op.complete.unwrap_or(Nanos::MAX)
}

/// Keeps in `slot` whichever op completed first.
fn keep_first<'a>(slot: &mut Option<&'a Op>, op: &'a Op) {
    if slot.is_none_or(|first| completion(op) < completion(first)) {
        *slot = Some(op);
    }
}

/// An ok read of the workload's prefix.
struct Read<'a> {
    op: &'a Op,
    complete: Nanos,
    prefix: &'a str,
    keys: BTreeMap<&'a str, &'a KeyState>,
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
    let mut leases: BTreeMap<i64, Lease<'_>> = BTreeMap::new();
    let mut puts: BTreeMap<&str, Vec<(&Op, i64)>> = BTreeMap::new();
    let mut reads: Vec<Read<'_>> = Vec::new();
    let mut keepalives: Vec<(&Op, i64, i64)> = Vec::new();
    for &op in &ops {
        let ok = op.outcome == Outcome::Ok;
        match (&op.call, op.ret.as_ref(), op.complete) {
            (Call::LeaseGrant { .. }, Some(Ret::LeaseGrant { lease, ttl }), Some(_)) if ok => {
                let entry = leases.entry(*lease).or_default();
                entry.grant = Some((op, *ttl));
                entry.extend(op, *ttl);
            }
            (Call::LeaseKeepAlive { lease }, Some(Ret::LeaseKeepAlive { ttl }), Some(_)) if ok => {
                let entry = leases.entry(*lease).or_default();
                if *ttl > 0 {
                    entry.extend(op, *ttl);
                } else {
                    keep_first(&mut entry.gone, op);
                }
                keepalives.push((op, *lease, *ttl));
            }
            (Call::LeaseRevoke { lease }, ..) => {
                if op.outcome != Outcome::Fail {
                    let entry = leases.entry(*lease).or_default();
                    entry.revokes.push(op);
                    if ok && op.complete.is_some() {
                        keep_first(&mut entry.revoked, op);
                    }
                }
            }
            (Call::LeasePut { key, lease }, ..) => {
                puts.entry(key.as_str()).or_default().push((op, *lease));
            }
            (Call::ReadAll { prefix }, Some(Ret::ReadAll { keys, .. }), Some(complete)) if ok => {
                reads.push(Read {
                    op,
                    complete,
                    prefix,
                    keys: keys.iter().map(|k| (k.key.as_str(), k)).collect(),
                });
            }
            (Call::ReadAll { .. } | Call::LeaseGrant { .. } | Call::LeaseKeepAlive { .. }, ..) => {
                if ok {
                    malformed.push((op.id, "ok without a matching answer or completion time"));
                }
            }
            _ => malformed.push((op.id, "not a lease call")),
        }
    }
    if let Some(&(op, _)) = puts
        .values()
        .flatten()
        .find(|(op, _)| op.outcome == Outcome::Ok && op.complete.is_none())
    {
        malformed.push((op.id, "ok put without a completion time"));
    }
    // Keys put exactly once, with their put and lease.
    let single: BTreeMap<&str, (&Op, i64)> = puts
        .iter()
        .filter_map(|(&key, tries)| match tries.as_slice() {
            [only] => Some((key, *only)),
            _ => None,
        })
        .collect();
    let deletes = delete_revisions(records);

    let mut anomalies = Vec::new();
    let mut checked = Checked::default();

    // lease-ttl-too-long
    for &(op, lease, ttl) in &keepalives {
        checked.keepalives += 1;
        let Some((grant, granted)) = leases.get(&lease).and_then(|l| l.grant) else {
            continue;
        };
        if ttl > granted {
            anomalies.push(anomaly(
                "lease-ttl-too-long",
                format!(
                    "keep-alive op {} of lease {lease} returned a TTL of {ttl}s, but op {} \
                     granted it {granted}s",
                    op.id, grant.id
                ),
                [grant, op],
            ));
        }
    }

    // lease-key-vanished
    for (&key, &(put, lease)) in &single {
        let (Outcome::Ok, Some(put_done)) = (put.outcome, put.complete) else {
            continue;
        };
        let Some(state) = leases.get(&lease) else {
            continue;
        };
        let Some((deadline, alive_op)) = state.alive_until else {
            continue;
        };
        let mut bad: Vec<&Read<'_>> = Vec::new();
        for read in &reads {
            if !key.starts_with(read.prefix)
                || read.op.invoke <= put_done
                || read.complete >= deadline
                || state.revokes.iter().any(|r| r.invoke < read.complete)
            {
                continue;
            }
            checked.alive += 1;
            if !read.keys.contains_key(key) {
                bad.push(read);
            }
        }
        if let Some(first) = bad.first() {
            anomalies.push(anomaly(
                "lease-key-vanished",
                format!(
                    "key {key:?} was put with lease {lease} by op {} (completed at {put_done} ns), \
                     and op {} guaranteed the lease alive until {deadline} ns with no revoke \
                     invoked, but read op {} (over [{}, {}] ns) does not have it{}",
                    put.id,
                    alive_op.id,
                    first.op.id,
                    first.op.invoke,
                    first.complete,
                    if bad.len() > 1 {
                        format!(" (nor do {} later reads)", bad.len() - 1)
                    } else {
                        String::new()
                    }
                ),
                [put, alive_op, first.op],
            ));
        }
    }

    // lease-key-survived
    let mut reported: BTreeSet<(&str, i64)> = BTreeSet::new();
    for read in &reads {
        checked.after_end += leases
            .values()
            .filter_map(Lease::ended)
            .filter(|(end, _)| completion(end) < read.op.invoke)
            .count();
        for (&key, kv) in &read.keys {
            let put = single.get(key);
            let candidates: BTreeSet<i64> = put
                .map(|&(_, lease)| lease)
                .into_iter()
                .chain((kv.lease != 0).then_some(kv.lease))
                .collect();
            for lease in candidates {
                let Some((end, how)) = leases.get(&lease).and_then(Lease::ended) else {
                    continue;
                };
                if completion(end) >= read.op.invoke || !reported.insert((key, lease)) {
                    continue;
                }
                let involved: Vec<&Op> = put
                    .map(|&(op, _)| op)
                    .into_iter()
                    .chain([end, read.op])
                    .collect();
                anomalies.push(anomaly(
                    "lease-key-survived",
                    format!(
                        "key {key:?} (lease {}, mod revision {}) of lease {lease} is in read op {} \
                         invoked at {} ns, after the lease was {how} op {} (completed at {} ns){}",
                        kv.lease,
                        kv.mod_revision,
                        read.op.id,
                        read.op.invoke,
                        end.id,
                        completion(end),
                        put.map_or_else(String::new, |(op, _)| format!("; put by op {}", op.id))
                    ),
                    involved,
                ));
            }
        }
    }

    // lease-not-atomic
    let mut keys_of: BTreeMap<i64, Vec<(&str, &Op)>> = BTreeMap::new();
    for (&key, &(put, lease)) in &single {
        if put.outcome != Outcome::Fail {
            keys_of.entry(lease).or_default().push((key, put));
        }
    }
    for (lease, keys) in &keys_of {
        let deleted: Vec<(&str, &Op, Deletion)> = keys
            .iter()
            .filter_map(|&(key, put)| Some((key, put, *deletes.get(key)?)))
            .collect();
        if deleted.len() < 2 {
            continue;
        }
        checked.leases_deleted += 1;
        let revisions: BTreeSet<i64> = deleted.iter().map(|(_, _, d)| d.revision).collect();
        if revisions.len() < 2 {
            continue;
        }
        let times = deleted.iter().map(|(_, _, d)| d.at);
        let window = times.clone().min().zip(times.max());
        let items: Vec<String> = deleted
            .iter()
            .map(|(key, _, d)| format!("{key}@{} (seen by watcher {})", d.revision, d.watcher))
            .collect();
        let revokes = leases.get(lease).map_or(&[][..], |l| l.revokes.as_slice());
        anomalies.push(Anomaly {
            kind: "lease-not-atomic".to_owned(),
            description: format!(
                "the keys of lease {lease} were deleted at {} different revisions: {}",
                revisions.len(),
                items.join(", ")
            ),
            ops: deleted
                .iter()
                .map(|(_, put, _)| put.id)
                .chain(revokes.iter().map(|op| op.id))
                .collect(),
            window,
        });
    }

    // Counts for the summary.
    let granted = leases.values().filter(|l| l.grant.is_some()).count();
    let revoked = leases.values().filter(|l| l.revoked.is_some()).count();
    let keys_put = single
        .values()
        .filter(|(op, _)| op.outcome == Outcome::Ok)
        .count();
    let expired = single
        .iter()
        .filter(|(&key, &(put, lease))| {
            let unrevoked = leases.get(&lease).is_none_or(|l| l.revokes.is_empty());
            let seen_gone = deletes.contains_key(key)
                || put.complete.is_some_and(|done| {
                    put.outcome == Outcome::Ok
                        && reads.iter().any(|r| {
                            r.op.invoke > done
                                && key.starts_with(r.prefix)
                                && !r.keys.contains_key(key)
                        })
                });
            unrevoked && seen_gone
        })
        .count();
    let skipped = puts.len() - single.len();

    let mut summary = format!(
        "{granted} leases granted, {keys_put} keys put with a lease, {revoked} revoked, \
         {expired} keys expired (gone without a revoke); checked {} reads of a key while its \
         lease was alive, {} reads after a lease ended, {} leases' deletions for atomicity, {} \
         keep-alive TTLs",
        checked.alive, checked.after_end, checked.leases_deleted, checked.keepalives
    );
    if skipped > 0 {
        let _ = write!(summary, "; {skipped} keys put more than once skipped");
    }
    if let Some((id, reason)) = malformed.first() {
        let _ = write!(
            summary,
            "; {} malformed ops ignored (op {id}: {reason})",
            malformed.len()
        );
    }
    let nothing_checked = checked.alive + checked.after_end + checked.leases_deleted == 0
        && reads.is_empty()
        && keepalives.is_empty();
    let validity = if !anomalies.is_empty() {
        Validity::Invalid
    } else if nothing_checked || !malformed.is_empty() {
        if nothing_checked {
            summary.push_str("; nothing could be checked");
        }
        Validity::Unknown
    } else {
        Validity::Valid
    };
    Some(super::result(WORKLOAD, validity, summary, anomalies))
}

#[derive(Default)]
struct Checked {
    alive: usize,
    after_end: usize,
    leases_deleted: usize,
    keepalives: usize,
}

fn anomaly<'a>(kind: &str, description: String, ops: impl IntoIterator<Item = &'a Op>) -> Anomaly {
    let ops: Vec<&Op> = ops.into_iter().collect();
    let mut ids: Vec<u64> = Vec::with_capacity(ops.len());
    for op in &ops {
        if !ids.contains(&op.id) {
            ids.push(op.id);
        }
    }
    Anomaly {
        kind: kind.to_owned(),
        description,
        ops: ids,
        window: op_window(ops),
    }
}

/// A delete event a watcher received.
#[derive(Clone, Copy)]
struct Deletion {
    revision: i64,
    watcher: u32,
    at: Nanos,
}

/// The revision at which each key was deleted, as the reference watcher saw
/// it, else as the lowest-numbered watcher that saw it did.
fn delete_revisions(records: &[Record]) -> BTreeMap<&str, Deletion> {
    let rank = |watcher: u32| {
        if watcher == REFERENCE_WATCHER {
            0
        } else {
            u64::from(watcher) + 1
        }
    };
    let mut deletes: BTreeMap<&str, Deletion> = BTreeMap::new();
    for record in records {
        let Record::Watch(watch) = record else {
            continue;
        };
        let WatchEvent::Events { events, .. } = &watch.what else {
            continue;
        };
        for event in events.iter().filter(|e| e.kind == KvEventKind::Delete) {
            let deletion = Deletion {
                revision: event.revision,
                watcher: watch.watcher,
                at: watch.at,
            };
            let slot = deletes.entry(event.key.as_str()).or_insert(deletion);
            if rank(deletion.watcher) < rank(slot.watcher) {
                *slot = deletion;
            }
        }
    }
    deletes
}

#[cfg(test)]
mod tests {
    use super::super::testkit;
    use super::*;
    use crate::history::{KvEvent, WatchRecord};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const S: Nanos = NANOS_PER_SECOND;
    const L: i64 = 7;

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
    /// Lease `L` granted for `ttl` seconds over `[t, t + 1ms]`.
    fn grant(id: u64, t: Nanos, ttl: i64) -> Record {
        op(
            id,
            t,
            Some(t + 1_000_000),
            Outcome::Ok,
            Call::LeaseGrant { ttl },
            Some(Ret::LeaseGrant { lease: L, ttl }),
        )
    }
    fn put(id: u64, key: &str, t: Nanos) -> Record {
        put_with(id, key, L, t)
    }
    fn put_with(id: u64, key: &str, lease: i64, t: Nanos) -> Record {
        op(
            id,
            t,
            Some(t + 1_000_000),
            Outcome::Ok,
            Call::LeasePut {
                key: key.into(),
                lease,
            },
            Some(Ret::LeasePut { revision: 1 }),
        )
    }
    fn keepalive(id: u64, t: Nanos, ttl: i64) -> Record {
        op(
            id,
            t,
            Some(t + 1_000_000),
            Outcome::Ok,
            Call::LeaseKeepAlive { lease: L },
            Some(Ret::LeaseKeepAlive { ttl }),
        )
    }
    fn revoke(id: u64, t: Nanos, outcome: Outcome) -> Record {
        let (complete, ret) = match outcome {
            Outcome::Ok => (Some(t + 1_000_000), Some(Ret::LeaseRevoke { revision: 9 })),
            Outcome::Fail => (Some(t + 1_000_000), None),
            Outcome::Unknown => (None, None),
        };
        op(
            id,
            t,
            complete,
            outcome,
            Call::LeaseRevoke { lease: L },
            ret,
        )
    }
    /// A read of `l/` over `[t, t + 1ms]` that saw `keys` attached to `L`.
    fn read(id: u64, t: Nanos, keys: &[&str]) -> Record {
        let keys = keys
            .iter()
            .map(|key| KeyState {
                key: (*key).into(),
                version: 1,
                mod_revision: 1,
                lease: L,
            })
            .collect();
        op(
            id,
            t,
            Some(t + 1_000_000),
            Outcome::Ok,
            Call::ReadAll {
                prefix: "l/".into(),
            },
            Some(Ret::ReadAll { keys, revision: 1 }),
        )
    }
    fn deleted(watcher: u32, revision: i64, key: &str) -> Record {
        Record::Watch(WatchRecord {
            watcher,
            at: 50 * S,
            what: WatchEvent::Events {
                header_revision: revision,
                events: vec![KvEvent {
                    revision,
                    key: key.into(),
                    kind: KvEventKind::Delete,
                    value: None,
                    create_revision: 0,
                    version: 0,
                }],
            },
        })
    }

    fn run(history: &[Record]) -> Result<CheckResult, String> {
        testkit::run(check, history)
    }
    use super::super::testkit::kinds;

    #[test]
    fn hand_made_histories_accepted_and_rejected_exactly() -> TestResult {
        // Lease L granted at 0 for 10 s; key l/a put at 1 s.
        let base = || vec![grant(1, 0, 10), put(2, "l/a", S)];
        let with = |rest: Vec<Record>| {
            let mut history = base();
            history.extend(rest);
            history
        };
        // (name, history, expected anomaly kinds; empty: valid)
        let cases: Vec<(&str, Vec<Record>, Vec<&str>)> = vec![
            (
                "key present while alive",
                with(vec![read(3, 2 * S, &["l/a"])]),
                vec![],
            ),
            (
                "key vanished while alive",
                with(vec![read(3, 2 * S, &[])]),
                vec!["lease-key-vanished"],
            ),
            (
                "key absent after the deadline (expired)",
                with(vec![read(3, 11 * S, &[])]),
                vec![],
            ),
            (
                "read ending at the deadline proves nothing",
                with(vec![read(3, 10 * S - 1_000_000, &[])]),
                vec![],
            ),
            (
                "read concurrent with the put",
                with(vec![read(3, S, &[])]),
                vec![],
            ),
            (
                "keep-alive extends the deadline",
                with(vec![keepalive(3, 8 * S, 10), read(4, 15 * S, &[])]),
                vec!["lease-key-vanished"],
            ),
            (
                "keep-alive that failed extends nothing",
                with(vec![
                    op(
                        3,
                        8 * S,
                        Some(9 * S),
                        Outcome::Fail,
                        Call::LeaseKeepAlive { lease: L },
                        None,
                    ),
                    read(4, 15 * S, &[]),
                ]),
                vec![],
            ),
            (
                "absent after an unknown revoke",
                with(vec![
                    revoke(3, 2 * S, Outcome::Unknown),
                    read(4, 3 * S, &[]),
                ]),
                vec![],
            ),
            (
                "absent after an ok revoke",
                with(vec![revoke(3, 2 * S, Outcome::Ok), read(4, 3 * S, &[])]),
                vec![],
            ),
            (
                "absent while a revoke is in flight",
                with(vec![
                    read(4, 3 * S, &[]),
                    revoke(3, 3 * S, Outcome::Unknown),
                ]),
                vec![],
            ),
            (
                "absent although the revoke failed",
                with(vec![revoke(3, 2 * S, Outcome::Fail), read(4, 3 * S, &[])]),
                vec!["lease-key-vanished"],
            ),
            (
                "key survived an ok revoke",
                with(vec![
                    revoke(3, 2 * S, Outcome::Ok),
                    read(4, 3 * S, &["l/a"]),
                ]),
                vec!["lease-key-survived"],
            ),
            (
                "key seen by a read concurrent with the revoke",
                with(vec![
                    revoke(3, 2 * S, Outcome::Ok),
                    read(4, 2 * S, &["l/a"]),
                ]),
                vec![],
            ),
            (
                "key seen after an unknown revoke",
                with(vec![
                    revoke(3, 2 * S, Outcome::Unknown),
                    read(4, 3 * S, &["l/a"]),
                ]),
                vec![],
            ),
            (
                "key survived its lease's expiry",
                with(vec![keepalive(3, 12 * S, 0), read(4, 13 * S, &["l/a"])]),
                vec!["lease-key-survived"],
            ),
            (
                "key survived: listed with the revoked lease although put elsewhere",
                vec![
                    grant(1, 0, 10),
                    put_with(2, "l/b", 99, S),
                    revoke(3, 2 * S, Outcome::Ok),
                    read(4, 3 * S, &["l/b"]),
                ],
                vec!["lease-key-survived"],
            ),
            (
                "key put twice is skipped",
                with(vec![put(3, "l/a", 2 * S), read(4, 4 * S, &[])]),
                vec![],
            ),
            (
                "keys of a lease deleted together",
                with(vec![
                    put(3, "l/b", S),
                    deleted(REFERENCE_WATCHER, 20, "l/a"),
                    deleted(REFERENCE_WATCHER, 20, "l/b"),
                ]),
                vec![],
            ),
            (
                "keys of a lease deleted at different revisions",
                with(vec![
                    put(3, "l/b", S),
                    deleted(REFERENCE_WATCHER, 20, "l/a"),
                    deleted(REFERENCE_WATCHER, 21, "l/b"),
                ]),
                vec!["lease-not-atomic"],
            ),
            (
                "deletes seen by other watchers count",
                with(vec![
                    put(3, "l/b", S),
                    deleted(4, 20, "l/a"),
                    deleted(5, 21, "l/b"),
                ]),
                vec!["lease-not-atomic"],
            ),
            (
                "the reference watcher's revision wins",
                with(vec![
                    put(3, "l/b", S),
                    deleted(4, 21, "l/a"),
                    deleted(REFERENCE_WATCHER, 20, "l/a"),
                    deleted(REFERENCE_WATCHER, 20, "l/b"),
                ]),
                vec![],
            ),
            (
                "keys of different leases deleted apart",
                with(vec![
                    put_with(3, "l/b", 8, S),
                    deleted(REFERENCE_WATCHER, 20, "l/a"),
                    deleted(REFERENCE_WATCHER, 21, "l/b"),
                ]),
                vec![],
            ),
            (
                "keep-alive within the granted TTL",
                with(vec![keepalive(3, 2 * S, 10)]),
                vec![],
            ),
            (
                "keep-alive above the granted TTL",
                with(vec![keepalive(3, 2 * S, 11)]),
                vec!["lease-ttl-too-long"],
            ),
        ];
        for (name, history, expected) in cases {
            let result = run(&history)?;
            assert_eq!(result.checker, "lease");
            assert_eq!(kinds(&result), expected, "{name}: {result:#?}");
            if expected.is_empty() {
                assert_ne!(result.validity, Validity::Invalid, "{name}: {result:#?}");
            } else {
                assert_eq!(result.validity, Validity::Invalid, "{name}: {result:#?}");
            }
        }
        Ok(())
    }

    #[test]
    fn vanished_key_names_put_deadline_and_read() -> TestResult {
        let history = [
            grant(1, 0, 10),
            put(2, "l/a", S),
            keepalive(3, 8 * S, 10),
            read(4, 15 * S, &[]),
            read(5, 16 * S, &[]),
        ];
        let result = run(&history)?;
        let anomaly = result.anomalies.first().ok_or("no anomaly")?;
        assert_eq!(anomaly.ops, [2, 3, 4]);
        assert_eq!(anomaly.window, Some((S, 15 * S + 1_000_000)));
        assert!(
            anomaly.description.contains("\"l/a\""),
            "{}",
            anomaly.description
        );
        assert!(
            anomaly.description.contains("until 18000000000 ns"),
            "{}",
            anomaly.description
        );
        assert!(
            anomaly.description.contains("nor do 1 later reads"),
            "{}",
            anomaly.description
        );
        Ok(())
    }

    #[test]
    fn summary_counts_leases_keys_revokes_and_expiries() -> TestResult {
        let history = [
            grant(1, 0, 10),
            put(2, "l/a", S),
            put(3, "l/b", S),
            read(4, 2 * S, &["l/a", "l/b"]),
            read(5, 20 * S, &[]),
        ];
        let result = run(&history)?;
        assert_eq!(result.validity, Validity::Valid, "{result:#?}");
        assert!(
            result.summary.starts_with(
                "1 leases granted, 2 keys put with a lease, 0 revoked, 2 keys expired"
            ),
            "{}",
            result.summary
        );
        assert!(
            result
                .summary
                .contains("checked 2 reads of a key while its lease was alive"),
            "{}",
            result.summary
        );
        Ok(())
    }

    #[test]
    fn nothing_to_check_is_unknown() -> TestResult {
        let result = run(&[grant(1, 0, 10)])?;
        assert_eq!(result.validity, Validity::Unknown, "{result:#?}");
        Ok(())
    }

    #[test]
    fn malformed_ops_are_ignored_not_a_panic() -> TestResult {
        let history = [
            grant(1, 0, 10),
            put(2, "l/a", S),
            op(
                3,
                2 * S,
                Some(3 * S),
                Outcome::Ok,
                Call::LeaseKeepAlive { lease: L },
                None,
            ),
            op(
                4,
                2 * S,
                None,
                Outcome::Ok,
                Call::ReadAll {
                    prefix: "l/".into(),
                },
                None,
            ),
            read(5, 4 * S, &["l/a"]),
        ];
        let result = run(&history)?;
        assert_eq!(result.validity, Validity::Unknown, "{result:#?}");
        assert!(
            result.summary.contains("2 malformed ops"),
            "{}",
            result.summary
        );
        Ok(())
    }

    #[test]
    fn no_lease_ops_means_no_result() {
        assert!(check(&[]).is_none());
        assert!(check(&[deleted(1, 3, "l/a")]).is_none());
    }
}
