//! Maintenance operations beyond status and alarms: the whole-store Hash and
//! the Downgrade job, as etcd 3.5 answers them.

use std::sync::Arc;

use cairn_proto::cairnpb::DowngradeInfo;
use cairn_proto::etcdserverpb::downgrade_request::DowngradeAction;
use cairn_proto::etcdserverpb::{DowngradeRequest, DowngradeResponse, HashResponse};
use prost::Message;

use crate::entry::Command;
use crate::error::EtcdError;
use crate::machine::Applied;
use crate::member::Member;
use crate::storage::{try_scan, Cf, Scan};

/// The cluster version a Cairn cluster reports (etcd's cluster versions are
/// major.minor.0).
pub const CLUSTER_VERSION: &str = "3.5.0";

/// The only version a 3.5 cluster may be downgraded to (one minor below).
const ALLOWED_DOWNGRADE: (u64, u64) = (3, 4);

/// Maintenance.Hash: a hash of the member's whole replicated state, equal on
/// members that applied the same entries (etcd hashes its bbolt file with
/// CRC-32C; the values are not comparable with etcd's, only between Cairn
/// members). Covers the key-value history as HashKV sees it (so physical
/// compaction's progress does not matter), every lease record, the member
/// table, the alarms and the downgrade job. The header's revision is the
/// hashed revision.
pub async fn hash(member: &Member) -> Result<HashResponse, EtcdError> {
    let machine = Arc::clone(member.machine());
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
        for m in machine.members() {
            ctx.update(&m.encode_length_delimited_to_vec());
        }
        for a in machine.alarms() {
            ctx.update(&a.member_id.to_be_bytes());
            ctx.update(&a.alarm.to_be_bytes());
        }
        ctx.update(machine.downgrade().unwrap_or_default().as_bytes());
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
        header: Some(member.header(revision)),
        hash,
    })
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

/// Maintenance.Downgrade, as a 3.5 cluster answers it: VALIDATE checks the
/// target (only 3.4 is allowed) and that no job is enabled; ENABLE does the
/// same and enables the job (replicated); CANCEL cancels an enabled job.
/// Every answer carries the cluster version. (Cairn members never run the
/// target version, so an enabled job stays until it is cancelled.)
pub async fn downgrade(
    member: &Member,
    req: DowngradeRequest,
) -> Result<DowngradeResponse, EtcdError> {
    let action = DowngradeAction::try_from(req.action).map_err(|_| EtcdError::UnknownMethod)?;
    match action {
        DowngradeAction::Validate | DowngradeAction::Enable => {
            // The format is checked before the read, as etcd does.
            let target =
                parse_version(&req.version).ok_or(EtcdError::WrongDowngradeVersionFormat)?;
            member.barrier().await?;
            if target != ALLOWED_DOWNGRADE {
                return Err(EtcdError::InvalidDowngradeTargetVersion);
            }
            if member.machine().downgrade().is_some() {
                return Err(EtcdError::DowngradeInProcess);
            }
            if action == DowngradeAction::Enable {
                let (major, minor) = ALLOWED_DOWNGRADE;
                propose(
                    member,
                    DowngradeInfo {
                        enabled: true,
                        target_version: format!("{major}.{minor}.0"),
                    },
                )
                .await?;
            }
        }
        DowngradeAction::Cancel => {
            member.barrier().await?;
            if member.machine().downgrade().is_none() {
                return Err(EtcdError::NoInflightDowngrade);
            }
            propose(member, DowngradeInfo::default()).await?;
        }
    }
    Ok(DowngradeResponse {
        header: Some(member.header(0)),
        version: CLUSTER_VERSION.to_string(),
    })
}

async fn propose(member: &Member, info: DowngradeInfo) -> Result<(), EtcdError> {
    match member.propose(Command::Downgrade(info)).await? {
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
