//! The cluster's own replicated records, beside the user's data: the member
//! table, the raised alarms, the downgrade job and the cluster id.
//!
//! Each lives in the `meta` column family and in memory (every proposal
//! checks the alarms, every Cluster call reads the members, so they are never
//! read from disk after start-up). A change is staged into a store write
//! transaction committed with the entry's index, so it lands atomically with
//! the applied index; the in-memory copy changes with it, under the table's
//! own lock. A failed commit stops the member (the state machine cannot go
//! on), so nobody acts on a change the disk does not hold.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cairn_proto::cairnpb;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
use prost::Message;

use super::{Error, MemberChange};
use crate::locks::{lock, read, write};
use crate::mvcc::Store;
use crate::storage::{try_scan, BatchOp, Cf, Scan};

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

/// The member table, the alarms, the downgrade job and the cluster id of
/// one member's state machine.
#[derive(Debug)]
pub struct Tables {
    /// The store whose `meta` column family holds the records: every change
    /// commits through one of its write transactions, so it is written with
    /// the entry's applied index and ordered with every other commit.
    store: Arc<Store>,
    /// The member table, by id. Read by every Cluster call and peer lookup,
    /// written only by applied entries: a read-write lock.
    members: RwLock<BTreeMap<u64, cairnpb::Member>>,
    /// Raised alarms: (member id, alarm type). Checked before every
    /// proposal (CORRUPT refuses everything, NOSPACE refuses growth).
    alarms: Mutex<BTreeSet<(u64, i32)>>,
    /// The cluster id (0 until known: a joining member learns it from its
    /// first snapshot). Read for every response header, hence an atomic.
    cluster_id: AtomicU64,
    /// The target version of the enabled downgrade job, if any (replicated,
    /// so every member answers Maintenance.Downgrade alike).
    downgrade: Mutex<Option<String>>,
}

impl Tables {
    /// Empty tables over `store` (nothing loaded yet: see [`Tables::load`]).
    pub(super) fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            members: RwLock::new(BTreeMap::new()),
            alarms: Mutex::new(BTreeSet::new()),
            cluster_id: AtomicU64::new(0),
            downgrade: Mutex::new(None),
        }
    }

    fn members_read(&self) -> RwLockReadGuard<'_, BTreeMap<u64, cairnpb::Member>> {
        // Every critical section changes the map in one operation.
        read(&self.members)
    }

    fn members_write(&self) -> RwLockWriteGuard<'_, BTreeMap<u64, cairnpb::Member>> {
        write(&self.members)
    }

    /// Replaces the in-memory tables with what the store's engine holds (at
    /// start-up, and after a snapshot replaced the records).
    pub(super) fn load(&self) -> Result<(), Error> {
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
        *self.members_write() = members;
        *lock(&self.alarms) = alarms;
        *lock(&self.downgrade) = downgrade;
        Ok(())
    }

    /// Bootstraps a new member's tables: the cluster id and the initial
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
                    txn.stage(BatchOp::Delete {
                        cf: Cf::Meta,
                        key: k.to_vec(),
                    });
                    Ok(Scan::Continue)
                },
            )?;
        }
        lock(&self.alarms).clear();
        txn.stage(BatchOp::Delete {
            cf: Cf::Meta,
            key: DOWNGRADE.to_vec(),
        });
        *lock(&self.downgrade) = None;
        txn.stage(BatchOp::Put {
            cf: Cf::Meta,
            key: CLUSTER_ID.to_vec(),
            value: cluster_id.to_be_bytes().to_vec(),
        });
        self.cluster_id.store(cluster_id, Ordering::Relaxed);
        for m in members {
            txn.stage(BatchOp::Put {
                cf: Cf::Meta,
                key: member_key(m.id),
                value: m.encode_to_vec(),
            });
        }
        txn.commit(Some(index))?;
        // Persisted now: no entry replays a new cluster's first state, and
        // the raft log is reset to it next.
        self.store.engine().persist()?;
        let mut table = self.members_write();
        table.clear();
        for m in members {
            table.insert(m.id, m.clone());
        }
        Ok(())
    }

    /// The cluster id (0 until known).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Relaxed)
    }

    /// The member table, by id.
    pub fn members(&self) -> Vec<cairnpb::Member> {
        self.members_read().values().cloned().collect()
    }

    /// One member's record.
    pub fn member(&self, id: u64) -> Option<cairnpb::Member> {
        self.members_read().get(&id).cloned()
    }

    /// The first peer URL of member `id`: what a follower forwards to its
    /// leader by, once per forwarded call (a copy of one URL, not of the
    /// whole member).
    pub fn first_peer_url(&self, id: u64) -> Option<String> {
        self.members_read()
            .get(&id)
            .and_then(|m| m.peer_urls.first().cloned())
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

    /// The target version of the enabled downgrade job, if any.
    pub fn downgrade(&self) -> Option<String> {
        lock(&self.downgrade).clone()
    }

    /// Applies a membership change raft made at `index` to member `node`;
    /// `proposed` is the member record its proposal carried (None for a
    /// change raft made by itself, or an unreadable context). Returns the
    /// member table after it.
    pub(super) fn change_member(
        &self,
        index: u64,
        change: MemberChange,
        node: u64,
        proposed: Option<cairnpb::Member>,
    ) -> Result<Vec<cairnpb::Member>, Error> {
        let mut table = self.members_write();
        let mut txn = self.store.write();
        match change {
            MemberChange::AddVoter | MemberChange::AddLearner => {
                let learner = change == MemberChange::AddLearner;
                let member = match (table.get(&node), proposed) {
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
                txn.stage(BatchOp::Put {
                    cf: Cf::Meta,
                    key: member_key(node),
                    value: member.encode_to_vec(),
                });
                table.insert(node, member);
            }
            MemberChange::Remove => {
                txn.stage(BatchOp::Delete {
                    cf: Cf::Meta,
                    key: member_key(node),
                });
                table.remove(&node);
            }
        }
        txn.commit(Some(index))?;
        Ok(table.values().cloned().collect())
    }

    /// Changes member `id`'s record with `f` at `index`; returns the member
    /// table after it, or None when `id` is unknown (the index is recorded
    /// all the same: the entry is consumed).
    pub(super) fn update_member(
        &self,
        index: u64,
        id: u64,
        f: impl FnOnce(cairnpb::Member) -> cairnpb::Member,
    ) -> Result<Option<Vec<cairnpb::Member>>, Error> {
        let mut table = self.members_write();
        let Some(known) = table.get(&id).cloned() else {
            drop(table);
            self.store.write().commit(Some(index))?;
            return Ok(None);
        };
        let updated = f(known);
        self.put_member_record(index, &updated)?;
        table.insert(id, updated);
        Ok(Some(table.values().cloned().collect()))
    }

    fn put_member_record(&self, index: u64, m: &cairnpb::Member) -> Result<(), Error> {
        let mut txn = self.store.write();
        txn.stage(BatchOp::Put {
            cf: Cf::Meta,
            key: member_key(m.id),
            value: m.encode_to_vec(),
        });
        txn.commit(Some(index))?;
        Ok(())
    }

    /// Applies an Alarm request at `index` (activate or deactivate; Get
    /// never reaches the log). Returns etcd's answer: the alarm as now
    /// raised, or as it was before a deactivation.
    pub(super) fn alarm(&self, index: u64, req: &AlarmRequest) -> Result<AlarmResponse, Error> {
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
                txn.stage(BatchOp::Put {
                    cf: Cf::Meta,
                    key: alarm_key(one.0, one.1),
                    value: Vec::new(),
                });
                alarms.insert(one);
                listed(&alarms)
            }
            Ok(AlarmAction::Deactivate) => {
                let was = listed(&alarms);
                txn.stage(BatchOp::Delete {
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

    /// Enables or cancels the downgrade job at `index`.
    pub(super) fn set_downgrade(
        &self,
        index: u64,
        info: cairnpb::DowngradeInfo,
    ) -> Result<(), Error> {
        let mut current = lock(&self.downgrade);
        let mut txn = self.store.write();
        txn.stage(if info.enabled {
            BatchOp::Put {
                cf: Cf::Meta,
                key: DOWNGRADE.to_vec(),
                value: info.encode_to_vec(),
            }
        } else {
            BatchOp::Delete {
                cf: Cf::Meta,
                key: DOWNGRADE.to_vec(),
            }
        });
        txn.commit(Some(index))?;
        *current = info.enabled.then_some(info.target_version);
        Ok(())
    }
}
