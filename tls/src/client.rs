//! Connections to `http://` and `https://` URLs, for tonic channels: a
//! member to its peers, and the Rust client, benchmark and harness to
//! members.
//!
//! tonic is given an `http://` URL and this module's [`Connector`], which
//! does the TLS itself: so tonic's own TLS features stay off (one TLS
//! implementation, with the reloading and verification of this crate).

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::coalesce::CoalesceWrites;
use crate::reload::KeyPair;
use crate::verify::ServerVerifier;
use crate::{Policy, TlsError};

/// What a client trusts and presents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// CAs that sign the servers' certificates (etcdctl's `--cacert`).
    pub ca_file: Option<PathBuf>,
    /// The client certificate (`--cert`), for servers that require one.
    pub cert_file: Option<PathBuf>,
    /// Its key (`--key`).
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate (etcdctl's `--insecure-skip-tls-verify`;
    /// a member dialing self-signed `--peer-auto-tls` peers).
    pub insecure_skip_verify: bool,
}

impl From<&crate::TlsInfo> for ClientOptions {
    /// What a member presents to its peers and how it checks them: its peer
    /// certificate, the peer CA, and no check of self-signed peers.
    fn from(info: &crate::TlsInfo) -> Self {
        ClientOptions {
            ca_file: info.trusted_ca_file.clone(),
            cert_file: info.cert_file.clone(),
            key_file: info.key_file.clone(),
            insecure_skip_verify: info.self_signed,
        }
    }
}

/// A client side's TLS configuration.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// rustls's configuration (certificate and CA reload themselves).
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// The TLS of a client with `options`; errors are errors at start.
    pub fn new(options: &ClientOptions, policy: &Policy) -> Result<Self, TlsError> {
        let provider = policy.provider();
        let verifier = match (&options.ca_file, options.insecure_skip_verify) {
            (_, true) => ServerVerifier::skipping_verification(provider),
            (Some(ca), false) => ServerVerifier::trusting(ca, provider)?,
            (None, false) => {
                return Err(TlsError::Setting(
                    "a TLS client needs a trusted CA file to verify servers (or to be told to skip verification)".into(),
                ))
            }
        };
        let builder = ClientConfig::builder_with_provider(Arc::clone(provider))
            .with_protocol_versions(policy.versions())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match (&options.cert_file, &options.key_file) {
            (Some(cert), Some(key)) => {
                builder.with_client_cert_resolver(Arc::new(KeyPair::new(cert, key, provider)?))
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Setting(
                    "a client certificate and its key must be given together".into(),
                ))
            }
        };
        // gRPC is HTTP/2; servers (Go's included) select it by ALPN.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// A client with a rustls configuration made elsewhere (it should
    /// offer ALPN `h2`).
    pub fn from_config(config: Arc<ClientConfig>) -> Self {
        ClientTls { config }
    }

    /// Connects over TLS on `tcp` to the server named `host`.
    async fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<ClientStream> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        };
        let stream = TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await?;
        Ok(ClientStream::Tls(Box::new(stream)))
    }
}

/// Splits `url` into the URL to give tonic (`http://` for an `https://` one)
/// and whether TLS is needed.
pub fn tonic_url(url: &str) -> (String, bool) {
    match url.strip_prefix("https://") {
        Some(rest) => (format!("http://{rest}"), true),
        None => (url.to_string(), false),
    }
}

/// A connection, plain or TLS.
#[derive(Debug)]
pub enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A tonic connector: TCP (from a chosen local address, if any), then TLS
/// when this connector has a [`ClientTls`]; either way a connection whose
/// small writes leave together ([`CoalesceWrites`]: requests issued in one
/// burst leave in one system call, not one each).
#[derive(Clone, Debug)]
pub struct Connector {
    /// TCP connections (nodelay, local address).
    http: HttpConnector,
    /// TLS over them, or none for `http://` URLs.
    tls: Option<ClientTls>,
}

impl Connector {
    /// Connections from `local` (or wherever the OS picks), over TLS when
    /// `tls` is given.
    pub fn new(local: Option<IpAddr>, tls: Option<ClientTls>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_local_address(local);
        http.enforce_http(false);
        Connector { http, tls }
    }

    /// The connector for a URL [`tonic_url`] found to be `https://` or
    /// not: TLS with `tls` for `https://`, none for `http://`. None for an
    /// `https://` URL without TLS settings (the caller says which it lacks).
    pub fn for_url(local: Option<IpAddr>, https: bool, tls: Option<&ClientTls>) -> Option<Self> {
        match (https, tls) {
            (false, _) => Some(Self::new(local, None)),
            (true, Some(tls)) => Some(Self::new(local, Some(tls.clone()))),
            (true, None) => None,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<CoalesceWrites<ClientStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default().to_string();
        let connecting = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            let stream = match tls {
                Some(tls) => tls.connect(&host, tcp).await?,
                None => ClientStream::Plain(tcp),
            };
            Ok(TokioIo::new(CoalesceWrites::new(stream)))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tower_service::Service;

    #[test]
    fn a_url_gets_tls_by_its_scheme() {
        let options = ClientOptions {
            insecure_skip_verify: true,
            ..ClientOptions::default()
        };
        let tls = ClientTls::new(&options, &Policy::default()).unwrap();
        let with = |https, tls| Connector::for_url(None, https, tls).map(|c| c.tls.is_some());
        assert_eq!(with(false, None), Some(false));
        assert_eq!(
            with(false, Some(&tls)),
            Some(false),
            "http:// never does TLS"
        );
        assert_eq!(with(true, Some(&tls)), Some(true));
        assert_eq!(with(true, None), None, "https:// without TLS settings");
    }

    #[tokio::test]
    async fn a_connection_gathers_small_writes_until_flushed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let mut connector = Connector::new(None, None);
        let (connected, accepted) = tokio::join!(connector.call(url), listener.accept());
        let mut io = connected.unwrap().into_inner();
        let (mut server, _) = accepted.unwrap();
        // What makes h2 copy payloads under 1 KiB into its own buffer.
        assert!(!io.is_write_vectored());
        io.write_all(b"two ").await.unwrap();
        io.write_all(b"requests").await.unwrap();
        let mut got = [0u8; 12];
        assert_eq!(
            server.try_read(&mut got).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "nothing reaches the socket before a flush"
        );
        io.flush().await.unwrap();
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"two requests");
    }
}
