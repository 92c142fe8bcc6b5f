//! How this member opens connections to its peers.
//!
//! Every peer connection (raft streams, snapshots, and the member-to-member
//! calls of `crate::peer`) is made here, so one setting applies to all.

use std::net::IpAddr;
use std::time::Duration;

use cairn_tls::client::{ClientStream, ClientTls, Connector};
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// Connecting a raft stream failed (TCP or the TLS handshake).
    #[error("cannot connect to {url}: {reason}")]
    Stream {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
}

/// How this member opens connections to its peers.
#[derive(Clone, Debug, Default)]
pub struct Dialer {
    /// Local address to connect from (`--experimental-peer-source-address`);
    /// `None` lets the OS choose. A fault-injection proxy (cairn-jepsen) tells
    /// members apart by it, as a firewall would.
    source: Option<IpAddr>,
    /// TLS for `https://` peers (`--peer-cert-file`, ...); `None`: peer TLS
    /// is not configured, and an `https://` peer URL cannot be dialed.
    tls: Option<ClientTls>,
}

impl Dialer {
    /// Connections from `source` (or from whatever the OS picks), over TLS
    /// with `tls` to `https://` peers.
    pub fn new(source: Option<IpAddr>, tls: Option<ClientTls>) -> Self {
        Dialer { source, tls }
    }

    /// The endpoint and connector for `url`: tonic is given the `http://`
    /// form and the connector does the TLS (see `cairn_tls::client`).
    fn endpoint(&self, url: &str) -> Result<(Endpoint, Connector), DialError> {
        let (plain, https) = cairn_tls::client::tonic_url(url);
        let Some(connector) = Connector::for_url(self.source, https, self.tls.as_ref()) else {
            return Err(DialError::BadUrl {
                url: url.to_string(),
                reason: "an https:// peer, but peer TLS is not configured (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file)".into(),
            });
        };
        let endpoint = Endpoint::from_shared(plain)
            .map_err(|e| DialError::BadUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        Ok((endpoint, connector))
    }

    /// A channel to a peer URL, connected now.
    pub async fn connect(&self, url: &str) -> Result<Channel, DialError> {
        let (endpoint, connector) = self.endpoint(url)?;
        endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|source| DialError::Connect {
                url: url.to_string(),
                source,
            })
    }

    /// A connection of its own to a peer URL, for a raft stream
    /// (`super::stream`): TCP from this member's source address, then TLS
    /// for an `https://` peer, as a channel's connection would be.
    pub async fn connect_stream(&self, url: &str) -> Result<ClientStream, DialError> {
        let (endpoint, connector) = self.endpoint(url)?;
        let failed = |reason: String| DialError::Stream {
            url: url.to_string(),
            reason,
        };
        let connecting = connector.oneshot(endpoint.uri().clone());
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            // The stream's writer sends a batch per write itself.
            Ok(Ok(io)) => Ok(io.into_inner().into_inner()),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(failed(format!("no connection within {CONNECT_TIMEOUT:?}"))),
        }
    }

    /// A channel to a peer URL that connects on first use (and reconnects).
    pub fn lazy(&self, url: &str) -> Result<Channel, DialError> {
        let (endpoint, connector) = self.endpoint(url)?;
        Ok(endpoint.connect_with_connector_lazy(connector))
    }
}
