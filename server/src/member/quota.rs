//! etcd's backend quota (`--quota-backend-bytes`) and the NOSPACE alarm:
//! writes that add data are refused once the database has grown past it.
//! Shared by the KV and Lease APIs (puts and grants add data).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{AlarmRequest, AlarmType};

use super::{blocking_failed, Proposer};
use crate::entry::Command;
use crate::error::EtcdError;

/// How long the database size read for the quota check is reused.
const DB_SIZE_REFRESH: Duration = Duration::from_millis(500);

/// The quota check of one member.
#[derive(Debug)]
pub struct Quota {
    /// Reads the alarms and the store; raises NOSPACE through raft.
    proposer: Arc<Proposer>,
    /// `--quota-backend-bytes`: past this database size, writes that add
    /// data raise the NOSPACE alarm and are refused.
    bytes: u64,
    /// The database size last read, and when: a property query on the
    /// blocking pool is too much to pay on every write.
    db_size: Mutex<Option<(Instant, u64)>>,
}

impl Quota {
    /// A quota of `bytes` over `proposer`'s store.
    pub fn new(proposer: Arc<Proposer>, bytes: u64) -> Self {
        Self {
            proposer,
            bytes,
            db_size: Mutex::new(None),
        }
    }

    /// Refuses writes that add data while NOSPACE is raised; raises it when
    /// the database has grown past the quota (etcd's quota check).
    pub async fn check(&self, cost: usize) -> Result<(), EtcdError> {
        if self
            .proposer
            .machine()
            .tables()
            .has_alarm(AlarmType::Nospace)
        {
            return Err(EtcdError::NoSpace);
        }
        let total = self.db_size().await?;
        if total.saturating_add(cost as u64) > self.bytes {
            tracing::warn!(
                db_size = total,
                quota = self.bytes,
                "database space exceeded; raising the NOSPACE alarm"
            );
            let raise = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.proposer.identity().member_id,
                alarm: AlarmType::Nospace as i32,
            };
            let _ = self.proposer.propose(Command::Alarm(raise)).await;
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }

    /// The database size for the quota check, read from the engine at most
    /// every [`DB_SIZE_REFRESH`].
    async fn db_size(&self) -> Result<u64, EtcdError> {
        let cached = *crate::locks::lock(&self.db_size);
        if let Some((at, size)) = cached {
            if at.elapsed() < DB_SIZE_REFRESH {
                return Ok(size);
            }
        }
        let store = Arc::clone(self.proposer.store());
        let size = tokio::task::spawn_blocking(move || store.engine().size())
            .await
            .map_err(blocking_failed)?;
        *crate::locks::lock(&self.db_size) = Some((Instant::now(), size.total));
        Ok(size.total)
    }
}
