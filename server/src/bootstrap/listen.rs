//! Binding the client and peer listeners: the first step of a start, so
//! that a taken port fails before the data directory is touched.
//!
//! One listener per address: a URL given with both schemes
//! (`http://10.0.0.1:2379,https://10.0.0.1:2379`) is one port that serves
//! plain and TLS connections, told apart by their first byte, as etcd does.

use tokio::net::TcpListener;

use super::Error;
use crate::config::{host_port, is_https};

/// Listeners bound before `embed::start_with` (tests bind port 0 and learn the
/// ports before the cluster's URLs are decided).
#[derive(Debug, Default)]
pub struct Listeners {
    /// Client listeners; when empty, `listen_client_urls` are bound. The
    /// scheme of each is that of the `listen_client_urls` entry at its index.
    pub client: Vec<TcpListener>,
    /// Peer listeners; when empty, `listen_peer_urls` are bound (schemes
    /// likewise from `listen_peer_urls`).
    pub peer: Vec<TcpListener>,
}

/// A bound listener and the schemes it serves.
#[derive(Debug)]
pub struct Bound {
    /// The socket.
    pub listener: TcpListener,
    /// Listed as `https://`: serves TLS.
    pub secure: bool,
    /// Listed as `http://`: serves plain connections.
    pub insecure: bool,
}

/// The accept queue of every listener. etcd's (Go's) listeners take the
/// kernel's maximum, `net.core.somaxconn` (4096 on current Linux); tokio's
/// default of 1024 refused connection bursts that etcd takes.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds every address of `urls` (`http://host:port`, `https://host:port`)
/// once, in the order first listed.
pub async fn bind_all(urls: &[String]) -> Result<Vec<Bound>, Error> {
    let mut bound: Vec<(String, Bound)> = Vec::new();
    for url in urls {
        let address = host_port(url)?.to_string();
        // Port 0 asks for a new port each time it is listed.
        let shared = !address.ends_with(":0");
        if let Some((_, same)) = bound.iter_mut().find(|(a, _)| shared && *a == address) {
            same.secure |= is_https(url);
            same.insecure |= !is_https(url);
            continue;
        }
        let listener = bind_url(url, &address).await?;
        bound.push((
            address,
            Bound {
                listener,
                secure: is_https(url),
                insecure: !is_https(url),
            },
        ));
    }
    Ok(bound.into_iter().map(|(_, b)| b).collect())
}

async fn bind_url(url: &str, address: &str) -> Result<TcpListener, Error> {
    let listen_error = |source| Error::Listen {
        url: url.to_string(),
        source,
    };
    // Like TcpListener::bind: the first of the name's addresses that binds.
    let mut last = None;
    for addr in tokio::net::lookup_host(address)
        .await
        .map_err(listen_error)?
    {
        match bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(listen_error(e)),
        None => Err(crate::config::Error::BadUrl(url.to_string()).into()),
    }
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

/// The URL a bound listener serves, `http://ip:port` (`https://` when it
/// serves TLS).
pub fn local_url(bound: &Bound) -> Result<String, Error> {
    let local = bound
        .listener
        .local_addr()
        .map_err(|source| Error::Listen {
            url: "bound listener".into(),
            source,
        })?;
    let scheme = if bound.secure { "https" } else { "http" };
    Ok(format!("{scheme}://{local}"))
}

/// Listeners bound by the caller, with the schemes of `urls` by index.
fn given(listeners: Vec<TcpListener>, urls: &[String]) -> Vec<Bound> {
    listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| {
            let secure = urls.get(i).is_some_and(|u| is_https(u));
            Bound {
                listener,
                secure,
                insecure: !secure,
            }
        })
        .collect()
}

/// Every listener of a member, bound.
#[derive(Debug)]
pub struct BoundListeners {
    /// Client listeners (gRPC and HTTP).
    pub client: Vec<Bound>,
    /// Peer listeners.
    pub peer: Vec<Bound>,
    /// `--listen-metrics-urls`: metrics and health only.
    pub metrics: Vec<Bound>,
}

impl Listeners {
    /// These listeners, with those missing bound from `config`'s
    /// `listen_client_urls` and `listen_peer_urls`; the
    /// `listen_metrics_urls` are always bound here.
    pub async fn bind_missing(
        self,
        config: &crate::config::Config,
    ) -> Result<BoundListeners, Error> {
        let client = if self.client.is_empty() {
            bind_all(&config.listen_client_urls).await?
        } else {
            given(self.client, &config.listen_client_urls)
        };
        let peer = if self.peer.is_empty() {
            bind_all(&config.listen_peer_urls).await?
        } else {
            given(self.peer, &config.listen_peer_urls)
        };
        let metrics = bind_all(&config.listen_metrics_urls).await?;
        Ok(BoundListeners {
            client,
            peer,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn one_listener_per_address_and_a_new_one_per_port_zero() {
        let probe = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let urls = [
            format!("http://127.0.0.1:{port}"),
            format!("https://127.0.0.1:{port}"),
            "https://127.0.0.1:0".to_string(),
            "http://127.0.0.1:0".to_string(),
        ];
        let bound = bind_all(&urls).await.unwrap();
        let schemes: Vec<(bool, bool)> = bound.iter().map(|b| (b.secure, b.insecure)).collect();
        assert_eq!(schemes, [(true, true), (true, false), (false, true)]);
        assert_eq!(bound[0].listener.local_addr().unwrap().port(), port);
        assert!(local_url(&bound[1])
            .unwrap()
            .starts_with("https://127.0.0.1:"));
        assert!(local_url(&bound[2])
            .unwrap()
            .starts_with("http://127.0.0.1:"));
    }
}
