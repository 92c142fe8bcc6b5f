//! What raft needs of the state machine it drives, and nothing more.
//!
//! openraft's split: the node hands the state machine entry bytes, indexes
//! and conf changes, asks it for snapshot data and gives it snapshot data to
//! install. What the bytes mean (requests, responses, the member table) is
//! the implementor's business (the server's `Machine`, a
//! fake in the node's tests), so this module imports no state machine and
//! no client-facing error.

/// A membership change, as raft applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a voter, or promote a learner.
    AddVoter,
    /// Add a learner.
    AddLearner,
    /// Remove.
    Remove,
}

/// The replicated state machine, as the raft thread sees it.
///
/// Every method but `snapshot` and `persist` is called on the raft thread
/// only, between two Readys. Applying must be
/// idempotent by index: an entry at or below the applied index is skipped
/// (a crash between installing a snapshot and its log replays entries).
pub trait StateMachine: Send + Sync + 'static {
    /// Why the state machine cannot go on (a disk failure): the raft loop
    /// stops and the member stops serving.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The index of the last applied entry.
    fn applied_index(&self) -> u64;

    /// The index of the last applied entry whose effects a crash now
    /// would keep: a restart replays the log from the entry after it, so
    /// the log keeps that entry and every later one. At most
    /// [`StateMachine::applied_index`]; the default, equal to it, is for a
    /// state machine that makes each apply durable as it goes.
    fn durable_applied_index(&self) -> Result<u64, Self::Error> {
        Ok(self.applied_index())
    }

    /// Makes every apply so far durable: a crash after it replays none of
    /// them. Called once, on a thread of its own, when a start has applied
    /// the entries the log held past [`StateMachine::durable_applied_index`]
    /// (what a crash before it lost), so that a second crash soon after
    /// does not replay them all again. The default, for a state machine
    /// that makes each apply durable as it goes, does nothing.
    fn persist(&self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Applies the normal entry at `index` (`data` empty: the no-op a new
    /// leader appends, or a conf change raft refused). A request that fails
    /// still consumes its index; `Err` only when the member cannot go on.
    /// (`data` as raft holds it, so a large value is decoded out of it
    /// without a copy of the whole entry first.)
    fn apply_entry(&self, index: u64, data: &bytes::Bytes) -> Result<(), Self::Error>;

    /// Applies a membership change raft has already made at `index`.
    /// `context` is the proposal's context (empty for a change raft made by
    /// itself, and possibly unreadable: the change applies regardless).
    fn apply_member_change(
        &self,
        index: u64,
        change: MemberChange,
        node: u64,
        context: &[u8],
    ) -> Result<(), Self::Error>;

    /// The whole replicated state, as snapshot data for a member that is
    /// behind. Called on a thread of its own, while the raft thread waits
    /// only until `fixed` is called: with the applied index the data is
    /// of, once the state to read is fixed (later applies do not change
    /// it) and before reading it.
    fn snapshot(&self, fixed: &mut dyn FnMut(u64)) -> Result<Vec<u8>, Self::Error>;

    /// Replaces the whole state with snapshot `data` (from
    /// [`StateMachine::snapshot`] on another member).
    fn restore(&self, data: &[u8]) -> Result<(), Self::Error>;

    /// The raft loop stopped: nothing more will be applied here, so whoever
    /// waits for a proposal must be told now.
    fn stopped(&self);
}
