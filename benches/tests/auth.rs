//! `--user name:password` against a tiny in-process member that answers
//! `Auth.Authenticate`, Put and Range as an etcd with auth on: no token is
//! "user name is empty", a stale one "invalid auth token", and each token
//! expires after a set number of calls. The benchmark must authenticate,
//! send the token with every request, and renew an expired one without a
//! request failing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cairn_bench::cli::Cli;
use cairn_proto::etcdserverpb::auth_server::{Auth, AuthServer};
use cairn_proto::etcdserverpb::kv_server::{Kv, KvServer};
use cairn_proto::etcdserverpb::{
    AuthenticateRequest, AuthenticateResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
};
use clap::Parser;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// The member's state; tokens last `LIFETIME` calls.
#[derive(Default)]
struct State {
    token: Mutex<Option<String>>,
    authenticates: AtomicUsize,
    used: AtomicUsize,
    refused: AtomicUsize,
}

const LIFETIME: usize = 7;

#[derive(Clone)]
struct Member(Arc<State>);

impl Member {
    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(token) = req.metadata().get("token") else {
            return Err(Status::invalid_argument("etcdserver: user name is empty"));
        };
        let mut current = self.0.token.lock().unwrap();
        if current.as_deref() != Some(token.to_str().unwrap()) {
            self.0.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unauthenticated("etcdserver: invalid auth token"));
        }
        if self.0.used.fetch_add(1, Ordering::SeqCst) + 1 >= LIFETIME {
            *current = None;
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
        let req = req.into_inner();
        if (req.name.as_str(), req.password.as_str()) != ("bench", "pa:ss") {
            return Err(Status::invalid_argument(
                "etcdserver: authentication failed, invalid user ID or password",
            ));
        }
        let n = self.0.authenticates.fetch_add(1, Ordering::SeqCst);
        let token = format!("token-{n}");
        *self.0.token.lock().unwrap() = Some(token.clone());
        self.0.used.store(0, Ordering::SeqCst);
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

async fn member() -> (String, Arc<State>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let state = Arc::new(State::default());
    let m = Member(state.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthServer::new(m.clone()))
            .add_service(KvServer::new(m))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (endpoint, state)
}

async fn bench(args: &[&str]) -> Result<Vec<cairn_bench::Report>, cairn_bench::Error> {
    let mut argv = vec!["cairn-bench"];
    argv.extend_from_slice(args);
    cairn_bench::run(&Cli::try_parse_from(&argv).unwrap()).await
}

#[tokio::test]
async fn user_flag_authenticates_and_renews_expired_tokens() {
    let (endpoint, state) = member().await;
    let endpoints = format!("--endpoints={endpoint}");
    let reports = bench(&[&endpoints, "--user=bench:pa:ss", "put", "--total=50"])
        .await
        .unwrap();
    let stats = &reports[0].stats;
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!(stats.lats.len(), 50);
    // One token per 7 calls (1 at connect), each expiry costing one refusal.
    let authenticates = state.authenticates.load(Ordering::SeqCst);
    assert_eq!(authenticates, 1 + 50 / LIFETIME, "authenticates");
    assert_eq!(state.refused.load(Ordering::SeqCst), 50 / LIFETIME);

    let reports = bench(&[&endpoints, "--user=bench:pa:ss", "range", "k", "--total=5"])
        .await
        .unwrap();
    assert!(reports[0].stats.errors.is_empty());

    // Without --user every request is refused, and reported as such.
    let reports = bench(&[&endpoints, "put", "--total=3"]).await.unwrap();
    assert_eq!(
        reports[0]
            .stats
            .errors
            .get("etcdserver: user name is empty"),
        Some(&3)
    );

    // A wrong password stops the run before it starts, without the password.
    let err = bench(&[&endpoints, "--user=bench:wrong", "put", "--total=3"])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("wrong"), "{err}");

    // A user without a password is refused by the flag's parser.
    assert!(Cli::try_parse_from(["cairn-bench", "--user=bench", "put"]).is_err());
}
