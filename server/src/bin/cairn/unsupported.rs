//! etcd flags that Cairn does not take yet, each with the reason, so that
//! an etcd command line (kubeadm's static pod, a systemd unit) fails with an
//! answer instead of clap's "unexpected argument", and a setting that
//! matters is never dropped in silence: the same names as
//! `ETCD_*` variables stop the start too.

/// (flag, why it is refused).
const UNSUPPORTED: &[(&str, &str)] = &[
    ("enable-pprof", PPROF),
    ("discovery", DISCOVERY),
    ("discovery-srv", DISCOVERY),
    ("discovery-token", DISCOVERY),
    ("discovery-proxy", DISCOVERY),
    ("discovery-fallback", DISCOVERY),
];

const PPROF: &str =
    "Cairn is not a Go program: it has no pprof endpoints (use /metrics, or perf on the process)";
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
    fn etcd_flags_cairn_lacks_are_refused_with_their_reason() {
        // TLS and metrics flags are taken now.
        assert_eq!(refusal("--cert-file=/etc/x.crt"), None);
        assert_eq!(refusal("--listen-metrics-urls=http://127.0.0.1:2381"), None);
        let why = refusal("--enable-pprof").unwrap_or_default();
        assert!(why.starts_with("--enable-pprof: "), "{why}");
        assert_eq!(refusal("--no-such-flag"), None);
        assert_eq!(refusal("cert-file"), None);
    }
}
