//! Authentication and RBAC end to end, with raw gRPC (cairn-proto's
//! generated clients, metadata `token`) as any etcd client sends it: the
//! whole flow on one member; three members (a user added through one
//! authenticates on another; a permission revoked through one is refused
//! by every member's next linearizable request); a restart keeps the auth
//! state; nothing of it on disk in plain text; and the JSON gateway with
//! the `Authorization` header.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::path::Path;

use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::{
    compare, watch_request, AuthDisableRequest, AuthStatusRequest, AuthUserDeleteRequest,
    AuthUserGetRequest, AuthUserListRequest, CompactionRequest, Compare, DefragmentRequest,
    MemberAddRequest, TxnRequest, WatchCreateRequest, WatchRequest,
};
use cairn_server::embed::{self, Config};
use tonic::Code;

use common::auth::Conn;
use common::cluster::Cluster;

/// Asserts `result` failed with etcd's `code` and `message`.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, message: &str) {
    let status = result.expect_err(message);
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), message, "{status:?}");
}

fn cheap_bcrypt(config: &mut Config) {
    config.bcrypt_cost = 4;
}

/// root (root role) and auth enabled; returns root's connection.
async fn set_up_root(conn: &Conn) -> Conn {
    conn.user_add("root", "rootpw").await.unwrap();
    conn.grant_role("root", "root").await.unwrap();
    conn.enable().await.unwrap();
    let token = conn.authenticate("root", "rootpw").await.unwrap();
    conn.as_token(&token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_through_the_whole_flow() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    cheap_bcrypt(&mut config);
    let member = embed::start(config).await.unwrap();
    let conn = Conn::to(&member.client_urls()[0]).await;

    // Enabling needs root with the root role.
    refused(
        conn.enable().await,
        Code::FailedPrecondition,
        "etcdserver: root user does not exist",
    );
    conn.user_add("root", "rootpw").await.unwrap();
    refused(
        conn.user_add("root", "x").await,
        Code::FailedPrecondition,
        "etcdserver: user name already exists",
    );
    refused(
        conn.enable().await,
        Code::FailedPrecondition,
        "etcdserver: root user does not have root role",
    );
    refused(
        conn.authenticate("root", "rootpw").await,
        Code::FailedPrecondition,
        "etcdserver: authentication is not enabled",
    );
    conn.grant_role("root", "root").await.unwrap();
    conn.enable().await.unwrap();

    // Without credentials, nothing.
    refused(
        conn.get("foo/1").await,
        Code::InvalidArgument,
        "etcdserver: user name is empty",
    );
    refused(
        conn.put("foo/1", "v").await,
        Code::InvalidArgument,
        "etcdserver: user name is empty",
    );
    refused(
        conn.authenticate("root", "wrong").await,
        Code::InvalidArgument,
        "etcdserver: authentication failed, invalid user ID or password",
    );
    refused(
        conn.authenticate("nobody", "rootpw").await,
        Code::InvalidArgument,
        "etcdserver: authentication failed, invalid user ID or password",
    );
    let root_token = conn.authenticate("root", "rootpw").await.unwrap();
    let (prefix, index) = root_token.split_once('.').unwrap();
    assert_eq!(prefix.len(), 16);
    assert!(index.parse::<u64>().is_ok());
    let root = conn.as_token(&root_token);
    refused(
        conn.as_token("bogus.1").get("x").await,
        Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );

    // A user with read-write on foo/ only.
    root.user_add("alice", "alicepw").await.unwrap();
    refused(
        root.user_add("", "x").await,
        Code::InvalidArgument,
        "etcdserver: user name is empty",
    );
    root.role_add("rw-foo").await.unwrap();
    refused(
        root.role_add("").await,
        Code::InvalidArgument,
        "etcdserver: role name is empty",
    );
    refused(
        root.grant("rw-foo", "foo0", "foo/").await,
        Code::InvalidArgument,
        "etcdserver: invalid auth management",
    );
    refused(
        root.grant("nope", "foo/", "foo0").await,
        Code::FailedPrecondition,
        "etcdserver: role name not found",
    );
    root.grant("rw-foo", "foo/", "foo0").await.unwrap();
    refused(
        root.grant_role("alice", "nope").await,
        Code::FailedPrecondition,
        "etcdserver: role name not found",
    );
    refused(
        root.grant_role("nobody", "rw-foo").await,
        Code::FailedPrecondition,
        "etcdserver: user name not found",
    );
    root.grant_role("alice", "rw-foo").await.unwrap();
    let alice = conn.as_token(&conn.authenticate("alice", "alicepw").await.unwrap());

    alice.put("foo/1", "v").await.unwrap();
    assert_eq!(alice.get("foo/1").await.unwrap(), 1);
    refused(
        alice.put("bar", "v").await,
        Code::PermissionDenied,
        "etcdserver: permission denied",
    );
    refused(
        alice.get("bar").await,
        Code::PermissionDenied,
        "etcdserver: permission denied",
    );
    // A txn whose compare reads outside the grant.
    let txn = TxnRequest {
        compare: vec![Compare {
            key: b"bar".to_vec(),
            target: compare::CompareTarget::Version as i32,
            ..Default::default()
        }],
        ..Default::default()
    };
    refused(
        alice.kv().txn(alice.req(txn)).await,
        Code::PermissionDenied,
        "etcdserver: permission denied",
    );

    // Root-only calls.
    let denied = "etcdserver: permission denied";
    refused(
        alice
            .auth()
            .user_list(alice.req(AuthUserListRequest {}))
            .await,
        Code::PermissionDenied,
        denied,
    );
    refused(
        alice
            .auth()
            .auth_disable(alice.req(AuthDisableRequest {}))
            .await,
        Code::PermissionDenied,
        denied,
    );
    refused(
        alice.user_add("mallory", "x").await,
        Code::PermissionDenied,
        denied,
    );
    refused(
        ClusterClient::new(alice.channel.clone())
            .member_add(alice.req(MemberAddRequest {
                peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                is_learner: true,
            }))
            .await,
        Code::PermissionDenied,
        denied,
    );
    refused(
        MaintenanceClient::new(alice.channel.clone())
            .defragment(alice.req(DefragmentRequest {}))
            .await,
        Code::PermissionDenied,
        denied,
    );
    refused(
        alice
            .kv()
            .compact(alice.req(CompactionRequest {
                revision: 1,
                physical: false,
            }))
            .await,
        Code::PermissionDenied,
        denied,
    );
    // A user may read itself.
    let roles = alice
        .auth()
        .user_get(alice.req(AuthUserGetRequest {
            name: "alice".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .roles;
    assert_eq!(roles, vec!["rw-foo".to_string()]);
    let status = root
        .auth()
        .auth_status(root.req(AuthStatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(status.enabled);
    let revision = status.auth_revision;
    assert!(revision > 1);

    // Watch: a readable range is created; another is cancelled.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut watch = WatchClient::new(alice.channel.clone())
        .watch(alice.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let create = |key: &str, end: &str| WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: key.into(),
                range_end: end.into(),
                ..Default::default()
            },
        )),
    };
    tx.send(create("bar", "")).await.unwrap();
    let refused_watch = watch.message().await.unwrap().unwrap();
    assert!(refused_watch.created && refused_watch.canceled);
    assert_eq!(
        refused_watch.cancel_reason,
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    );
    tx.send(create("foo/", "foo0")).await.unwrap();
    let created = watch.message().await.unwrap().unwrap();
    assert!(created.created && !created.canceled);

    // A revoked permission takes effect on the very next request.
    root.revoke("rw-foo", "foo/", "foo0").await.unwrap();
    refused(
        alice.get("foo/1").await,
        Code::PermissionDenied,
        "etcdserver: permission denied",
    );
    refused(
        alice.put("foo/2", "v").await,
        Code::PermissionDenied,
        "etcdserver: permission denied",
    );
    // The watcher created before stays (etcd 3.5: watchers are not checked
    // again).
    root.put("foo/3", "v").await.unwrap();
    let event = watch.message().await.unwrap().unwrap();
    assert_eq!(event.events.len(), 1);
    drop(tx);

    // A deleted user's token is void at once.
    root.auth()
        .user_delete(root.req(AuthUserDeleteRequest {
            name: "alice".into(),
        }))
        .await
        .unwrap();
    refused(
        alice.get("foo/1").await,
        Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );

    // Disable, then enable: a token from before is void.
    root.auth()
        .auth_disable(root.req(AuthDisableRequest {}))
        .await
        .unwrap();
    // With auth off, a token is not even read.
    conn.put("open", "v").await.unwrap();
    root.put("open", "v").await.unwrap();
    conn.enable().await.unwrap();
    refused(
        root.get("open").await,
        Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );
    let root = conn.as_token(&conn.authenticate("root", "rootpw").await.unwrap());
    assert_eq!(root.get("open").await.unwrap(), 1);
    drop((conn, root, alice));
    member.stop().await.unwrap();
}

/// A connection to each of the three members, and root's (auth enabled
/// through member 0) once bob holds role `k` (read-write on key `k`).
async fn root_and_bob(cluster: &Cluster) -> ([Conn; 3], Conn) {
    cluster.wait_started().await;
    let conns = [
        Conn::to(&cluster.url(0)).await,
        Conn::to(&cluster.url(1)).await,
        Conn::to(&cluster.url(2)).await,
    ];
    let root = set_up_root(&conns[0]).await;
    root.user_add("bob", "bobpw").await.unwrap();
    root.role_add("k").await.unwrap();
    root.grant("k", "k", "").await.unwrap();
    root.grant_role("bob", "k").await.unwrap();
    (conns, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_users_tokens_and_revocations() {
    let mut cluster = Cluster::start(3, cheap_bcrypt).await;
    let (conns, root) = root_and_bob(&cluster).await;
    root.put("k", "v").await.unwrap();

    // Added through member 0, authenticated on member 1 (its Authenticate
    // waits for a ReadIndex round, so it sees the user).
    let token = conns[1].authenticate("bob", "bobpw").await.unwrap();
    // The token, assigned by every member when it applied the entry, is
    // valid on each (a member that has not applied it yet waits for it).
    for conn in &conns {
        assert_eq!(conn.as_token(&token).get("k").await.unwrap(), 1);
    }
    // Revoked through member 0: every member refuses bob's next
    // linearizable read and write.
    root.revoke("k", "k", "").await.unwrap();
    for conn in &conns {
        let bob = conn.as_token(&token);
        refused(
            bob.get("k").await,
            Code::PermissionDenied,
            "etcdserver: permission denied",
        );
        refused(
            bob.put("k", "w").await,
            Code::PermissionDenied,
            "etcdserver: permission denied",
        );
    }
    drop(root);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_are_valid_on_every_member_and_carry_their_revision() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
    let spec = format!(
        "jwt,pub-key={},priv-key={},sign-method=RS256,ttl=5m",
        fixtures.join("rsa.pub").display(),
        fixtures.join("rsa.pem").display()
    );
    let kind = cairn_server::auth::TokenKind::parse(&spec).unwrap();
    let mut cluster = Cluster::start(3, |c| {
        cheap_bcrypt(c);
        c.auth_token = kind.clone();
    })
    .await;
    let (conns, root) = root_and_bob(&cluster).await;
    // root's token is from before those changes: its revision is old for
    // a key request (admin calls do not check it, as etcd's); a new one
    // serves.
    refused(
        root.put("k", "v").await,
        Code::InvalidArgument,
        "etcdserver: revision of auth store is old",
    );
    let root = conns[0].as_token(&conns[0].authenticate("root", "rootpw").await.unwrap());
    root.put("k", "v").await.unwrap();
    // A signed token (three dot-separated parts), made on member 1, valid
    // on every member: no state behind it.
    let token = conns[1].authenticate("bob", "bobpw").await.unwrap();
    assert_eq!(token.split('.').count(), 3, "{token}");
    for conn in &conns {
        assert_eq!(conn.as_token(&token).get("k").await.unwrap(), 1);
    }
    // After a change of the auth store the token's revision is old: it is
    // refused, and a new token gets the new permissions (none on k).
    root.revoke("k", "k", "").await.unwrap();
    for conn in &conns {
        assert!(conn.as_token(&token).get("k").await.is_err());
    }
    let token = conns[2].authenticate("bob", "bobpw").await.unwrap();
    refused(
        conns[0].as_token(&token).get("k").await,
        Code::PermissionDenied,
        "etcdserver: permission denied",
    );
    // A token signed with another key is not a token.
    let forged = format!("{}x", token);
    refused(
        conns[0].as_token(&forged).get("k").await,
        Code::Unauthenticated,
        "etcdserver: invalid auth token",
    );
    drop(root);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_auth_state_and_none_of_it_is_on_disk_in_plain_text() {
    const USER: &str = "CAIRNUSERCANARY";
    const ROLE: &str = "CAIRNROLECANARY";
    const PASSWORD: &str = "CAIRNPASSWORDCANARY";
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    cheap_bcrypt(&mut config);
    let member = embed::start(config.clone()).await.unwrap();
    let conn = Conn::to(&member.client_urls()[0]).await;
    let root = set_up_root(&conn).await;
    root.user_add(USER, PASSWORD).await.unwrap();
    root.role_add(ROLE).await.unwrap();
    root.grant(ROLE, "data/", "data0").await.unwrap();
    root.grant_role(USER, ROLE).await.unwrap();
    let user = conn.as_token(&conn.authenticate(USER, PASSWORD).await.unwrap());
    user.put("data/1", "v").await.unwrap();
    drop((conn, root, user));
    member.stop().await.unwrap();

    // Nothing of it in any file: names, password, bcrypt hashes (plain, or
    // base64 as the raft entry carries them).
    let canaries: [&[u8]; 5] = [
        USER.as_bytes(),
        ROLE.as_bytes(),
        PASSWORD.as_bytes(),
        b"$2b$04$",
        b"JDJiJDA0J",
    ];
    let scanned = common::files(&config.data_dir);
    assert!(scanned.len() > 3, "{scanned:?}");
    for file in scanned {
        let bytes = std::fs::read(&file).unwrap();
        for canary in canaries {
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary),
                "{} holds {:?} in plain text",
                file.display(),
                String::from_utf8_lossy(canary)
            );
        }
    }
    // Control: the scan finds what is there.
    let control = dir.path().join("control.txt");
    std::fs::write(&control, format!("..{USER}..")).unwrap();
    let bytes = std::fs::read(&control).unwrap();
    assert!(bytes.windows(USER.len()).any(|w| w == USER.as_bytes()));

    // After a restart: still enabled, the users, roles and passwords hold.
    let member = embed::start(config).await.unwrap();
    let conn = Conn::to(&member.client_urls()[0]).await;
    refused(
        conn.get("data/1").await,
        Code::InvalidArgument,
        "etcdserver: user name is empty",
    );
    let user = conn.as_token(&conn.authenticate(USER, PASSWORD).await.unwrap());
    assert_eq!(user.get("data/1").await.unwrap(), 1);
    refused(
        user.get("other").await,
        Code::PermissionDenied,
        "etcdserver: permission denied",
    );
    drop((conn, user));
    member.stop().await.unwrap();
}

/// `POST path` with a JSON `body` and an optional `Authorization` header:
/// (status, body).
async fn post(address: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

/// The value of string field `name` in a flat JSON object.
fn field(json: &str, name: &str) -> String {
    let start = json.find(&format!("\"{name}\":\"")).unwrap() + name.len() + 4;
    let end = json[start..].find('"').unwrap();
    json[start..start + end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_authenticates_and_takes_the_authorization_header() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    cheap_bcrypt(&mut config);
    let member = embed::start(config).await.unwrap();
    let address = member.client_urls()[0]
        .trim_start_matches("http://")
        .to_string();
    for (path, body) in [
        (
            "/v3/auth/user/add",
            r#"{"name":"root","password":"rootpw"}"#,
        ),
        ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
        ("/v3/auth/enable", "{}"),
    ] {
        let (status, answer) = post(&address, path, body, None).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let (status, answer) = post(
        &address,
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"rootpw"}"#,
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let token = field(&answer, "token");
    // "foo" and "bar", base64.
    let put = r#"{"key":"Zm9v","value":"YmFy"}"#;
    let (status, answer) = post(&address, "/v3/kv/put", put, None).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("etcdserver: user name is empty"),
        "{answer}"
    );
    let (status, answer) = post(&address, "/v3/kv/put", put, Some(&token)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post(&address, "/v3/kv/put", put, Some("bogus.1")).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer.contains("etcdserver: invalid auth token"),
        "{answer}"
    );
    let (status, answer) = post(&address, "/v3/auth/status", "{}", Some(&token)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"enabled\":true"), "{answer}");
    member.stop().await.unwrap();
}
