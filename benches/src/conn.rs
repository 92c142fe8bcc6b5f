//! Connections: etcd's benchmark opens `--conns` clients, each over the
//! whole `--endpoints` list, and gives client i the connection i % conns.
//! etcd's clientv3 (3.4 and later) balances a connection's calls round-robin
//! over the endpoints; [`Conn`] does the same: one HTTP/2 channel per
//! endpoint, and each call (or stream) takes the next one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::Error;

/// One benchmark connection: a channel to every endpoint, used in turn.
#[derive(Debug)]
pub struct Conn {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

/// `127.0.0.1:2379` -> `http://127.0.0.1:2379`; a URL with a scheme is kept.
pub fn endpoint_uri(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

impl Conn {
    /// Connects to every endpoint now, so that connection set-up is not
    /// measured as the first requests' latency. `dial_timeout` bounds each
    /// connect (none when zero, etcd's default).
    pub async fn connect(endpoints: &[String], dial_timeout: Duration) -> Result<Conn, Error> {
        if endpoints.is_empty() {
            return Err(Error::new("no endpoint given (--endpoints)"));
        }
        let mut channels = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let uri = endpoint_uri(endpoint);
            let mut target = Endpoint::from_shared(uri.clone())
                .map_err(|e| Error::new(format!("bad endpoint {endpoint:?}: {e}")))?
                .tcp_nodelay(true);
            if !dial_timeout.is_zero() {
                target = target.connect_timeout(dial_timeout);
            }
            let channel = target
                .connect()
                .await
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
        assert_eq!(endpoint_uri("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(endpoint_uri(" https://h:1 "), "https://h:1");
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
