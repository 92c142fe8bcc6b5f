//! How this member opens connections to its peers.
//!
//! Every peer channel (raft streams, snapshots, and the member-to-member
//! calls of `crate::peer`) is made here, so one setting applies to all.

use std::net::IpAddr;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use tonic::transport::{Channel, Endpoint};

/// Why a channel to a peer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The peer URL is not one tonic can connect to.
    #[error("bad peer URL {url}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// tonic's complaint.
        reason: String,
    },
    /// Connecting failed.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// tonic's error.
        source: tonic::transport::Error,
    },
}

/// How this member opens connections to its peers.
#[derive(Clone, Debug, Default)]
pub struct Dialer {
    /// Local address to connect from (`--experimental-peer-source-address`);
    /// `None` lets the OS choose. A fault-injection proxy (cairn-jepsen) tells
    /// members apart by it, as a firewall would.
    source: Option<IpAddr>,
}

impl Dialer {
    /// Connections from `source` (or from whatever the OS picks).
    pub fn new(source: Option<IpAddr>) -> Self {
        Dialer { source }
    }

    fn endpoint(url: &str) -> Result<Endpoint, DialError> {
        Ok(Endpoint::from_shared(url.to_string())
            .map_err(|e| DialError::BadUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5)))
    }

    fn connector(&self) -> HttpConnector {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_local_address(self.source);
        connector
    }

    /// A channel to a peer URL, connected now.
    pub async fn connect(&self, url: &str) -> Result<Channel, DialError> {
        let endpoint = Self::endpoint(url)?;
        match self.source {
            None => endpoint.connect().await,
            Some(_) => endpoint.connect_with_connector(self.connector()).await,
        }
        .map_err(|source| DialError::Connect {
            url: url.to_string(),
            source,
        })
    }

    /// A channel to a peer URL that connects on first use (and reconnects).
    pub fn lazy(&self, url: &str) -> Result<Channel, DialError> {
        let endpoint = Self::endpoint(url)?;
        Ok(match self.source {
            None => endpoint.connect_lazy(),
            Some(_) => endpoint.connect_with_connector_lazy(self.connector()),
        })
    }
}
