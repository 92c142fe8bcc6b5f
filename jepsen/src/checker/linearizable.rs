//! A linearizability checker for histories of per-key registers (test support).
//!
//! # Model
//!
//! Every key is an independent register holding an `Option<u64>` (initially
//! `None`, i.e. the key is absent). Clients record [`Operation`]s: a read, a
//! blind write, or a compare-and-swap, each with its invocation time, its
//! completion time and what it returned ([`Outcome`]).
//!
//! * An [`Outcome::Ok`] operation took effect atomically at some instant between
//!   `invoke` and `complete` and returned what was recorded.
//! * An [`Outcome::Fail`] operation definitely did not take effect: it is dropped.
//! * An [`Outcome::Unknown`] operation (timeout, lost connection) may have taken
//!   effect at any instant after `invoke`, or never: its completion time is
//!   taken to be +infinity and the search may leave it out. Unknown reads carry
//!   no information and are dropped; an unknown CAS, if placed, succeeded (a
//!   CAS that failed had no effect, which is the same as leaving it out).
//!
//! Two operations whose intervals merely touch (`a.complete == b.invoke`) are
//! treated as concurrent, so a coarse clock can never cause a false alarm.
//!
//! # Algorithm
//!
//! The history is first partitioned by key. This is sound and complete because
//! linearizability is *local* (Herlihy & Wing, 1990): a history over several
//! objects is linearizable iff the sub-history of every object is, and each
//! operation here touches exactly one key, i.e. one register object
//! ("P-compositionality" in Horn & Kroening's terms). Checking keys one by one
//! turns one exponential search into many small ones.
//!
//! For each key we run the Wing & Gong search with Lowe's memoisation (the
//! "WGL" algorithm used by Knossos' `linear` checker and by porcupine). Call
//! and return events are put in one doubly linked list ordered by time. The
//! search walks the list from its head: at a call event it tries to linearize
//! that operation now (apply it to the register model); if the model accepts
//! and the pair (set of linearized operations, register state) has not been
//! seen before, it removes the call and its return from the list, pushes the
//! choice on a stack and restarts from the head. Reaching a return event means
//! that operation's deadline has passed without it being placed, so the search
//! backtracks: it pops the last choice, puts its events back, and tries the
//! next call after it. The history is linearizable once every operation with a
//! known outcome has been linearized (unknown operations have no return event,
//! so they never force a backtrack and may stay unplaced). The cache of
//! (bitset, state) pairs makes the search polynomial on typical histories; a
//! bound on its size turns a pathological search into
//! [`CheckError::Inconclusive`] instead of running forever.
//!
//! Reductions on top of plain WGL, each keeping the search exact (the unit
//! tests compare it with an exhaustive search on millions of small histories):
//! * Forced moves: a read or a CAS that returned `false` that can be placed
//!   now is placed now, with no alternative tried ([`Search::forced`]).
//! * Unknown ops are only placed just before an op that needs their effect
//!   ([`Owed`]), so they do not multiply the states while they are pending.
//! * The cache also prunes a state whose set of linearized unknown ops is a
//!   superset of a visited one's, other things equal ([`Visited`]).
//! * An unknown write or CAS whose new value is never observed (no read
//!   returns it, no CAS expects it) is dropped up front when the key has no
//!   CAS that returned `false` (the only op such a value could explain).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// The values written to registers.
pub type Value = u64;

/// Default bound on distinct search states (cache entries) explored per key.
pub const DEFAULT_MAX_STATES: usize = 1_000_000;

/// How many ops of the linearizable prefix a [`Violation`] displays.
const WINDOW: usize = 10;

/// An operation on one register.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Reads the register; returns `None` if the key is absent.
    Read,
    /// Sets the register to the value.
    Write(Value),
    /// Sets the register to `new` iff it currently equals `expect`.
    Cas { expect: Option<Value>, new: Value },
}

/// What a successful ([`Outcome::Ok`]) operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// The value a [`Op::Read`] saw (`None`: key absent).
    Read(Option<Value>),
    /// A [`Op::Write`] was acknowledged.
    Write,
    /// Whether a [`Op::Cas`] succeeded (`false`: the comparison failed).
    Cas(bool),
}

/// The recorded fate of an operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Completed, took effect once between invoke and complete.
    Ok(Output),
    /// Definitely did not take effect.
    Fail,
    /// May have taken effect at any time after invoke, or never.
    Unknown,
}

/// One recorded operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client (process) that issued it; informative only.
    pub client: usize,
    pub key: String,
    pub op: Op,
    /// Any monotonic tick taken before the request was sent.
    pub invoke: u64,
    /// Tick taken after the response arrived; required for `Ok`, ignored
    /// (treated as +infinity) for `Unknown`.
    pub complete: Option<u64>,
    pub outcome: Outcome,
}

impl Operation {
    /// A read that returned `value`.
    pub fn read(
        client: usize,
        key: impl Into<String>,
        invoke: u64,
        complete: u64,
        value: Option<Value>,
    ) -> Self {
        Self::ok(client, key, Op::Read, invoke, complete, Output::Read(value))
    }

    /// An acknowledged write of `value`.
    pub fn write(
        client: usize,
        key: impl Into<String>,
        invoke: u64,
        complete: u64,
        value: Value,
    ) -> Self {
        Self::ok(
            client,
            key,
            Op::Write(value),
            invoke,
            complete,
            Output::Write,
        )
    }

    /// A CAS that returned `succeeded`.
    pub fn cas(
        client: usize,
        key: impl Into<String>,
        invoke: u64,
        complete: u64,
        expect: Option<Value>,
        new: Value,
        succeeded: bool,
    ) -> Self {
        let op = Op::Cas { expect, new };
        Self::ok(client, key, op, invoke, complete, Output::Cas(succeeded))
    }

    /// An operation with outcome [`Outcome::Unknown`].
    pub fn unknown(client: usize, key: impl Into<String>, op: Op, invoke: u64) -> Self {
        Self {
            client,
            key: key.into(),
            op,
            invoke,
            complete: None,
            outcome: Outcome::Unknown,
        }
    }

    /// An operation with outcome [`Outcome::Fail`].
    pub fn failed(
        client: usize,
        key: impl Into<String>,
        op: Op,
        invoke: u64,
        complete: u64,
    ) -> Self {
        Self {
            client,
            key: key.into(),
            op,
            invoke,
            complete: Some(complete),
            outcome: Outcome::Fail,
        }
    }

    fn ok(
        client: usize,
        key: impl Into<String>,
        op: Op,
        invoke: u64,
        complete: u64,
        output: Output,
    ) -> Self {
        Self {
            client,
            key: key.into(),
            op,
            invoke,
            complete: Some(complete),
            outcome: Outcome::Ok(output),
        }
    }
}

/// An operation together with its index in the checked history slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedOp {
    pub index: usize,
    pub op: Operation,
}

/// An operation of a linearization, with the register state right after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearizedOp {
    pub index: usize,
    pub op: Operation,
    pub state_after: Option<Value>,
}

/// Evidence that the history of one key is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// The longest linearizable prefix found (the one placing the most
    /// operations with a known outcome), as history indices in order.
    pub prefix: Vec<usize>,
    /// The last (up to 10) operations of `prefix`, with states.
    pub prefix_tail: Vec<LinearizedOp>,
    /// The register state after `prefix`.
    pub state: Option<Value>,
    /// The operation that returned before it could be placed after `prefix`.
    pub blocked: IndexedOp,
    /// The other operations invoked before `blocked` returned that were not
    /// in `prefix` (the candidates the search tried to place), those with a
    /// known outcome first.
    pub pending: Vec<IndexedOp>,
}

/// Why [`check`] did not accept a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// The history of a key is not linearizable.
    NotLinearizable(Box<Violation>),
    /// The search for `key` explored more than the allowed number of states.
    Inconclusive {
        key: String,
        ops: usize,
        states_explored: usize,
    },
    /// The history is not well formed (e.g. an `Ok` op without completion
    /// time, or a read with a CAS output).
    Malformed { index: usize, reason: String },
}

/// Checks that `history` is linearizable, exploring at most
/// [`DEFAULT_MAX_STATES`] search states per key.
///
/// # Errors
///
/// See [`check_with_limit`].
pub fn check(history: &[Operation]) -> Result<(), CheckError> {
    check_with_limit(history, DEFAULT_MAX_STATES)
}

/// Checks that `history` is linearizable, giving up with
/// [`CheckError::Inconclusive`] after `max_states` distinct search states on
/// one key. Keys are checked in lexicographic order; the first error is
/// returned. The order of `history` does not matter.
///
/// # Errors
///
/// [`CheckError::NotLinearizable`] with a small window of the offending
/// key's history, [`CheckError::Inconclusive`] if the bound was hit, or
/// [`CheckError::Malformed`].
pub fn check_with_limit(history: &[Operation], max_states: usize) -> Result<(), CheckError> {
    let mut by_key: BTreeMap<&str, Vec<KeyOp>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        if let Some(key_op) = prepare(index, op)? {
            by_key.entry(op.key.as_str()).or_default().push(key_op);
        }
    }
    for (key, ops) in by_key {
        check_key(history, key, prune(ops), max_states)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Model.

/// The effect of an operation that is a candidate for linearization.
#[derive(Clone, Copy, Debug)]
enum Effect {
    Read(Option<Value>),
    Write(Value),
    CasOk { expect: Option<Value>, new: Value },
    CasFailed { expect: Option<Value> },
}

impl Effect {
    /// The state after applying `self` to `state`, or `None` if the
    /// operation cannot take effect (return what was recorded) in `state`.
    fn apply(self, state: Option<Value>) -> Option<Option<Value>> {
        match self {
            Effect::Read(seen) => (state == seen).then_some(state),
            Effect::Write(value) => Some(Some(value)),
            Effect::CasOk { expect, new } => (state == expect).then_some(Some(new)),
            Effect::CasFailed { expect } => (state != expect).then_some(state),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct KeyOp {
    /// Index in the history slice.
    index: usize,
    effect: Effect,
    invoke: u64,
    /// `None`: outcome unknown, the op is optional and never expires.
    complete: Option<u64>,
}

impl KeyOp {
    /// Whether the op must be linearized (its outcome is known).
    fn required(&self) -> bool {
        self.complete.is_some()
    }
}

fn malformed(index: usize, reason: &str) -> CheckError {
    CheckError::Malformed {
        index,
        reason: reason.to_owned(),
    }
}

/// Turns a recorded operation into a search candidate, or `None` if it
/// cannot matter (failed, or an unknown read).
fn prepare(index: usize, op: &Operation) -> Result<Option<KeyOp>, CheckError> {
    let output = match &op.outcome {
        Outcome::Fail => return Ok(None),
        Outcome::Unknown => {
            let effect = match op.op {
                Op::Read => return Ok(None),
                Op::Write(value) => Effect::Write(value),
                Op::Cas { expect, new } => Effect::CasOk { expect, new },
            };
            return Ok(Some(KeyOp {
                index,
                effect,
                invoke: op.invoke,
                complete: None,
            }));
        }
        Outcome::Ok(output) => output,
    };
    let complete = op
        .complete
        .ok_or_else(|| malformed(index, "Ok outcome without completion time"))?;
    if complete < op.invoke {
        return Err(malformed(index, "completes before it is invoked"));
    }
    let effect = match (&op.op, output) {
        (Op::Read, Output::Read(seen)) => Effect::Read(*seen),
        (Op::Write(value), Output::Write) => Effect::Write(*value),
        (Op::Cas { expect, new }, Output::Cas(true)) => Effect::CasOk {
            expect: *expect,
            new: *new,
        },
        (Op::Cas { expect, .. }, Output::Cas(false)) => Effect::CasFailed { expect: *expect },
        _ => return Err(malformed(index, "output does not match the operation")),
    };
    Ok(Some(KeyOp {
        index,
        effect,
        invoke: op.invoke,
        complete: Some(complete),
    }))
}

/// Drops unknown writes/CASes whose value is never observed (see the module
/// docs for why this is sound).
fn prune(ops: Vec<KeyOp>) -> Vec<KeyOp> {
    let mut observed = HashSet::new();
    for op in &ops {
        match op.effect {
            Effect::CasFailed { .. } => return ops,
            Effect::Read(Some(value)) => {
                observed.insert(value);
            }
            Effect::CasOk {
                expect: Some(value),
                ..
            } => {
                observed.insert(value);
            }
            _ => {}
        }
    }
    ops.into_iter()
        .filter(|op| {
            op.complete.is_some()
                || match op.effect {
                    Effect::Write(value) | Effect::CasOk { new: value, .. } => {
                        observed.contains(&value)
                    }
                    _ => true,
                }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Search.

/// A set of operation ids.
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    /// The words without the trailing zero ones.
    fn trimmed(&self) -> &[u64] {
        let zeros = self.0.iter().rev().take_while(|w| **w == 0).count();
        &self.0[..self.0.len() - zeros]
    }
}

const HEAD: usize = 0;

/// The best (deepest) point the search reached.
struct Best {
    /// Number of required (known-outcome) ops linearized.
    required: usize,
    /// (op id, state after) in linearization order.
    prefix: Vec<(usize, Option<Value>)>,
    state: Option<Value>,
    /// Op ids invoked but not linearized before the first pending return.
    pending: Vec<usize>,
    /// Op id of the first pending return.
    blocked: Option<usize>,
}

/// The call/return event list of one key (dancing links over indices:
/// node 0 is the head sentinel, the last node the tail sentinel).
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The op id of each event node.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// The return node of each op id, if it has one.
    ret: Vec<Option<usize>>,
    tail: usize,
}

impl Events {
    fn new(ops: &[KeyOp]) -> Self {
        // (time, is return, op id): calls sort before returns at equal times,
        // so touching intervals count as concurrent.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (id, op) in ops.iter().enumerate() {
            events.push((op.invoke, false, id));
            if let Some(complete) = op.complete {
                events.push((complete, true, id));
            }
        }
        events.sort_unstable();
        let tail = events.len() + 1;
        let mut this = Self {
            next: (1..=tail).chain([tail]).collect(),
            prev: [HEAD].into_iter().chain(0..tail).collect(),
            op: vec![usize::MAX; tail + 1],
            is_call: vec![false; tail + 1],
            ret: vec![None; ops.len()],
            tail,
        };
        for (i, (_, is_return, id)) in events.into_iter().enumerate() {
            let node = i + 1;
            this.op[node] = id;
            this.is_call[node] = !is_return;
            if is_return {
                this.ret[id] = Some(node);
            }
        }
        this
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }

    /// Removes a call and its return (if any) from the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.ret[self.op[call]] {
            self.unlink(ret);
        }
    }

    /// Undoes the matching [`Events::lift`] (must be done in LIFO order).
    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.ret[self.op[call]] {
            self.relink(ret);
        }
        self.relink(call);
    }

    /// Whether `f` holds for the op id of a call before the first return.
    fn frontier_any(&self, mut f: impl FnMut(usize) -> bool) -> bool {
        let mut node = self.next[HEAD];
        while node != self.tail && self.is_call[node] {
            if f(self.op[node]) {
                return true;
            }
            node = self.next[node];
        }
        false
    }

    /// The op ids of the calls before the first return, and that return's op.
    fn frontier(&self) -> (Vec<usize>, Option<usize>) {
        let mut pending = Vec::new();
        let mut node = self.next[HEAD];
        while node != self.tail {
            if !self.is_call[node] {
                return (pending, Some(self.op[node]));
            }
            pending.push(self.op[node]);
            node = self.next[node];
        }
        (pending, None)
    }
}

fn check_key(
    history: &[Operation],
    key: &str,
    mut ops: Vec<KeyOp>,
    max_states: usize,
) -> Result<(), CheckError> {
    // Number ops in invocation order (compact cache keys, stable reports).
    ops.sort_by_key(|op| (op.invoke, op.index));
    let mut search = Search::new(&ops);
    // Where to resume scanning candidates; `None`: at a newly entered state.
    let mut cursor: Option<(usize, Phase)> = None;
    loop {
        if search.remaining == 0 {
            return Ok(());
        }
        let (node, phase) = match cursor {
            Some(cursor) => cursor,
            None => match search.forced() {
                Some((node, new_state)) => {
                    if !search.place(node, new_state, Phase::Forced, max_states, key)? {
                        // Visited already, and there is no alternative.
                        cursor = Some(
                            search
                                .backtrack()
                                .ok_or_else(|| search.fail(history, key))?,
                        );
                    }
                    continue;
                }
                None => (search.events.next[HEAD], Phase::Required),
            },
        };
        let events = &search.events;
        if node != events.tail && events.is_call[node] {
            if let Some(new_state) = search.candidate(node, phase) {
                if search.place(node, new_state, phase, max_states, key)? {
                    cursor = None;
                    continue;
                }
            }
            cursor = Some((search.events.next[node], phase));
        } else if phase == Phase::Required && search.optional_count > 0 {
            // Every required candidate was tried: now the optional ones.
            cursor = Some((events.next[HEAD], Phase::Optional));
        } else {
            // A return event (an op whose deadline passed unplaced), or the
            // tail, which can only be reached if every remaining op is optional
            // (then `remaining` would be 0): backtrack.
            cursor = Some(
                search
                    .backtrack()
                    .ok_or_else(|| search.fail(history, key))?,
            );
        }
    }
}

/// Which candidates the search is trying in the current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A forced move (see [`Search::forced`]): there is no alternative.
    Forced,
    /// Required ops; tried first, so that states without optional ops are
    /// visited (and can prune their supersets) before states with them.
    Required,
    /// Optional ops.
    Optional,
}

/// The search state for one key.
struct Search<'a> {
    ops: &'a [KeyOp],
    events: Events,
    /// The numbering of optional ops in `optional_set`.
    optional_ids: Vec<usize>,
    optional_count: usize,
    required_set: Bitset,
    optional_set: Bitset,
    visited: Visited,
    stack: Vec<Choice>,
    state: Option<Value>,
    owed: Owed,
    /// Required ops not linearized yet.
    remaining: usize,
    best: Best,
}

/// A linearization choice on the search stack.
struct Choice {
    /// The call event of the op placed.
    call: usize,
    /// The register state before it was placed.
    state: Option<Value>,
    owed: Owed,
    phase: Phase,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [KeyOp]) -> Self {
        let mut optional_ids = vec![usize::MAX; ops.len()];
        let mut optional_count = 0;
        for (id, op) in ops.iter().enumerate() {
            if !op.required() {
                optional_ids[id] = optional_count;
                optional_count += 1;
            }
        }
        let events = Events::new(ops);
        let best = snapshot(&events, &[], None, 0);
        Self {
            ops,
            events,
            optional_ids,
            optional_count,
            required_set: Bitset::new(ops.len()),
            optional_set: Bitset::new(optional_count),
            visited: Visited::default(),
            stack: Vec::new(),
            state: None,
            owed: None,
            remaining: ops.len() - optional_count,
            best,
        }
    }

    /// A required read or failed CAS that can be placed now (the first in
    /// list order), with the resulting state.
    ///
    /// Placing it next loses nothing: it leaves the register unchanged
    /// wherever it is placed, so it can be moved from its place in any
    /// linearization to the front (it is a candidate, so no unplaced op
    /// returned before it was invoked), and the rest stays valid. Moving a
    /// required op ahead of the optional ops does not break the shape
    /// described at [`Owed`] (re-establishing it only drops or delays
    /// optional ops after it). So the other candidates need not be tried.
    fn forced(&self) -> Option<(usize, Option<Value>)> {
        let mut node = self.events.next[HEAD];
        while node != self.events.tail && self.events.is_call[node] {
            let op = &self.ops[self.events.op[node]];
            if op.required() && matches!(op.effect, Effect::Read(_) | Effect::CasFailed { .. }) {
                if let Some(new_state) = op.allowed(self.state, self.owed) {
                    return Some((node, new_state));
                }
            }
            node = self.events.next[node];
        }
        None
    }

    /// The state after placing the op of call `node` now, if it may be
    /// placed in `phase`.
    fn candidate(&self, node: usize, phase: Phase) -> Option<Option<Value>> {
        let id = self.events.op[node];
        let op = &self.ops[id];
        if op.required() != (phase == Phase::Required) {
            return None;
        }
        let new_state = op.allowed(self.state, self.owed)?;
        // An optional op must change the state and be justified by an op
        // that can be placed right after it (see `Owed`).
        let justified = op.required()
            || (new_state != self.state
                && self.events.frontier_any(|other| {
                    other != id
                        && self.ops[other]
                            .allowed(new_state, Some(self.state))
                            .is_some()
                }));
        justified.then_some(new_state)
    }

    fn mark(&mut self, id: usize, on: bool) {
        let (set, bit) = if self.ops[id].required() {
            (&mut self.required_set, id)
        } else {
            (&mut self.optional_set, self.optional_ids[id])
        };
        if on {
            set.set(bit);
        } else {
            set.clear(bit);
        }
    }

    /// Places the op of call `node`, unless the resulting search state is
    /// dominated by one visited already (then returns `false`).
    fn place(
        &mut self,
        node: usize,
        new_state: Option<Value>,
        phase: Phase,
        max_states: usize,
        key: &str,
    ) -> Result<bool, CheckError> {
        let id = self.events.op[node];
        let required = self.ops[id].required();
        let new_owed = if required { None } else { Some(self.state) };
        self.mark(id, true);
        if !self
            .visited
            .insert(&self.required_set, &self.optional_set, new_state, new_owed)
        {
            self.mark(id, false);
            return Ok(false);
        }
        if self.visited.states > max_states {
            return Err(CheckError::Inconclusive {
                key: key.to_owned(),
                ops: self.ops.len(),
                states_explored: self.visited.states,
            });
        }
        self.stack.push(Choice {
            call: node,
            state: self.state,
            owed: self.owed,
            phase,
        });
        self.state = new_state;
        self.owed = new_owed;
        self.events.lift(node);
        if required {
            self.remaining -= 1;
            let placed = self.required_set_len();
            if placed > self.best.required && self.remaining > 0 {
                self.best = snapshot(&self.events, &self.stack, self.state, placed);
            }
        }
        Ok(true)
    }

    fn required_set_len(&self) -> usize {
        self.ops.len() - self.optional_count - self.remaining
    }

    /// Undoes choices up to and including the last one that has
    /// alternatives; returns where to resume scanning, or `None` if there
    /// is nothing left to try.
    fn backtrack(&mut self) -> Option<(usize, Phase)> {
        loop {
            let choice = self.stack.pop()?;
            let id = self.events.op[choice.call];
            self.mark(id, false);
            if self.ops[id].required() {
                self.remaining += 1;
            }
            self.state = choice.state;
            self.owed = choice.owed;
            self.events.unlift(choice.call);
            if choice.phase != Phase::Forced {
                return Some((self.events.next[choice.call], choice.phase));
            }
        }
    }

    fn fail(&self, history: &[Operation], key: &str) -> CheckError {
        violation(history, key, self.ops, &self.best)
    }
}

/// `Some(s)` when the last op placed was optional and was placed in register
/// state `s`: the next op must then be one that "justifies" it.
///
/// Among the linearizations of a history, take one with the fewest optional
/// ops and, among those, with optional ops placed as late as possible. In it,
/// an optional op `o`, taking the register from `s` to `v`, satisfies:
/// * `v != s` (else drop `o`),
/// * `o` is not last (else drop it) and the op `q` after it is not a plain
///   write (else drop `o`: nothing saw `v`),
/// * `q` is not a required op that leaves both `s` and `v` unchanged (else
///   swap them: `o` has no deadline, so it may move later).
///
/// So the search only considers linearizations of that shape: it places an
/// optional op only if a justifying op is among the current candidates, and
/// then places only such an op. This keeps unknown ops, which stay candidates
/// forever, from multiplying the states explored.
type Owed = Option<Option<Value>>;

impl KeyOp {
    /// The state after placing this op now, in `state`, right after an op
    /// owing a justification `owed`; `None` if it cannot be placed now.
    fn allowed(&self, state: Option<Value>, owed: Owed) -> Option<Option<Value>> {
        let new_state = self.effect.apply(state)?;
        if let Some(before) = owed {
            if matches!(self.effect, Effect::Write(_)) {
                return None;
            }
            if self.required() && new_state == state && self.effect.apply(before) == Some(before) {
                return None;
            }
        }
        Some(new_state)
    }
}

/// The visited search states: (required ops linearized, register state,
/// justification owed) -> the sets of optional ops linearized along with
/// them, kept as an antichain.
///
/// A state dominates another with the same required set, register state and
/// justification owed, and a superset of optional ops: optional ops have no
/// return event, so whatever completes the latter (placing ops it has not
/// placed) also completes the former. Exact equality is Lowe's cache.
#[derive(Default)]
struct Visited {
    map: HashMap<Box<[u64]>, Seen>,
    /// Number of states recorded (the exploration bound).
    states: usize,
    /// A buffer for keys, to look them up without allocating.
    scratch: Vec<u64>,
}

/// The optional-op sets visited with one (required set, state, owed).
enum Seen {
    /// The empty set, which dominates all others.
    Empty,
    /// Non-empty sets, none a subset of another.
    Sets(Vec<Box<[u64]>>),
}

impl Visited {
    /// Records a state; `false` if it is dominated by one already recorded.
    fn insert(
        &mut self,
        required: &Bitset,
        optional: &Bitset,
        state: Option<Value>,
        owed: Owed,
    ) -> bool {
        let optional = optional.trimmed();
        Self::key(&mut self.scratch, required, state, owed);
        match self.map.get_mut(self.scratch.as_slice()) {
            None => {
                let seen = if optional.is_empty() {
                    Seen::Empty
                } else {
                    Seen::Sets(vec![optional.into()])
                };
                self.map.insert(self.scratch.as_slice().into(), seen);
            }
            Some(seen) => {
                let Seen::Sets(sets) = seen else {
                    return false; // the empty set dominates
                };
                if sets.iter().any(|set| is_subset(set, optional)) {
                    return false;
                }
                if optional.is_empty() {
                    *seen = Seen::Empty;
                } else {
                    sets.retain(|set| !is_subset(optional, set));
                    sets.push(optional.into());
                }
            }
        }
        self.states += 1;
        true
    }

    /// Writes to `key` an exact, compact encoding of (required set, state,
    /// owed): a header (flags and the number of leading all-ones words of
    /// the set), the two values, and the rest of the set without trailing
    /// zero words. Ops are numbered in invocation order, so linearized sets
    /// are mostly a run of ones followed by a few scattered bits.
    fn key(key: &mut Vec<u64>, required: &Bitset, state: Option<Value>, owed: Owed) {
        let words = required.trimmed();
        let full = words.iter().take_while(|w| **w == u64::MAX).count();
        let flags = u64::from(state.is_some())
            | u64::from(owed.is_some()) << 1
            | u64::from(owed.flatten().is_some()) << 2;
        key.clear();
        key.push((full as u64) << 3 | flags);
        key.push(state.unwrap_or(0));
        key.push(owed.flatten().unwrap_or(0));
        key.extend_from_slice(&words[full..]);
    }
}

fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter()
        .enumerate()
        .all(|(i, word)| word & !b.get(i).copied().unwrap_or(0) == 0)
}

fn snapshot(events: &Events, stack: &[Choice], state: Option<Value>, required: usize) -> Best {
    let prefix = stack
        .iter()
        .enumerate()
        .map(|(i, choice)| {
            let after = stack.get(i + 1).map_or(state, |next| next.state);
            (events.op[choice.call], after)
        })
        .collect();
    let (pending, blocked) = events.frontier();
    Best {
        required,
        prefix,
        state,
        pending,
        blocked,
    }
}

fn violation(history: &[Operation], key: &str, ops: &[KeyOp], best: &Best) -> CheckError {
    let indexed = |id: usize| {
        let index = ops[id].index;
        IndexedOp {
            index,
            op: history[index].clone(),
        }
    };
    let Some(blocked) = best.blocked else {
        // Unreachable: a snapshot is only taken while some op with a known
        // outcome (hence a return event) is not linearized.
        return malformed(usize::MAX, "internal error: violation without blocked op");
    };
    let skip = best.prefix.len().saturating_sub(WINDOW);
    CheckError::NotLinearizable(Box::new(Violation {
        key: key.to_owned(),
        prefix: best.prefix.iter().map(|&(id, _)| ops[id].index).collect(),
        prefix_tail: best.prefix[skip..]
            .iter()
            .map(|&(id, state_after)| {
                let IndexedOp { index, op } = indexed(id);
                LinearizedOp {
                    index,
                    op,
                    state_after,
                }
            })
            .collect(),
        state: best.state,
        blocked: indexed(blocked),
        // Required ops first: unknown ones stay pending forever.
        pending: best
            .pending
            .iter()
            .filter(|&&id| id != blocked && ops[id].required())
            .chain(best.pending.iter().filter(|&&id| !ops[id].required()))
            .map(|&id| indexed(id))
            .collect(),
    }))
}

// ---------------------------------------------------------------------------
// Display.

struct Val(Option<Value>);

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value}"),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} ", self.client)?;
        match &self.op {
            Op::Read => f.write_str("read")?,
            Op::Write(value) => write!(f, "write {value}")?,
            Op::Cas { expect, new } => write!(f, "cas {} -> {new}", Val(*expect))?,
        }
        match self.complete {
            Some(complete) if self.outcome != Outcome::Unknown => {
                write!(f, " @[{}, {complete}]", self.invoke)?;
            }
            _ => write!(f, " @[{}, ..)", self.invoke)?,
        }
        match &self.outcome {
            Outcome::Ok(Output::Read(seen)) => write!(f, " => {}", Val(*seen)),
            Outcome::Ok(Output::Write) => f.write_str(" => ok"),
            Outcome::Ok(Output::Cas(succeeded)) => write!(f, " => {succeeded}"),
            Outcome::Fail => f.write_str(" => failed"),
            Outcome::Unknown => f.write_str(" => unknown"),
        }
    }
}

impl fmt::Display for IndexedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}", self.index, self.op)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "history of key {:?} is not linearizable", self.key)?;
        writeln!(
            f,
            "  longest linearizable prefix found: {} ops, leaving the register {}",
            self.prefix.len(),
            Val(self.state)
        )?;
        if !self.prefix_tail.is_empty() {
            writeln!(
                f,
                "  its last {} ops (=> state after):",
                self.prefix_tail.len()
            )?;
            for op in &self.prefix_tail {
                writeln!(
                    f,
                    "    #{} {}  ==> {}",
                    op.index,
                    op.op,
                    Val(op.state_after)
                )?;
            }
        }
        writeln!(f, "  could not place before it returned: {}", self.blocked)?;
        if self.pending.is_empty() {
            write!(f, "  no other op was pending")
        } else {
            write!(f, "  other ops pending then:")?;
            for op in self.pending.iter().take(2 * WINDOW) {
                write!(f, "\n    {op}")?;
            }
            if self.pending.len() > 2 * WINDOW {
                write!(f, "\n    ... and {} more", self.pending.len() - 2 * WINDOW)?;
            }
            Ok(())
        }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::NotLinearizable(violation) => violation.fmt(f),
            CheckError::Inconclusive {
                key,
                ops,
                states_explored,
            } => write!(
                f,
                "linearizability of key {key:?} ({ops} ops) is inconclusive: \
                 gave up after {states_explored} search states (see check_with_limit)"
            ),
            CheckError::Malformed { index, reason } => {
                write!(f, "malformed history at op #{index}: {reason}")
            }
        }
    }
}

impl std::error::Error for CheckError {}

// ---------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const K: &str = "k";

    fn r(c: usize, i: u64, e: u64, v: Option<u64>) -> Operation {
        Operation::read(c, K, i, e, v)
    }
    fn w(c: usize, i: u64, e: u64, v: u64) -> Operation {
        Operation::write(c, K, i, e, v)
    }
    fn cas(c: usize, i: u64, e: u64, expect: Option<u64>, new: u64, ok: bool) -> Operation {
        Operation::cas(c, K, i, e, expect, new, ok)
    }
    fn w_unknown(c: usize, i: u64, v: u64) -> Operation {
        Operation::unknown(c, K, Op::Write(v), i)
    }

    #[track_caller]
    fn accept(history: &[Operation]) {
        if let Err(e) = check(history) {
            panic!("expected linearizable, got:\n{e}");
        }
    }

    #[track_caller]
    fn reject(history: &[Operation]) -> Violation {
        match check(history) {
            Err(CheckError::NotLinearizable(v)) => *v,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    // ---- accepted ----

    #[test]
    fn empty_history() {
        accept(&[]);
    }

    #[test]
    fn sequential_write_read() {
        accept(&[
            w(0, 0, 10, 1),
            r(0, 20, 30, Some(1)),
            w(1, 40, 50, 2),
            r(2, 60, 70, Some(2)),
            r(0, 80, 90, Some(2)),
        ]);
    }

    #[test]
    fn reads_of_none_before_any_write() {
        accept(&[
            r(0, 0, 5, None),
            r(1, 1, 6, None),
            r(2, 10, 30, None), // concurrent with the write
            w(0, 10, 20, 1),
            r(1, 40, 50, Some(1)),
        ]);
    }

    #[test]
    fn concurrent_writes_reads_see_either() {
        // w1 and w2 overlap; the reads fix the order w2, w1.
        accept(&[
            w(0, 0, 100, 1),
            w(1, 10, 90, 2),
            r(2, 20, 30, Some(2)),
            r(3, 40, 50, Some(1)),
            r(2, 110, 120, Some(1)),
        ]);
        // Or w1, w2.
        accept(&[
            w(0, 0, 100, 1),
            w(1, 10, 90, 2),
            r(2, 20, 30, Some(1)),
            r(3, 40, 50, Some(2)),
            r(2, 110, 120, Some(2)),
        ]);
        // A read overlapping both may see either or the old value.
        for seen in [None, Some(1), Some(2)] {
            accept(&[w(0, 0, 100, 1), w(1, 10, 90, 2), r(2, 5, 95, seen)]);
        }
    }

    #[test]
    fn touching_intervals_are_concurrent() {
        accept(&[w(0, 0, 10, 1), r(1, 10, 20, None)]);
    }

    #[test]
    fn cas_success_and_failure_consistent() {
        accept(&[
            cas(0, 0, 10, Some(1), 5, false), // absent, so fails
            cas(0, 20, 30, None, 1, true),
            cas(1, 40, 50, Some(1), 2, true),
            cas(2, 60, 70, Some(1), 3, false),
            r(0, 80, 90, Some(2)),
            cas(1, 100, 110, None, 4, false),
        ]);
        // Two concurrent CAS with the same expectation: exactly one wins.
        accept(&[
            w(0, 0, 10, 1),
            cas(1, 20, 40, Some(1), 2, false),
            cas(2, 25, 45, Some(1), 3, true),
            r(0, 50, 60, Some(3)),
        ]);
    }

    #[test]
    fn unknown_write_later_observed() {
        accept(&[
            w(0, 0, 10, 1),
            w_unknown(1, 20, 2),
            r(2, 30, 40, Some(1)), // not yet applied
            r(2, 100, 110, Some(2)),
            r(3, 200, 210, Some(2)),
        ]);
    }

    #[test]
    fn unknown_write_never_observed() {
        accept(&[
            w(0, 0, 10, 1),
            w_unknown(1, 20, 2),
            r(2, 30, 40, Some(1)),
            r(2, 100, 110, Some(1)),
        ]);
        // Many of them (pruned, so no state explosion).
        let mut h = vec![w(0, 0, 10, 1)];
        for i in 0..200 {
            h.push(w_unknown(1, 20 + i, 1000 + i));
        }
        h.push(r(2, 500, 510, Some(1)));
        accept(&h);
    }

    #[test]
    fn unknown_write_explains_failed_cas() {
        // The CAS fails although the only acknowledged value is 1: only the
        // unknown write can explain it (so it must not be pruned).
        let mut h = vec![
            w(0, 0, 10, 1),
            w_unknown(1, 20, 2),
            cas(2, 50, 60, Some(1), 3, false),
            w(0, 70, 80, 4),
            r(2, 90, 100, Some(4)),
        ];
        accept(&h);
        h.remove(1);
        reject(&h);
    }

    #[test]
    fn unknown_cas_observed_or_not() {
        let u = Operation::unknown(
            1,
            K,
            Op::Cas {
                expect: Some(1),
                new: 2,
            },
            20,
        );
        accept(&[w(0, 0, 10, 1), u.clone(), r(2, 30, 40, Some(2))]);
        accept(&[w(0, 0, 10, 1), u.clone(), r(2, 30, 40, Some(1))]);
        // Its precondition is checked where it is placed.
        reject(&[w(0, 0, 10, 7), u, r(2, 30, 40, Some(2))]);
    }

    #[test]
    fn failed_ops_are_dropped() {
        let f = Operation::failed(1, K, Op::Write(9), 20, 30);
        accept(&[w(0, 0, 10, 1), f.clone(), r(2, 40, 50, Some(1))]);
        reject(&[w(0, 0, 10, 1), f, r(2, 40, 50, Some(9))]);
    }

    #[test]
    fn unknown_reads_are_dropped() {
        let u = Operation::unknown(1, K, Op::Read, 20);
        accept(&[w(0, 0, 10, 1), u, r(2, 40, 50, Some(1))]);
    }

    #[test]
    fn keys_are_independent() {
        let h = [
            Operation::write(0, "a", 0, 10, 1),
            Operation::write(0, "b", 0, 10, 1),
            Operation::read(1, "a", 20, 30, Some(1)),
            Operation::read(1, "b", 20, 30, None),
            Operation::read(1, "c", 20, 30, None),
        ];
        match check(&h) {
            Err(CheckError::NotLinearizable(v)) => {
                assert_eq!(v.key, "b");
                assert_eq!(v.blocked.index, 3);
            }
            other => panic!("{other:?}"),
        }
        accept(&h[..3]);
    }

    #[test]
    fn history_order_does_not_matter() {
        let mut h = vec![
            w(0, 0, 100, 1),
            w(1, 10, 90, 2),
            r(2, 20, 30, Some(2)),
            r(3, 40, 50, Some(1)),
            r(2, 110, 120, Some(1)),
        ];
        h.reverse();
        accept(&h);
    }

    // ---- rejected ----

    #[test]
    fn stale_read() {
        let v = reject(&[w(0, 0, 10, 1), w(1, 20, 30, 2), r(2, 40, 50, Some(1))]);
        assert_eq!(v.key, K);
        assert_eq!(v.blocked.index, 2);
        assert_eq!(v.prefix, vec![0, 1]);
        assert_eq!(v.state, Some(2));
        assert!(v.pending.is_empty());
        let text = v.to_string();
        assert!(text.contains("#2 client 2 read @[40, 50] => 1"), "{text}");
        assert!(
            text.contains("#1 client 1 write 2 @[20, 30] => ok  ==> 2"),
            "{text}"
        );
    }

    #[test]
    fn lost_write() {
        let v = reject(&[w(0, 0, 10, 1), r(1, 20, 30, None)]);
        assert_eq!(v.blocked.index, 1);
        reject(&[w(0, 0, 10, 1), w(0, 20, 30, 2), r(1, 40, 50, Some(1))]);
    }

    #[test]
    fn read_of_value_never_written() {
        reject(&[w(0, 0, 10, 1), r(1, 5, 30, Some(42))]);
        reject(&[r(1, 0, 5, Some(42))]);
    }

    #[test]
    fn two_cas_same_expect_both_succeed() {
        let v = reject(&[
            w(0, 0, 10, 1),
            cas(1, 20, 40, Some(1), 2, true),
            cas(2, 25, 45, Some(1), 3, true),
        ]);
        assert_eq!(v.prefix.len(), 2);
        assert_eq!(v.pending.len(), 0);
    }

    #[test]
    fn non_monotonic_reads() {
        reject(&[
            w(0, 0, 10, 1),
            w(1, 20, 100, 2),
            r(2, 30, 40, Some(2)),
            r(3, 50, 60, Some(1)),
        ]);
    }

    #[test]
    fn unknown_write_observed_before_invoke() {
        reject(&[w(0, 0, 10, 1), r(2, 20, 30, Some(2)), w_unknown(1, 40, 2)]);
    }

    #[test]
    fn unknown_write_cannot_take_effect_twice() {
        reject(&[
            w(0, 0, 10, 1),
            w_unknown(1, 20, 2),
            r(2, 30, 40, Some(2)),
            w(0, 50, 60, 3),
            r(2, 70, 80, Some(2)),
        ]);
    }

    #[test]
    fn malformed_histories() {
        let mut op = r(0, 10, 20, None);
        op.complete = None;
        assert!(matches!(
            check(&[op]),
            Err(CheckError::Malformed { index: 0, .. })
        ));
        assert!(matches!(
            check(&[w(0, 0, 1, 1), r(0, 10, 5, None)]),
            Err(CheckError::Malformed { index: 1, .. })
        ));
        let mut op = r(0, 10, 20, None);
        op.outcome = Outcome::Ok(Output::Cas(true));
        let e = check(&[op]).unwrap_err();
        assert!(e.to_string().contains("#0"), "{e}");
    }

    #[test]
    fn inconclusive_when_over_the_limit() {
        let h: Vec<_> = (0..20).map(|i| w(i, 0, 100, i as u64)).collect();
        let e = check_with_limit(&h, 5).unwrap_err();
        assert!(
            matches!(e, CheckError::Inconclusive { ref key, ops: 20, .. } if key == K),
            "{e:?}"
        );
        assert!(check(&h).is_ok());
    }

    #[test]
    fn pathological_history_is_inconclusive_not_endless() {
        // 40 concurrent writes then an impossible read: 2^40 orders to rule out.
        let mut h: Vec<_> = (0..40).map(|i| w(i, 0, 1000, i as u64)).collect();
        h.push(r(99, 2000, 2001, Some(1000)));
        let started = std::time::Instant::now();
        let e = check_with_limit(&h, 20_000).unwrap_err();
        assert!(matches!(e, CheckError::Inconclusive { .. }), "{e:?}");
        eprintln!("{e} in {:?}", started.elapsed());
    }

    // ---- property tests on simulated histories ----

    /// splitmix64.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.below(hi - lo + 1)
        }
        fn percent(&mut self, p: u64) -> bool {
            self.below(100) < p
        }
    }

    struct Params {
        keys: usize,
        clients: usize,
        sequential_ops: usize,
        ops_per_client: usize,
        unknown_pct: u64,
        fail_pct: u64,
    }

    /// A history of a real (atomic) register store: each op that takes
    /// effect does so at a random instant inside its interval (or, for
    /// unknown ops, at a random instant after invoke, or never).
    fn simulate(rng: &mut Rng, p: &Params) -> Vec<Operation> {
        struct Planned {
            op: Operation,
            at: Option<u64>, // linearization point, None = no effect
        }
        let mut planned: Vec<Planned> = Vec::new();
        let mut written: Vec<Vec<u64>> = vec![Vec::new(); p.keys];
        let mut next_value = 1;
        let mut plan = |rng: &mut Rng, client: usize, t: u64| -> u64 {
            let key = rng.below(p.keys as u64) as usize;
            let op = match rng.below(10) {
                0..=3 => Op::Read,
                4..=6 => {
                    next_value += 1;
                    written[key].push(next_value);
                    Op::Write(next_value)
                }
                _ => {
                    let vals = &written[key];
                    let expect = if vals.is_empty() || rng.percent(15) {
                        None
                    } else {
                        // Mostly recent values, so that some CAS succeed.
                        let back = rng.below(3.min(vals.len() as u64)) as usize;
                        Some(vals[vals.len() - 1 - back])
                    };
                    next_value += 1;
                    written[key].push(next_value);
                    Op::Cas {
                        expect,
                        new: next_value,
                    }
                }
            };
            let invoke = t + rng.range(0, 10);
            let complete = invoke + rng.range(0, 60);
            let (outcome, at, complete) = if rng.percent(p.unknown_pct) {
                let at = rng.percent(50).then(|| invoke + rng.range(0, 300));
                (Outcome::Unknown, at, None)
            } else if rng.percent(p.fail_pct) {
                (Outcome::Fail, None, Some(complete))
            } else {
                let at = rng.range(invoke, complete);
                // Placeholder output, fixed by the simulation below.
                (Outcome::Ok(Output::Write), Some(at), Some(complete))
            };
            planned.push(Planned {
                op: Operation {
                    client,
                    key: format!("key{key}"),
                    op,
                    invoke,
                    complete,
                    outcome,
                },
                at,
            });
            complete.unwrap_or(invoke + 60) // an unknown op times out
        };
        let mut t = 0;
        for _ in 0..p.sequential_ops {
            t = plan(rng, 0, t) + 1;
        }
        let start = t + 10;
        for client in 0..p.clients {
            let mut t = start + rng.range(0, 20);
            for _ in 0..p.ops_per_client {
                t = plan(rng, client, t) + 1;
            }
        }

        // Apply the effective ops in linearization-point order.
        let mut order: Vec<usize> = (0..planned.len())
            .filter(|&i| planned[i].at.is_some())
            .collect();
        order.sort_by_key(|&i| (planned[i].at, i));
        let mut registers: BTreeMap<String, u64> = BTreeMap::new();
        for i in order {
            let op = &mut planned[i].op;
            let current = registers.get(&op.key).copied();
            let output = match op.op {
                Op::Read => Output::Read(current),
                Op::Write(value) => {
                    registers.insert(op.key.clone(), value);
                    Output::Write
                }
                Op::Cas { expect, new } => {
                    let ok = current == expect;
                    if ok {
                        registers.insert(op.key.clone(), new);
                    }
                    Output::Cas(ok)
                }
            };
            // (An unknown CAS that fails here simply has no effect.)
            if matches!(op.outcome, Outcome::Ok(_)) {
                op.outcome = Outcome::Ok(output);
            }
        }
        planned.into_iter().map(|p| p.op).collect()
    }

    fn corrupt_a_read(rng: &mut Rng, history: &mut [Operation]) -> Option<usize> {
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].outcome, Outcome::Ok(Output::Read(_))))
            .collect();
        if reads.is_empty() {
            return None;
        }
        let i = reads[rng.below(reads.len() as u64) as usize];
        history[i].outcome = Outcome::Ok(Output::Read(Some(u64::MAX - 7)));
        Some(i)
    }

    #[test]
    fn simulated_histories_are_accepted_and_corruptions_rejected() {
        let mut corrupted = 0;
        for seed in 0..200u64 {
            let mut rng = Rng(seed);
            let p = Params {
                keys: 1 + (seed % 3) as usize,
                clients: 1 + (seed % 7) as usize,
                sequential_ops: (seed % 20) as usize,
                ops_per_client: 5 + (seed % 40) as usize,
                unknown_pct: [0, 2, 5, 10][(seed % 4) as usize],
                fail_pct: [0, 5][(seed % 2) as usize],
            };
            let mut history = simulate(&mut rng, &p);
            if let Err(e) = check(&history) {
                panic!("seed {seed}: simulated history rejected:\n{e}");
            }
            if let Some(i) = corrupt_a_read(&mut rng, &mut history) {
                corrupted += 1;
                match check(&history) {
                    Err(CheckError::NotLinearizable(v)) => {
                        assert_eq!(v.key, history[i].key, "seed {seed}");
                    }
                    other => panic!("seed {seed}: corrupted read #{i} not rejected: {other:?}"),
                }
            }
        }
        assert!(corrupted > 150);
    }

    /// Exhaustive search over all orders and subsets, without any pruning.
    fn brute_force(history: &[Operation]) -> bool {
        fn go(ops: &[KeyOp], placed: &mut [bool], state: Option<Value>) -> bool {
            if (0..ops.len()).all(|i| placed[i] || !ops[i].required()) {
                return true;
            }
            for i in 0..ops.len() {
                let blocked = (0..ops.len())
                    .any(|j| !placed[j] && ops[j].complete.is_some_and(|c| c < ops[i].invoke));
                if placed[i] || blocked {
                    continue;
                }
                if let Some(new_state) = ops[i].effect.apply(state) {
                    placed[i] = true;
                    if go(ops, placed, new_state) {
                        return true;
                    }
                    placed[i] = false;
                }
            }
            false
        }
        let ops: Vec<KeyOp> = (0..history.len())
            .filter_map(|i| prepare(i, &history[i]).unwrap())
            .collect();
        go(&ops, &mut vec![false; ops.len()], None)
    }

    /// A small history of one key with arbitrary (mostly wrong) results and
    /// few distinct values, so that values repeat.
    fn random_small_history(rng: &mut Rng) -> Vec<Operation> {
        let value = |rng: &mut Rng| (rng.below(4) > 0).then(|| rng.range(1, 3));
        (0..rng.range(1, 8))
            .map(|i| {
                let op = match rng.below(3) {
                    0 => Op::Read,
                    1 => Op::Write(rng.range(1, 3)),
                    _ => Op::Cas {
                        expect: value(rng),
                        new: rng.range(1, 3),
                    },
                };
                let invoke = rng.below(20);
                let complete = invoke + rng.below(10);
                let output = match op {
                    Op::Read => Output::Read(value(rng)),
                    Op::Write(_) => Output::Write,
                    Op::Cas { .. } => Output::Cas(rng.percent(50)),
                };
                let (complete, outcome) = match rng.below(10) {
                    0 | 1 => (None, Outcome::Unknown),
                    2 => (Some(complete), Outcome::Fail),
                    _ => (Some(complete), Outcome::Ok(output)),
                };
                Operation {
                    client: i as usize,
                    key: K.to_owned(),
                    op,
                    invoke,
                    complete,
                    outcome,
                }
            })
            .collect()
    }

    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        let (mut accepted, mut rejected) = (0, 0);
        for seed in 0..6_000u64 {
            let mut rng = Rng(seed);
            let history = random_small_history(&mut rng);
            let expected = brute_force(&history);
            match check(&history) {
                Ok(()) if expected => accepted += 1,
                Err(CheckError::NotLinearizable(_)) if !expected => rejected += 1,
                other => panic!(
                    "seed {seed}: brute force says {expected}, checker {other:?}\n{history:#?}"
                ),
            }
        }
        eprintln!("{accepted} accepted, {rejected} rejected");
        assert!(accepted > 1_000 && rejected > 1_000);
    }

    /// A small simulated (linearizable) history with one result changed to
    /// a plausible alternative: near misses exercise the search the most.
    fn near_miss_history(rng: &mut Rng) -> Vec<Operation> {
        let p = Params {
            keys: 1,
            clients: rng.range(1, 4) as usize,
            sequential_ops: rng.below(3) as usize,
            ops_per_client: rng.range(1, 2) as usize,
            unknown_pct: 20,
            fail_pct: 10,
        };
        let mut history = simulate(rng, &p);
        let values: Vec<u64> = history
            .iter()
            .filter_map(|op| match op.op {
                Op::Write(v) | Op::Cas { new: v, .. } => Some(v),
                Op::Read => None,
            })
            .collect();
        let i = rng.below(history.len() as u64) as usize;
        let op = &mut history[i];
        match (&op.outcome, rng.below(4)) {
            (Outcome::Ok(Output::Read(_)), _) if !values.is_empty() => {
                let v = values[rng.below(values.len() as u64) as usize];
                op.outcome = Outcome::Ok(Output::Read(rng.percent(80).then_some(v)));
            }
            (Outcome::Ok(Output::Cas(ok)), _) => op.outcome = Outcome::Ok(Output::Cas(!ok)),
            (_, 0) => {
                op.invoke += rng.below(100);
                op.complete = op.complete.map(|c| c.max(op.invoke) + rng.below(30));
            }
            (_, 1) if op.outcome != Outcome::Unknown => {
                op.outcome = Outcome::Unknown;
                op.complete = None;
            }
            _ => {}
        }
        history
    }

    #[test]
    fn agrees_with_brute_force_on_near_misses() {
        let (mut accepted, mut rejected) = (0, 0);
        for seed in 0..6_000u64 {
            let mut rng = Rng(seed);
            let history = near_miss_history(&mut rng);
            let expected = brute_force(&history);
            match check(&history) {
                Ok(()) if expected => accepted += 1,
                Err(CheckError::NotLinearizable(_)) if !expected => rejected += 1,
                other => panic!(
                    "seed {seed}: brute force says {expected}, checker {other:?}\n{history:#?}"
                ),
            }
        }
        eprintln!("{accepted} accepted, {rejected} rejected");
        assert!(accepted > 1_000 && rejected > 1_000);
    }

    #[test]
    fn large_single_key_history() {
        let mut rng = Rng(42);
        let p = Params {
            keys: 1,
            clients: 8,
            sequential_ops: 100,
            ops_per_client: 500,
            unknown_pct: 1,
            fail_pct: 1,
        };
        let mut history = simulate(&mut rng, &p);
        assert!(history.len() > 4000);
        let started = std::time::Instant::now();
        if let Err(e) = check(&history) {
            panic!("rejected:\n{e}");
        }
        eprintln!("accepted {} ops in {:?}", history.len(), started.elapsed());

        // Corrupt a late read: the search must explore (almost) everything.
        let last_read = (0..history.len())
            .rev()
            .find(|&i| {
                matches!(history[i].outcome, Outcome::Ok(Output::Read(_)))
                    && history[i].invoke > 3000
            })
            .unwrap();
        history[last_read].outcome = Outcome::Ok(Output::Read(Some(u64::MAX)));
        let started = std::time::Instant::now();
        match check(&history) {
            Err(CheckError::NotLinearizable(v)) => {
                eprintln!("rejected in {:?}:\n{v}", started.elapsed());
                assert_eq!(v.blocked.index, last_read);
            }
            other => panic!("{other:?}"),
        }
    }
}
