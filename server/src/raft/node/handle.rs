//! How the rest of the member reaches the raft thread: [`Input`]s on one
//! channel, and the [`RaftStatus`] it publishes after every round.

use std::sync::Arc;

use ::raft::eraftpb::{ConfChangeV2, Message};
use tokio::sync::{oneshot, watch};

use super::read_rounds::ReadRounds;
use super::{Inbox, RaftStatus};
use crate::raft::stream::Inbound;
use crate::raft::RequestError;

/// Something for the raft thread to do.
#[derive(Debug)]
pub enum Input {
    /// Propose a normal entry; `done` hears whether raft took it.
    Propose {
        /// The entry's data (an encoded `cairnpb.RaftRequest`).
        data: Vec<u8>,
        /// Only if this member leads now: appended to its own log, never
        /// forwarded (`NotLeader` otherwise). For decisions only the leader
        /// may take (revoking expired leases, lease checkpoints): a deposed
        /// leader that has not noticed yet must not get them committed by
        /// its successor, whose lessor knows better.
        leader_only: bool,
        /// Told once appended to the leader's log (or forwarded to it), or
        /// refused.
        done: Taken,
    },
    /// Propose a membership change.
    ConfChange {
        /// The change (one change per proposal).
        change: ConfChangeV2,
        /// Ok once proposed.
        done: oneshot::Sender<Result<(), RequestError>>,
    },
    /// A round of linearizable reads (see [`super::read_rounds`]): answered
    /// with the read index once this member has applied up to it.
    Read {
        /// The read index, or why there is none.
        done: ReadDone,
    },
    /// A message from a peer.
    Step(Message),
    /// A peer's raft stream on plain TCP, for the thread to read itself
    /// (see [`super::inbox`]).
    Stream(Inbound),
    /// The transport could not reach a peer.
    Unreachable(u64),
    /// How sending a snapshot to a peer ended.
    SnapshotSent {
        /// The peer.
        to: u64,
        /// Whether it failed.
        failed: bool,
    },
    /// Hand the leadership to another member (MoveLeader).
    TransferLeader(u64),
    /// Campaign now (a lone voter does not wait for an election timeout).
    Campaign,
    /// Stop the thread.
    Stop,
}

/// Who hears whether raft took a proposal.
#[derive(Debug)]
pub enum Taken {
    /// A channel told either way.
    Told(oneshot::Sender<Result<(), RequestError>>),
    /// Told only if raft refuses it: a proposer that waits for the entry's
    /// apply anyway is then woken once per proposal, not twice.
    OnRefusal(Refusal),
}

impl Taken {
    /// Tells whoever listens how the proposal went.
    pub fn answer(self, result: Result<(), RequestError>) {
        match (self, result) {
            (Taken::Told(tx), result) => {
                // The proposer may have gone; raft's decision stands.
                let _ = tx.send(result);
            }
            (Taken::OnRefusal(refusal), Ok(())) => refusal.disarm(),
            (Taken::OnRefusal(refusal), Err(e)) => refusal.call(e),
        }
    }
}

/// A call the raft thread makes at most once. Dropped uncalled (the thread
/// stopped before it got to the input that carries it), it is made with
/// [`WhenStopped::stopped`], so whoever waits on it is never left waiting.
pub struct Callback<A: WhenStopped>(Option<Box<dyn FnOnce(A) + Send>>);

/// What a [`Callback`] dropped uncalled is called with.
pub trait WhenStopped {
    /// The raft thread stopped.
    fn stopped() -> Self;
}

impl WhenStopped for RequestError {
    fn stopped() -> Self {
        RequestError::Stopped
    }
}

impl<T> WhenStopped for Result<T, RequestError> {
    fn stopped() -> Self {
        Err(RequestError::Stopped)
    }
}

impl<A: WhenStopped> Callback<A> {
    /// A callback that calls `f`.
    pub fn new(f: impl FnOnce(A) + Send + 'static) -> Self {
        Self(Some(Box::new(f)))
    }

    /// Makes the call.
    pub fn call(mut self, value: A) {
        if let Some(f) = self.0.take() {
            f(value);
        }
    }

    /// Drops the callback without making the call.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl<A: WhenStopped> Drop for Callback<A> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(A::stopped());
        }
    }
}

impl<A: WhenStopped> std::fmt::Debug for Callback<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback")
            .field("armed", &self.0.is_some())
            .finish()
    }
}

/// What to do if raft refuses a proposal: called on the raft thread with
/// the reason, or with [`RequestError::Stopped`] if the input is dropped
/// unhandled. Not called when raft takes the proposal.
pub type Refusal = Callback<RequestError>;

/// Where a linearizable read's round is answered: with the read index once
/// this member has applied up to it, or why there is none (called on the
/// raft thread; with [`RequestError::Stopped`] if dropped unhandled).
pub type ReadDone = Callback<Result<u64, RequestError>>;

/// Whether the raft loop has ended on its own, and how.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ending {
    /// Running (or stopped when asked: the channel then closes).
    #[default]
    Running,
    /// A disk write (or the state machine) failed: the member must stop
    /// serving.
    Failed,
    /// This member applied its own removal.
    Removed,
}

/// A handle on the raft thread.
#[derive(Debug, Clone)]
pub struct RaftHandle {
    /// Inputs to the thread.
    inputs: Inbox,
    /// The latest status.
    status: watch::Receiver<RaftStatus>,
    /// (leader, term), changed only when either changes.
    leadership: watch::Receiver<(u64, u64)>,
    /// Changed once at most, when the loop fails or the member is removed.
    /// Whoever waits for that watches this, not the status, which changes
    /// every round: a waiter on the status was woken once per request (the
    /// binary's main thread was, for every put).
    ending: watch::Receiver<Ending>,
    /// Linearizable reads, joined into rounds before they reach the thread.
    reads: Arc<ReadRounds>,
}

impl RaftHandle {
    /// A handle on whatever reads `inputs` and publishes `status` and
    /// `leadership` (the raft thread [`super::start`] starts).
    pub(crate) fn new(
        inputs: Inbox,
        status: watch::Receiver<RaftStatus>,
        leadership: watch::Receiver<(u64, u64)>,
        ending: watch::Receiver<Ending>,
    ) -> Self {
        Self {
            reads: ReadRounds::new(inputs.clone()),
            inputs,
            status,
            leadership,
            ending,
        }
    }

    /// Sends an input (false when the thread is gone).
    pub fn send(&self, input: Input) -> bool {
        self.inputs.send(input).is_ok()
    }

    /// The latest status.
    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    /// Reads the latest status in place: what a request's path needs of it
    /// (the term for a header, leadership, learner) without a copy of its
    /// member sets, which cost several allocations per request. `read` runs
    /// under the status's lock: it must only look.
    pub fn with_status<R>(&self, read: impl FnOnce(&RaftStatus) -> R) -> R {
        read(&self.status.borrow())
    }

    /// A receiver of status changes.
    pub fn subscribe(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }

    /// A receiver of (leader, term) changes only.
    pub fn leadership(&self) -> watch::Receiver<(u64, u64)> {
        self.leadership.clone()
    }

    /// A receiver of the loop's [`Ending`] (changed once at most).
    pub fn ending(&self) -> watch::Receiver<Ending> {
        self.ending.clone()
    }

    /// A sender of inputs (for the transport).
    pub fn inputs(&self) -> Inbox {
        self.inputs.clone()
    }

    /// Proposes `data`; Ok once raft took it.
    pub async fn propose(&self, data: Vec<u8>) -> Result<(), RequestError> {
        self.propose_with(data, false).await
    }

    /// Proposes an entry only if this member leads (see
    /// [`Input::Propose::leader_only`]).
    pub async fn propose_as_leader(&self, data: Vec<u8>) -> Result<(), RequestError> {
        self.propose_with(data, true).await
    }

    async fn propose_with(&self, data: Vec<u8>, leader_only: bool) -> Result<(), RequestError> {
        let (done, rx) = oneshot::channel();
        if !self.send(Input::Propose {
            data,
            leader_only,
            done: Taken::Told(done),
        }) {
            return Err(RequestError::Stopped);
        }
        rx.await.map_err(|_| RequestError::Stopped)?
    }

    /// Proposes `data` (only if this member leads, with `leader_only`)
    /// without waiting for raft to take it: `refusal` is called if raft
    /// refuses it (or the thread is gone). For a proposer that waits for
    /// the entry's apply, which answers it either way.
    pub fn offer(&self, data: Vec<u8>, leader_only: bool, refusal: Refusal) {
        // A send that fails drops the input, and with it `refusal`, which
        // then reports the stop.
        self.send(Input::Propose {
            data,
            leader_only,
            done: Taken::OnRefusal(refusal),
        });
    }

    /// Proposes a membership change; Ok once raft took it.
    pub async fn propose_conf_change(&self, change: ConfChangeV2) -> Result<(), RequestError> {
        let (done, rx) = oneshot::channel();
        if !self.send(Input::ConfChange { change, done }) {
            return Err(RequestError::Stopped);
        }
        rx.await.map_err(|_| RequestError::Stopped)?
    }

    /// Waits until a linearizable read may be served locally. A lone voter
    /// that leads answers from its published status, as raft would answer
    /// it at once (see [`RaftStatus::reads_alone`]), without waking the
    /// raft thread: every write acknowledged so far was committed by it
    /// alone and is applied once `applied` reaches `commit`.
    pub async fn read_index(&self) -> Result<u64, RequestError> {
        {
            let status = self.status.borrow();
            if status.reads_alone && status.applied >= status.commit {
                return Ok(status.commit);
            }
        }
        self.reads.read_index().await
    }
}
