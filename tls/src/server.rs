//! A listener's connections, TLS or plain, for tonic's server.
//!
//! [`TlsIncoming`] accepts TCP connections and hands tonic only those whose
//! handshake succeeded. Handshakes run as tasks of the stream itself (a slow
//! or silent client never holds up the accept loop), bounded by a timeout,
//! and end with the stream. A connection refused (plaintext on a TLS port,
//! an unknown CA, an expired or revoked certificate) is logged with the
//! remote address and the reason, and closed; nothing else is affected.
//!
//! Each connection carries a [`ConnInfo`] into every request's extensions:
//! the remote address and, with client certificates, the verified Common
//! Name, which is the caller's identity for authentication.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::server::danger::ClientCertVerifier;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use crate::reload::KeyPair;
use crate::verify::ClientVerifier;
use crate::{files, Policy, TlsError, TlsInfo};

/// How long a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// A server side's TLS: its certificate and how it checks clients.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// rustls's configuration (certificate and verifier reload themselves).
    config: Arc<ServerConfig>,
    /// Whether clients must present certificates (and so have a CN).
    client_certs: bool,
    /// Whether a client certificate's names must match the address it
    /// connects from (etcd's check on its peer listener).
    check_client_san: bool,
}

impl ServerTls {
    /// The TLS of a side with `info`'s files, offering `alpn` protocols.
    /// Errors are errors at start: missing, unreadable or mismatched files.
    pub fn new(info: &TlsInfo, policy: &Policy, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let (Some(cert), Some(key)) = (&info.cert_file, &info.key_file) else {
            return Err(TlsError::Setting(format!(
                "KeyFile and CertFile must both be present[key: {}, cert: {}]",
                info.key_file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                info.cert_file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            )));
        };
        let provider = policy.provider();
        let key_pair = Arc::new(KeyPair::new(cert, key, provider)?);
        let builder = ServerConfig::builder_with_provider(Arc::clone(provider))
            .with_protocol_versions(policy.versions())?;
        let client_certs = info.requires_client_certs();
        let builder = if client_certs {
            let Some(ca) = &info.trusted_ca_file else {
                return Err(TlsError::Setting(
                    "client certificate authentication needs a trusted CA file (--trusted-ca-file / --peer-trusted-ca-file)".into(),
                ));
            };
            let verifier: Arc<dyn ClientCertVerifier> = Arc::new(ClientVerifier::new(
                ca,
                info.crl_file.as_deref(),
                info.allowed_cn.clone(),
                info.allowed_hostname.clone(),
                provider,
            )?);
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(key_pair);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            config: Arc::new(config),
            client_certs,
            check_client_san: false,
        })
    }

    /// This TLS, also refusing a client certificate whose IP addresses and
    /// DNS names (if it has any) do not include the address the client
    /// connects from, as etcd's peer listener does: a member's certificate
    /// copied to another machine does not let that machine join.
    pub fn checking_client_san(mut self) -> Self {
        self.check_client_san = true;
        self
    }

    /// Whether clients must present certificates.
    pub fn requires_client_certs(&self) -> bool {
        self.client_certs
    }
}

/// What a listener accepts.
#[derive(Clone, Debug)]
pub enum Security {
    /// Plain TCP only (`http://`).
    Plain,
    /// TLS only (`https://`): a plaintext client is refused.
    Tls(ServerTls),
    /// Both, told apart by the first byte (the URL listed with both
    /// schemes, as etcd allows).
    Both(ServerTls),
}

/// Who is at the other end of a connection: in every request's extensions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// The remote address.
    pub remote_addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The verified client certificate's Common Name (TLS with client
    /// certificates only): etcd's user name when auth is enabled.
    pub common_name: Option<String>,
}

impl ConnInfo {
    /// The connection information tonic put in `extensions`.
    pub fn of(extensions: &http::Extensions) -> Option<&ConnInfo> {
        extensions.get::<ConnInfo>()
    }
}

/// One accepted connection, plain or TLS.
#[derive(Debug)]
pub struct ServerStream {
    /// The bytes.
    io: Io,
    /// Who it is.
    info: ConnInfo,
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ServerStream {
    /// Who is at the other end.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// The TCP connection, if this is a plain one (itself otherwise).
    pub fn into_plain(self) -> Result<TcpStream, Self> {
        match self.io {
            Io::Plain(tcp) => Ok(tcp),
            io => Err(ServerStream {
                io,
                info: self.info,
            }),
        }
    }
}

impl Connected for ServerStream {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of one listener, handshaken (see the module's doc).
#[derive(Debug)]
pub struct TlsIncoming {
    /// The listener.
    listener: TcpListener,
    /// What it accepts.
    security: Security,
    /// Handshakes in progress; aborted when the stream is dropped.
    handshakes: JoinSet<Option<ServerStream>>,
    /// Which side this is, for the log ("client" or "peer").
    side: &'static str,
}

impl TlsIncoming {
    /// The connections of `listener` (`side` names it in the log).
    pub fn new(listener: TcpListener, security: Security, side: &'static str) -> Self {
        TlsIncoming {
            listener,
            security,
            handshakes: JoinSet::new(),
            side,
        }
    }
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = io::Result<ServerStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Poll::Ready(Some(done)) = this.handshakes.poll_join_next(cx) {
                match done {
                    Ok(Some(stream)) => return Poll::Ready(Some(Ok(stream))),
                    // Refused (and logged), or the task was aborted.
                    Ok(None) | Err(_) => continue,
                }
            }
            let (tcp, remote) = match this.listener.poll_accept(cx) {
                Poll::Ready(Ok(accepted)) => accepted,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => return Poll::Pending,
            };
            // Without TCP_NODELAY a response written in several frames
            // waits for the client's delayed ACK (~40 ms per call).
            let _ = tcp.set_nodelay(true);
            let info = ConnInfo {
                remote_addr: Some(remote),
                ..ConnInfo::default()
            };
            match &this.security {
                Security::Plain => {
                    return Poll::Ready(Some(Ok(ServerStream {
                        io: Io::Plain(tcp),
                        info,
                    })))
                }
                Security::Tls(tls) => {
                    this.handshakes
                        .spawn(handshake(tcp, info, tls.clone(), false, this.side));
                }
                Security::Both(tls) => {
                    this.handshakes
                        .spawn(handshake(tcp, info, tls.clone(), true, this.side));
                }
            }
        }
    }
}

async fn handshake(
    tcp: TcpStream,
    mut info: ConnInfo,
    tls: ServerTls,
    plain_allowed: bool,
    side: &'static str,
) -> Option<ServerStream> {
    let remote = info.remote_addr.map(|a| a.to_string()).unwrap_or_default();
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        // Closed, failed, or silent: nothing to serve.
        _ => return None,
    }
    if first[0] != TLS_HANDSHAKE {
        if plain_allowed {
            return Some(ServerStream {
                io: Io::Plain(tcp),
                info,
            });
        }
        tracing::warn!(
            remote_addr = remote,
            side,
            "rejected connection: the client did not start a TLS handshake (plaintext on a TLS port?)"
        );
        return None;
    }
    let acceptor = TlsAcceptor::from(Arc::clone(&tls.config));
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            info.tls = true;
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|c| c.clone().into_owned());
            info.common_name = leaf.as_ref().and_then(files::common_name);
            if let (true, Some(leaf), Some(remote_addr)) =
                (tls.check_client_san, &leaf, info.remote_addr)
            {
                if let Err(reason) = check_san(leaf, remote_addr.ip()).await {
                    tracing::warn!(
                        remote_addr = remote,
                        side,
                        reason,
                        "rejected connection: client certificate does not match its address"
                    );
                    return None;
                }
            }
            Some(ServerStream {
                io: Io::Tls(Box::new(stream)),
                info,
            })
        }
        Ok(Err(e)) => {
            tracing::warn!(remote_addr = remote, side, error = %e, "rejected connection: TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::warn!(
                remote_addr = remote,
                side,
                "rejected connection: TLS handshake timed out"
            );
            None
        }
    }
}

/// etcd's `checkSAN`: a certificate with IP addresses must name `remote`,
/// unless it also has DNS names, one of which must resolve to `remote`; a
/// certificate with neither passes.
async fn check_san(
    cert: &rustls_pki_types::CertificateDer<'_>,
    remote: std::net::IpAddr,
) -> Result<(), String> {
    let names = files::names(cert);
    let (ips, dns): (Vec<&String>, Vec<&String>) = names
        .iter()
        .partition(|n| n.parse::<std::net::IpAddr>().is_ok());
    if ips
        .iter()
        .any(|ip| ip.parse::<std::net::IpAddr>() == Ok(remote))
    {
        return Ok(());
    }
    if dns.is_empty() {
        return match ips.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "x509: certificate is valid for {ips:?}, not {remote}"
            )),
        };
    }
    for name in &dns {
        if let Ok(addresses) = tokio::net::lookup_host((name.as_str(), 0)).await {
            if addresses.into_iter().any(|a| a.ip() == remote) {
                return Ok(());
            }
        }
    }
    Err(format!(
        "tls: \"{remote}\" does not match any of DNSNames {dns:?}"
    ))
}
