//! The TLS flags (etcd's names, defaults and `ETCD_*` variables) and the
//! [`TlsSettings`] they make.

use std::path::PathBuf;

use cairn_server::config::TlsSettings;
use cairn_server::defaults;
use cairn_tls::TlsInfo;

/// etcd's TLS flags.
#[derive(Debug, clap::Args)]
pub struct TlsFlags {
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub client_cert_auth: bool,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Path to the client certificate revocation list file.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,
    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub auto_tls: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub peer_client_cert_auth: bool,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "ETCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,
    /// Peer TLS using generated certificates.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub peer_auto_tls: bool,
    /// Allowed CN for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME")]
    pub peer_cert_allowed_hostname: Option<String>,
    /// The validity period of the client and peer certificates that are
    /// automatically generated, in years.
    #[arg(long, env = "ETCD_SELF_SIGNED_CERT_VALIDITY", default_value_t = defaults::SELF_SIGNED_CERT_VALIDITY)]
    pub self_signed_cert_validity: u32,
    /// Comma-separated list of supported TLS cipher suites between client/server
    /// and peers (empty will be auto-populated).
    #[arg(
        long,
        env = "ETCD_CIPHER_SUITES",
        default_value = "",
        value_delimiter = ','
    )]
    pub cipher_suites: Vec<String>,
    /// Minimum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3.
    #[arg(long, env = "ETCD_TLS_MIN_VERSION", default_value = defaults::TLS_MIN_VERSION)]
    pub tls_min_version: String,
    /// Maximum TLS version supported by etcd. Possible values: TLS1.2,
    /// TLS1.3 (empty defers to the highest version).
    #[arg(long, env = "ETCD_TLS_MAX_VERSION", default_value = "")]
    pub tls_max_version: String,
}

impl TlsFlags {
    /// The settings these flags give.
    pub fn into_settings(self) -> TlsSettings {
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        TlsSettings {
            client: TlsInfo {
                cert_file: self.cert_file,
                key_file: self.key_file,
                trusted_ca_file: self.trusted_ca_file,
                client_cert_auth: self.client_cert_auth,
                crl_file: self.client_crl_file,
                ..TlsInfo::default()
            },
            client_auto_tls: self.auto_tls,
            peer: TlsInfo {
                cert_file: self.peer_cert_file,
                key_file: self.peer_key_file,
                trusted_ca_file: self.peer_trusted_ca_file,
                client_cert_auth: self.peer_client_cert_auth,
                crl_file: self.peer_crl_file,
                allowed_cn: non_empty(self.peer_cert_allowed_cn),
                allowed_hostname: non_empty(self.peer_cert_allowed_hostname),
                self_signed: false,
            },
            peer_auto_tls: self.peer_auto_tls,
            self_signed_cert_validity: self.self_signed_cert_validity,
            cipher_suites: self
                .cipher_suites
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            min_version: self.tls_min_version,
            max_version: self.tls_max_version,
        }
    }
}
