//! Checking the other side's certificate.
//!
//! - [`ClientVerifier`]: a server checking client certificates: signed by a
//!   trusted CA (`--trusted-ca-file`), not revoked (`--client-crl-file`),
//!   and for peers the allowed CN or hostname. CA bundle and CRL are
//!   reloaded when they change. A refusal is logged with the certificate's
//!   Common Name and the reason.
//! - [`ServerVerifier`]: a client checking a server: signed by a trusted CA
//!   (reloaded likewise), or not checked at all for self-signed
//!   (`--peer-auto-tls`) peers, as etcd does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::files;
use crate::reload::Reloading;
use crate::TlsError;

fn roots(ca_file: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in files::certs("trusted CA file", ca_file)? {
        roots.add(cert).map_err(|e| TlsError::Parse {
            what: "trusted CA file",
            path: ca_file.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// Checks client certificates (see the module's doc).
#[derive(Debug)]
pub struct ClientVerifier {
    /// rustls's verifier over the current CA bundle and CRL.
    inner: Reloading<Arc<dyn ClientCertVerifier>>,
    /// `--peer-cert-allowed-cn`.
    allowed_cn: Option<String>,
    /// `--peer-cert-allowed-hostname`.
    allowed_hostname: Option<String>,
    /// The signature algorithms (the policy's provider).
    provider: Arc<CryptoProvider>,
}

impl ClientVerifier {
    /// A verifier of certificates signed by `ca_file`'s CAs, minus those
    /// `crl_file` revokes.
    pub fn new(
        ca_file: &Path,
        crl_file: Option<&Path>,
        allowed_cn: Option<String>,
        allowed_hostname: Option<String>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        if allowed_cn.is_some() && allowed_hostname.is_some() {
            return Err(TlsError::Setting(format!(
                "AllowedCN and AllowedHostname are mutually exclusive (cn={:?}, hostname={:?})",
                allowed_cn.unwrap_or_default(),
                allowed_hostname.unwrap_or_default()
            )));
        }
        let (ca, crl, build_provider) = (
            ca_file.to_path_buf(),
            crl_file.map(Path::to_path_buf),
            Arc::clone(provider),
        );
        let mut watched: Vec<PathBuf> = vec![ca.clone()];
        watched.extend(crl.clone());
        let inner = Reloading::new("trusted CA and CRL", watched, move || {
            let crls = match &crl {
                Some(path) => files::crls(path)?,
                None => Vec::new(),
            };
            WebPkiClientVerifier::builder_with_provider(roots(&ca)?, Arc::clone(&build_provider))
                .with_crls(crls)
                // As Go's etcd: the CRL is checked against the client's own
                // certificate, and a CRL of another issuer is no refusal.
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status()
                .build()
                .map_err(|e| TlsError::Invalid(format!("trusted CA file {}: {e}", ca.display())))
        })?;
        Ok(ClientVerifier {
            inner,
            allowed_cn,
            allowed_hostname,
            provider: Arc::clone(provider),
        })
    }

    fn refuse(&self, cert: &CertificateDer<'_>, why: &str, error: rustls::Error) -> rustls::Error {
        tracing::warn!(
            common_name = files::common_name(cert).unwrap_or_default(),
            reason = why,
            error = %error,
            "refused a client certificate"
        );
        error
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The CA bundle can change under a handshake; no hints (clients
        // then present the certificate they have, as Go's do anyway).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .current()
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| {
                self.refuse(
                    end_entity,
                    "not signed by a trusted CA, expired or revoked",
                    e,
                )
            })?;
        if let Some(allowed) = &self.allowed_cn {
            if files::common_name(end_entity).as_deref() != Some(allowed.as_str()) {
                let e = rustls::Error::General("client certificate authentication failed".into());
                return Err(self.refuse(
                    end_entity,
                    &format!("CN is not the allowed {allowed:?}"),
                    e,
                ));
            }
        }
        if let Some(host) = &self.allowed_hostname {
            if !files::valid_for_host(end_entity, host) {
                let e = rustls::Error::General("client certificate authentication failed".into());
                return Err(self.refuse(
                    end_entity,
                    &format!("not valid for the allowed hostname {host:?}"),
                    e,
                ));
            }
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Checks a server's certificate (see the module's doc).
#[derive(Debug)]
pub struct ServerVerifier {
    /// rustls's verifier over the current CA bundle; `None`: not checked
    /// (self-signed peers, or a client told to skip the check).
    inner: Option<Reloading<Arc<WebPkiServerVerifier>>>,
    /// The signature algorithms (the policy's provider).
    provider: Arc<CryptoProvider>,
}

impl ServerVerifier {
    /// Servers whose certificates `ca_file`'s CAs sign.
    pub fn trusting(ca_file: &Path, provider: &Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let (ca, build_provider) = (ca_file.to_path_buf(), Arc::clone(provider));
        let inner = Reloading::new("trusted CA", vec![ca.clone()], move || {
            WebPkiServerVerifier::builder_with_provider(roots(&ca)?, Arc::clone(&build_provider))
                .build()
                .map_err(|e| TlsError::Invalid(format!("trusted CA file {}: {e}", ca.display())))
        })?;
        Ok(ServerVerifier {
            inner: Some(inner),
            provider: Arc::clone(provider),
        })
    }

    /// Any server certificate (its handshake signature is still checked).
    pub fn skipping_verification(provider: &Arc<CryptoProvider>) -> Self {
        ServerVerifier {
            inner: None,
            provider: Arc::clone(provider),
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.inner {
            Some(inner) => inner.current().verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
