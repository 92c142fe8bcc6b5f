//! Client and peer TLS: serving and refusing, mutual TLS, a peer-TLS
//! cluster through a leader change, certificates renewed under load, and
//! the member's own bad files refused at start. Certificates come from a
//! CA made in the test (cairn_tls::pki).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_client::{Client, Get, Put, TlsOptions};
use cairn_server::embed::{self, Config};
use cairn_tls::pki::{write, write_issued, Ca, Leaf};
use common::cluster::Cluster;

/// A CA and the files it issued, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    serial: u64,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(name).unwrap();
        write(&dir.path().join("ca.pem"), ca.cert_pem(), false).unwrap();
        Pki { dir, ca, serial: 1 }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `<name>.pem` and `<name>-key.pem` for `cn`, valid for loopback.
    fn issue(&mut self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.serial += 1;
        let leaf = Leaf::new(cn, &["127.0.0.1", "localhost"], self.serial);
        write_issued(self.dir.path(), name, &self.ca.issue(&leaf).unwrap()).unwrap()
    }

    fn client_options(&self, cert: Option<&(PathBuf, PathBuf)>) -> TlsOptions {
        TlsOptions {
            ca_file: Some(self.ca_file()),
            cert_file: cert.map(|c| c.0.clone()),
            key_file: cert.map(|c| c.1.clone()),
            insecure_skip_verify: false,
        }
    }
}

/// A single member serving clients over TLS with `server` (and `tweak`).
fn tls_config(dir: &Path, server: &(PathBuf, PathBuf), tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = common::config(dir);
    config.listen_client_urls = vec!["https://127.0.0.1:0".into()];
    config.tls.client.cert_file = Some(server.0.clone());
    config.tls.client.key_file = Some(server.1.clone());
    tweak(&mut config);
    config
}

async fn put_get(client: &Client, key: &str) -> Result<(), cairn_client::Error> {
    client.put(Put::new(key, "v")).await?;
    let got = client.get(Get::key(key)).await?;
    assert_eq!(got.kvs[0].value, b"v");
    Ok(())
}

#[tokio::test]
async fn clients_reach_a_tls_port_only_over_tls() {
    // Given a member serving https with a certificate of our CA,
    let dir = tempfile::tempdir().unwrap();
    let mut pki = Pki::new("ca");
    let server = pki.issue("server", "server");
    let member = embed::start(tls_config(dir.path(), &server, |_| {}))
        .await
        .unwrap();
    let url = member.client_urls()[0].clone();
    assert!(url.starts_with("https://"), "{url}");

    // a client trusting the CA reads and writes;
    let client = Client::connect_all_tls([url.clone()], Some(&pki.client_options(None)))
        .await
        .unwrap();
    put_get(&client, "k").await.unwrap();

    // a plaintext client on the TLS port fails, and so does one trusting
    // another CA; the member keeps serving.
    let plain = Client::connect(url.replace("https://", "http://"))
        .await
        .unwrap();
    assert!(plain.get(Get::key("k")).await.is_err());
    let other = Pki::new("other");
    let stranger = Client::connect_all_tls([url.clone()], Some(&other.client_options(None)))
        .await
        .unwrap();
    assert!(stranger.get(Get::key("k")).await.is_err());
    put_get(&client, "k2").await.unwrap();
    member.stop().await.unwrap();
}

#[tokio::test]
async fn client_cert_auth_requires_a_certificate_of_the_trusted_ca() {
    let dir = tempfile::tempdir().unwrap();
    let mut pki = Pki::new("ca");
    let server = pki.issue("server", "server");
    let alice = pki.issue("alice", "alice");
    let ca = pki.ca_file();
    let member = embed::start(tls_config(dir.path(), &server, |c| {
        c.tls.client.client_cert_auth = true;
        c.tls.client.trusted_ca_file = Some(ca);
    }))
    .await
    .unwrap();
    let url = member.client_urls()[0].clone();

    let with_cert = Client::connect_all_tls([url.clone()], Some(&pki.client_options(Some(&alice))))
        .await
        .unwrap();
    put_get(&with_cert, "k").await.unwrap();

    let without = Client::connect_all_tls([url.clone()], Some(&pki.client_options(None)))
        .await
        .unwrap();
    assert!(without.get(Get::key("k")).await.is_err());

    let mut other = Pki::new("other");
    let mallory = other.issue("mallory", "mallory");
    let mut options = pki.client_options(None);
    options.cert_file = Some(mallory.0.clone());
    options.key_file = Some(mallory.1.clone());
    let stranger = Client::connect_all_tls([url], Some(&options))
        .await
        .unwrap();
    assert!(stranger.get(Get::key("k")).await.is_err());
    member.stop().await.unwrap();
}

/// With `--client-cert-auth` and auth enabled, a request without a token
/// acts as its certificate's Common Name (etcd's rule).
#[tokio::test]
async fn with_client_cert_auth_the_common_name_is_the_user() {
    use cairn_proto::etcdserverpb::auth_client::AuthClient;
    use cairn_proto::etcdserverpb::{
        AuthEnableRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut pki = Pki::new("ca");
    let server = pki.issue("server", "server");
    let root = pki.issue("root", "root");
    let alice = pki.issue("alice", "alice");
    let ca = pki.ca_file();
    let member = embed::start(tls_config(dir.path(), &server, |c| {
        c.tls.client.client_cert_auth = true;
        c.tls.client.trusted_ca_file = Some(ca);
        c.bcrypt_cost = 4;
    }))
    .await
    .unwrap();
    let url = member.client_urls()[0].clone();
    let as_root = Client::connect_all_tls([url.clone()], Some(&pki.client_options(Some(&root))))
        .await
        .unwrap();
    let mut auth = AuthClient::new(as_root.channel());
    for name in ["root", "alice"] {
        auth.user_add(AuthUserAddRequest {
            name: name.into(),
            password: format!("{name}-pw"),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    auth.user_grant_role(AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    })
    .await
    .unwrap();
    auth.auth_enable(AuthEnableRequest {}).await.unwrap();
    // root, by its certificate alone: keys and the admin calls.
    put_get(&as_root, "k").await.unwrap();
    auth.user_add(AuthUserAddRequest {
        name: "bob".into(),
        password: "bob-pw".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // alice, by hers: a user with no permission.
    let as_alice = Client::connect_all_tls([url], Some(&pki.client_options(Some(&alice))))
        .await
        .unwrap();
    let refused = as_alice.get(Get::key("k")).await.unwrap_err();
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    let refused = AuthClient::new(as_alice.channel())
        .auth_enable(AuthEnableRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.message(), "etcdserver: permission denied");
    member.stop().await.unwrap();
}

#[tokio::test]
async fn the_members_own_bad_tls_files_and_flags_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut pki = Pki::new("ca");
    let server = pki.issue("server", "server");
    let other = pki.issue("other", "other");
    let missing = dir.path().join("missing.pem");
    let now = time::OffsetDateTime::now_utc();
    let mut expired = Leaf::new("old", &["127.0.0.1"], 99);
    expired.validity = Some((now - time::Duration::days(9), now - time::Duration::days(1)));
    let old = write_issued(pki.dir.path(), "old", &pki.ca.issue(&expired).unwrap()).unwrap();
    type Tweak = Box<dyn FnOnce(&mut Config)>;
    let table: Vec<(&str, Tweak)> = vec![
        (
            "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:0 with HTTPS scheme",
            Box::new(|c: &mut Config| c.tls.client = Default::default()),
        ),
        (
            "cannot read cert file",
            Box::new(move |c: &mut Config| c.tls.client.cert_file = Some(missing)),
        ),
        (
            "does not match cert file",
            Box::new(move |c: &mut Config| c.tls.client.key_file = Some(other.1)),
        ),
        (
            "is not valid now",
            Box::new(move |c: &mut Config| {
                c.tls.client.cert_file = Some(old.0);
                c.tls.client.key_file = Some(old.1);
            }),
        ),
        (
            "unexpected TLS version \"TLS1.1\" (must be one of: TLS1.2, TLS1.3)",
            Box::new(|c: &mut Config| c.tls.min_version = "TLS1.1".into()),
        ),
        (
            "unexpected TLS cipher suite \"TLS_NONE\"",
            Box::new(|c: &mut Config| c.tls.cipher_suites = vec!["TLS_NONE".into()]),
        ),
        (
            "cipher suites cannot be configured when only TLS1.3 is enabled",
            Box::new(|c: &mut Config| {
                c.tls.min_version = "TLS1.3".into();
                c.tls.cipher_suites = vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()];
            }),
        ),
        (
            "TLS key/cert (--cert-file, --key-file) must be provided for metrics url https://127.0.0.1:0 with HTTPS scheme",
            Box::new(|c: &mut Config| {
                c.tls.client = Default::default();
                c.listen_client_urls = vec!["http://127.0.0.1:0".into()];
                c.listen_metrics_urls = vec!["https://127.0.0.1:0".into()];
            }),
        ),
        (
            "cannot listen on TLS for https://127.0.0.1:0",
            Box::new(|c: &mut Config| c.listen_peer_urls = vec!["https://127.0.0.1:0".into()]),
        ),
    ];
    for (i, (want, tweak)) in table.into_iter().enumerate() {
        let data = dir.path().join(format!("m{i}"));
        let config = tls_config(&data, &server, tweak);
        let Err(err) = embed::start(config).await else {
            panic!("the start was not refused (wanted {want})");
        };
        let err = err.to_string();
        assert!(err.contains(want), "{err} (wanted {want})");
        assert!(
            !data.join("member").exists(),
            "the data directory was written: {want}"
        );
    }
}

/// `GET path` over HTTP/1.1 on `url`, plain or TLS (trusting `ca`): the
/// raw answer, or what came before the connection failed.
async fn http_get(url: &str, path: &str, ca: &Path) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tls, address) = match url.strip_prefix("https://") {
        Some(a) => (true, a),
        None => (false, url.trim_start_matches("http://")),
    };
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut raw = Vec::new();
    if tls {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_file(ca).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let _ = stream.read_to_end(&mut raw).await;
    } else {
        let mut stream = tcp;
        stream.write_all(request.as_bytes()).await.unwrap();
        let _ = stream.read_to_end(&mut raw).await;
    }
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test]
async fn an_https_metrics_url_serves_with_the_client_certificate() {
    // Given a member whose clients use plain http and whose metrics URL is
    // https (etcd's client certificate serves it),
    let dir = tempfile::tempdir().unwrap();
    let mut pki = Pki::new("ca");
    let server = pki.issue("server", "server");
    let member = embed::start(tls_config(dir.path(), &server, |c| {
        c.listen_client_urls = vec!["http://127.0.0.1:0".into()];
        c.listen_metrics_urls = vec!["https://127.0.0.1:0".into()];
    }))
    .await
    .unwrap();
    let url = member.metrics_urls()[0].clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // a client trusting the CA scrapes it and reads its health;
    let scraped = http_get(&url, "/metrics", &pki.ca_file()).await;
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    assert!(scraped.contains("etcd_server_has_leader 1"), "{scraped}");
    let ready = http_get(&url, "/readyz", &pki.ca_file()).await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.ends_with("ok\n"),
        "{ready}"
    );

    // plain http on it gets no answer.
    let plain = http_get(
        &url.replace("https://", "http://"),
        "/metrics",
        &pki.ca_file(),
    )
    .await;
    assert!(!plain.contains("200 OK"), "{plain}");
    member.stop().await.unwrap();
}

#[tokio::test]
async fn auto_tls_makes_a_self_signed_certificate_and_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.listen_client_urls = vec!["https://127.0.0.1:0".into()];
    config.tls.client_auto_tls = true;
    let member = embed::start(config.clone()).await.unwrap();
    let cert = config.data_dir.join("fixtures/client/cert.pem");
    let first = std::fs::read(&cert).unwrap();
    let skip = TlsOptions {
        insecure_skip_verify: true,
        ..TlsOptions::default()
    };
    let client = Client::connect_all_tls([member.client_urls()[0].clone()], Some(&skip))
        .await
        .unwrap();
    put_get(&client, "k").await.unwrap();
    member.stop().await.unwrap();
    let again = embed::start(config).await.unwrap();
    assert_eq!(
        std::fs::read(&cert).unwrap(),
        first,
        "regenerated at restart"
    );
    again.stop().await.unwrap();
}

/// Peer TLS settings for a cluster's members: each member presents
/// `certs/<name>.pem`, trusts `ca`, requires peers' certificates.
fn peer_tls(config: &mut Config, certs: &Path, ca: &Path) {
    for url in config
        .listen_peer_urls
        .iter_mut()
        .chain(config.initial_advertise_peer_urls.iter_mut())
    {
        *url = url.replace("http://", "https://");
    }
    config.initial_cluster = config.initial_cluster.replace("http://", "https://");
    config.tls.peer.cert_file = Some(certs.join(format!("{}.pem", config.name)));
    config.tls.peer.key_file = Some(certs.join(format!("{}-key.pem", config.name)));
    config.tls.peer.trusted_ca_file = Some(ca.to_path_buf());
    config.tls.peer.client_cert_auth = true;
}

#[tokio::test]
async fn a_peer_tls_cluster_replicates_and_survives_a_leader_change() {
    // Given three members whose peers talk TLS only, with client certs,
    let mut pki = Pki::new("peer-ca");
    for name in ["m0", "m1", "m2"] {
        pki.issue(name, name);
    }
    let (certs, ca) = (pki.dir.path().to_path_buf(), pki.ca_file());
    let mut cluster = Cluster::start(3, |c| peer_tls(c, &certs, &ca)).await;
    assert!(cluster.slots[0].config.initial_cluster.contains("https://"));
    // a leader is elected over TLS and writes replicate;
    cluster.leader().await;
    let client = cluster.client_all().await;
    put_get(&client, "before").await.unwrap();
    cluster.converge().await;
    // when the leader is killed, a new one is elected over TLS and writes go on.
    let leader = cluster.leader().await;
    cluster.kill(leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    let client = cluster.client_all().await;
    put_get(&client, "after").await.unwrap();
    cluster.restart(leader).await;
    cluster.converge().await;
    let back = cluster.client(leader).await;
    assert_eq!(
        back.get(Get::key("after").serializable())
            .await
            .unwrap()
            .count,
        1
    );
}

#[tokio::test]
async fn a_member_with_a_certificate_of_another_ca_is_refused_by_its_peers() {
    let mut pki = Pki::new("peer-ca");
    for name in ["m0", "m1"] {
        pki.issue(name, name);
    }
    // m2's certificate comes from another CA.
    let mut rogue = Pki::new("rogue-ca");
    let (cert, key) = rogue.issue("m2", "m2");
    std::fs::copy(&cert, pki.dir.path().join("m2.pem")).unwrap();
    std::fs::copy(&key, pki.dir.path().join("m2-key.pem")).unwrap();
    let (certs, ca) = (pki.dir.path().to_path_buf(), pki.ca_file());
    let cluster = Cluster::start(3, |c| peer_tls(c, &certs, &ca)).await;
    // m0 and m1 form a quorum and serve; m2 never hears from them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cluster.handle(0).member().raft_status().leader == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "m0 and m1 elect no leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = Client::connect_all([cluster.url(0), cluster.url(1)])
        .await
        .unwrap();
    put_get(&client, "k").await.unwrap();
    let m2 = cluster.handle(2).member();
    assert_eq!(m2.raft_status().leader, 0, "m2 joined through a foreign CA");
}

#[tokio::test]
async fn renewed_server_and_peer_certificates_fail_no_request() {
    // Given a cluster with client and peer TLS from a first CA, whose
    // bundles also trust a second CA (the renewal's),
    let mut first = Pki::new("first");
    let mut second = Pki::new("second");
    let bundle = first.dir.path().join("bundle.pem");
    write(
        &bundle,
        &format!("{}{}", first.ca.cert_pem(), second.ca.cert_pem()),
        false,
    )
    .unwrap();
    for name in ["m0", "m1", "m2"] {
        first.issue(name, name);
        second.issue(name, name);
    }
    let certs = first.dir.path().to_path_buf();
    let bundle_for_tweak = bundle.clone();
    let mut cluster = Cluster::start(3, |c| {
        peer_tls(c, &certs, &bundle_for_tweak);
        for url in c
            .listen_client_urls
            .iter_mut()
            .chain(c.advertise_client_urls.iter_mut())
        {
            *url = url.replace("http://", "https://");
        }
        c.tls.client.cert_file = c.tls.peer.cert_file.clone();
        c.tls.client.key_file = c.tls.peer.key_file.clone();
    })
    .await;
    cluster.leader().await;
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let options = TlsOptions {
        ca_file: Some(bundle.clone()),
        ..TlsOptions::default()
    };
    let client = Client::connect_all_tls(urls.clone(), Some(&options))
        .await
        .unwrap();
    put_get(&client, "warm").await.unwrap();

    // while a client writes without pause,
    let stop = Arc::new(AtomicBool::new(false));
    let (written, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = tokio::spawn({
        let (client, stop, written, failed) = (
            client.clone(),
            stop.clone(),
            written.clone(),
            failed.clone(),
        );
        async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                match client.put(Put::new(format!("w{i}"), "v")).await {
                    Ok(_) => written.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        eprintln!("write failed: {e}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }
    });
    // when every member's certificate and key are renewed (from the
    // second CA, renamed in place),
    for name in ["m0", "m1", "m2"] {
        for suffix in [".pem", "-key.pem"] {
            let staged = certs.join(format!("{name}{suffix}.new"));
            std::fs::copy(second.dir.path().join(format!("{name}{suffix}")), &staged).unwrap();
            std::fs::rename(&staged, certs.join(format!("{name}{suffix}"))).unwrap();
        }
    }
    // and a member restarts (its peer connections are all new),
    let before = written.load(Ordering::SeqCst);
    // (a follower the client is not using: stopping its endpoint or the
    // leader would fail writes in flight for reasons other than TLS).
    let leader = cluster.leader().await;
    let restarted = (1..3).find(|i| *i != leader).unwrap();
    cluster.stop(restarted).await;
    cluster.restart(restarted).await;
    cluster.converge().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while written.load(Ordering::SeqCst) < before + 20 {
        assert!(tokio::time::Instant::now() < deadline, "writes stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    // then no write failed, and a client trusting only the second CA is
    // served by every member: they present the renewed certificates.
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "writes failed during the renewal"
    );
    for url in urls {
        let renewed_only =
            Client::connect_all_tls([url.clone()], Some(&second.client_options(None)))
                .await
                .unwrap();
        renewed_only
            .get(Get::key("warm"))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}
