//! Connections: etcd's benchmark opens `--conns` clients, each over the
//! whole `--endpoints` list, and gives client i the connection i % conns.
//! etcd's clientv3 (3.4 and later) balances a connection's calls round-robin
//! over the endpoints; [`Conn`] does the same: one HTTP/2 channel per
//! endpoint, and each call (or stream) takes the next one.
//!
//! TLS (`--cacert`, `--cert`, `--key`) follows clientv3's rule: an
//! `https://` endpoint needs it, an endpoint without a scheme uses it when it
//! is given, and an `http://` one never does. The TLS itself is
//! `cairn_tls`'s connector, the one the server and the client use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cairn_tls::client::{tonic_url, ClientTls, Connector};
use tonic::transport::{Channel, Endpoint};

use crate::Error;

/// One benchmark connection: a channel to every endpoint, used in turn.
#[derive(Debug)]
pub struct Conn {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

/// `127.0.0.1:2379` -> `http://127.0.0.1:2379` (`https://` when `tls`); a
/// URL with a scheme is kept.
pub fn endpoint_uri(endpoint: &str, tls: bool) -> String {
    let endpoint = endpoint.trim();
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

/// The TLS of a run's connections, from `--cacert`/`--cert`/`--key`.
pub fn client_tls(options: &cairn_tls::client::ClientOptions) -> Result<ClientTls, Error> {
    ClientTls::new(options, &cairn_tls::Policy::default())
        .map_err(|e| Error::new(format!("bad TLS settings: {e}")))
}

impl Conn {
    /// Connects to every endpoint now, so that connection set-up is not
    /// measured as the first requests' latency. `dial_timeout` bounds each
    /// connect (none when zero, etcd's default). `tls` is the run's TLS, if
    /// any TLS flag was given.
    pub async fn connect(
        endpoints: &[String],
        dial_timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> Result<Conn, Error> {
        if endpoints.is_empty() {
            return Err(Error::new("no endpoint given (--endpoints)"));
        }
        let mut channels = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let uri = endpoint_uri(endpoint, tls.is_some());
            // tonic is given the http:// form; the connector does the TLS.
            let (plain, over_tls) = tonic_url(&uri);
            let mut target = Endpoint::from_shared(plain)
                .map_err(|e| Error::new(format!("bad endpoint {endpoint:?}: {e}")))?
                .tcp_nodelay(true);
            if !dial_timeout.is_zero() {
                target = target.connect_timeout(dial_timeout);
            }
            let connected = match (over_tls, tls) {
                (false, _) => target.connect().await,
                (true, Some(tls)) => {
                    target
                        .connect_with_connector(Connector::new(None, Some(tls.clone())))
                        .await
                }
                (true, None) => {
                    return Err(Error::new(format!(
                        "{uri}: an https:// endpoint needs --cacert (or --insecure-skip-tls-verify)"
                    )))
                }
            };
            let channel = connected
                .map_err(|e| Error::new(format!("dial error: {uri}: {}", with_sources(&e))))?;
            channels.push(channel);
        }
        Ok(Conn {
            channels,
            next: AtomicUsize::new(0),
        })
    }

    /// The channel for the next call (round-robin over the endpoints).
    pub fn pick(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }
}

/// An error and its causes, `a: b: c`.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How a failed call is named in the error distribution: etcd's server
/// errors by their message (clientv3 turns them into errors whose text is
/// the message), anything else as grpc-go prints a status.
pub fn error_text(status: &tonic::Status) -> String {
    let message = status.message();
    if message.starts_with("etcdserver: ") || message.starts_with("mvcc: ") {
        message.to_string()
    } else {
        format!("rpc error: code = {:?} desc = {message}", status.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_error_texts() {
        assert_eq!(
            endpoint_uri("127.0.0.1:2379", false),
            "http://127.0.0.1:2379"
        );
        assert_eq!(endpoint_uri(" https://h:1 ", false), "https://h:1");
        // With TLS flags, clientv3 dials a scheme-less endpoint over TLS and
        // an http:// one without.
        assert_eq!(
            endpoint_uri("127.0.0.1:2379", true),
            "https://127.0.0.1:2379"
        );
        assert_eq!(endpoint_uri("http://h:1", true), "http://h:1");
        assert_eq!(
            error_text(&tonic::Status::unavailable("etcdserver: no leader")),
            "etcdserver: no leader"
        );
        assert_eq!(
            error_text(&tonic::Status::deadline_exceeded("late")),
            "rpc error: code = DeadlineExceeded desc = late"
        );
    }
}
