//! The replicated state machine: what applying one raft log entry does.
//!
//! Every member applies the same entries in the same order, so everything
//! here is deterministic: no clock, no randomness, no local configuration.
//! The state is the MVCC store, the lease table, the member table, the
//! alarms and the auth store; all of it lives in the engine, and every entry's effects are
//! written in one batch together with the entry's index (the applied index),
//! so a restart resumes exactly after the last applied entry.
//!
//! Raft knows nothing of this module: the node hands it entry bytes and an
//! index through [`StateMachine`] ([`Machine::apply_entry`],
//! `apply_member_change`), asks it for snapshot data and gives it snapshot
//! data to install. The member that proposed an entry waits for it through
//! [`Machine::waiters`]: applying an entry wakes the waiter registered
//! under the entry's proposal id.
//!
//! - `apply`: one entry or conf change, applied at its index.
//! - `tables`: [`Tables`], the member table, alarms, downgrade job and
//!   cluster id.
//! - `snapshot`: snapshot data out, and in.
//! - `install`: snapshot data installed in bounded batches, staged so that
//!   a crash half-way is finished at the next start.

mod apply;
pub mod install;
mod snapshot;
mod tables;

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use cairn_proto::cairnpb;
use cairn_proto::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseCheckpointResponse,
    LeaseGrantResponse, LeaseRevokeResponse, PutResponse, TxnResponse,
};
use tokio::sync::oneshot;

use crate::auth::AuthStore;
use crate::error::EtcdError;
use crate::lease::Lessor;
use crate::metrics::server::ApplyMetrics;
use crate::mvcc::Store;
use crate::raft::{StateMachine, Waiters};
use crate::storage::crypto::KeyHandle;

use apply::Applying;
pub use snapshot::snapshot_cf;
pub use tables::Tables;

/// Errors that stop a member: the state machine cannot go on deterministically.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed (a disk error, or corrupt records).
    #[error(transparent)]
    Mvcc(#[from] crate::mvcc::Error),
    /// The engine failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    /// The auth record could not be read or written.
    #[error(transparent)]
    Auth(#[from] crate::auth::store::Error),
    /// Snapshot data could not be staged, or staged data read back.
    #[error("staged snapshot install {path}: {reason}")]
    Staging {
        /// The staged file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// An entry or snapshot record could not be decoded.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
}

/// What applying an entry produced, for the waiting client.
#[derive(Debug)]
pub enum Applied {
    /// A Put's response (header: revision only).
    Put(PutResponse),
    /// A DeleteRange's response.
    DeleteRange(DeleteRangeResponse),
    /// A Txn's response.
    Txn(TxnResponse),
    /// A Compaction's response, and the end of its physical phase.
    Compaction(CompactionResponse, oneshot::Receiver<Result<(), EtcdError>>),
    /// A LeaseGrant's response.
    LeaseGrant(LeaseGrantResponse),
    /// A LeaseRevoke's response.
    LeaseRevoke(LeaseRevokeResponse),
    /// A LeaseCheckpoint's response.
    LeaseCheckpoint(LeaseCheckpointResponse),
    /// An Alarm's response.
    Alarm(AlarmResponse),
    /// A membership change or attribute update: the member table after it.
    Members(Vec<cairnpb::Member>),
    /// A data key rotation: the key id now active.
    KeyRotated(u32),
    /// The downgrade job was enabled or cancelled.
    Downgraded,
    /// An auth change was applied; an authentication's token.
    Auth(Option<String>),
}

impl Applied {
    /// The variant's name, for a log line: the responses themselves hold
    /// keys and values, which stay out of the log.
    pub fn kind(&self) -> String {
        let debug = format!("{self:?}");
        debug
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

/// The outcome a waiter receives.
pub type Outcome = Result<Applied, EtcdError>;

pub use crate::raft::MemberChange;

/// The state machine of one member.
pub struct Machine {
    /// User data, and the applied index (every change of every part below
    /// commits through one of its write transactions).
    store: Arc<Store>,
    /// Leases (the replicated half changes only here).
    lessor: Arc<Lessor>,
    /// The member table, alarms, downgrade job and cluster id: replicated
    /// like user data, but read by the member itself on every request.
    tables: Tables,
    /// Users, roles, permissions and whether auth is on (replicated: one
    /// sealed record), and this member's tokens.
    auth: Arc<AuthStore>,
    /// Clients waiting for their proposal, by proposal id: applying an
    /// entry answers its proposer wherever the entry came from.
    waiters: Waiters<Outcome>,
    /// The sealed engine's keys, given by whoever opened it: applying
    /// RotateDataKey activates the replicated key id through them. None when
    /// the store is not sealed.
    keys: Option<KeyHandle>,
    /// Where a snapshot's data is staged while it is installed, so that an
    /// install cut short is finished at the next start (see `install`).
    /// None where there is no next start to finish it (a store in memory,
    /// a new data directory being restored into).
    install_file: Option<PathBuf>,
    /// etcd's apply duration and lease counters (set once at start; none
    /// in unit tests).
    metrics: std::sync::OnceLock<ApplyMetrics>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("applied_index", &self.store.applied_index())
            .finish_non_exhaustive()
    }
}

impl Machine {
    /// The state machine over `store` and `lessor` (both recovered from the
    /// same engine); loads the member table and the alarms.
    pub fn open(store: Arc<Store>, lessor: Arc<Lessor>) -> Result<Self, Error> {
        let machine = Self::new(store, lessor);
        machine.tables.load()?;
        machine.auth.load(machine.store.engine().as_ref())?;
        Ok(machine)
    }

    /// A state machine over a store with no member table or alarms yet
    /// (a new store, as unit tests use).
    pub fn new(store: Arc<Store>, lessor: Arc<Lessor>) -> Self {
        Self {
            tables: Tables::new(Arc::clone(&store)),
            auth: Arc::new(AuthStore::new()),
            store,
            lessor,
            waiters: Waiters::default(),
            keys: None,
            install_file: None,
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Times every applied entry, and counts leases, in `metrics` from now
    /// on.
    pub fn set_metrics(&self, metrics: ApplyMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// The same machine, rotating data keys through `keys` (the store's
    /// engine is the sealed engine `keys` belongs to).
    pub fn with_keys(mut self, keys: Option<KeyHandle>) -> Self {
        self.keys = keys;
        self
    }

    /// The same machine, staging snapshot data at `path` while it installs
    /// it ([`install::FILE_NAME`] in the data directory).
    pub fn with_install_file(mut self, path: PathBuf) -> Self {
        self.install_file = Some(path);
        self
    }

    /// The sealed engine's keys, if the store is sealed.
    pub fn keys(&self) -> Option<&KeyHandle> {
        self.keys.as_ref()
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The lessor.
    pub fn lessor(&self) -> &Arc<Lessor> {
        &self.lessor
    }

    /// The auth store (state and tokens).
    pub fn auth(&self) -> &Arc<AuthStore> {
        &self.auth
    }

    /// The member table, alarms, downgrade job and cluster id.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The proposers waiting for their entries: register before proposing,
    /// cancel on giving up; applying the entry answers.
    pub fn waiters(&self) -> &Waiters<Outcome> {
        &self.waiters
    }

    /// The index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.store.applied_index()
    }
}

/// The raft thread's view: entries and conf changes in, snapshot data out.
/// Each method but `apply_member_change` and `snapshot` (which is
/// [`Machine::consistent_snapshot`]) is the inherent one of the same
/// name (callers without raft, such as a member applying locally, use those
/// directly); membership changes come from raft only.
impl StateMachine for Machine {
    type Error = Error;

    fn applied_index(&self) -> u64 {
        Machine::applied_index(self)
    }

    fn durable_applied_index(&self) -> Result<u64, Error> {
        Ok(self.store.durable_applied_index()?)
    }

    fn persist(&self) -> Result<(), Error> {
        Ok(self.store.persist()?)
    }

    fn apply_entry(&self, index: u64, data: &bytes::Bytes) -> Result<(), Error> {
        Machine::apply_entry(self, index, data)
    }

    fn apply_member_change(
        &self,
        index: u64,
        change: MemberChange,
        node: u64,
        context: &[u8],
    ) -> Result<(), Error> {
        match Applying::at(self, index) {
            Some(applying) => applying.member_change(change, node, context),
            None => Ok(()),
        }
    }

    fn snapshot(&self, fixed: &mut dyn FnMut(u64)) -> Result<Vec<u8>, Error> {
        Ok(self.consistent_snapshot(fixed)?.1)
    }

    fn restore(&self, data: &[u8]) -> Result<(), Error> {
        Machine::restore(self, data)
    }

    fn stopped(&self) {
        self.waiters.fail_all(|| Err(EtcdError::Stopped));
    }
}
