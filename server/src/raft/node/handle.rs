//! How the rest of the member reaches the raft thread: [`Input`]s on one
//! channel, and the [`RaftStatus`] it publishes after every round.

use std::sync::mpsc::Sender;

use ::raft::eraftpb::{ConfChangeV2, Message};
use tokio::sync::{oneshot, watch};

use super::RaftStatus;
use crate::raft::RequestError;

/// Something for the raft thread to do.
#[derive(Debug)]
pub enum Input {
    /// Propose a normal entry; `done` says whether raft took it.
    Propose {
        /// The entry's data (an encoded `cairnpb.RaftRequest`).
        data: Vec<u8>,
        /// Only if this member leads now: appended to its own log, never
        /// forwarded (`NotLeader` otherwise). For decisions only the leader
        /// may take (revoking expired leases, lease checkpoints): a deposed
        /// leader that has not noticed yet must not get them committed by
        /// its successor, whose lessor knows better.
        leader_only: bool,
        /// Ok once appended to the leader's log (or forwarded to it).
        done: oneshot::Sender<Result<(), RequestError>>,
    },
    /// Propose a membership change.
    ConfChange {
        /// The change (one change per proposal).
        change: ConfChangeV2,
        /// Ok once proposed.
        done: oneshot::Sender<Result<(), RequestError>>,
    },
    /// A linearizable read: answered with the read index once this member
    /// has applied up to it.
    Read {
        /// The read index, or why there is none.
        done: oneshot::Sender<Result<u64, RequestError>>,
    },
    /// A message from a peer.
    Step(Message),
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

/// A handle on the raft thread.
#[derive(Debug, Clone)]
pub struct RaftHandle {
    /// Inputs to the thread.
    inputs: Sender<Input>,
    /// The latest status.
    status: watch::Receiver<RaftStatus>,
    /// (leader, term), changed only when either changes.
    leadership: watch::Receiver<(u64, u64)>,
}

impl RaftHandle {
    /// A handle on whatever reads `inputs` and publishes `status` and
    /// `leadership` (the raft thread [`super::start`] starts).
    pub(crate) fn new(
        inputs: Sender<Input>,
        status: watch::Receiver<RaftStatus>,
        leadership: watch::Receiver<(u64, u64)>,
    ) -> Self {
        Self {
            inputs,
            status,
            leadership,
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

    /// A receiver of status changes.
    pub fn subscribe(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }

    /// A receiver of (leader, term) changes only.
    pub fn leadership(&self) -> watch::Receiver<(u64, u64)> {
        self.leadership.clone()
    }

    /// A sender of inputs (for the transport).
    pub fn inputs(&self) -> Sender<Input> {
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
            done,
        }) {
            return Err(RequestError::Stopped);
        }
        rx.await.map_err(|_| RequestError::Stopped)?
    }

    /// Proposes a membership change; Ok once raft took it.
    pub async fn propose_conf_change(&self, change: ConfChangeV2) -> Result<(), RequestError> {
        let (done, rx) = oneshot::channel();
        if !self.send(Input::ConfChange { change, done }) {
            return Err(RequestError::Stopped);
        }
        rx.await.map_err(|_| RequestError::Stopped)?
    }

    /// Waits until a linearizable read may be served locally.
    pub async fn read_index(&self) -> Result<u64, RequestError> {
        let (done, rx) = oneshot::channel();
        if !self.send(Input::Read { done }) {
            return Err(RequestError::Stopped);
        }
        rx.await.map_err(|_| RequestError::Stopped)?
    }
}
