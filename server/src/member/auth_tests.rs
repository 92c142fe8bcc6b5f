//! The Auth API on a single-voter member on tokio's paused clock: tokens
//! through the whole request path (expiry after `--auth-token-ttl` unused,
//! renewal on use, void after AuthDisable), and etcd's answers to callers
//! without or with bad credentials.

use std::time::Duration;

use cairn_proto::etcdserverpb::{
    AuthUserAddRequest, AuthUserGrantRoleRequest, AuthenticateRequest, PutRequest, RangeRequest,
};
use tokio::time::advance;

use super::test_member::{member_on, Disk};
use crate::auth::Caller;
use crate::error::EtcdError;
use crate::lease::LessorConfig;

fn get() -> RangeRequest {
    RangeRequest {
        key: b"k".to_vec(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn tokens_expire_unused_renew_on_use_and_die_with_auth_disable() {
    let m = member_on(&Disk::new(), LessorConfig::default());
    let auth = m.auth();
    auth.user_add(
        AuthUserAddRequest {
            name: "root".into(),
            password: "pw".into(),
            ..Default::default()
        },
        &Caller::Anonymous,
    )
    .await
    .unwrap();
    auth.user_grant_role(
        AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        },
        &Caller::Anonymous,
    )
    .await
    .unwrap();
    let login = |password: &str| AuthenticateRequest {
        name: "root".into(),
        password: password.into(),
    };
    assert_eq!(
        auth.authenticate(login("pw")).await,
        Err(EtcdError::AuthNotEnabled)
    );
    auth.enable(&Caller::Anonymous).await.unwrap();
    assert_eq!(
        auth.authenticate(login("wrong")).await,
        Err(EtcdError::AuthFailed)
    );
    let token = auth.authenticate(login("pw")).await.unwrap();
    let with = |t: &str| Caller::Token(t.to_string());

    // No credentials, a bad token.
    assert_eq!(
        m.kv().range(get(), &Caller::Anonymous).await.unwrap_err(),
        EtcdError::UserEmpty
    );
    assert_eq!(
        m.kv().range(get(), &with("nope")).await.unwrap_err(),
        EtcdError::InvalidAuthToken
    );
    // A token of an index this member never applies: refused once the
    // request timeout is over (the clock is moved while it waits).
    let unknown = with("abc.999999");
    let (waited, ()) = tokio::join!(m.kv().range(get(), &unknown), async {
        // The request waits on the raft thread in real time first; the
        // paused clock does not move by itself while the member lives.
        for _ in 0..20 {
            let pause = || std::thread::sleep(Duration::from_millis(20));
            tokio::task::spawn_blocking(pause).await.unwrap();
            advance(Duration::from_secs(1)).await;
        }
    });
    assert_eq!(waited.unwrap_err(), EtcdError::InvalidAuthToken);

    // Used every 299 s, it lives on; unused for 300 s, it is gone.
    let token = with(&token);
    m.kv().range(get(), &token).await.unwrap();
    for _ in 0..3 {
        advance(Duration::from_secs(299)).await;
        m.kv()
            .put(
                PutRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                },
                &token,
            )
            .await
            .unwrap();
    }
    advance(Duration::from_secs(301)).await;
    assert_eq!(
        m.kv().range(get(), &token).await.unwrap_err(),
        EtcdError::InvalidAuthToken
    );

    // A token from before AuthDisable / AuthEnable is void.
    let token = with(&auth.authenticate(login("pw")).await.unwrap());
    m.kv().range(get(), &token).await.unwrap();
    auth.disable(&token).await.unwrap();
    auth.enable(&Caller::Anonymous).await.unwrap();
    assert_eq!(
        m.kv().range(get(), &token).await.unwrap_err(),
        EtcdError::InvalidAuthToken
    );
}
