//! The calling side of member-to-member calls.

use std::collections::HashMap;
use std::sync::Mutex;

use cairn_proto::cairnpb::peer_client::PeerClient;
use cairn_proto::cairnpb::{lease_forward, Done, LeaseForward, LeaseForwardResponse, MemberTable};
use cairn_proto::etcdserverpb::{HashKvRequest, HashKvResponse};
use tonic::transport::Channel;

use super::renewals::{RenewalStreams, Renewed};
use super::Error;
use crate::raft::transport::MAX_PEER_MESSAGE;
use crate::raft::Dialer;

pub(super) fn client(channel: Channel) -> PeerClient<Channel> {
    PeerClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE)
}

/// Long-lived channels to peers for lease forwarding: one multiplexed
/// HTTP/2 connection per peer URL, opened lazily and reused, instead of a
/// connection per request; renewals go on a stream of their own over it
/// (see `renewals`).
#[derive(Debug, Default)]
pub struct PeerChannels {
    /// Peer URL -> channel.
    channels: Mutex<HashMap<String, Channel>>,
    /// How the channels connect.
    dialer: Dialer,
    /// Renewals, on one stream per leader over these channels.
    renewals: RenewalStreams,
}

impl PeerChannels {
    /// Channels opened through `dialer`.
    pub fn new(dialer: Dialer) -> Self {
        PeerChannels {
            channels: Mutex::default(),
            dialer,
            renewals: RenewalStreams::default(),
        }
    }

    /// How this member connects to its peers.
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// The channel to `url` (created on first use, lazily connected).
    fn get(&self, url: &str) -> Result<Channel, Error> {
        let mut channels = crate::locks::lock(&self.channels);
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let channel = self
            .dialer
            .lazy(url)
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }

    /// Renews lease `id` at the leader at `url`, on its renewal stream (or
    /// with a call, if that leader has no such stream); the lease's TTL.
    pub async fn renew(&self, url: &str, id: i64) -> Result<i64, Error> {
        match self.renewals.renew(url, || self.get(url), id).await {
            Renewed::Answer(result) => result,
            Renewed::Unsupported => {
                let req = LeaseForward {
                    request: Some(lease_forward::Request::Renew(id)),
                };
                Ok(self.forward_lease(url, req).await?.ttl)
            }
        }
    }

    /// Forwards a lease request to the leader at `url`.
    pub async fn forward_lease(
        &self,
        url: &str,
        req: LeaseForward,
    ) -> Result<LeaseForwardResponse, Error> {
        let resp = client(self.get(url)?).lease(req).await?;
        Ok(resp.into_inner())
    }
}

/// Asks the members at `peer_urls` for the member table; the first answer wins.
pub async fn fetch_members(dialer: &Dialer, peer_urls: &[String]) -> Option<MemberTable> {
    for url in peer_urls {
        let Ok(channel) = dialer.connect(url).await else {
            continue;
        };
        match client(channel).members(Done {}).await {
            Ok(table) => return Some(table.into_inner()),
            Err(status) => {
                tracing::debug!(peer = %url, error = %Error::from(status), "no member table from a peer");
            }
        }
    }
    None
}

/// The HashKV of the member at peer URL `url`, at `revision`.
pub async fn hash_kv(dialer: &Dialer, url: &str, revision: i64) -> Result<HashKvResponse, Error> {
    let channel = dialer
        .connect(url)
        .await
        .map_err(|e| Error::Unreachable(e.to_string()))?;
    let resp = client(channel).hash_kv(HashKvRequest { revision }).await?;
    Ok(resp.into_inner())
}
