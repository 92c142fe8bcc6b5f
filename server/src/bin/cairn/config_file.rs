//! `--config-file`: the member's flags from etcd's YAML configuration file.
//!
//! The keys are the flags' names without the dashes (`name`, `data-dir`,
//! `listen-client-urls`, `initial-cluster`, `auto-compaction-retention`...),
//! as in etcd's `etcd.conf.yml`. A list is taken as the comma-separated
//! value the flag takes (`listen-client-urls: [http://a:2379, http://b:2379]`
//! is the same as `http://a:2379,http://b:2379`).
//!
//! Precedence is etcd 3.5's: with a configuration file, the file is the
//! whole configuration; other flags and `ETCD_*` variables are ignored
//! (and the log says so). Defaults are the flags' own, so there is one
//! place for them: every value goes through the same clap parser as the
//! command line, and is refused with the same message, naming its key.
//!
//! Stricter than etcd on purpose: etcd skips keys it does not know, which
//! turns a typo (`data_dir`, `snapshot-count` misspelt) into a silently
//! ignored setting; here an unknown key is an error naming it.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use clap::{Args, FromArgMatches};
use yaml_rust2::{Yaml, YamlLoader};

use crate::flags::Flags;

/// Keys of the command line that are not settings of the member.
const NOT_SETTINGS: [&str; 3] = ["config-file", "version", "help"];

/// The flags a configuration file gives, defaults filled in.
pub fn flags_from_file(path: &Path) -> anyhow::Result<Flags> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    flags_from_yaml(&text).with_context(|| format!("config file {}", path.display()))
}

/// [`flags_from_file`] on the file's text.
pub fn flags_from_yaml(text: &str) -> anyhow::Result<Flags> {
    let settings = settings(text)?;
    // The file is the whole configuration: no ETCD_* variable may fill in
    // what it leaves out (etcd 3.5).
    let command = Flags::augment_args(clap::Command::new("cairn"))
        .no_binary_name(true)
        .mut_args(|arg| arg.env(None));
    let known: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_long().map(str::to_string))
        .filter(|long| !NOT_SETTINGS.contains(&long.as_str()))
        .collect();
    let mut args = Vec::new();
    for (key, value) in &settings {
        if !known.contains(key) {
            match crate::unsupported::reason(key) {
                Some(why) => bail!("key {key:?}: {why}"),
                None => bail!("unknown key {key:?}"),
            }
        }
        let arg = format!("--{key}={value}");
        // One key at a time first, so that a bad value is named by its key.
        if let Err(e) = command.clone().try_get_matches_from([&arg]) {
            bail!("key {key:?}: {}", first_line(&e));
        }
        args.push(arg);
    }
    let matches = command
        .try_get_matches_from(&args)
        .map_err(|e| anyhow!("{}", first_line(&e)))?;
    Ok(Flags::from_arg_matches(&matches)?)
}

/// The first line of clap's message, without its `error: ` prefix.
fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// The file's (key, value) pairs, in order, each value as the command line
/// would give it. A key without a value (`key:` or `key: null`) is left to
/// its default, as etcd leaves it at the zero value it starts from.
fn settings(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| anyhow!("invalid YAML: {e}"))?;
    let Some(doc) = docs.into_iter().next() else {
        return Ok(Vec::new());
    };
    let map = match doc {
        Yaml::Hash(map) => map,
        Yaml::Null => return Ok(Vec::new()),
        _ => bail!("expected a mapping of settings (key: value)"),
    };
    let mut settings = Vec::new();
    for (key, value) in map {
        let Yaml::String(key) = key else {
            bail!("a key is not a string: {key:?}");
        };
        if let (Some(prefix), Yaml::Hash(nested)) = (transport_security(&key), &value) {
            settings.extend(security_settings(&key, prefix, nested)?);
            continue;
        }
        let value = match value {
            Yaml::Null => continue,
            Yaml::Array(items) => items
                .iter()
                .map(|item| scalar(&key, item))
                .collect::<anyhow::Result<Vec<_>>>()?
                .join(","),
            other => scalar(&key, &other)?,
        };
        settings.push((key, value));
    }
    Ok(settings)
}

/// The flag prefix of etcd's nested TLS sections: `client-transport-security`
/// holds the client flags (`cert-file`), `peer-transport-security` the peer
/// ones (`peer-cert-file`).
fn transport_security(key: &str) -> Option<&'static str> {
    match key {
        "client-transport-security" => Some(""),
        "peer-transport-security" => Some("peer-"),
        _ => None,
    }
}

/// The flags of one nested TLS section, by etcd's YAML keys.
fn security_settings(
    section: &str,
    prefix: &str,
    nested: &yaml_rust2::yaml::Hash,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut settings = Vec::new();
    for (key, value) in nested {
        let Yaml::String(key) = key else {
            bail!("{section}: a key is not a string: {key:?}");
        };
        let flag = match (prefix, key.as_str()) {
            (_, "cert-file" | "key-file" | "client-cert-auth" | "trusted-ca-file" | "auto-tls") => {
                format!("{prefix}{key}")
            }
            ("", "crl-file") => "client-crl-file".to_string(),
            ("peer-", "crl-file") => "peer-crl-file".to_string(),
            ("peer-", "allowed-cn" | "allowed-hostname") => format!("peer-cert-{key}"),
            _ => bail!("{section}: key {key:?} is not supported"),
        };
        if matches!(value, Yaml::Null) {
            continue;
        }
        settings.push((flag, scalar(key, value)?));
    }
    Ok(settings)
}

/// A scalar value as text.
fn scalar(key: &str, value: &Yaml) -> anyhow::Result<String> {
    Ok(match value {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Hash(_) => bail!("key {key:?}: expected a value, not a mapping"),
        _ => bail!("key {key:?}: expected a value, got {value:?}"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn etcd_keys_set_the_flags_and_the_rest_keeps_its_defaults() {
        let flags = flags_from_yaml(
            "# etcd.conf.yml\n\
             name: 'infra1'\n\
             data-dir: /var/lib/etcd\n\
             listen-client-urls: http://10.0.0.1:2379,http://127.0.0.1:2379\n\
             advertise-client-urls: [http://10.0.0.1:2379]\n\
             initial-cluster: infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380\n\
             initial-cluster-state: 'existing'\n\
             heartbeat-interval: 250\n\
             experimental-enable-lease-checkpoint: false\n\
             auto-compaction-mode: periodic\n\
             auto-compaction-retention: \"1h30m\"\n\
             experimental-watch-progress-notify-interval: 1.5s\n\
             listen-metrics-urls: http://127.0.0.1:2381\n\
             metrics: extensive\n\
             initial-cluster-token:\n",
        )
        .unwrap();
        assert_eq!(flags.name, "infra1");
        assert_eq!(flags.data_dir.unwrap(), Path::new("/var/lib/etcd"));
        assert_eq!(
            flags.listen_client_urls,
            ["http://10.0.0.1:2379", "http://127.0.0.1:2379"]
        );
        assert_eq!(flags.advertise_client_urls, ["http://10.0.0.1:2379"]);
        assert_eq!(flags.initial_cluster_state, "existing");
        assert_eq!(flags.heartbeat_interval, 250);
        assert!(!flags.experimental_enable_lease_checkpoint);
        assert_eq!(flags.auto_compaction_retention, "1h30m");
        assert_eq!(
            flags.watch_progress_notify_interval,
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(flags.listen_metrics_urls, ["http://127.0.0.1:2381"]);
        assert_eq!(flags.metrics, "extensive");
        // Left out or empty: the flag's default.
        assert_eq!(flags.initial_cluster_token, "etcd-cluster");
        assert_eq!(flags.election_timeout, 1000);
        assert_eq!(flags.max_txn_ops, 128);
    }

    #[test]
    fn auth_keys_are_taken() {
        let flags =
            flags_from_yaml("auth-token: simple\nauth-token-ttl: 60\nbcrypt-cost: 4\n").unwrap();
        assert_eq!(flags.auth_token, "simple");
        assert_eq!(flags.auth_token_ttl, 60);
        assert_eq!(flags.bcrypt_cost, 4);
        let config = flags.into_config().unwrap();
        assert_eq!(config.auth_token_ttl, std::time::Duration::from_secs(60));
        assert_eq!(config.bcrypt_cost, 4);
        // Defaults: etcd's.
        let flags = flags_from_yaml("").unwrap();
        assert_eq!(
            (
                flags.auth_token.as_str(),
                flags.auth_token_ttl,
                flags.bcrypt_cost
            ),
            ("simple", 300, 10)
        );
        // JWT options are read here (the key files when the member starts);
        // an unknown kind is refused.
        let config = flags_from_yaml("auth-token: jwt,sign-method=RS256,ttl=1m\n")
            .unwrap()
            .into_config()
            .unwrap();
        let cairn_server::auth::TokenKind::Jwt(options) = config.auth_token else {
            panic!("not jwt: {:?}", config.auth_token);
        };
        assert_eq!(options.ttl, std::time::Duration::from_secs(60));
        let err = flags_from_yaml("auth-token: nope\n")
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(err.to_string().starts_with("--auth-token: "), "{err}");
    }

    #[test]
    fn an_empty_file_is_every_default() {
        for text in ["", "# nothing\n", "---\n"] {
            let flags = flags_from_yaml(text).unwrap();
            assert_eq!(flags.name, "default");
            assert_eq!(flags.listen_client_urls, ["http://localhost:2379"]);
        }
    }

    #[test]
    fn the_kv_cache_size_reaches_the_members_config() {
        let given = flags_from_yaml("experimental-kv-cache-bytes: 67108864\n").unwrap();
        assert_eq!(given.into_config().unwrap().kv_cache_bytes, 64 << 20);
        let none = flags_from_yaml("experimental-kv-cache-bytes: 0\n").unwrap();
        assert_eq!(none.into_config().unwrap().kv_cache_bytes, 0);
        let left_out = flags_from_yaml("name: m1\n").unwrap();
        assert_eq!(left_out.into_config().unwrap().kv_cache_bytes, 512 << 20);
    }

    #[test]
    fn bad_files_are_refused_naming_the_key() {
        let table = [
            ("data_dir: /x\n", "unknown key \"data_dir\""),
            (
                "enable-pprof: true\n",
                "key \"enable-pprof\": Cairn is not a Go program",
            ),
            ("config-file: other.yml\n", "unknown key \"config-file\""),
            ("heartbeat-interval: soon\n", "key \"heartbeat-interval\""),
            (
                "experimental-kv-cache-bytes: 64MiB\n",
                "key \"experimental-kv-cache-bytes\"",
            ),
            (
                "experimental-watch-progress-notify-interval: 1x\n",
                "invalid duration \"1x\"",
            ),
            (
                "initial-cluster-state: maybe\n",
                "key \"initial-cluster-state\"",
            ),
            (
                "client-transport-security:\n  client-cert-file: a.pem\n",
                "client-transport-security: key \"client-cert-file\" is not supported",
            ),
            ("name: [a, {b: c}]\n", "key \"name\": expected a value"),
            ("- name\n- data-dir\n", "expected a mapping"),
            ("name: 'unterminated\n", "invalid YAML"),
        ];
        for (text, want) in table {
            let err = format!("{:#}", flags_from_yaml(text).err().unwrap());
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn etcds_transport_security_sections_set_the_tls_flags() {
        let flags = flags_from_yaml(
            "client-transport-security:\n  cert-file: /c.pem\n  key-file: /c-key.pem\n  client-cert-auth: true\n  trusted-ca-file: /ca.pem\n  auto-tls: false\n\
             peer-transport-security:\n  cert-file: /p.pem\n  key-file: /p-key.pem\n  client-cert-auth: true\n  trusted-ca-file: /pca.pem\n  allowed-cn: member\n  auto-tls:\n\
             cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n\
             tls-min-version: TLS1.2\n",
        )
        .unwrap();
        let tls = flags.tls.into_settings();
        assert_eq!(tls.client.cert_file.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(
            tls.client.key_file.as_deref(),
            Some(Path::new("/c-key.pem"))
        );
        assert!(tls.client.client_cert_auth);
        assert_eq!(
            tls.client.trusted_ca_file.as_deref(),
            Some(Path::new("/ca.pem"))
        );
        assert_eq!(tls.peer.cert_file.as_deref(), Some(Path::new("/p.pem")));
        assert!(tls.peer.client_cert_auth);
        assert_eq!(tls.peer.allowed_cn.as_deref(), Some("member"));
        assert!(!tls.peer_auto_tls);
        assert_eq!(tls.cipher_suites.len(), 2);
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = flags_from_file(Path::new("/nonexistent/etcd.yml"))
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("/nonexistent/etcd.yml"),
            "{err:#}"
        );
    }
}
