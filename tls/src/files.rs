//! Reading certificates, keys and CRLs from files, and reading what a
//! certificate says (its Common Name, its names, its validity).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::TlsError;

/// The bytes of `path`; `what` names the file in the error.
pub fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn parse_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Parse {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Every PEM certificate in `path` (a chain, or a CA bundle); at least one.
pub fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse_error(what, path, e))?;
    if certs.is_empty() {
        return Err(parse_error(what, path, "no PEM certificate in it"));
    }
    for cert in &certs {
        X509Certificate::from_der(cert).map_err(|e| parse_error(what, path, e))?;
    }
    Ok(certs)
}

/// The PEM private key in `path` (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("key file", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| parse_error("key file", path, e))
}

/// The CRLs in `path`: PEM blocks, or one DER CRL (Go's etcd takes both).
pub fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let what = "CRL file";
    let bytes = read(what, path)?;
    let pem = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse_error(what, path, e))?;
    let crls = if pem.is_empty() {
        vec![CertificateRevocationListDer::from(bytes)]
    } else {
        pem
    };
    for crl in &crls {
        x509_parser::revocation_list::CertificateRevocationList::from_der(crl)
            .map_err(|e| parse_error(what, path, e))?;
    }
    Ok(crls)
}

/// The certificate chain of `cert_file` and the key of `key_file`, checked
/// to belong together and to be valid now.
pub fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certs("cert file", cert_file)?;
    let key = private_key(key_file)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| parse_error("key file", key_file, e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        TlsError::Invalid(format!(
            "key file {} does not match cert file {}: {e}",
            key_file.display(),
            cert_file.display()
        ))
    })?;
    if let Some(leaf) = certified.cert.first() {
        check_validity(leaf, cert_file)?;
    }
    Ok(Arc::new(certified))
}

/// Refuses a certificate that has expired or is not valid yet.
pub fn check_validity(cert: &CertificateDer<'_>, path: &Path) -> Result<(), TlsError> {
    let (_, parsed) =
        X509Certificate::from_der(cert).map_err(|e| parse_error("cert file", path, e))?;
    let validity = parsed.validity();
    if !validity.is_valid() {
        return Err(TlsError::Invalid(format!(
            "certificate in {} is not valid now: valid from {} until {}",
            path.display(),
            validity.not_before,
            validity.not_after
        )));
    }
    Ok(())
}

/// The subject's Common Name, if the certificate has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Whether the certificate is valid for `host` (an IP address or a DNS
/// name, wildcards allowed), by its subject alternative names, as Go's
/// `VerifyHostname` (which no longer looks at the Common Name).
pub fn valid_for_host(cert: &CertificateDer<'_>, host: &str) -> bool {
    let Ok((_, parsed)) = X509Certificate::from_der(cert) else {
        return false;
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: Option<IpAddr> = host.parse().ok();
    san.value.general_names.iter().any(|name| match name {
        GeneralName::IPAddress(bytes) => ip.is_some_and(|ip| ip_bytes(ip) == *bytes),
        GeneralName::DNSName(pattern) => ip.is_none() && dns_matches(pattern, host),
        _ => false,
    })
}

/// The names (DNS and IP) a certificate is valid for.
pub fn names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = X509Certificate::from_der(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|o| IpAddr::from(o).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|o| IpAddr::from(o).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn dns_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        // A wildcard stands for exactly one label.
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern.trim_end_matches('.') == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_match_exactly_or_by_one_wildcard_label() {
        let cases = [
            ("etcd.example.com", "etcd.example.com", true),
            ("ETCD.example.com", "etcd.EXAMPLE.com.", true),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", "example.com", false),
            ("etcd.example.com", "other.example.com", false),
        ];
        for (pattern, host, want) in cases {
            assert_eq!(dns_matches(pattern, host), want, "{pattern} vs {host}");
        }
    }
}
