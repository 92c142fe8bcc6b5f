//! Publishing the member's name, client URLs and zone to the cluster.

use std::sync::Arc;
use std::time::Duration;

use super::Shutdown;
use crate::member::Apis;

/// How long to wait before trying to publish again.
const RETRY: Duration = Duration::from_millis(200);

/// Announces this member's name, client URLs and zone, retrying until the
/// cluster has applied them (a new cluster may not have a leader yet).
pub async fn publish(
    member: Arc<Apis>,
    name: String,
    client_urls: Vec<String>,
    timeout: Duration,
    mut shutdown: Shutdown,
) {
    loop {
        let me = member
            .proposer()
            .machine()
            .tables()
            .member(member.identity().member_id);
        // Published already (by an earlier start) counts too: the line
        // says the cluster knows the member, as etcd's does at each start.
        let published = if me.as_ref().is_some_and(|m| {
            m.name == name && m.client_urls == client_urls && m.zone == member.cluster().zone()
        }) {
            true
        } else if me.is_some() {
            match member
                .cluster()
                .publish_attributes(name.clone(), client_urls.clone())
                .await
            {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "publishing member attributes; will retry");
                    false
                }
            }
        } else {
            false
        };
        if published {
            crate::logging::lifecycle::published(
                member.identity().member_id,
                member.proposer().cluster_id(),
                &name,
                &client_urls,
                timeout,
            );
            return;
        }
        tokio::select! {
            () = shutdown.recv() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}
