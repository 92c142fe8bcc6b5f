//! The Maintenance API: status, alarms, the hashes (Hash, HashKV and the
//! leader's periodic corruption check), defragment, snapshot, move-leader,
//! downgrade and data key rotation, as etcd 3.5 answers them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::cairnpb::DowngradeInfo;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::downgrade_request::DowngradeAction;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DowngradeRequest, DowngradeResponse, HashKvResponse,
    HashResponse, StatusResponse,
};
use prost::Message;

use super::{blocking_failed, unexpected, Proposer, ETCD_VERSION};
use crate::auth::Caller;
use crate::entry::Command;
use crate::error::EtcdError;
use crate::machine::Applied;
use crate::metrics::MaintenanceMetrics;
use crate::raft::Dialer;
use crate::storage::{try_scan, Cf, Scan};

/// The cluster version a Cairn cluster reports (etcd's cluster versions are
/// major.minor.0).
pub const CLUSTER_VERSION: &str = "3.5.0";

/// The only version a 3.5 cluster may be downgraded to (one minor below).
const ALLOWED_DOWNGRADE: (u64, u64) = (3, 4);

/// What the Maintenance service, the Admin service and the leader's
/// corruption check call.
#[derive(Debug)]
pub struct MaintenanceApi {
    /// Alarms and downgrades go through it; it knows raft's status.
    proposer: Arc<Proposer>,
    /// How the corruption check reaches peers for their HashKV.
    dialer: Dialer,
    /// This member's zone (`--zone`), reported by Status.
    zone: String,
    /// Hash, defragmentation and snapshot durations (set once at start).
    metrics: std::sync::OnceLock<MaintenanceMetrics>,
}

impl MaintenanceApi {
    /// The shared write path (headers, the stop signal).
    pub fn proposer(&self) -> &Arc<Proposer> {
        &self.proposer
    }

    /// The Maintenance API over `proposer`.
    pub fn new(proposer: Arc<Proposer>, dialer: Dialer, zone: String) -> Self {
        Self {
            proposer,
            dialer,
            zone,
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Times hashes, defragmentations and snapshots in `metrics`.
    pub fn set_metrics(&self, metrics: MaintenanceMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// Maintenance.Status.
    pub async fn status(&self) -> Result<StatusResponse, EtcdError> {
        let store = Arc::clone(self.proposer.store());
        let size = tokio::task::spawn_blocking(move || store.engine().size())
            .await
            .map_err(blocking_failed)?;
        let raft = self.proposer.raft_status();
        let mut errors = Vec::new();
        if raft.leader == 0 {
            errors.push(EtcdError::NoLeader.to_string());
        }
        for alarm in self.proposer.machine().tables().alarms() {
            if alarm.member_id == self.proposer.identity().member_id || alarm.member_id == 0 {
                let name = AlarmType::try_from(alarm.alarm)
                    .map(|a| a.as_str_name())
                    .unwrap_or("UNKNOWN");
                errors.push(format!("memberID:{} alarm:{name} ", alarm.member_id));
            }
        }
        Ok(StatusResponse {
            header: Some(self.proposer.header(0)),
            version: ETCD_VERSION.to_string(),
            db_size: size.total as i64,
            leader: raft.leader,
            raft_index: raft.commit,
            raft_term: raft.term,
            raft_applied_index: raft.applied,
            errors,
            db_size_in_use: size.in_use as i64,
            is_learner: raft.is_learner,
            zone: self.zone.clone(),
        })
    }

    /// Maintenance.Alarm: list, raise or clear alarms. Raising and clearing
    /// are replicated, so every member refuses (or accepts) writes alike.
    /// Alarms are kept per (member id, type) exactly as given, member 0
    /// included (etcd does not read 0 as "every member" nor as "this one");
    /// GET lists every pair (of one type, unless NONE) after a linearizable
    /// barrier, as etcd reads them through raft.
    pub async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, EtcdError> {
        let action = AlarmAction::try_from(req.action).unwrap_or(AlarmAction::Get);
        if action == AlarmAction::Get {
            self.proposer.barrier().await?;
            let alarms = self
                .proposer
                .machine()
                .tables()
                .alarms()
                .into_iter()
                .filter(|a| req.alarm == AlarmType::None as i32 || a.alarm == req.alarm)
                .collect();
            return Ok(AlarmResponse {
                header: Some(self.proposer.header(0)),
                alarms,
            });
        }
        match self.proposer.propose(Command::Alarm(req)).await? {
            Applied::Alarm(r) => Ok(AlarmResponse {
                header: Some(self.proposer.header(0)),
                alarms: r.alarms,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Maintenance.Defragment: reclaims the space of deleted records.
    pub async fn defragment(&self, caller: &Caller) -> Result<(), EtcdError> {
        self.proposer.require_admin(caller).await?;
        let store = Arc::clone(self.proposer.store());
        let metrics = self.metrics.get();
        if let Some(m) = metrics {
            m.defrag_inflight.set(1);
        }
        let start = Instant::now();
        let done = tokio::task::spawn_blocking(move || store.engine().defragment()).await;
        if let Some(m) = metrics {
            m.defrag_inflight.set(0);
            m.defrag.observe(crate::metrics::since(start));
        }
        done.map_err(blocking_failed)??;
        Ok(())
    }

    /// The leader's corruption check (etcd's periodic check): compares this
    /// member's HashKV at its current revision with every other member's at
    /// the same revision and raises CORRUPT for a member whose hash differs
    /// (same compacted revision, different hash). Members that are behind,
    /// unreachable or compacted differently are skipped this round.
    pub async fn check_corruption(&self) -> Result<(), EtcdError> {
        if !self.proposer.is_leader() {
            return Ok(());
        }
        // Peers hash at the revision the leader hashed, not at the one its
        // header reports: writes applied in between would make a healthy
        // peer's hash differ (a false CORRUPT alarm under load).
        let (mine, revision) = self.hash_kv_and_revision(0).await?;
        for peer in self.proposer.machine().tables().members() {
            if peer.id == self.proposer.identity().member_id {
                continue;
            }
            let Some(url) = peer.peer_urls.first() else {
                continue;
            };
            let theirs = match crate::peer::hash_kv(&self.dialer, url, revision).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::debug!(peer = format!("{:x}", peer.id), error = %e, "corruption check skipped a member");
                    continue;
                }
            };
            if theirs.compact_revision == mine.compact_revision && theirs.hash != mine.hash {
                tracing::error!(
                    peer = format!("{:x}", peer.id),
                    revision,
                    leader_hash = mine.hash,
                    peer_hash = theirs.hash,
                    "members' hashes disagree; raising the CORRUPT alarm"
                );
                self.proposer
                    .propose(Command::Alarm(AlarmRequest {
                        action: AlarmAction::Activate as i32,
                        member_id: peer.id,
                        alarm: AlarmType::Corrupt as i32,
                    }))
                    .await?;
            }
        }
        Ok(())
    }

    /// Maintenance.HashKV at `revision` (0 = current).
    pub async fn hash_kv(
        &self,
        revision: i64,
        caller: &Caller,
    ) -> Result<HashKvResponse, EtcdError> {
        self.proposer.require_admin(caller).await?;
        Ok(self.hash_kv_and_revision(revision).await?.0)
    }

    /// [`Self::hash_kv`], and the revision actually hashed (`revision`, or
    /// the current one when `revision` is 0).
    async fn hash_kv_and_revision(
        &self,
        revision: i64,
    ) -> Result<(HashKvResponse, i64), EtcdError> {
        let store = Arc::clone(self.proposer.store());
        let start = Instant::now();
        let (hash, compact_revision, hashed) =
            tokio::task::spawn_blocking(move || store.hash_kv(revision))
                .await
                .map_err(|_| EtcdError::Internal)??;
        if let Some(m) = self.metrics.get() {
            m.hash_rev.observe(crate::metrics::since(start));
        }
        // etcd's header carries the member's current revision, not the
        // hashed one.
        let response = HashKvResponse {
            header: Some(self.proposer.header(0)),
            hash,
            compact_revision,
        };
        Ok((response, hashed))
    }

    /// Rotates the data key on every member (a replicated operation);
    /// returns the id now active.
    pub async fn rotate_data_key(&self, caller: &Caller) -> Result<u32, EtcdError> {
        self.proposer.require_admin(caller).await?;
        let next = self
            .proposer
            .machine()
            .keys()
            .map(crate::storage::crypto::KeyHandle::next_key_id)
            .ok_or(EtcdError::Internal)?;
        match self.proposer.propose(Command::RotateDataKey(next)).await? {
            Applied::KeyRotated(id) => Ok(id),
            _ => Err(EtcdError::Internal),
        }
    }

    /// Maintenance.MoveLeader: hands the leadership to `target` (a voter);
    /// only the leader can. Returns once `target` leads.
    pub async fn move_leader(&self, target: u64, caller: &Caller) -> Result<(), EtcdError> {
        self.proposer.require_admin(caller).await?;
        let replication = self.proposer.replication();
        let status = replication.raft.status();
        if !status.is_leader {
            return Err(EtcdError::NotLeader);
        }
        if !status.voters.contains(&target) {
            return Err(EtcdError::BadLeaderTransferee);
        }
        if target == status.id {
            return Ok(());
        }
        let mut changes = replication.raft.subscribe();
        let deadline = tokio::time::Instant::now() + replication.request_timeout;
        let mut retry = tokio::time::interval(Duration::from_millis(200));
        loop {
            if changes.borrow().leader == target {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Err(EtcdError::Timeout),
                _ = retry.tick() => {
                    // raft drops a transfer it cannot start (say, a step
                    // down in between); asking again is harmless.
                    if changes.borrow().is_leader {
                        replication.raft.send(crate::raft::Input::TransferLeader(target));
                    }
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(EtcdError::Stopped);
                    }
                }
            }
        }
    }

    /// Maintenance.Snapshot: a consistent copy of the replicated state
    /// (see [`crate::snapshot`] for the file format).
    pub async fn snapshot_file(&self, caller: &Caller) -> Result<Vec<u8>, EtcdError> {
        self.proposer.require_admin(caller).await?;
        let start = Instant::now();
        let file = self.snapshot_bytes().await?;
        if let Some(m) = self.metrics.get() {
            m.snapshot.observe(crate::metrics::since(start));
        }
        Ok(file)
    }

    /// [`Self::snapshot_file`], untimed.
    async fn snapshot_bytes(&self) -> Result<Vec<u8>, EtcdError> {
        let machine = Arc::clone(self.proposer.machine());
        let data = tokio::task::spawn_blocking(move || machine.consistent_snapshot(&mut |_| {}))
            .await
            .map_err(|_| EtcdError::Internal)?
            .map_err(|e| {
                tracing::error!(error = %e, "snapshot failed");
                EtcdError::Internal
            })?;
        let (index, state) = data;
        // Sealed with the member's master key: the file holds no plaintext
        // value.
        let master = self.proposer.machine().keys().map(|keys| keys.master());
        crate::snapshot::encode_file(index, &state, master).map_err(|e| {
            tracing::error!(error = %e, "writing the snapshot failed");
            EtcdError::Internal
        })
    }

    /// Maintenance.Hash: a hash of the member's whole replicated state, equal on
    /// members that applied the same entries (etcd hashes its bbolt file with
    /// CRC-32C; the values are not comparable with etcd's, only between Cairn
    /// members). Covers the key-value history as HashKV sees it (so physical
    /// compaction's progress does not matter), every lease record, the member
    /// table, the alarms, the downgrade job and the auth store. The header's
    /// revision is the hashed revision.
    pub async fn hash(&self, caller: &Caller) -> Result<HashResponse, EtcdError> {
        self.proposer.require_admin(caller).await?;
        let start = Instant::now();
        let hashed = self.hash_untimed().await;
        if let Some(m) = self.metrics.get() {
            m.hash.observe(crate::metrics::since(start));
        }
        hashed
    }

    /// [`Self::hash`], untimed.
    async fn hash_untimed(&self) -> Result<HashResponse, EtcdError> {
        let machine = Arc::clone(self.proposer.machine());
        let (hash, revision) = tokio::task::spawn_blocking(move || {
            let (kv_hash, _, revision) = machine.store().hash_kv(0)?;
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(&kv_hash.to_be_bytes());
            try_scan::<EtcdError>(
                machine.store().engine().as_ref(),
                Cf::Lease,
                &[],
                None,
                |k, v| {
                    ctx.update(k);
                    ctx.update(v);
                    Ok(Scan::Continue)
                },
            )?;
            for m in machine.tables().members() {
                ctx.update(&m.encode_length_delimited_to_vec());
            }
            for a in machine.tables().alarms() {
                ctx.update(&a.member_id.to_be_bytes());
                ctx.update(&a.alarm.to_be_bytes());
            }
            ctx.update(machine.tables().downgrade().unwrap_or_default().as_bytes());
            ctx.update(&machine.auth().state().encode());
            let digest = ctx.finish();
            let mut first = [0u8; 4];
            first.copy_from_slice(&digest.as_ref()[..4]);
            Ok::<_, EtcdError>((u32::from_be_bytes(first), revision))
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "hash task failed");
            EtcdError::Internal
        })??;
        Ok(HashResponse {
            header: Some(self.proposer.header(revision)),
            hash,
        })
    }

    /// Maintenance.Downgrade, as a 3.5 cluster answers it: VALIDATE checks the
    /// target (only 3.4 is allowed) and that no job is enabled; ENABLE does the
    /// same and enables the job (replicated); CANCEL cancels an enabled job.
    /// Every answer carries the cluster version. (Cairn members never run the
    /// target version, so an enabled job stays until it is cancelled.)
    pub async fn downgrade(
        &self,
        req: DowngradeRequest,
        caller: &Caller,
    ) -> Result<DowngradeResponse, EtcdError> {
        self.proposer.require_admin(caller).await?;
        let action = DowngradeAction::try_from(req.action).map_err(|_| EtcdError::UnknownMethod)?;
        match action {
            DowngradeAction::Validate | DowngradeAction::Enable => {
                // The format is checked before the read, as etcd does.
                let target =
                    parse_version(&req.version).ok_or(EtcdError::WrongDowngradeVersionFormat)?;
                self.proposer.barrier().await?;
                if target != ALLOWED_DOWNGRADE {
                    return Err(EtcdError::InvalidDowngradeTargetVersion);
                }
                if self.proposer.machine().tables().downgrade().is_some() {
                    return Err(EtcdError::DowngradeInProcess);
                }
                if action == DowngradeAction::Enable {
                    let (major, minor) = ALLOWED_DOWNGRADE;
                    self.propose_downgrade(DowngradeInfo {
                        enabled: true,
                        target_version: format!("{major}.{minor}.0"),
                    })
                    .await?;
                }
            }
            DowngradeAction::Cancel => {
                self.proposer.barrier().await?;
                if self.proposer.machine().tables().downgrade().is_none() {
                    return Err(EtcdError::NoInflightDowngrade);
                }
                self.propose_downgrade(DowngradeInfo::default()).await?;
            }
        }
        Ok(DowngradeResponse {
            header: Some(self.proposer.header(0)),
            version: CLUSTER_VERSION.to_string(),
        })
    }

    /// Proposes the downgrade job `info` (replicated).
    async fn propose_downgrade(&self, info: DowngradeInfo) -> Result<(), EtcdError> {
        match self.proposer.propose(Command::Downgrade(info)).await? {
            Applied::Downgraded => Ok(()),
            other => {
                tracing::error!(
                    applied = other.kind(),
                    "downgrade answered with the wrong kind of result"
                );
                Err(EtcdError::Internal)
            }
        }
    }
}

/// A downgrade target as etcd parses it (`X.Y.Z`, or `X.Y` read as
/// `X.Y.0`; a pre-release or build suffix is allowed): its major and minor.
fn parse_version(v: &str) -> Option<(u64, u64)> {
    let core = v.split(['-', '+']).next()?;
    let parts: Vec<&str> = core.split('.').collect();
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match parts.as_slice() {
        [major, minor] if core == v => Some((number(major)?, number(minor)?)),
        [major, minor, patch] => {
            number(patch)?;
            Some((number(major)?, number(minor)?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn downgrade_versions_as_etcd_parses_them() {
        let table = [
            ("3.4", Some((3, 4))),
            ("3.4.0", Some((3, 4))),
            ("3.4.27", Some((3, 4))),
            ("3.4.0-rc.1", Some((3, 4))),
            ("3.5", Some((3, 5))),
            ("", None),
            ("x", None),
            ("3", None),
            ("3.4.x", None),
            ("3.4.0.1", None),
            ("v3.4", None),
            ("3.4-rc", None),
        ];
        for (v, want) in table {
            assert_eq!(parse_version(v), want, "{v:?}");
        }
    }
}
