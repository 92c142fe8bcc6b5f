//! Self-signed certificates for `--auto-tls` and `--peer-auto-tls`, as
//! etcd makes them: in `<data-dir>/fixtures/client` and `.../peer`, valid
//! for the hosts of the listen URLs, for `--self-signed-cert-validity`
//! years, reused on later starts while the files exist.

use std::path::Path;

use rcgen::{CertificateParams, DnType, KeyPair};
use time::{Duration, OffsetDateTime};

use crate::{pki, TlsError, TlsInfo};

/// The TLS files in `dir` (`cert.pem`, `key.pem`), made there first if
/// missing, valid for `hosts` (`host:port` or `host`).
pub fn self_signed(dir: &Path, hosts: &[String], validity_years: u32) -> Result<TlsInfo, TlsError> {
    if validity_years == 0 {
        return Err(TlsError::Setting(
            "selfSignedCertValidity is invalid,it should be greater than 0".into(),
        ));
    }
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let info = TlsInfo {
        cert_file: Some(cert.clone()),
        key_file: Some(key.clone()),
        self_signed: true,
        ..TlsInfo::default()
    };
    if cert.exists() && key.exists() {
        return Ok(info);
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "etcd");
    for host in hosts {
        params
            .subject_alt_names
            .push(pki::subject_alt_name(host_of(host))?);
    }
    pki::server_and_client(&mut params);
    let now = OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + Duration::days(365 * i64::from(validity_years));
    tracing::warn!(
        certificate_validity_bound_not_after = %params.not_after,
        "automatically generate certificates"
    );
    let key_pair = KeyPair::generate()?;
    let certificate = params.self_signed(&key_pair)?;
    pki::write(&cert, &certificate.pem(), false)?;
    tracing::info!(path = %cert.display(), "created cert file");
    pki::write(&key, &key_pair.serialize_pem(), true)?;
    tracing::info!(path = %key.display(), "created key file");
    Ok(info)
}

/// The host of `host:port`, `[v6]:port` or a bare host.
fn host_of(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_ports() {
        for (given, want) in [
            ("127.0.0.1:2379", "127.0.0.1"),
            ("[::1]:2379", "::1"),
            ("localhost", "localhost"),
            ("::1", "::1"),
        ] {
            assert_eq!(host_of(given), want);
        }
    }

    #[test]
    fn made_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = dir.path().join("fixtures/client");
        let info = self_signed(
            &fixtures,
            &["127.0.0.1:2379".into(), "localhost:2379".into()],
            1,
        )
        .unwrap();
        let cert = info.cert_file.clone().unwrap();
        let first = std::fs::read(&cert).unwrap();
        let again = self_signed(&fixtures, &[], 1).unwrap();
        assert_eq!(again, info);
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        let der = crate::files::certs("cert file", &cert).unwrap();
        let names = crate::files::names(&der[0]);
        assert_eq!(
            names,
            vec!["127.0.0.1".to_string(), "localhost".to_string()]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(info.key_file.unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(self_signed(&dir.path().join("x"), &[], 0).is_err());
    }
}
