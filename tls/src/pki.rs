//! A small certificate authority: the certificates of the tests, of the
//! three-zone dev cluster's `--tls` and of the TLS comparisons with etcd
//! (the `cairn-certs` tool), so that none of them needs OpenSSL.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::TlsError;

/// A CA: its certificate and key.
pub struct Ca {
    /// What the CA's certificate says (an issuer needs its parameters).
    params: CertificateParams,
    /// The CA's key, signing what it issues.
    key: KeyPair,
    /// The CA certificate, PEM.
    cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// What a certificate to issue says.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The subject's Common Name (a client's user name).
    pub common_name: String,
    /// DNS names and IP addresses it is valid for.
    pub names: Vec<String>,
    /// Its serial number (what a CRL names).
    pub serial: u64,
    /// Valid from, until; `None`: from an hour ago for ten years.
    pub validity: Option<(OffsetDateTime, OffsetDateTime)>,
}

impl Leaf {
    /// A certificate for `common_name`, valid for `names`, now.
    pub fn new(common_name: &str, names: &[&str], serial: u64) -> Self {
        Leaf {
            common_name: common_name.to_string(),
            names: names.iter().map(|n| n.to_string()).collect(),
            serial,
            validity: None,
        }
    }
}

/// An issued certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

fn default_validity() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - Duration::hours(1), now + Duration::days(3650))
}

impl Ca {
    /// A new CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = default_validity();
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Ca {
            params,
            key,
            cert_pem,
        })
    }

    /// The CA certificate, PEM (the trusted CA file).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues `leaf`, usable both as a server and as a client certificate
    /// (members present theirs in both roles to their peers).
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name.clone());
        for name in &leaf.names {
            params.subject_alt_names.push(subject_alt_name(name)?);
        }
        params.serial_number = Some(SerialNumber::from(leaf.serial));
        server_and_client(&mut params);
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = leaf.validity.unwrap_or_else(default_validity);
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A CRL revoking the certificates with `serials`, PEM.
    pub fn crl(&self, serials: &[u64]) -> Result<String, TlsError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - Duration::minutes(30),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        Ok(params.signed_by(&issuer)?.pem()?)
    }
}

/// A subject alternative name: an IP address, or else a DNS name.
pub(crate) fn subject_alt_name(name: &str) -> Result<SanType, TlsError> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.to_string().try_into()?),
    })
}

/// Usable as a server and as a client certificate: members present theirs
/// both ways to their peers.
pub(crate) fn server_and_client(params: &mut CertificateParams) {
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
}

/// Writes `contents` to `path`, readable by its owner only when `secret`.
pub fn write(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write_error = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(write_error)?;
    file.write_all(contents.as_bytes()).map_err(write_error)
}

/// Writes `issued` as `<dir>/<name>.pem` and `<dir>/<name>-key.pem`;
/// returns (certificate path, key path).
pub fn write_issued(
    dir: &Path,
    name: &str,
    issued: &Issued,
) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    write(&cert, &issued.cert_pem, false)?;
    write(&key, &issued.key_pem, true)?;
    Ok((cert, key))
}
