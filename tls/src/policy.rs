//! Which TLS versions and cipher suites are offered: etcd's
//! `--tls-min-version`, `--tls-max-version` and `--cipher-suites`, with
//! Go's suite names.
//!
//! As in Go, the suites listed apply to TLS 1.2; TLS 1.3's suites are not
//! configurable and always on. rustls offers only AEAD suites with forward
//! secrecy: a Go suite name outside that set (CBC, RC4, 3DES, RSA key
//! exchange) is refused with the reason, not silently dropped.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, SupportedProtocolVersion};

use crate::TlsError;

/// The versions and suites of every TLS connection of one member.
#[derive(Clone, Debug)]
pub struct Policy {
    /// ring, with the cipher suites allowed (and nothing else changed).
    provider: Arc<CryptoProvider>,
    /// The protocol versions allowed, from the min and max flags.
    versions: Vec<&'static SupportedProtocolVersion>,
}

impl Default for Policy {
    /// etcd's defaults: TLS 1.2 and 1.3, every suite rustls offers.
    fn default() -> Self {
        Policy {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
        }
    }
}

/// Go's names of the TLS 1.2 suites rustls (with ring) offers.
const OFFERED: &[(&str, CipherSuite)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// Suites Go (and so etcd) knows that rustls does not offer.
const NOT_OFFERED: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// A TLS version flag value: `TLS1.2`, `TLS1.3`, or empty (no bound).
fn version(value: &str) -> Result<Option<&'static SupportedProtocolVersion>, TlsError> {
    match value {
        "" => Ok(None),
        "TLS1.2" => Ok(Some(&rustls::version::TLS12)),
        "TLS1.3" => Ok(Some(&rustls::version::TLS13)),
        other => Err(TlsError::Setting(format!(
            "unexpected TLS version {other:?} (must be one of: TLS1.2, TLS1.3)"
        ))),
    }
}

fn rank(v: &SupportedProtocolVersion) -> u8 {
    if v.version == rustls::ProtocolVersion::TLSv1_3 {
        3
    } else {
        2
    }
}

impl Policy {
    /// The policy of `--cipher-suites`, `--tls-min-version` and
    /// `--tls-max-version`, refused with etcd's messages where etcd has one.
    pub fn new(cipher_suites: &[String], min: &str, max: &str) -> Result<Self, TlsError> {
        let min_version = version(min)?;
        let max_version = version(max)?;
        let lowest = min_version.map_or(2, rank);
        let highest = max_version.map_or(3, rank);
        if lowest > highest {
            return Err(TlsError::Setting(format!(
                "min version ({min}) is greater than max version ({max})"
            )));
        }
        if lowest == 3 && !cipher_suites.is_empty() {
            return Err(TlsError::Setting(
                "cipher suites cannot be configured when only TLS1.3 is enabled".into(),
            ));
        }
        let mut provider = rustls::crypto::ring::default_provider();
        if !cipher_suites.is_empty() {
            let mut chosen = Vec::new();
            for name in cipher_suites {
                let id = suite_id(name)?;
                if let Some(suite) = provider.cipher_suites.iter().find(|s| s.suite() == id) {
                    if !chosen
                        .iter()
                        .any(|c: &rustls::SupportedCipherSuite| c.suite() == id)
                    {
                        chosen.push(*suite);
                    }
                }
            }
            // TLS 1.3's suites are not configurable (Go's rule): kept, after
            // the TLS 1.2 ones in the order given.
            chosen.extend(
                provider
                    .cipher_suites
                    .iter()
                    .filter(|s| s.version() == &rustls::version::TLS13),
            );
            provider.cipher_suites = chosen;
        }
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12]
            .into_iter()
            .filter(|v| (lowest..=highest).contains(&rank(v)))
            .collect();
        Ok(Policy {
            provider: Arc::new(provider),
            versions,
        })
    }

    /// The crypto provider (ring, with the suites allowed).
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// The protocol versions allowed.
    pub fn versions(&self) -> &[&'static SupportedProtocolVersion] {
        &self.versions
    }
}

fn suite_id(name: &str) -> Result<CipherSuite, TlsError> {
    if let Some((_, id)) = OFFERED.iter().find(|(n, _)| *n == name) {
        return Ok(*id);
    }
    if NOT_OFFERED.contains(&name) {
        let offered: Vec<&str> = OFFERED.iter().map(|(n, _)| *n).collect();
        return Err(TlsError::Setting(format!(
            "TLS cipher suite {name:?} is not supported: only AEAD suites with forward secrecy are offered ({})",
            offered.join(", ")
        )));
    }
    Err(TlsError::Setting(format!(
        "unexpected TLS cipher suite {name:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Policy) -> Vec<String> {
        p.provider()
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect()
    }

    #[test]
    fn flags_are_checked_with_etcds_messages() {
        let cases: &[(&[&str], &str, &str, Option<&str>)] = &[
            (&[], "", "", None),
            (&[], "TLS1.2", "TLS1.3", None),
            (
                &[],
                "TLS1.1",
                "",
                Some("unexpected TLS version \"TLS1.1\" (must be one of: TLS1.2, TLS1.3)"),
            ),
            (
                &[],
                "TLS1.3",
                "TLS1.2",
                Some("min version (TLS1.3) is greater than max version (TLS1.2)"),
            ),
            (
                &["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
                "TLS1.3",
                "",
                Some("cipher suites cannot be configured when only TLS1.3 is enabled"),
            ),
            (
                &["TLS_FOO"],
                "",
                "",
                Some("unexpected TLS cipher suite \"TLS_FOO\""),
            ),
        ];
        for (suites, min, max, want) in cases {
            let suites: Vec<String> = suites.iter().map(|s| s.to_string()).collect();
            let got = Policy::new(&suites, min, max).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), *want, "{suites:?} {min} {max}");
        }
        let cbc = Policy::new(&["TLS_RSA_WITH_AES_128_CBC_SHA".into()], "", "").unwrap_err();
        assert!(cbc.to_string().contains("is not supported"), "{cbc}");
    }

    #[test]
    fn listed_suites_come_first_and_tls13_suites_stay() {
        let p = Policy::new(
            &[
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305".into(),
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
            ],
            "",
            "",
        )
        .unwrap();
        let got = names(&p);
        assert_eq!(got[0], "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256");
        assert_eq!(got[1], "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
        assert!(got[2..].iter().all(|n| n.starts_with("TLS13_")), "{got:?}");
        assert_eq!(got.len(), 5);
    }

    #[test]
    fn versions_follow_the_bounds() {
        let only12 = Policy::new(&[], "", "TLS1.2").unwrap();
        assert_eq!(only12.versions().len(), 1);
        assert_eq!(
            only12.versions()[0].version,
            rustls::ProtocolVersion::TLSv1_2
        );
        let only13 = Policy::new(&[], "TLS1.3", "").unwrap();
        assert_eq!(
            only13.versions()[0].version,
            rustls::ProtocolVersion::TLSv1_3
        );
        assert_eq!(Policy::default().versions().len(), 2);
    }
}
