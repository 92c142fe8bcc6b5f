//! Binding the client and peer listeners: the first step of a start, so
//! that a taken port fails before the data directory is touched.

use tokio::net::TcpListener;

use super::Error;
use crate::config::host_port;

/// Listeners bound before `embed::start_with` (tests bind port 0 and learn the
/// ports before the cluster's URLs are decided).
#[derive(Debug, Default)]
pub struct Listeners {
    /// Client listeners; when empty, `listen_client_urls` are bound.
    pub client: Vec<TcpListener>,
    /// Peer listeners; when empty, `listen_peer_urls` are bound.
    pub peer: Vec<TcpListener>,
}

/// The accept queue of every listener. etcd's (Go's) listeners take the
/// kernel's maximum, `net.core.somaxconn` (4096 on current Linux); tokio's
/// default of 1024 refused connection bursts that etcd takes.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds every URL of `urls` (`http://host:port`).
pub async fn bind_all(urls: &[String]) -> Result<Vec<TcpListener>, Error> {
    let mut listeners = Vec::new();
    for url in urls {
        let listen_error = |source| Error::Listen {
            url: url.clone(),
            source,
        };
        // Like TcpListener::bind: the first of the name's addresses that binds.
        let mut last = None;
        for addr in tokio::net::lookup_host(host_port(url)?)
            .await
            .map_err(listen_error)?
        {
            match bind(addr) {
                Ok(listener) => {
                    last = Some(Ok(listener));
                    break;
                }
                Err(e) => last = Some(Err(e)),
            }
        }
        match last {
            Some(Ok(listener)) => listeners.push(listener),
            Some(Err(e)) => return Err(listen_error(e)),
            None => return Err(crate::config::Error::BadUrl(url.clone()).into()),
        }
    }
    Ok(listeners)
}

/// A listener on `addr` with [`LISTEN_BACKLOG`] (and, as std and Go do,
/// `SO_REUSEADDR`, so a restarted member binds while old connections linger
/// in TIME_WAIT).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The URL a bound listener serves, `http://ip:port`.
pub fn local_url(listener: &TcpListener) -> Result<String, Error> {
    let local = listener.local_addr().map_err(|source| Error::Listen {
        url: "bound listener".into(),
        source,
    })?;
    Ok(format!("http://{local}"))
}

impl Listeners {
    /// These listeners, with those missing bound from `config`'s
    /// `listen_client_urls` and `listen_peer_urls`: (client, peer).
    pub async fn bind_missing(
        self,
        config: &crate::config::Config,
    ) -> Result<(Vec<TcpListener>, Vec<TcpListener>), Error> {
        let client = if self.client.is_empty() {
            bind_all(&config.listen_client_urls).await?
        } else {
            self.client
        };
        let peer = if self.peer.is_empty() {
            bind_all(&config.listen_peer_urls).await?
        } else {
            self.peer
        };
        Ok((client, peer))
    }
}
