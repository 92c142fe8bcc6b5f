//! etcd flags that Cairn does not take yet, each with the reason, so that
//! an etcd command line (kubeadm's static pod, a systemd unit) fails with an
//! answer instead of clap's "unexpected argument", and a setting that
//! matters (TLS above all) is never dropped in silence: the same names as
//! `ETCD_*` variables stop the start too.

/// (flag, why it is refused).
const UNSUPPORTED: &[(&str, &str)] = &[
    ("cert-file", TLS),
    ("key-file", TLS),
    ("client-cert-auth", TLS),
    ("trusted-ca-file", TLS),
    ("client-crl-file", TLS),
    ("auto-tls", TLS),
    ("cipher-suites", TLS),
    ("tls-min-version", TLS),
    ("tls-max-version", TLS),
    ("self-signed-cert-validity", TLS),
    ("peer-cert-file", TLS),
    ("peer-key-file", TLS),
    ("peer-client-cert-auth", TLS),
    ("peer-trusted-ca-file", TLS),
    ("peer-crl-file", TLS),
    ("peer-auto-tls", TLS),
    ("peer-cert-allowed-cn", TLS),
    ("peer-cert-allowed-hostname", TLS),
    ("listen-metrics-urls", HTTP),
    ("metrics", HTTP),
    ("enable-pprof", HTTP),
    ("auth-token", AUTH),
    ("auth-token-ttl", AUTH),
    ("bcrypt-cost", AUTH),
    ("discovery", DISCOVERY),
    ("discovery-srv", DISCOVERY),
    ("discovery-token", DISCOVERY),
    ("discovery-proxy", DISCOVERY),
    ("discovery-fallback", DISCOVERY),
];

const TLS: &str = "TLS is not supported yet (Cairn serves plain http:// only); it arrives with client and peer TLS";
const HTTP: &str =
    "Cairn has no HTTP endpoint yet (metrics, health, pprof); it arrives with the HTTP side";
const AUTH: &str = "authentication is not supported yet; it arrives with Auth";
const DISCOVERY: &str = "discovery is not supported: list the members with --initial-cluster";

/// Why `flag` (a name without dashes) is refused, if it is one of etcd's
/// flags that Cairn does not take.
pub fn reason(flag: &str) -> Option<&'static str> {
    UNSUPPORTED
        .iter()
        .find(|(name, _)| *name == flag)
        .map(|(_, why)| *why)
}

/// The message for a command-line argument clap did not know (`--cert-file`,
/// `--cert-file=x`), if it is one of etcd's flags that Cairn does not take.
pub fn refusal(arg: &str) -> Option<String> {
    let name = arg.strip_prefix("--")?.split('=').next()?;
    reason(name).map(|why| format!("--{name}: {why}"))
}

/// The `ETCD_*` variables set to one of those flags, with their reasons.
pub fn refused_variables() -> Vec<String> {
    UNSUPPORTED
        .iter()
        .filter_map(|(name, why)| {
            let var = format!("ETCD_{}", name.to_uppercase().replace('-', "_"));
            std::env::var_os(&var).map(|_| format!("{var}: {why}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeadm_tls_and_metrics_flags_are_refused_with_their_reason() {
        for arg in [
            "--cert-file",
            "--cert-file=/etc/x.crt",
            "--peer-client-cert-auth=true",
        ] {
            let why = refusal(arg).unwrap_or_default();
            assert!(why.contains("TLS is not supported yet"), "{arg}: {why}");
        }
        let why = refusal("--listen-metrics-urls=http://127.0.0.1:2381").unwrap_or_default();
        assert!(why.starts_with("--listen-metrics-urls: "), "{why}");
        assert_eq!(refusal("--no-such-flag"), None);
        assert_eq!(refusal("cert-file"), None);
    }
}
