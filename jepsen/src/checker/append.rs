//! The `append` workload's checker: its transactions must be strictly
//! serializable. A simplified version of Elle's list-append checker.
//!
//! * Ok transactions committed; failed ones did not (their values must never
//!   be read: `aborted-read`); unknown ones may have, and count as committed
//!   once one of their appended values is read.
//! * Version order: per key, every list read must be a prefix of the longest
//!   one read (`incompatible-order`), which gives the order of the appends.
//!   A value read that no transaction appended is a `phantom`; a value twice
//!   in a list a `duplicate-append`.
//! * Within a transaction, a read after its own appends to a key must show
//!   them (`internal`); two committed transactions that read the same version
//!   of a key and both appended to it are a `lost-update`.
//! * Dependency graph over committed transactions: ww (the element appended
//!   right before mine), wr (I read a list whose last element you appended),
//!   rw (you appended the element right after the last one of the list I
//!   read, or any committed one that no read shows) and real time (I
//!   completed before you were invoked). Every cycle
//!   (strongly connected component) is a `G-cycle` anomaly, classified as
//!   Adya/Elle do: G0 (ww only), G1c (ww, wr), G-single (one rw), G2 (more),
//!   with `-realtime` when it needs a real-time edge.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use super::register::{cap_anomalies, op_window};
use super::{Anomaly, CheckResult, Validity};
use crate::history::{self, Call, MicroOp, Nanos, Op, Outcome, Record, Ret};

/// The workload this checker reads.
pub const WORKLOAD: &str = "append";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    Fail,
    Unknown,
}

/// One transaction: its op, status and micro-ops (with the values read for
/// an ok one, as called otherwise).
struct Txn<'a> {
    op: &'a Op,
    status: Status,
    micro: &'a [MicroOp],
    complete: Option<Nanos>,
}

/// Dependency kinds, weakest first (a cycle is described by its weakest
/// labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Ww,
    Wr,
    Rw,
    Realtime,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ww => "ww",
            Kind::Wr => "wr",
            Kind::Rw => "rw",
            Kind::Realtime => "realtime",
        }
    }
}

/// A read of a committed (ok) transaction.
struct Read<'a> {
    txn: usize,
    list: &'a [u64],
    /// The transaction's first access to the key (no own append before it).
    external: bool,
}

/// The dependency graph: labels per edge (one per kind, the first key).
#[derive(Default)]
struct Graph<'a> {
    edges: HashMap<(usize, usize), BTreeMap<Kind, Option<&'a str>>>,
}

impl<'a> Graph<'a> {
    fn add(&mut self, from: usize, to: usize, kind: Kind, key: Option<&'a str>) {
        self.edges
            .entry((from, to))
            .or_default()
            .entry(kind)
            .or_insert(key);
    }

    fn successors(&self, n: usize) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); n];
        for &(from, to) in self.edges.keys() {
            if let Some(list) = out.get_mut(from) {
                list.push(to);
            }
        }
        for list in &mut out {
            list.sort_unstable();
        }
        out
    }
}

/// `None` when the history has no op of this workload.
pub fn check(records: &[Record]) -> Option<CheckResult> {
    let ops: Vec<&Op> = history::ops(records)
        .filter(|op| op.workload == WORKLOAD)
        .collect();
    if ops.is_empty() {
        return None;
    }
    let mut malformed: Vec<(u64, &str)> = Vec::new();
    let mut txns: Vec<Txn<'_>> = Vec::new();
    for &op in &ops {
        let Call::Txn { ops: called } = &op.call else {
            malformed.push((op.id, "not a txn call"));
            continue;
        };
        let txn = match (op.outcome, &op.ret, op.complete) {
            (Outcome::Ok, Some(Ret::Txn { ops: done, .. }), Some(complete)) => Txn {
                op,
                status: Status::Ok,
                micro: done,
                complete: Some(complete),
            },
            (Outcome::Ok, ..) => {
                malformed.push((op.id, "ok without a txn answer or completion time"));
                Txn {
                    op,
                    status: Status::Unknown,
                    micro: called,
                    complete: None,
                }
            }
            (Outcome::Fail, ..) => Txn {
                op,
                status: Status::Fail,
                micro: called,
                complete: op.complete,
            },
            (Outcome::Unknown, ..) => Txn {
                op,
                status: Status::Unknown,
                micro: called,
                complete: None,
            },
        };
        txns.push(txn);
    }

    let mut anomalies: Vec<Anomaly> = Vec::new();

    // Who appended what (values are unique per key in the workload).
    let mut appended_by: HashMap<(&str, u64), usize> = HashMap::new();
    let mut failed_by: HashMap<(&str, u64), usize> = HashMap::new();
    let mut reads: BTreeMap<&str, Vec<Read<'_>>> = BTreeMap::new();
    for (i, t) in txns.iter().enumerate() {
        let mut touched: HashSet<&str> = HashSet::new();
        for m in t.micro {
            match m {
                MicroOp::Append { key, value } => {
                    touched.insert(key);
                    let map = if t.status == Status::Fail {
                        &mut failed_by
                    } else {
                        &mut appended_by
                    };
                    if map.insert((key, *value), i).is_some() {
                        malformed.push((t.op.id, "a value appended twice"));
                    }
                }
                MicroOp::Read { key, value } if t.status == Status::Ok => {
                    let external = touched.insert(key);
                    match value {
                        Some(list) => reads.entry(key).or_default().push(Read {
                            txn: i,
                            list,
                            external,
                        }),
                        None => malformed.push((t.op.id, "ok read without a value")),
                    }
                }
                MicroOp::Read { key, .. } => {
                    touched.insert(key);
                }
            }
        }
        if t.status == Status::Ok {
            internal(t, &mut anomalies);
        }
    }
    lost_updates(&txns, &mut anomalies);

    // Version order: the longest list read of each key; others its prefixes.
    let mut order: BTreeMap<&str, &[u64]> = BTreeMap::new();
    for (&key, key_reads) in &reads {
        let Some(longest) = key_reads.iter().max_by_key(|r| r.list.len()) else {
            continue;
        };
        order.insert(key, longest.list);
        let mut checked: Vec<&Read<'_>> = vec![longest];
        let mut incompatible = 0usize;
        for r in key_reads {
            if !longest.list.starts_with(r.list) {
                incompatible += 1;
                if incompatible == 1 {
                    anomalies.push(Anomaly {
                        kind: "incompatible-order".into(),
                        description: format!(
                            "{key}: op {} read {:?}, not a prefix of {:?} read by op {}",
                            txns[r.txn].op.id, r.list, longest.list, txns[longest.txn].op.id
                        ),
                        ops: vec![txns[r.txn].op.id, txns[longest.txn].op.id],
                        window: op_window([txns[r.txn].op, txns[longest.txn].op]),
                    });
                }
                checked.push(r);
            }
        }
        // Every value read is in `checked` (the others are prefixes).
        let mut reported: HashSet<u64> = HashSet::new();
        for r in checked {
            let mut in_list: HashSet<u64> = HashSet::new();
            for &v in r.list {
                let reader = txns[r.txn].op;
                if !in_list.insert(v) && reported.insert(v) {
                    anomalies.push(Anomaly {
                        kind: "duplicate-append".into(),
                        description: format!(
                            "{key}: op {} read {v} twice in {:?}",
                            reader.id, r.list
                        ),
                        ops: vec![reader.id],
                        window: op_window([reader]),
                    });
                }
                if appended_by.contains_key(&(key, v)) || !reported.insert(v) {
                    continue;
                }
                match failed_by.get(&(key, v)) {
                    Some(&f) => anomalies.push(Anomaly {
                        kind: "aborted-read".into(),
                        description: format!(
                            "{key}: op {} read {v}, appended by op {} which failed",
                            reader.id, txns[f].op.id
                        ),
                        ops: vec![txns[f].op.id, reader.id],
                        window: op_window([txns[f].op, reader]),
                    }),
                    None => anomalies.push(Anomaly {
                        kind: "phantom".into(),
                        description: format!(
                            "{key}: op {} read {v}, which no transaction appended",
                            reader.id
                        ),
                        ops: vec![reader.id],
                        window: op_window([reader]),
                    }),
                }
            }
        }
    }

    // Every value read (incompatible reads included).
    let read_values: HashSet<(&str, u64)> = reads
        .iter()
        .flat_map(|(&key, key_reads)| {
            key_reads
                .iter()
                .flat_map(move |r| r.list.iter().map(move |&v| (key, v)))
        })
        .collect();
    // Committed: ok ones, and unknown ones whose appends were read.
    let observed: HashSet<usize> = read_values
        .iter()
        .filter_map(|kv| appended_by.get(kv).copied())
        .collect();
    let committed: Vec<bool> = txns
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.status == Status::Ok || (t.status == Status::Unknown && observed.contains(&i))
        })
        .collect();
    let is_committed = |i: usize| committed.get(i).copied().unwrap_or(false);

    let mut graph = Graph::default();
    // ww: the element right before each appended one.
    for (&key, list) in &order {
        for pair in list.windows(2) {
            let (Some(&a), Some(&b)) = (
                appended_by.get(&(key, pair[0])),
                appended_by.get(&(key, pair[1])),
            ) else {
                continue;
            };
            if a != b && is_committed(a) && is_committed(b) {
                graph.add(a, b, Kind::Ww, Some(key));
            }
        }
    }
    // Committed appends never read: unordered, but after every read that
    // does not show them.
    let mut unread: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (&(key, v), &t) in &appended_by {
        if is_committed(t) && !read_values.contains(&(key, v)) {
            unread.entry(key).or_default().push(t);
        }
    }
    for list in unread.values_mut() {
        list.sort_unstable();
        list.dedup();
    }
    // wr and rw from external reads.
    for (&key, key_reads) in &reads {
        let list = order.get(key).copied().unwrap_or_default();
        let unread = unread.get(key).map(Vec::as_slice).unwrap_or_default();
        for r in key_reads.iter().filter(|r| r.external) {
            if let Some(&last) = r.list.last() {
                if let Some(&w) = appended_by.get(&(key, last)) {
                    // A read of the reader's own later append is a self-loop.
                    graph.add(w, r.txn, Kind::Wr, Some(key));
                }
            }
            for &w in unread {
                if w != r.txn {
                    graph.add(r.txn, w, Kind::Rw, Some(key));
                }
            }
            if !list.starts_with(r.list) {
                continue;
            }
            if let Some(&next) = list.get(r.list.len()) {
                if let Some(&w) = appended_by.get(&(key, next)) {
                    if w != r.txn && is_committed(w) {
                        graph.add(r.txn, w, Kind::Rw, Some(key));
                    }
                }
            }
        }
    }
    realtime_edges(&txns, &committed, &mut graph);

    let mut edge_counts: BTreeMap<Kind, usize> = BTreeMap::new();
    for labels in graph.edges.values() {
        for kind in labels.keys() {
            *edge_counts.entry(*kind).or_default() += 1;
        }
    }
    let succ = graph.successors(txns.len());
    let mut cycles = 0usize;
    for scc in tarjan(&succ) {
        let cycle = if scc.len() == 1 {
            let n = scc[0];
            if !graph.edges.contains_key(&(n, n)) {
                continue;
            }
            vec![n]
        } else {
            match short_cycle(&scc, &succ) {
                Some(c) => c,
                None => continue,
            }
        };
        cycles += 1;
        anomalies.push(cycle_anomaly(&cycle, scc.len(), &txns, &graph));
    }

    // Summary.
    let count = |s: Status| txns.iter().filter(|t| t.status == s).count();
    let longest = order.values().map(|l| l.len()).max().unwrap_or(0);
    let mut summary = format!(
        "{} txns ({} ok, {} failed, {} unknown of which {} seen committed) on {} keys, longest list {longest}; edges",
        txns.len(),
        count(Status::Ok),
        count(Status::Fail),
        count(Status::Unknown),
        observed
            .iter()
            .filter(|&&i| txns.get(i).is_some_and(|t| t.status == Status::Unknown))
            .count(),
        reads.len(),
    );
    for kind in [Kind::Ww, Kind::Wr, Kind::Rw, Kind::Realtime] {
        let _ = write!(
            summary,
            " {} {}",
            kind.name(),
            edge_counts.get(&kind).copied().unwrap_or(0)
        );
    }
    let _ = write!(summary, "; {cycles} cycles");
    let validity = if !anomalies.is_empty() {
        let _ = write!(summary, "; {} anomalies", anomalies.len());
        Validity::Invalid
    } else if malformed.is_empty() {
        summary.push_str(": strict serializable");
        Validity::Valid
    } else {
        Validity::Unknown
    };
    if let Some((id, reason)) = malformed.first() {
        let _ = write!(
            summary,
            "; {} malformed ops (op {id}: {reason})",
            malformed.len()
        );
    }
    let (anomalies, _) = cap_anomalies(anomalies);
    Some(CheckResult {
        checker: WORKLOAD.into(),
        validity,
        summary,
        anomalies,
    })
}

/// A read after the transaction's own accesses to a key must show them: the
/// list read before plus the appends since, or (nothing read before) end
/// with the appends.
fn internal(t: &Txn<'_>, anomalies: &mut Vec<Anomaly>) {
    // key -> (last list read, appends since)
    let mut state: HashMap<&str, (Option<&[u64]>, Vec<u64>)> = HashMap::new();
    for m in t.micro {
        match m {
            MicroOp::Append { key, value } => state.entry(key).or_default().1.push(*value),
            MicroOp::Read {
                key,
                value: Some(list),
            } => {
                let (before, since) = state.entry(key).or_default();
                let ok = match before {
                    Some(before) => {
                        list.len() == before.len() + since.len()
                            && list.starts_with(before)
                            && list.ends_with(since)
                    }
                    None => list.ends_with(since),
                };
                if !ok {
                    let expected = match before {
                        Some(b) => format!("{:?}", [*b, since.as_slice()].concat()),
                        None => format!("a list ending with {since:?}"),
                    };
                    anomalies.push(Anomaly {
                        kind: "internal".into(),
                        description: format!(
                            "op {} read {key} = {list:?} where its own earlier micro-ops imply {expected}",
                            t.op.id
                        ),
                        ops: vec![t.op.id],
                        window: op_window([t.op]),
                    });
                }
                *before = Some(list);
                since.clear();
            }
            MicroOp::Read { .. } => {}
        }
    }
}

/// Two committed transactions that read the same version of a key (before
/// appending to it) and both appended to it.
fn lost_updates(txns: &[Txn<'_>], anomalies: &mut Vec<Anomaly>) {
    // (key, last element of the version read) -> txns
    let mut by_version: BTreeMap<(&str, Option<u64>), Vec<usize>> = BTreeMap::new();
    for (i, t) in txns.iter().enumerate() {
        if t.status != Status::Ok {
            continue;
        }
        let mut first: HashMap<&str, Option<u64>> = HashMap::new();
        let mut appends: HashSet<&str> = HashSet::new();
        for m in t.micro {
            match m {
                MicroOp::Read {
                    key,
                    value: Some(list),
                } => {
                    if !appends.contains(key.as_str()) {
                        first.entry(key).or_insert(list.last().copied());
                    }
                }
                MicroOp::Read { .. } => {}
                MicroOp::Append { key, .. } => {
                    appends.insert(key);
                }
            }
        }
        for (key, version) in first {
            if appends.contains(key) {
                by_version.entry((key, version)).or_default().push(i);
            }
        }
    }
    for ((key, version), group) in by_version {
        if group.len() < 2 {
            continue;
        }
        let ids: Vec<u64> = group.iter().map(|&i| txns[i].op.id).collect();
        let version = version.map_or_else(
            || "the empty list".to_owned(),
            |v| format!("the list ending with {v}"),
        );
        anomalies.push(Anomaly {
            kind: "lost-update".into(),
            description: format!("{key}: ops {ids:?} all read {version} and appended to it"),
            window: op_window(group.iter().map(|&i| txns[i].op)),
            ops: ids,
        });
    }
}

/// Real-time edges T1 -> T2 whenever ok T1 completed before committed T2 was
/// invoked, transitively reduced: each op gets edges from the frontier of ops
/// completed before its invocation, and its completion replaces in the
/// frontier those that preceded it.
fn realtime_edges(txns: &[Txn<'_>], committed: &[bool], graph: &mut Graph<'_>) {
    // (time, 0 = invoke / 1 = complete, txn): invokes first at equal times,
    // so that only a strictly earlier completion orders.
    let mut events: Vec<(Nanos, u8, usize)> = Vec::new();
    for (i, t) in txns.iter().enumerate() {
        if !committed.get(i).copied().unwrap_or(false) {
            continue;
        }
        events.push((t.op.invoke, 0, i));
        if t.status == Status::Ok {
            if let Some(c) = t.complete {
                events.push((c, 1, i));
            }
        }
    }
    events.sort_unstable();
    let mut frontier: Vec<usize> = Vec::new();
    let mut preds: HashMap<usize, Vec<usize>> = HashMap::new();
    for (_, what, i) in events {
        if what == 0 {
            for &f in &frontier {
                graph.add(f, i, Kind::Realtime, None);
            }
            preds.insert(i, frontier.clone());
        } else {
            let before = preds.remove(&i).unwrap_or_default();
            frontier.retain(|f| !before.contains(f));
            frontier.push(i);
        }
    }
}

/// Strongly connected components (Tarjan, iterative).
fn tarjan(succ: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = succ.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut next = 0usize;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, next successor position)
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut pos)) = work.last_mut() {
            if let Some(&w) = succ[v].get(*pos) {
                *pos += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut scc = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                scc.sort_unstable();
                out.push(scc);
            }
        }
    }
    out
}

/// A shortest cycle through the component's first node (BFS inside it).
fn short_cycle(scc: &[usize], succ: &[Vec<usize>]) -> Option<Vec<usize>> {
    let members: HashSet<usize> = scc.iter().copied().collect();
    let &start = scc.first()?;
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &succ[v] {
            if !members.contains(&w) {
                continue;
            }
            if w == start {
                let mut cycle = vec![v];
                let mut at = v;
                while at != start {
                    at = *parent.get(&at)?;
                    cycle.push(at);
                }
                cycle.reverse();
                return Some(cycle);
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    None
}

/// The anomaly for `cycle` (nodes in order; the last one leads back to the
/// first), found in a component of `size` transactions.
fn cycle_anomaly(cycle: &[usize], size: usize, txns: &[Txn<'_>], graph: &Graph<'_>) -> Anomaly {
    let mut description = String::new();
    let mut kinds: Vec<Kind> = Vec::new();
    for (i, &from) in cycle.iter().enumerate() {
        let to = cycle[(i + 1) % cycle.len()];
        let label = graph
            .edges
            .get(&(from, to))
            .and_then(|labels| labels.iter().next());
        let (kind, key) = match label {
            Some((&kind, &key)) => (kind, key),
            None => (Kind::Realtime, None),
        };
        kinds.push(kind);
        if i == 0 {
            let _ = write!(description, "op {}", txns[from].op.id);
        }
        let _ = match key {
            Some(key) => write!(description, " -{}({key})->", kind.name()),
            None => write!(description, " -{}->", kind.name()),
        };
        let _ = write!(description, " op {}", txns[to].op.id);
    }
    let rw = kinds.iter().filter(|&&k| k == Kind::Rw).count();
    let mut class = if rw >= 2 {
        "G2"
    } else if rw == 1 {
        "G-single"
    } else if kinds.contains(&Kind::Wr) {
        "G1c"
    } else {
        "G0"
    }
    .to_owned();
    if kinds.contains(&Kind::Realtime) {
        class.push_str("-realtime");
    }
    let ops: Vec<&Op> = cycle.iter().map(|&i| txns[i].op).collect();
    Anomaly {
        kind: "G-cycle".into(),
        description: format!(
            "{class}: a cycle of {} txns (in a component of {size}): {description}",
            cycle.len()
        ),
        ops: ops.iter().map(|op| op.id).collect(),
        window: op_window(ops),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit;
    use super::*;

    const X: &str = "a/0";
    const Y: &str = "a/1";

    fn a(key: &str, value: u64) -> MicroOp {
        MicroOp::Append {
            key: key.into(),
            value,
        }
    }
    fn r(key: &str, list: &[u64]) -> MicroOp {
        MicroOp::Read {
            key: key.into(),
            value: Some(list.to_vec()),
        }
    }

    /// A history of append transactions; ids in order of addition.
    #[derive(Default)]
    struct H {
        records: Vec<Record>,
    }

    impl H {
        fn push(
            &mut self,
            invoke: Nanos,
            complete: Option<Nanos>,
            outcome: Outcome,
            ops: &[MicroOp],
        ) -> &mut Self {
            let id = self.records.len() as u64;
            let called = ops
                .iter()
                .map(|m| match m {
                    MicroOp::Read { key, .. } => MicroOp::Read {
                        key: key.clone(),
                        value: None,
                    },
                    other => other.clone(),
                })
                .collect();
            let ret = (outcome == Outcome::Ok).then(|| Ret::Txn {
                ops: ops.to_vec(),
                revision: complete.unwrap_or(0) as i64,
            });
            self.records.push(testkit::op(
                WORKLOAD,
                id as u32,
                id,
                invoke,
                complete,
                outcome,
                Call::Txn { ops: called },
                ret,
            ));
            self
        }
        /// Ok over `[i, c]`.
        fn ok(&mut self, i: Nanos, c: Nanos, ops: &[MicroOp]) -> &mut Self {
            self.push(i, Some(c), Outcome::Ok, ops)
        }
        fn fail(&mut self, i: Nanos, c: Nanos, ops: &[MicroOp]) -> &mut Self {
            self.push(i, Some(c), Outcome::Fail, ops)
        }
        fn unknown(&mut self, i: Nanos, ops: &[MicroOp]) -> &mut Self {
            self.push(i, None, Outcome::Unknown, ops)
        }
        fn check(&self) -> Result<CheckResult, String> {
            testkit::run(check, &self.records)
        }
    }

    /// (name, history, expected anomaly kinds (sorted, deduplicated), a
    /// substring of some description).
    type Case = (&'static str, H, &'static [&'static str], &'static str);

    fn cases() -> Vec<Case> {
        let mut out: Vec<Case> = Vec::new();
        let mut h = H::default();
        h.ok(0, 10, &[a(X, 1)])
            .ok(20, 30, &[r(X, &[1]), a(Y, 2), r(Y, &[2])])
            .ok(40, 50, &[r(X, &[1]), r(Y, &[2]), a(X, 3)])
            .ok(60, 70, &[r(X, &[1, 3]), r(Y, &[2])]);
        out.push(("serial", h, &[], ""));

        let mut h = H::default();
        // T0 and T1 overlap: T1 may read before T0; T3 sees T0 while it is
        // still running (T0 took effect early).
        h.ok(0, 100, &[a(X, 1)])
            .ok(10, 90, &[r(X, &[]), a(Y, 2)])
            .ok(200, 210, &[r(X, &[1]), r(Y, &[2])])
            .ok(5, 50, &[r(X, &[1])]);
        out.push(("concurrent", h, &[], ""));

        let mut h = H::default();
        h.ok(0, 100, &[a(X, 1), a(Y, 2)])
            .ok(0, 100, &[a(X, 3), a(Y, 4)])
            .ok(200, 210, &[r(X, &[1, 3]), r(Y, &[4, 2])]);
        out.push(("g0", h, &["G-cycle"], "G0: a cycle of 2 txns"));

        let mut h = H::default();
        h.ok(0, 100, &[a(X, 1), r(Y, &[2])])
            .ok(0, 100, &[a(Y, 2), r(X, &[1])])
            .ok(200, 210, &[r(X, &[1]), r(Y, &[2])]);
        out.push(("g1c", h, &["G-cycle"], "G1c"));

        let mut h = H::default();
        h.ok(0, 100, &[r(X, &[]), r(Y, &[]), a(X, 1)])
            .ok(0, 100, &[r(X, &[]), r(Y, &[]), a(Y, 2)]);
        out.push(("write skew", h, &["G-cycle"], "G2"));

        let mut h = H::default();
        h.ok(0, 10, &[a(X, 1)])
            .ok(20, 100, &[r(X, &[1]), a(X, 2)])
            .ok(20, 100, &[r(X, &[1]), a(X, 3)])
            .ok(200, 210, &[r(X, &[1, 2])]);
        out.push((
            "lost update",
            h,
            &["G-cycle", "lost-update"],
            "ops [1, 2] all read",
        ));

        let mut h = H::default();
        h.ok(0, 10, &[a(X, 1)]).ok(20, 30, &[r(X, &[])]);
        out.push(("stale read", h, &["G-cycle"], "G-single-realtime"));

        let mut h = H::default();
        h.ok(0, 10, &[a(X, 1)])
            .ok(20, 30, &[r(X, &[])])
            .ok(40, 50, &[r(X, &[1])]);
        out.push(("stale read seen later", h, &["G-cycle"], "-rw(a/0)->"));

        let mut h = H::default();
        h.fail(0, 10, &[a(X, 1)]).ok(20, 30, &[r(X, &[1])]);
        out.push((
            "aborted read",
            h,
            &["aborted-read"],
            "appended by op 0 which failed",
        ));

        let mut h = H::default();
        h.ok(0, 10, &[a(X, 1)]).ok(20, 30, &[r(X, &[1, 7])]);
        out.push(("phantom", h, &["phantom"], "read 7"));

        let mut h = H::default();
        h.unknown(0, &[a(X, 1), a(Y, 2)])
            .ok(50, 60, &[r(X, &[1])])
            .ok(70, 80, &[r(Y, &[2]), a(Y, 3)]);
        out.push(("unknown seen", h, &[], "1 seen committed"));

        let mut h = H::default();
        h.unknown(0, &[a(X, 1)]).ok(50, 60, &[r(X, &[])]);
        out.push(("unknown never seen", h, &[], "0 seen committed"));

        let mut h = H::default();
        h.ok(0, 10, &[a(X, 1), r(X, &[])]);
        out.push(("internal", h, &["internal"], "own earlier micro-ops"));

        let mut h = H::default();
        h.ok(0, 10, &[r(X, &[1]), a(X, 1)]);
        out.push(("future read", h, &["G-cycle"], "op 0 -wr(a/0)-> op 0"));

        let mut h = H::default();
        h.ok(0, 10, &[a(X, 1)]).ok(20, 30, &[r(X, &[1, 1])]);
        out.push(("duplicate", h, &["duplicate-append"], "twice"));

        let mut h = H::default();
        h.ok(0, 10, &[a(X, 1)])
            .ok(0, 10, &[a(X, 2)])
            .ok(0, 10, &[a(X, 3)])
            .ok(20, 30, &[r(X, &[1, 2])])
            .ok(20, 30, &[r(X, &[1, 3])]);
        out.push(("incompatible", h, &["incompatible-order"], "not a prefix"));
        out
    }

    #[test]
    fn append_checker_cases() -> Result<(), String> {
        for (name, history, expected, needle) in cases() {
            let result = history.check()?;
            let mut kinds = testkit::kinds(&result);
            kinds.sort_unstable();
            kinds.dedup();
            assert_eq!(kinds, expected, "{name}: {result:#?}");
            let valid = if expected.is_empty() {
                Validity::Valid
            } else {
                Validity::Invalid
            };
            assert_eq!(result.validity, valid, "{name}: {result:#?}");
            let text = std::iter::once(result.summary.as_str())
                .chain(result.anomalies.iter().map(|a| a.description.as_str()))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(text.contains(needle), "{name}: {needle:?} not in {text}");
        }
        Ok(())
    }

    #[test]
    fn append_cycle_names_its_ops() -> Result<(), String> {
        let mut h = H::default();
        h.ok(0, 10, &[a(X, 1)]).ok(20, 30, &[r(X, &[])]);
        let result = h.check()?;
        let cycle = result.anomalies.first().ok_or("no anomaly")?;
        let mut ops = cycle.ops.clone();
        ops.sort_unstable();
        assert_eq!(ops, vec![0, 1]);
        assert_eq!(cycle.window, Some((0, 30)));
        Ok(())
    }

    #[test]
    fn append_checker_skips_other_histories() {
        let other = testkit::op(
            "register",
            0,
            0,
            0,
            Some(1),
            Outcome::Ok,
            Call::Write {
                key: "r/0".into(),
                value: 1,
            },
            Some(Ret::Write { revision: 1 }),
        );
        assert_eq!(check(&[other]), None);
    }

    #[test]
    fn append_long_history_is_fast_and_valid() -> Result<(), String> {
        // 3,000 serial txns over 8 keys, each reading one key and appending
        // to another: a long chain, no cycle.
        let mut h = H::default();
        let mut lists: Vec<Vec<u64>> = vec![Vec::new(); 8];
        for i in 0..3000u64 {
            let (rk, wk) = ((i % 8) as usize, ((i * 3 + 1) % 8) as usize);
            let (rkey, wkey) = (format!("a/{rk}"), format!("a/{wk}"));
            let seen = lists[rk].clone();
            lists[wk].push(i + 1);
            h.ok(i * 10, i * 10 + 5, &[r(&rkey, &seen), a(&wkey, i + 1)]);
        }
        let result = h.check()?;
        assert_eq!(result.validity, Validity::Valid, "{result:#?}");
        Ok(())
    }

    #[test]
    fn append_txns_serialize_with_snake_case_tags() -> Result<(), serde_json::Error> {
        let call = Call::Txn {
            ops: vec![
                a(X, 1),
                MicroOp::Read {
                    key: Y.into(),
                    value: None,
                },
            ],
        };
        let text = serde_json::to_string(&call)?;
        assert_eq!(
            text,
            r#"{"f":"txn","ops":[{"f":"append","key":"a/0","value":1},{"f":"read","key":"a/1","value":null}]}"#
        );
        let ret = Ret::Txn {
            ops: vec![r(Y, &[1, 2])],
            revision: 4,
        };
        let back: Ret = serde_json::from_str(&serde_json::to_string(&ret)?)?;
        assert_eq!(back, ret);
        Ok(())
    }
}
