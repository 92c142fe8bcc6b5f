//! The Maintenance service: status, alarms, hashes, defragmentation, leader
//! transfer and snapshots.
//!
//! Several of these are about one member rather than the cluster (status,
//! hash, defragment, snapshot). On a multi-endpoint client they go to the
//! current endpoint; to pick the member, call them on
//! [`Client::endpoint`]`(i)`, or use [`Client::status_of`] and
//! [`Client::endpoint_status_all`].

use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, maintenance_client::MaintenanceClient, AlarmRequest, AlarmResponse,
    AlarmType, DefragmentRequest, DefragmentResponse, HashKvRequest, HashKvResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use tonic::Streaming;

use crate::client::EndpointStatus;
use crate::retry::Kind;
use crate::{Client, Error};

impl Client {
    /// Status of the current member (`Maintenance.Status`). A read: fails
    /// over, so the answer may come from another member than the one that
    /// was current; see [`Client::status_of`] for a chosen one.
    pub async fn status(&self) -> Result<StatusResponse, Error> {
        self.unary(Kind::Read, StatusRequest {}, |ch, req| async move {
            MaintenanceClient::new(ch).status(req).await
        })
        .await
    }

    /// Status of endpoint `index` (into [`Client::endpoints`]) only: no
    /// failover, since the point is to hear from that member.
    pub async fn status_of(&self, index: usize) -> Result<StatusResponse, Error> {
        self.endpoint(index)?.status_once().await
    }

    /// Status of every endpoint, one result per endpoint in
    /// [`Client::endpoints`] order (etcdctl's `endpoint status`). The members
    /// are asked concurrently, each once, so a member that is down shows as
    /// an error without delaying the others' answers. These are the
    /// endpoints the client was given; the cluster's full membership is in
    /// [`Client::member_list`].
    pub async fn endpoint_status_all(&self) -> Vec<EndpointStatus> {
        let mut tasks = Vec::new();
        for (index, endpoint) in self.endpoints().into_iter().enumerate() {
            let pinned = self.endpoint(index);
            let task = tokio::spawn(async move {
                match pinned {
                    Ok(client) => client.status_once().await,
                    Err(e) => Err(e),
                }
            });
            tasks.push((endpoint, task));
        }
        let mut all = Vec::with_capacity(tasks.len());
        for (endpoint, task) in tasks {
            let status = match task.await {
                Ok(status) => status,
                // The task only awaits one rpc; it cannot panic, and nothing aborts it.
                Err(join) => Err(Error::Status(tonic::Status::internal(format!(
                    "status task failed: {join}"
                )))),
            };
            all.push(EndpointStatus { endpoint, status });
        }
        all
    }

    /// One `Status` call on the current endpoint, without retries.
    async fn status_once(&self) -> Result<StatusResponse, Error> {
        let req = self.request(StatusRequest {});
        Ok(MaintenanceClient::new(self.channel())
            .status(req)
            .await?
            .into_inner())
    }

    /// List active alarms on all members (`Maintenance.Alarm` with action
    /// GET). A read.
    pub async fn alarms(&self) -> Result<AlarmResponse, Error> {
        self.alarm(Kind::Read, AlarmAction::Get, 0, AlarmType::None)
            .await
    }

    /// Raise `alarm` for member `member_id` (`Maintenance.Alarm` ACTIVATE).
    /// A write.
    pub async fn alarm_activate(
        &self,
        member_id: u64,
        alarm: AlarmType,
    ) -> Result<AlarmResponse, Error> {
        self.alarm(Kind::Write, AlarmAction::Activate, member_id, alarm)
            .await
    }

    /// Clear `alarm` of member `member_id` (`Maintenance.Alarm` DEACTIVATE),
    /// e.g. NOSPACE after compacting and defragmenting. A write.
    pub async fn alarm_deactivate(
        &self,
        member_id: u64,
        alarm: AlarmType,
    ) -> Result<AlarmResponse, Error> {
        self.alarm(Kind::Write, AlarmAction::Deactivate, member_id, alarm)
            .await
    }

    async fn alarm(
        &self,
        kind: Kind,
        action: AlarmAction,
        member_id: u64,
        alarm: AlarmType,
    ) -> Result<AlarmResponse, Error> {
        let message = AlarmRequest {
            action: action as i32,
            member_id,
            alarm: alarm as i32,
        };
        self.unary(kind, message, |ch, req| async move {
            MaintenanceClient::new(ch).alarm(req).await
        })
        .await
    }

    /// Hash of the current member's key-value history up to `revision`
    /// (0 = latest) (`Maintenance.HashKV`), to compare members: equal
    /// hashes at the same revision and compact revision mean equal data. A
    /// read; call it on [`Client::endpoint`]`(i)` to choose the member.
    pub async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, Error> {
        self.unary(
            Kind::Read,
            HashKvRequest { revision },
            |ch, req| async move { MaintenanceClient::new(ch).hash_kv(req).await },
        )
        .await
    }

    /// Ask the leader to hand leadership to member `target_id`
    /// (`Maintenance.MoveLeader`). Only the leader accepts it: send it
    /// through [`Client::endpoint`]`(i)` of the leader (see
    /// `StatusResponse::leader`). A write.
    pub async fn move_leader(&self, target_id: u64) -> Result<MoveLeaderResponse, Error> {
        self.unary(
            Kind::Write,
            MoveLeaderRequest { target_id },
            |ch, req| async move { MaintenanceClient::new(ch).move_leader(req).await },
        )
        .await
    }

    /// Defragment the current member's backend (`Maintenance.Defragment`),
    /// returning the space freed by compaction to the file system. The
    /// member stalls while it runs; do one member at a time through
    /// [`Client::endpoint`]`(i)`. A write.
    pub async fn defragment(&self) -> Result<DefragmentResponse, Error> {
        self.unary(Kind::Write, DefragmentRequest {}, |ch, req| async move {
            MaintenanceClient::new(ch).defragment(req).await
        })
        .await
    }

    /// Stream a snapshot of the current member's backend
    /// (`Maintenance.Snapshot`): the file is the concatenation of the
    /// responses' `blob`s, in order; `remaining_bytes` counts down. Opening
    /// the stream fails over like a read; a break in the middle is returned
    /// by the stream (start again: a snapshot cannot be resumed).
    pub async fn snapshot(&self) -> Result<Streaming<SnapshotResponse>, Error> {
        self.unary(Kind::Read, SnapshotRequest {}, |ch, req| async move {
            MaintenanceClient::new(ch).snapshot(req).await
        })
        .await
    }

    /// The whole snapshot of [`Client::snapshot`] in memory. Fine for small
    /// stores; stream larger ones to a file with `snapshot` instead.
    pub async fn snapshot_to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut stream = self.snapshot().await?;
        let mut blob = Vec::new();
        while let Some(chunk) = stream.message().await? {
            blob.extend_from_slice(&chunk.blob);
        }
        Ok(blob)
    }
}
