//! Credentials against a tiny in-process member on loopback that implements
//! `Auth.Authenticate` and KV Range/Put as an etcd with auth on answers them:
//! a call without a token is refused with "user name is empty", a token
//! that is not the current one with "invalid auth token", and the token
//! expires after a set number of calls (as a simple token's TTL or a JWT's
//! `exp` would). The member counts what it saw, so the tests check how
//! often the client authenticated and sent each call, not only what it got.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cairn_client::proto::etcdserverpb::auth_server::{Auth, AuthServer};
use cairn_client::proto::etcdserverpb::kv_server::{Kv, KvServer};
use cairn_client::proto::etcdserverpb::{
    AuthenticateRequest, AuthenticateResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
};
use cairn_client::{Client, Error, Get, Put};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

/// The member's state.
#[derive(Default)]
struct State {
    /// Whether auth is on (off: Authenticate is refused, tokens ignored).
    enabled: AtomicBool,
    /// The token that is valid now, if any.
    token: Mutex<Option<String>>,
    /// Authenticate calls.
    authenticates: AtomicUsize,
    /// KV calls.
    calls: AtomicUsize,
    /// KV calls with the valid token that each token serves before it
    /// expires (0: never).
    lifetime: AtomicUsize,
    /// KV calls served with the current token.
    used: AtomicUsize,
    /// Refuse every token (a member that cannot check them).
    refuse_all: AtomicBool,
    /// Answer the next KV call with etcd 3.5.1's old-revision refusal.
    old_revision_once: AtomicBool,
    /// The tokens the KV calls carried (None: no token).
    seen: Mutex<Vec<Option<String>>>,
}

#[derive(Clone)]
struct Member(Arc<State>);

impl Member {
    /// etcd's check of a KV call's token.
    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let s = &self.0;
        s.calls.fetch_add(1, Ordering::SeqCst);
        let token = req
            .metadata()
            .get("token")
            .map(|v| v.to_str().unwrap().to_string());
        s.seen.lock().unwrap().push(token.clone());
        if !s.enabled.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(token) = token else {
            return Err(Status::invalid_argument("etcdserver: user name is empty"));
        };
        if s.old_revision_once.swap(false, Ordering::SeqCst) {
            return Err(Status::unknown("auth: revision in header is old"));
        }
        let mut current = s.token.lock().unwrap();
        if s.refuse_all.load(Ordering::SeqCst) || current.as_deref() != Some(token.as_str()) {
            return Err(Status::unauthenticated("etcdserver: invalid auth token"));
        }
        let used = s.used.fetch_add(1, Ordering::SeqCst) + 1;
        let lifetime = s.lifetime.load(Ordering::SeqCst);
        if lifetime > 0 && used >= lifetime {
            *current = None; // this call is served; the next one is refused
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Auth for Member {
    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let s = &self.0;
        let n = s.authenticates.fetch_add(1, Ordering::SeqCst) + 1;
        if !s.enabled.load(Ordering::SeqCst) {
            return Err(Status::failed_precondition(
                "etcdserver: authentication is not enabled",
            ));
        }
        let req = req.into_inner();
        if (req.name.as_str(), req.password.as_str()) != ("alice", "alice-pw") {
            return Err(Status::invalid_argument(
                "etcdserver: authentication failed, invalid user ID or password",
            ));
        }
        let token = format!("token-{n}.{}", "x".repeat(16));
        *s.token.lock().unwrap() = Some(token.clone());
        s.used.store(0, Ordering::SeqCst);
        Ok(Response::new(AuthenticateResponse {
            header: None,
            token,
        }))
    }
}

#[tonic::async_trait]
impl Kv for Member {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        self.check(&req)?;
        Ok(Response::new(RangeResponse::default()))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.check(&req)?;
        Ok(Response::new(PutResponse::default()))
    }
}

/// Starts a member with auth on or off; returns its URL and state.
async fn member(enabled: bool) -> (String, Arc<State>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(State::default());
    state.enabled.store(enabled, Ordering::SeqCst);
    let m = Member(state.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthServer::new(m.clone()))
            .add_service(KvServer::new(m))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, state)
}

fn n(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

#[tokio::test]
async fn token_on_every_call_and_renewed_once_when_it_expires() {
    let (url, state) = member(true).await;
    state.lifetime.store(3, Ordering::SeqCst);
    let client = Client::connect(&url)
        .await
        .unwrap()
        .with_credentials("alice", "alice-pw")
        .await
        .unwrap();
    assert_eq!(n(&state.authenticates), 1, "authenticated on connect");

    // A clone shares the credentials and the token.
    let clone = client.clone();
    for i in 0..7 {
        if i % 2 == 0 {
            client.put(Put::new("k", "v")).await.unwrap();
        } else {
            clone.get(Get::key("k")).await.unwrap();
        }
    }
    // 7 calls, 3 per token: two expiries, each one refused call, one
    // renewal and the call sent again.
    assert_eq!(n(&state.authenticates), 3);
    assert_eq!(n(&state.calls), 9);
    let seen = state.seen.lock().unwrap().clone();
    let tokens: Vec<&str> = seen.iter().map(|t| t.as_deref().unwrap()).collect();
    assert!(
        tokens[..4].iter().all(|t| t.starts_with("token-1.")),
        "{tokens:?}"
    );
    assert!(
        tokens[4..8].iter().all(|t| t.starts_with("token-2.")),
        "{tokens:?}"
    );
    assert!(tokens[8].starts_with("token-3."), "{tokens:?}");

    // A pinned endpoint client carries them too.
    client
        .endpoint(0)
        .unwrap()
        .get(Get::key("k"))
        .await
        .unwrap();
    assert!(state.seen.lock().unwrap().last().unwrap().is_some());

    // The debug form shows the user, not the password or the token.
    let text = format!("{client:?}");
    assert!(text.contains("alice") && !text.contains("alice-pw") && !text.contains("token-"));
}

#[tokio::test]
async fn a_refused_new_token_is_returned_after_one_renewal() {
    let (url, state) = member(true).await;
    let client = Client::connect(&url)
        .await
        .unwrap()
        .with_credentials("alice", "alice-pw")
        .await
        .unwrap();
    state.refuse_all.store(true, Ordering::SeqCst);
    for write in [false, true] {
        let (auths, calls) = (n(&state.authenticates), n(&state.calls));
        let err = if write {
            client.put(Put::new("k", "v")).await.unwrap_err()
        } else {
            client.get(Get::key("k")).await.unwrap_err()
        };
        let status = err.status().unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unauthenticated, "etcdserver: invalid auth token")
        );
        assert!(
            matches!(err, Error::Status(_)),
            "not applied, so not unknown: {err:?}"
        );
        assert_eq!(n(&state.authenticates) - auths, 1, "one renewal");
        assert_eq!(n(&state.calls) - calls, 2, "sent twice");
    }
}

#[tokio::test]
async fn old_auth_revision_renews_the_token() {
    let (url, state) = member(true).await;
    let client = Client::connect(&url)
        .await
        .unwrap()
        .with_credentials("alice", "alice-pw")
        .await
        .unwrap();
    state.old_revision_once.store(true, Ordering::SeqCst);
    client.put(Put::new("k", "v")).await.unwrap();
    assert_eq!((n(&state.authenticates), n(&state.calls)), (2, 2));
}

#[tokio::test]
async fn wrong_password_is_the_servers_answer() {
    let (url, state) = member(true).await;
    let err = Client::connect(&url)
        .await
        .unwrap()
        .with_credentials("alice", "wrong")
        .await
        .unwrap_err();
    let status = err.status().unwrap();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "etcdserver: authentication failed, invalid user ID or password"
    );
    assert!(!err.to_string().contains("wrong"), "{err}");
    assert_eq!(n(&state.authenticates), 1);
}

#[tokio::test]
async fn auth_enabled_later_authenticates_on_user_empty() {
    let (url, state) = member(false).await;
    let client = Client::connect(&url)
        .await
        .unwrap()
        .with_credentials("alice", "alice-pw")
        .await
        .unwrap();
    client.get(Get::key("k")).await.unwrap();
    assert_eq!(
        state.seen.lock().unwrap().clone(),
        vec![None],
        "no token while auth is off"
    );

    state.enabled.store(true, Ordering::SeqCst);
    client.get(Get::key("k")).await.unwrap();
    assert_eq!((n(&state.authenticates), n(&state.calls)), (2, 3));
    assert!(state.seen.lock().unwrap().last().unwrap().is_some());

    // Without credentials, "user name is empty" is the answer.
    let plain = Client::connect(&url).await.unwrap();
    let err = plain.get(Get::key("k")).await.unwrap_err();
    assert_eq!(
        err.status().unwrap().message(),
        "etcdserver: user name is empty"
    );
    assert_eq!(n(&state.authenticates), 2);
}

#[tokio::test]
async fn concurrent_refusals_share_one_renewal() {
    let (url, state) = member(true).await;
    let client = Client::connect(&url)
        .await
        .unwrap()
        .with_credentials("alice", "alice-pw")
        .await
        .unwrap();
    // Expire the token: every call in flight is refused with it.
    *state.token.lock().unwrap() = None;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.get(Get::key("k")).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(n(&state.authenticates), 2, "one renewal for all of them");
}
