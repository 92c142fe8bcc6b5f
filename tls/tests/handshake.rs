//! Handshakes end to end on loopback: what a listener accepts and refuses,
//! the identity it hands on, and files renewed while it runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_tls::client::{ClientOptions, ClientTls, Connector};
use cairn_tls::pki::{write, write_issued, Ca, Leaf};
use cairn_tls::server::{ConnInfo, Security, ServerTls, TlsIncoming};
use cairn_tls::{Policy, TlsInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tower_service::Service;

/// A CA and files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    next_serial: u64,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test-ca").unwrap();
        write(&dir.path().join("ca.pem"), ca.cert_pem(), false).unwrap();
        Pki {
            dir,
            ca,
            next_serial: 10,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_file(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// Issues `cn` (valid for 127.0.0.1) as `<name>.pem`/`<name>-key.pem`.
    fn issue(&mut self, name: &str, cn: &str) -> (PathBuf, PathBuf, u64) {
        self.issue_leaf(name, Leaf::new(cn, &["127.0.0.1", "localhost"], 0))
    }

    fn issue_leaf(&mut self, name: &str, mut leaf: Leaf) -> (PathBuf, PathBuf, u64) {
        self.next_serial += 1;
        leaf.serial = self.next_serial;
        let issued = self.ca.issue(&leaf).unwrap();
        let (cert, key) = write_issued(self.dir.path(), name, &issued).unwrap();
        (cert, key, leaf.serial)
    }
}

fn server_info(cert: &Path, key: &Path) -> TlsInfo {
    TlsInfo {
        cert_file: Some(cert.to_path_buf()),
        key_file: Some(key.to_path_buf()),
        ..TlsInfo::default()
    }
}

/// Serves `security` on a loopback port: each accepted connection gets
/// "ok" and its ConnInfo is sent to the returned channel.
async fn serve(security: Security) -> (String, tokio::sync::mpsc::UnboundedReceiver<ConnInfo>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut incoming = TlsIncoming::new(listener, security, "client");
        while let Some(Ok(mut stream)) = incoming.next().await {
            let _ = tx.send(stream.info().clone());
            tokio::spawn(async move {
                let _ = stream.write_all(b"ok").await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), rx)
}

/// Connects with `tls` (or plain), reads what the server says.
async fn talk(url: &str, tls: Option<ClientTls>) -> Result<String, String> {
    let mut connector = Connector::new(None, tls);
    let uri: http::Uri = url.parse().unwrap();
    let io = tokio::time::timeout(Duration::from_secs(10), connector.call(uri))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let mut stream = io.into_inner();
    // Clients speak first (an HTTP/2 preface): the server tells plain from
    // TLS by the first byte.
    stream.write_all(b"PRI").await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if buf.is_empty() {
        return Err("closed without a word".into());
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A client presenting `cert` as it is (even expired: the client side of
/// cairn-tls refuses to load such a certificate, so rustls is used as is).
fn raw_client(pki: &Pki, cert: &Path, key: &Path) -> ClientTls {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            cairn_tls::files::certs("ca", &pki.ca_file())
                .unwrap()
                .remove(0),
        )
        .unwrap();
    let chain = cairn_tls::files::certs("cert", cert).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(Policy::default().provider().clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    ClientTls::from_config(std::sync::Arc::new(config))
}

fn client(pki: &Pki, cert: Option<(&Path, &Path)>) -> ClientTls {
    let options = ClientOptions {
        ca_file: Some(pki.ca_file()),
        cert_file: cert.map(|c| c.0.to_path_buf()),
        key_file: cert.map(|c| c.1.to_path_buf()),
        insecure_skip_verify: false,
    };
    ClientTls::new(&options, &Policy::default()).unwrap()
}

#[tokio::test]
async fn server_tls_without_client_certificates() {
    // Given a TLS listener that asks for no client certificate,
    let mut pki = Pki::new();
    let (cert, key, _) = pki.issue("server", "server");
    let tls = ServerTls::new(&server_info(&cert, &key), &Policy::default(), &[b"h2"]).unwrap();
    let (url, mut seen) = serve(Security::Tls(tls)).await;
    // a client trusting the CA is served, with no identity;
    assert_eq!(talk(&url, Some(client(&pki, None))).await.unwrap(), "ok");
    let info = seen.recv().await.unwrap();
    assert!(info.tls);
    assert_eq!(info.common_name, None);
    // a plaintext client is refused;
    assert!(talk(&url, None).await.is_err());
    // a client trusting another CA refuses the server.
    let other = Pki::new();
    assert!(talk(&url, Some(client(&other, None))).await.is_err());
}

#[tokio::test]
async fn client_certificates_give_the_callers_common_name() {
    // Given a listener requiring client certificates,
    let mut pki = Pki::new();
    let (cert, key, _) = pki.issue("server", "server");
    let (alice_cert, alice_key, _) = pki.issue("alice", "alice");
    let mut info = server_info(&cert, &key);
    info.client_cert_auth = true;
    info.trusted_ca_file = Some(pki.ca_file());
    let tls = ServerTls::new(&info, &Policy::default(), &[b"h2"]).unwrap();
    let (url, mut seen) = serve(Security::Tls(tls)).await;
    // alice's certificate is her identity;
    let alice = client(&pki, Some((&alice_cert, &alice_key)));
    assert_eq!(talk(&url, Some(alice)).await.unwrap(), "ok");
    assert_eq!(
        seen.recv().await.unwrap().common_name.as_deref(),
        Some("alice")
    );
    // no certificate, or one of an unknown CA: refused.
    assert!(talk(&url, Some(client(&pki, None))).await.is_err());
    let mut other = Pki::new();
    let (mallory_cert, mallory_key, _) = other.issue("mallory", "mallory");
    assert!(talk(
        &url,
        Some(client(&pki, Some((&mallory_cert, &mallory_key))))
    )
    .await
    .is_err());
    assert!(
        seen.try_recv().is_err(),
        "a refused client reached the server"
    );
}

#[tokio::test]
async fn expired_not_yet_valid_and_revoked_client_certificates_are_refused() {
    let mut pki = Pki::new();
    let (cert, key, _) = pki.issue("server", "server");
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let mut expired = Leaf::new("old", &[], 0);
    expired.validity = Some((now - 10 * day, now - day));
    let (old_cert, old_key, _) = pki.issue_leaf("old", expired);
    let mut early = Leaf::new("early", &[], 0);
    early.validity = Some((now + day, now + 10 * day));
    let (early_cert, early_key, _) = pki.issue_leaf("early", early);
    let (revoked_cert, revoked_key, revoked_serial) = pki.issue("revoked", "revoked");
    let (good_cert, good_key, _) = pki.issue("good", "good");
    write(
        &pki.path("crl.pem"),
        &pki.ca.crl(&[revoked_serial]).unwrap(),
        false,
    )
    .unwrap();
    let mut info = server_info(&cert, &key);
    info.trusted_ca_file = Some(pki.ca_file());
    info.crl_file = Some(pki.path("crl.pem"));
    let tls = ServerTls::new(&info, &Policy::default(), &[b"h2"]).unwrap();
    assert!(
        tls.requires_client_certs(),
        "a trusted CA requires client certificates, as etcd"
    );
    let (url, _seen) = serve(Security::Tls(tls)).await;
    for (name, c, k) in [
        ("expired", &old_cert, &old_key),
        ("not yet valid", &early_cert, &early_key),
        ("revoked", &revoked_cert, &revoked_key),
    ] {
        let result = talk(&url, Some(raw_client(&pki, c, k))).await;
        assert!(result.is_err(), "{name} certificate accepted");
    }
    assert_eq!(
        talk(&url, Some(client(&pki, Some((&good_cert, &good_key)))))
            .await
            .unwrap(),
        "ok"
    );
}

#[tokio::test]
async fn peer_allowed_cn_and_hostname() {
    let mut pki = Pki::new();
    let (cert, key, _) = pki.issue("server", "server");
    let (m1_cert, m1_key, _) = pki.issue("m1", "member-1");
    let (other_cert, other_key, _) =
        pki.issue_leaf("other", Leaf::new("intruder", &["10.9.9.9"], 0));
    let mut info = server_info(&cert, &key);
    info.client_cert_auth = true;
    info.trusted_ca_file = Some(pki.ca_file());
    info.allowed_cn = Some("member-1".into());
    let (url, _seen) = serve(Security::Tls(
        ServerTls::new(&info, &Policy::default(), &[b"h2"]).unwrap(),
    ))
    .await;
    assert!(talk(&url, Some(client(&pki, Some((&m1_cert, &m1_key)))))
        .await
        .is_ok());
    assert!(
        talk(&url, Some(client(&pki, Some((&other_cert, &other_key)))))
            .await
            .is_err()
    );

    info.allowed_cn = None;
    info.allowed_hostname = Some("localhost".into());
    let (url, _seen) = serve(Security::Tls(
        ServerTls::new(&info, &Policy::default(), &[b"h2"]).unwrap(),
    ))
    .await;
    assert!(talk(&url, Some(client(&pki, Some((&m1_cert, &m1_key)))))
        .await
        .is_ok());
    assert!(
        talk(&url, Some(client(&pki, Some((&other_cert, &other_key)))))
            .await
            .is_err()
    );

    info.allowed_cn = Some("member-1".into());
    let both = ServerTls::new(&info, &Policy::default(), &[b"h2"]).unwrap_err();
    assert!(both.to_string().contains("mutually exclusive"), "{both}");
}

#[tokio::test]
async fn one_port_serves_plain_and_tls_when_both_are_listed() {
    let mut pki = Pki::new();
    let (cert, key, _) = pki.issue("server", "server");
    let tls = ServerTls::new(&server_info(&cert, &key), &Policy::default(), &[b"h2"]).unwrap();
    let (url, mut seen) = serve(Security::Both(tls)).await;
    assert_eq!(talk(&url, None).await.unwrap(), "ok");
    assert!(!seen.recv().await.unwrap().tls);
    assert_eq!(talk(&url, Some(client(&pki, None))).await.unwrap(), "ok");
    assert!(seen.recv().await.unwrap().tls);
}

#[tokio::test]
async fn renewed_files_are_used_by_new_connections() {
    // Given a server whose certificate a first CA signed,
    let mut first = Pki::new();
    let (cert, key, _) = first.issue("server", "server");
    let mut info = server_info(&cert, &key);
    info.trusted_ca_file = Some(first.ca_file());
    let (alice_cert, alice_key, _) = first.issue("alice", "alice");
    let (url, _seen) = serve(Security::Tls(
        ServerTls::new(&info, &Policy::default(), &[b"h2"]).unwrap(),
    ))
    .await;
    assert!(
        talk(&url, Some(client(&first, Some((&alice_cert, &alice_key)))))
            .await
            .is_ok()
    );

    // when the certificate, key and CA bundle are replaced by a second CA's
    // (written beside and renamed in, as renewal tools do),
    let mut second = Pki::new();
    let (new_cert, new_key, _) = second.issue("server", "server");
    let (bob_cert, bob_key, _) = second.issue("bob", "bob");
    for (from, to) in [
        (&new_cert, &cert),
        (&new_key, &key),
        (&second.ca_file(), &first.ca_file()),
    ] {
        let staged = to.with_extension("new");
        std::fs::copy(from, &staged).unwrap();
        std::fs::rename(&staged, to).unwrap();
    }
    // then new connections see the new certificate and trust the new CA.
    assert!(
        talk(&url, Some(client(&second, Some((&bob_cert, &bob_key)))))
            .await
            .is_ok()
    );
    assert!(
        talk(&url, Some(client(&second, Some((&alice_cert, &alice_key)))))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_half_written_renewal_keeps_the_previous_pair() {
    let mut pki = Pki::new();
    let (cert, key, _) = pki.issue("server", "server");
    let (url, _seen) = serve(Security::Tls(
        ServerTls::new(&server_info(&cert, &key), &Policy::default(), &[b"h2"]).unwrap(),
    ))
    .await;
    // The certificate is renewed, its key not yet: the old pair stays.
    let (renewed, _renewed_key, _) = pki.issue("renewed", "server");
    std::fs::copy(&renewed, &cert).unwrap();
    assert_eq!(talk(&url, Some(client(&pki, None))).await.unwrap(), "ok");
}

#[test]
fn bad_own_files_are_errors_at_start() {
    let mut pki = Pki::new();
    let (cert, key, _) = pki.issue("server", "server");
    let (_, other_key, _) = pki.issue("other", "other");
    let policy = Policy::default();
    let cases: Vec<(TlsInfo, &str)> = vec![
        (server_info(&cert, &other_key), "does not match"),
        (
            server_info(&pki.path("missing.pem"), &key),
            "cannot read cert file",
        ),
        (
            server_info(&cert, &pki.path("missing-key.pem")),
            "cannot read key file",
        ),
        (server_info(&pki.ca_file(), &key), "does not match"),
        (
            TlsInfo {
                cert_file: Some(cert.clone()),
                ..TlsInfo::default()
            },
            "KeyFile and CertFile must both be present",
        ),
        (
            TlsInfo {
                client_cert_auth: true,
                ..server_info(&cert, &key)
            },
            "needs a trusted CA file",
        ),
    ];
    for (info, want) in cases {
        let err = ServerTls::new(&info, &policy, &[b"h2"])
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err} (wanted {want})");
    }
    std::fs::write(pki.path("garbage.pem"), "not a certificate").unwrap();
    let err = ServerTls::new(
        &server_info(&pki.path("garbage.pem"), &key),
        &policy,
        &[b"h2"],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad cert file"), "{err}");

    let now = time::OffsetDateTime::now_utc();
    let mut expired = Leaf::new("server", &["127.0.0.1"], 0);
    expired.validity = Some((
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    ));
    let (old_cert, old_key, _) = pki.issue_leaf("expired", expired);
    let err = ServerTls::new(&server_info(&old_cert, &old_key), &policy, &[b"h2"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not valid now"), "{err}");
}

#[tokio::test]
async fn a_peer_listener_checks_client_certificates_against_their_address() {
    // Given a listener that checks client certificates' names (etcd's peer
    // listener), reached from 127.0.0.1,
    let mut pki = Pki::new();
    let (cert, key, _) = pki.issue("server", "server");
    let mut info = server_info(&cert, &key);
    info.client_cert_auth = true;
    info.trusted_ca_file = Some(pki.ca_file());
    let tls = ServerTls::new(&info, &Policy::default(), &[b"h2"])
        .unwrap()
        .checking_client_san();
    let (url, _seen) = serve(Security::Tls(tls)).await;
    // certificates naming that address (by IP or by a DNS name resolving to
    // it), or naming nothing, pass; one naming another address does not.
    for (names, accepted) in [
        (&["127.0.0.1"][..], true),
        (&["localhost"][..], true),
        (&[][..], true),
        (&["10.9.9.9"][..], false),
    ] {
        let (c, k, _) = pki.issue_leaf("peer", Leaf::new("peer", names, 0));
        let result = talk(&url, Some(client(&pki, Some((&c, &k))))).await;
        assert_eq!(result.is_ok(), accepted, "{names:?}: {result:?}");
    }
}
