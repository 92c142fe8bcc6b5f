//! TLS at start: etcd's checks of the TLS flags against the URLs,
//! `--auto-tls`/`--peer-auto-tls`, and the TLS each side then uses. Every
//! problem with the member's own files or flags stops the start here, with
//! etcd's message where etcd has one; problems with the other side's
//! certificates are per connection (see `cairn_tls::server`).

use cairn_tls::client::{ClientOptions, ClientTls};
use cairn_tls::server::{Security, ServerTls};
use cairn_tls::{Policy, TlsError, TlsInfo};

use super::listen::Bound;
use crate::config::{host_port, is_https, Config};

/// ALPN of the client port: gRPC is HTTP/2; the HTTP routes also take
/// HTTP/1.1.
const CLIENT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// ALPN of the peer port: gRPC only.
const PEER_ALPN: &[&[u8]] = &[b"h2"];

/// The TLS of each side of a member.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// What client connections are served with, if any URL is `https://`.
    pub client: Option<ServerTls>,
    /// What peer connections are served with, if any peer URL is `https://`.
    pub peer_server: Option<ServerTls>,
    /// What this member dials `https://` peers with.
    pub peer_client: Option<ClientTls>,
}

impl Transport {
    /// The TLS `config` asks for (certificates generated for auto TLS).
    pub fn from_config(config: &Config) -> Result<Transport, TlsError> {
        let tls = &config.tls;
        let policy = Policy::new(&tls.cipher_suites, &tls.min_version, &tls.max_version)?;
        let client = side_info(
            &tls.client,
            tls.client_auto_tls,
            &config.data_dir.join("fixtures").join("client"),
            &config.listen_client_urls,
            tls.self_signed_cert_validity,
            "client",
        )?;
        let peer = side_info(
            &tls.peer,
            tls.peer_auto_tls,
            &config.data_dir.join("fixtures").join("peer"),
            &config.listen_peer_urls,
            tls.self_signed_cert_validity,
            "peer",
        )?;
        for url in &config.listen_client_urls {
            if is_https(url) && client.is_empty() {
                return Err(TlsError::Setting(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
                )));
            }
            if !is_https(url) && !client.is_empty() && !tls.client_auto_tls {
                tracing::warn!(client_url = %url, "scheme is HTTP while key and cert files are present; ignoring key and cert files");
            }
            if !is_https(url) && client.client_cert_auth {
                tracing::warn!(client_url = %url, "scheme is HTTP while --client-cert-auth is enabled; ignoring client cert auth for this URL");
            }
        }
        for url in &config.listen_metrics_urls {
            // etcd serves https metrics URLs with the client TLS.
            if is_https(url) && client.is_empty() {
                return Err(TlsError::Setting(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for metrics url {url} with HTTPS scheme"
                )));
            }
        }
        for url in &config.listen_peer_urls {
            if is_https(url) && peer.is_empty() {
                return Err(TlsError::Setting(format!(
                    "cannot listen on TLS for {url}: KeyFile and CertFile are not presented (--peer-cert-file, --peer-key-file)"
                )));
            }
        }
        let serves = |urls: &[String]| urls.iter().any(|u| is_https(u));
        let client_tls =
            if serves(&config.listen_client_urls) || serves(&config.listen_metrics_urls) {
                Some(ServerTls::new(&client, &policy, CLIENT_ALPN)?)
            } else {
                None
            };
        let peer_server = if serves(&config.listen_peer_urls) {
            // etcd's peer listener checks peers' certificates against their
            // addresses too.
            Some(ServerTls::new(&peer, &policy, PEER_ALPN)?.checking_client_san())
        } else {
            None
        };
        let peer_client = if peer.is_empty() {
            None
        } else {
            let options = ClientOptions::from(&peer);
            if options.ca_file.is_none() && !options.insecure_skip_verify {
                return Err(TlsError::Setting(
                    "--peer-trusted-ca-file is needed to verify the peers' certificates (or --peer-auto-tls for self-signed ones)".into(),
                ));
            }
            Some(ClientTls::new(&options, &policy)?)
        };
        Ok(Transport {
            client: client_tls,
            peer_server,
            peer_client,
        })
    }

    /// How a client (or metrics) listener accepts connections.
    pub fn client_security(&self, bound: &Bound) -> Security {
        security(bound, self.client.as_ref())
    }

    /// How a peer listener accepts connections.
    pub fn peer_security(&self, bound: &Bound) -> Security {
        security(bound, self.peer_server.as_ref())
    }
}

fn security(bound: &Bound, tls: Option<&ServerTls>) -> Security {
    match (tls, bound.secure, bound.insecure) {
        (Some(tls), true, true) => Security::Both(tls.clone()),
        (Some(tls), true, false) => Security::Tls(tls.clone()),
        _ => Security::Plain,
    }
}

/// One side's files: as given, or self-signed ones for auto TLS.
fn side_info(
    given: &TlsInfo,
    auto: bool,
    fixtures: &std::path::Path,
    urls: &[String],
    validity_years: u32,
    side: &str,
) -> Result<TlsInfo, TlsError> {
    if !auto {
        return Ok(given.clone());
    }
    if !given.is_empty() {
        tracing::warn!("ignoring {side} auto TLS since certs given");
        return Ok(given.clone());
    }
    let hosts: Vec<String> = urls
        .iter()
        .filter_map(|u| host_port(u).ok().map(str::to_string))
        .collect();
    let generated = cairn_tls::auto::self_signed(fixtures, &hosts, validity_years)?;
    Ok(TlsInfo {
        // The other settings (client cert auth, CA, CRL, allowed CN) stay.
        cert_file: generated.cert_file,
        key_file: generated.key_file,
        self_signed: true,
        ..given.clone()
    })
}
