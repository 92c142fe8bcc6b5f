//! The replicated state machine: what applying one raft log entry does.
//!
//! Every member applies the same entries in the same order, so everything
//! here is deterministic: no clock, no randomness, no local configuration.
//! The state is the MVCC store, the lease table, the member table and the
//! alarms; all of it lives in the engine, and every entry's effects are
//! written in one batch together with the entry's index (the applied index),
//! so a restart resumes exactly after the last applied entry.
//!
//! Raft knows nothing of this module: the node hands it entry bytes and an
//! index ([`Machine::apply_entry`], [`Machine::apply_member_change`]), asks it
//! for snapshot data and gives it snapshot data to install. The member that
//! proposed an entry waits for it through [`Machine::register`]: applying an
//! entry wakes the waiter registered under the entry's proposal id.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use cairn_proto::cairnpb::{self, SnapshotRecord};
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{
    AlarmMember, AlarmResponse, AlarmType, CompactionResponse, DeleteRangeResponse,
    LeaseCheckpointResponse, LeaseGrantResponse, LeaseRevokeResponse, PutResponse, TxnResponse,
};
use prost::Message;
use tokio::sync::oneshot;

use crate::apply;
use crate::entry::{self, Command};
use crate::error::EtcdError;
use crate::lease::{LeaseTxn, Lessor};
use crate::mvcc::{Store, WriteTxn};
use crate::raft::{StateMachine, Waiters};
use crate::storage::crypto::KeyHandle;
use crate::storage::{try_scan, Cf, Scan, WriteBatch};

/// Meta key prefix of the member table: `member/` + id (8 bytes big-endian)
/// -> `cairnpb.Member`.
const MEMBER_PREFIX: &[u8] = b"member/";
/// Meta key prefix of raised alarms: `alarm/` + member id + alarm type.
const ALARM_PREFIX: &[u8] = b"alarm/";
/// Meta key of the replicated cluster id (8 bytes big-endian).
const CLUSTER_ID: &[u8] = b"cluster_id";
/// Meta key of the cluster's downgrade job (`cairnpb.DowngradeInfo`), absent
/// when none is enabled.
const DOWNGRADE: &[u8] = b"downgrade";
/// Meta keys that belong to this member only and never travel in a snapshot.
const LOCAL_META: [&[u8]; 1] = [b"member_id"];

/// Errors that stop a member: the state machine cannot go on deterministically.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed (a disk error, or corrupt records).
    #[error(transparent)]
    Mvcc(#[from] crate::mvcc::Error),
    /// The engine failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
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
    /// User data.
    store: Arc<Store>,
    /// Leases (the replicated half changes only here).
    lessor: Arc<Lessor>,
    /// The member table, by id.
    members: RwLock<BTreeMap<u64, cairnpb::Member>>,
    /// Raised alarms: (member id, alarm type).
    alarms: Mutex<BTreeSet<(u64, i32)>>,
    /// Clients waiting for their proposal, by proposal id: applying an
    /// entry answers its proposer wherever the entry came from.
    waiters: Waiters<Outcome>,
    /// The cluster id (0 until known: a joining member learns it from its
    /// first snapshot).
    cluster_id: AtomicU64,
    /// The target version of the enabled downgrade job, if any (replicated,
    /// so every member answers Maintenance.Downgrade alike).
    downgrade: Mutex<Option<String>>,
    /// The sealed engine's keys, given by whoever opened it: applying
    /// RotateDataKey activates the replicated key id through them. None when
    /// the store is not sealed.
    keys: Option<KeyHandle>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("applied_index", &self.store.applied_index())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single map operation.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Meta records that are this member's own: its id and its encryption
/// keys (wrapped by its own master key), never sent in a snapshot nor
/// replaced by one.
fn is_local_meta(key: &[u8]) -> bool {
    LOCAL_META.contains(&key) || key.starts_with(b"enc/")
}

fn member_key(id: u64) -> Vec<u8> {
    let mut key = MEMBER_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn alarm_key(member: u64, alarm: i32) -> Vec<u8> {
    let mut key = ALARM_PREFIX.to_vec();
    key.extend_from_slice(&member.to_be_bytes());
    key.extend_from_slice(&alarm.to_be_bytes());
    key
}

/// The end of a prefix scan: the prefix with its last byte incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

impl Machine {
    /// The state machine over `store` and `lessor` (both recovered from the
    /// same engine); loads the member table and the alarms.
    pub fn open(store: Arc<Store>, lessor: Arc<Lessor>) -> Result<Self, Error> {
        let machine = Self::new(store, lessor);
        machine.load_tables()?;
        Ok(machine)
    }

    /// A state machine over a store with no member table or alarms yet
    /// (a new store, as unit tests use).
    pub fn new(store: Arc<Store>, lessor: Arc<Lessor>) -> Self {
        Self {
            store,
            lessor,
            members: RwLock::new(BTreeMap::new()),
            alarms: Mutex::new(BTreeSet::new()),
            waiters: Waiters::default(),
            cluster_id: AtomicU64::new(0),
            downgrade: Mutex::new(None),
            keys: None,
        }
    }

    /// The same machine, rotating data keys through `keys` (the store's
    /// engine is the sealed engine `keys` belongs to).
    pub fn with_keys(mut self, keys: Option<KeyHandle>) -> Self {
        self.keys = keys;
        self
    }

    /// The sealed engine's keys, if the store is sealed.
    pub fn keys(&self) -> Option<&KeyHandle> {
        self.keys.as_ref()
    }

    /// The cluster id (0 until known).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Relaxed)
    }

    fn load_tables(&self) -> Result<(), Error> {
        let engine = self.store.engine();
        let mut members = BTreeMap::new();
        try_scan::<Error>(
            engine.as_ref(),
            Cf::Meta,
            MEMBER_PREFIX,
            Some(&prefix_end(MEMBER_PREFIX)),
            |_, v| {
                let m = cairnpb::Member::decode(v).map_err(|e| Error::Corrupt {
                    what: "member record",
                    reason: e.to_string(),
                })?;
                members.insert(m.id, m);
                Ok(Scan::Continue)
            },
        )?;
        let mut alarms = BTreeSet::new();
        try_scan::<Error>(
            engine.as_ref(),
            Cf::Meta,
            ALARM_PREFIX,
            Some(&prefix_end(ALARM_PREFIX)),
            |k, _| {
                let rest = &k[ALARM_PREFIX.len()..];
                if let (Some(m), Some(a)) = (rest.get(..8), rest.get(8..12)) {
                    let member = u64::from_be_bytes(m.try_into().unwrap_or_default());
                    let alarm = i32::from_be_bytes(a.try_into().unwrap_or_default());
                    alarms.insert((member, alarm));
                }
                Ok(Scan::Continue)
            },
        )?;
        if let Some(v) = engine.get(Cf::Meta, CLUSTER_ID)? {
            if let Ok(bytes) = <[u8; 8]>::try_from(v.as_slice()) {
                self.cluster_id
                    .store(u64::from_be_bytes(bytes), Ordering::Relaxed);
            }
        }
        let downgrade = match engine.get(Cf::Meta, DOWNGRADE)? {
            Some(v) => {
                let d =
                    cairnpb::DowngradeInfo::decode(v.as_slice()).map_err(|e| Error::Corrupt {
                        what: "downgrade record",
                        reason: e.to_string(),
                    })?;
                d.enabled.then_some(d.target_version)
            }
            None => None,
        };
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = members;
        *lock(&self.alarms) = alarms;
        *lock(&self.downgrade) = downgrade;
        Ok(())
    }

    /// The target version of the enabled downgrade job, if any.
    pub fn downgrade(&self) -> Option<String> {
        lock(&self.downgrade).clone()
    }

    /// Enables or cancels the downgrade job at `index`.
    fn set_downgrade(&self, index: u64, info: cairnpb::DowngradeInfo) -> Result<Outcome, Error> {
        let mut current = lock(&self.downgrade);
        let mut txn = self.store.write();
        txn.stage(if info.enabled {
            crate::storage::BatchOp::Put {
                cf: Cf::Meta,
                key: DOWNGRADE.to_vec(),
                value: info.encode_to_vec(),
            }
        } else {
            crate::storage::BatchOp::Delete {
                cf: Cf::Meta,
                key: DOWNGRADE.to_vec(),
            }
        });
        txn.commit(Some(index))?;
        *current = info.enabled.then_some(info.target_version);
        Ok(Ok(Applied::Downgraded))
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The lessor.
    pub fn lessor(&self) -> &Arc<Lessor> {
        &self.lessor
    }

    /// The index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.store.applied_index()
    }

    /// The member table, by id.
    pub fn members(&self) -> Vec<cairnpb::Member> {
        let members = self.members.read().unwrap_or_else(|e| e.into_inner());
        members.values().cloned().collect()
    }

    /// One member's record.
    pub fn member(&self, id: u64) -> Option<cairnpb::Member> {
        let members = self.members.read().unwrap_or_else(|e| e.into_inner());
        members.get(&id).cloned()
    }

    /// The raised alarms.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        lock(&self.alarms)
            .iter()
            .map(|(member_id, alarm)| AlarmMember {
                member_id: *member_id,
                alarm: *alarm,
            })
            .collect()
    }

    /// Whether alarm `alarm` is raised for any member.
    pub fn has_alarm(&self, alarm: AlarmType) -> bool {
        lock(&self.alarms).iter().any(|(_, a)| *a == alarm as i32)
    }

    /// Registers a waiter for proposal `id`; applying the entry answers it.
    pub fn register(&self, id: u64) -> oneshot::Receiver<Outcome> {
        self.waiters.register(id)
    }

    /// Forgets the waiter of proposal `id` (it gave up).
    pub fn cancel(&self, id: u64) {
        self.waiters.cancel(id);
    }

    /// How many proposals wait here (tests check that none is left behind).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Answers proposal `id`'s waiter, if it is on this member.
    fn answer(&self, id: u64, outcome: Outcome) {
        self.waiters.answer(id, outcome);
    }

    /// Bootstraps a new member's state: the cluster id and the initial
    /// member table, applied at `index` (the bootstrap snapshot's index).
    /// Any previous member table, alarms and downgrade job are dropped (a
    /// restore starts a new cluster).
    pub fn bootstrap(
        &self,
        index: u64,
        cluster_id: u64,
        members: &[cairnpb::Member],
    ) -> Result<(), Error> {
        let mut txn = self.store.write();
        let engine = Arc::clone(self.store.engine());
        for prefix in [MEMBER_PREFIX, ALARM_PREFIX] {
            try_scan::<Error>(
                engine.as_ref(),
                Cf::Meta,
                prefix,
                Some(&prefix_end(prefix)),
                |k, _| {
                    txn.stage(crate::storage::BatchOp::Delete {
                        cf: Cf::Meta,
                        key: k.to_vec(),
                    });
                    Ok(Scan::Continue)
                },
            )?;
        }
        lock(&self.alarms).clear();
        txn.stage(crate::storage::BatchOp::Delete {
            cf: Cf::Meta,
            key: DOWNGRADE.to_vec(),
        });
        *lock(&self.downgrade) = None;
        txn.stage(crate::storage::BatchOp::Put {
            cf: Cf::Meta,
            key: CLUSTER_ID.to_vec(),
            value: cluster_id.to_be_bytes().to_vec(),
        });
        self.cluster_id.store(cluster_id, Ordering::Relaxed);
        for m in members {
            txn.stage(crate::storage::BatchOp::Put {
                cf: Cf::Meta,
                key: member_key(m.id),
                value: m.encode_to_vec(),
            });
        }
        txn.commit(Some(index))?;
        let mut table = self.members.write().unwrap_or_else(|e| e.into_inner());
        table.clear();
        for m in members {
            table.insert(m.id, m.clone());
        }
        Ok(())
    }

    /// Applies the normal entry at `index` whose data is `data` (empty: the
    /// no-op a new leader appends). A request that fails (say, a revoke of
    /// an unknown lease) still consumes the entry: the error goes to the
    /// waiter and the index is recorded. So does an entry that does not
    /// decode (only an older version could have proposed one): every member
    /// applies it as the same error and goes on. `Err` only when the member
    /// cannot go on (the disk failed).
    pub fn apply_entry(&self, index: u64, data: &[u8]) -> Result<(), Error> {
        if index <= self.store.applied_index() {
            return Ok(());
        }
        if data.is_empty() {
            return self.record_index(index);
        }
        let entry = match entry::decode(data) {
            Ok(entry) => entry,
            Err(undecodable) => {
                tracing::error!(index, error = %undecodable, "applying an undecodable raft entry as an error");
                self.record_index(index)?;
                if let Some(id) = undecodable.id {
                    self.answer(id, Err(undecodable.error()));
                }
                return Ok(());
            }
        };
        let Some(command) = entry.command else {
            return self.record_index(index);
        };
        let outcome = self.execute(index, command)?;
        self.answer(entry.id, outcome);
        Ok(())
    }

    /// Records `index` as applied with no other change.
    fn record_index(&self, index: u64) -> Result<(), Error> {
        self.store.write().commit(Some(index))?;
        Ok(())
    }

    /// Runs `f` in one write transaction committed with `index`. A request
    /// error rolls the transaction back and records only the index.
    fn write<R>(
        &self,
        index: u64,
        f: impl FnOnce(&mut WriteTxn<'_>, &mut LeaseTxn<'_>) -> Result<R, EtcdError>,
    ) -> Result<Result<R, EtcdError>, Error> {
        let mut txn = self.store.write();
        let mut leases = LeaseTxn::new(&self.lessor);
        match f(&mut txn, &mut leases) {
            Ok(resp) => {
                let changes = leases.finish(&mut txn);
                self.lessor
                    .apply_committed(changes, || txn.commit(Some(index)))?;
                Ok(Ok(resp))
            }
            Err(e) => {
                drop(leases);
                drop(txn);
                self.record_index(index)?;
                Ok(Err(e))
            }
        }
    }

    fn execute(&self, index: u64, command: Command) -> Result<Outcome, Error> {
        Ok(match command {
            Command::Put(r) => self
                .write(index, |t, l| apply::put(t, l, &r))?
                .map(Applied::Put),
            Command::DeleteRange(r) => self
                .write(index, |t, l| apply::delete_range(t, l, &r))?
                .map(Applied::DeleteRange),
            Command::Txn(r) => self
                .write(index, |t, l| apply::txn(t, l, &r))?
                .map(Applied::Txn),
            Command::LeaseGrant(r) => self
                .write(index, |t, l| apply::lease_grant(t, l, &r))?
                .map(Applied::LeaseGrant),
            Command::LeaseRevoke(r) => self
                .write(index, |t, l| apply::lease_revoke(t, l, &r))?
                .map(Applied::LeaseRevoke),
            Command::LeaseCheckpoint(r) => self
                .write(index, |t, l| apply::lease_checkpoint(t, l, &r))?
                .map(Applied::LeaseCheckpoint),
            Command::Compaction(r) => self.compact(index, r.revision)?,
            Command::Alarm(r) => Ok(Applied::Alarm(self.alarm(index, &r)?)),
            Command::MemberAttributes(m) => {
                self.update_member(index, m.id, |known| cairnpb::Member {
                    name: m.name,
                    client_urls: m.client_urls,
                    zone: m.zone,
                    ..known
                })?
            }
            Command::RotateDataKey(id) => {
                if let Some(keys) = &self.keys {
                    keys.activate(id)?;
                }
                self.record_index(index)?;
                Ok(Applied::KeyRotated(id))
            }
            Command::Downgrade(info) => self.set_downgrade(index, info)?,
            Command::MemberPeerUrls(m) => {
                self.update_member(index, m.id, |known| cairnpb::Member {
                    peer_urls: m.peer_urls,
                    ..known
                })?
            }
        })
    }

    /// Changes member `id`'s record with `f` (MemberNotFound if unknown).
    fn update_member(
        &self,
        index: u64,
        id: u64,
        f: impl FnOnce(cairnpb::Member) -> cairnpb::Member,
    ) -> Result<Outcome, Error> {
        let mut table = self.members.write().unwrap_or_else(|e| e.into_inner());
        let Some(known) = table.get(&id).cloned() else {
            drop(table);
            self.record_index(index)?;
            return Ok(Err(EtcdError::MemberNotFound));
        };
        let updated = f(known);
        self.put_member_record(index, &updated)?;
        table.insert(id, updated);
        Ok(Ok(Applied::Members(table.values().cloned().collect())))
    }

    fn put_member_record(&self, index: u64, m: &cairnpb::Member) -> Result<(), Error> {
        let mut txn = self.store.write();
        txn.stage(crate::storage::BatchOp::Put {
            cf: Cf::Meta,
            key: member_key(m.id),
            value: m.encode_to_vec(),
        });
        txn.commit(Some(index))?;
        Ok(())
    }

    /// Compaction: the logical part now, the physical deletion on its own
    /// thread (its end reported through the returned receiver).
    fn compact(&self, index: u64, revision: i64) -> Result<Outcome, Error> {
        let job = match self.store.compact(revision) {
            Ok(job) => job,
            Err(crate::mvcc::Error::Compacted) => {
                self.record_index(index)?;
                return Ok(Err(EtcdError::Compacted));
            }
            Err(crate::mvcc::Error::FutureRev) => {
                self.record_index(index)?;
                return Ok(Err(EtcdError::FutureRev));
            }
            Err(e) => return Err(e.into()),
        };
        self.record_index(index)?;
        let (tx, rx) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("cairn-compaction".into())
            .spawn(move || {
                let result = job.run().map_err(|e| {
                    tracing::error!(error = %e, revision, "compaction failed");
                    EtcdError::from(e)
                });
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            // The records stay until the next compaction or restart resumes it.
            tracing::error!(error = %e, "cannot start the compaction thread");
        }
        Ok(Ok(Applied::Compaction(
            CompactionResponse { header: None },
            rx,
        )))
    }

    fn alarm(
        &self,
        index: u64,
        req: &cairn_proto::etcdserverpb::AlarmRequest,
    ) -> Result<AlarmResponse, Error> {
        let mut alarms = lock(&self.alarms);
        let one = (req.member_id, req.alarm);
        let listed = |set: &BTreeSet<(u64, i32)>| {
            set.iter()
                .filter(|a| **a == one)
                .map(|(member_id, alarm)| AlarmMember {
                    member_id: *member_id,
                    alarm: *alarm,
                })
                .collect::<Vec<_>>()
        };
        let mut txn = self.store.write();
        let list = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Activate) if req.alarm != AlarmType::None as i32 => {
                txn.stage(crate::storage::BatchOp::Put {
                    cf: Cf::Meta,
                    key: alarm_key(one.0, one.1),
                    value: Vec::new(),
                });
                alarms.insert(one);
                listed(&alarms)
            }
            Ok(AlarmAction::Deactivate) => {
                let was = listed(&alarms);
                txn.stage(crate::storage::BatchOp::Delete {
                    cf: Cf::Meta,
                    key: alarm_key(one.0, one.1),
                });
                alarms.remove(&one);
                was
            }
            _ => Vec::new(),
        };
        txn.commit(Some(index))?;
        Ok(AlarmResponse {
            header: None,
            alarms: list,
        })
    }

    /// Applies a membership change at `index`. `context` is the proposal's
    /// `ConfChangeContext` (empty for a change raft made by itself).
    pub fn apply_member_change(
        &self,
        index: u64,
        change: MemberChange,
        node: u64,
        context: &[u8],
    ) -> Result<(), Error> {
        if index <= self.store.applied_index() {
            return Ok(());
        }
        // Raft has already changed its configuration: the member table must
        // follow even if the context (who asked, the new member's URLs) is
        // unreadable, on every member alike.
        let ctx = cairnpb::ConfChangeContext::decode(context).unwrap_or_else(|e| {
            tracing::error!(index, error = %e, "undecodable conf change context; applying the change without it");
            cairnpb::ConfChangeContext::default()
        });
        let mut table = self.members.write().unwrap_or_else(|e| e.into_inner());
        let mut txn = self.store.write();
        match change {
            MemberChange::AddVoter | MemberChange::AddLearner => {
                let learner = change == MemberChange::AddLearner;
                let member = match (table.get(&node), ctx.member) {
                    (Some(known), _) => cairnpb::Member {
                        is_learner: learner,
                        ..known.clone()
                    },
                    (None, Some(m)) => cairnpb::Member {
                        id: node,
                        is_learner: learner,
                        ..m
                    },
                    (None, None) => cairnpb::Member {
                        id: node,
                        is_learner: learner,
                        ..Default::default()
                    },
                };
                txn.stage(crate::storage::BatchOp::Put {
                    cf: Cf::Meta,
                    key: member_key(node),
                    value: member.encode_to_vec(),
                });
                table.insert(node, member);
            }
            MemberChange::Remove => {
                txn.stage(crate::storage::BatchOp::Delete {
                    cf: Cf::Meta,
                    key: member_key(node),
                });
                table.remove(&node);
            }
        }
        txn.commit(Some(index))?;
        let members = table.values().cloned().collect();
        drop(table);
        self.answer(ctx.request_id, Ok(Applied::Members(members)));
        Ok(())
    }

    /// Runs a Txn that writes nothing against the current state, without a
    /// log entry: the transaction is dropped, never committed.
    pub fn read_only_txn(
        &self,
        req: &cairn_proto::etcdserverpb::TxnRequest,
    ) -> Result<TxnResponse, EtcdError> {
        let mut txn = self.store.write();
        let mut leases = LeaseTxn::new(&self.lessor);
        apply::txn(&mut txn, &mut leases, req)
    }

    /// Fails every waiter (the member is stopping).
    pub fn fail_all(&self, error: EtcdError) {
        self.waiters.fail_all(|| Err(error.clone()));
    }

    /// The whole replicated state as snapshot data: every record of the
    /// `kv` and `lease` column families and of `meta` (except this member's
    /// identity), as length-delimited `SnapshotRecord`s. Taken on the raft
    /// thread, between two applies, so it is exactly the state at
    /// [`Machine::applied_index`].
    pub fn snapshot_data(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        for cf in [Cf::Kv, Cf::Lease, Cf::Meta] {
            try_scan::<Error>(self.store.engine().as_ref(), cf, &[], None, |k, v| {
                if cf == Cf::Meta && is_local_meta(k) {
                    return Ok(Scan::Continue);
                }
                let record = SnapshotRecord {
                    cf: cf.name().to_string(),
                    key: k.to_vec(),
                    value: v.to_vec(),
                };
                record
                    .encode_length_delimited(&mut out)
                    .map_err(|e| Error::Corrupt {
                        what: "snapshot record",
                        reason: e.to_string(),
                    })?;
                Ok(Scan::Continue)
            })?;
        }
        Ok(out)
    }

    /// [`Machine::snapshot_data`] from any thread: holds the store's write
    /// lock (every state change commits under it) while reading, so the
    /// copy is of one applied index. Returns (applied index, data).
    pub fn consistent_snapshot(&self) -> Result<(u64, Vec<u8>), Error> {
        let txn = self.store.write();
        let index = txn.applied_index();
        let data = self.snapshot_data()?;
        drop(txn);
        Ok((index, data))
    }

    /// Replaces the whole replicated state with snapshot `data` in one
    /// synced write, then reloads the store, the lessor and the tables.
    pub fn restore(&self, data: &[u8]) -> Result<(), Error> {
        let mut records = Vec::new();
        let mut buf = data;
        while !buf.is_empty() {
            let record =
                SnapshotRecord::decode_length_delimited(&mut buf).map_err(|e| Error::Corrupt {
                    what: "snapshot record",
                    reason: e.to_string(),
                })?;
            let cf = match record.cf.as_str() {
                "kv" => Cf::Kv,
                "lease" => Cf::Lease,
                "meta" => Cf::Meta,
                other => {
                    return Err(Error::Corrupt {
                        what: "snapshot record",
                        reason: format!("unknown column family {other:?}"),
                    })
                }
            };
            records.push((cf, record.key, record.value));
        }
        let engine = self.store.engine();
        let mut batch = WriteBatch::new();
        for cf in [Cf::Kv, Cf::Lease, Cf::Meta] {
            try_scan::<Error>(engine.as_ref(), cf, &[], None, |k, _| {
                if !(cf == Cf::Meta && is_local_meta(k)) {
                    batch.delete(cf, k.to_vec());
                }
                Ok(Scan::Continue)
            })?;
        }
        for (cf, key, value) in records {
            batch.put(cf, key, value);
        }
        engine.write(batch, true)?;
        self.store.reload()?;
        self.lessor.reload(&self.store)?;
        self.load_tables()?;
        Ok(())
    }
}

/// The raft thread's view: entries and conf changes in, snapshot data out.
/// Each method is the inherent one of the same name (callers without raft,
/// such as a member applying locally, use those directly).
impl StateMachine for Machine {
    type Error = Error;

    fn applied_index(&self) -> u64 {
        Machine::applied_index(self)
    }

    fn apply_entry(&self, index: u64, data: &[u8]) -> Result<(), Error> {
        Machine::apply_entry(self, index, data)
    }

    fn apply_member_change(
        &self,
        index: u64,
        change: MemberChange,
        node: u64,
        context: &[u8],
    ) -> Result<(), Error> {
        Machine::apply_member_change(self, index, change, node, context)
    }

    fn snapshot(&self) -> Result<Vec<u8>, Error> {
        self.snapshot_data()
    }

    fn restore(&self, data: &[u8]) -> Result<(), Error> {
        Machine::restore(self, data)
    }

    fn stopped(&self) {
        self.fail_all(EtcdError::Stopped);
    }
}
