//! Finding the cluster: a member joining an existing cluster learns its id
//! (the one MemberAdd chose) and the members' peer URLs from a peer; any
//! member finds its peers through the replicated member table, or, before
//! it has one, through what it learnt when joining and `--initial-cluster`.

use std::collections::HashMap;
use std::sync::Weak;

use super::ids::member_id;
use super::Error;
use crate::config::{ClusterState, Config};
use crate::machine::Machine;
use crate::raft::{Dialer, Resolver};

/// What a member joining an existing cluster learnt from it.
#[derive(Debug, Default)]
pub struct Joined {
    /// The id MemberAdd gave this member (None: not joining).
    pub id: Option<u64>,
    /// The cluster's members (id, peer URL) when it joined: until its first
    /// snapshot brings the member table, this is how it finds members that
    /// were themselves added later (their ids are random, not derived from
    /// `--initial-cluster`), the leader among them.
    pub peers: Vec<(u64, String)>,
}

/// For a new member joining an existing cluster: its id, as MemberAdd chose
/// it, found by its peer URLs in the member table of a member listed in
/// `--initial-cluster` (etcd does the same). Nothing when not joining, or
/// when the data directory already has an id.
pub async fn join(config: &Config, dialer: &Dialer) -> Result<Joined, Error> {
    if config.initial_cluster_state != ClusterState::Existing || config.data_dir.join("db").exists()
    {
        return Ok(Joined::default());
    }
    let bad = |reason: String| Error::from(crate::config::Error::BadCluster(reason));
    let others: Vec<String> = config
        .initial_members()?
        .into_iter()
        .filter(|(name, _)| *name != config.name)
        .flat_map(|(_, urls)| urls)
        .collect();
    let table = crate::peer::fetch_members(dialer, &others)
        .await
        .ok_or_else(|| bad("no member of --initial-cluster answers".into()))?;
    let id = table
        .members
        .iter()
        .find(|m| {
            m.peer_urls
                .iter()
                .any(|u| config.initial_advertise_peer_urls.contains(u))
        })
        .map(|m| m.id)
        .ok_or_else(|| {
            bad(format!(
                "the cluster has no member with peer URLs {:?}: add it with MemberAdd first",
                config.initial_advertise_peer_urls
            ))
        })?;
    let peers = table
        .members
        .iter()
        .filter_map(|m| m.peer_urls.first().map(|u| (m.id, u.clone())))
        .collect();
    Ok(Joined {
        id: Some(id),
        peers,
    })
}

/// Where the raft transport finds a peer: the replicated member table;
/// until it is known (a joining member before its first snapshot), the
/// table the cluster gave it when it joined, and `--initial-cluster`.
/// `machine` is weak: peer tasks that outlive a stop must not keep the
/// data open.
pub fn resolver(
    config: &Config,
    joined: Vec<(u64, String)>,
    machine: Weak<Machine>,
) -> Result<Resolver, Error> {
    let initial: HashMap<u64, String> = config
        .initial_members()?
        .into_iter()
        .filter_map(|(_, urls)| {
            let id = member_id(&urls, &config.initial_cluster_token);
            urls.first().map(|u| (id, u.clone()))
        })
        .chain(joined)
        .collect();
    Ok(std::sync::Arc::new(move |id| {
        machine
            .upgrade()
            .and_then(|machine| machine.tables().member(id))
            .and_then(|m| m.peer_urls.first().cloned())
            .or_else(|| initial.get(&id).cloned())
    }))
}
