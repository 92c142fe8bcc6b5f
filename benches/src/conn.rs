//! Connections: etcd's benchmark opens `--conns` clients, each over the
//! whole `--endpoints` list, and gives client i the connection i % conns.
//! etcd's clientv3 (3.4 and later) balances a connection's calls round-robin
//! over the endpoints; [`Conn`] does the same: one HTTP/2 connection per
//! endpoint ([`H2Channel`]: calls straight onto it, without tonic's
//! `Channel`), and each call (or stream) takes the next one.
//!
//! TLS (`--cacert`, `--cert`, `--key`) follows clientv3's rule: an
//! `https://` endpoint needs it, an endpoint without a scheme uses it when it
//! is given, and an `http://` one never does. The TLS itself is
//! `cairn_tls`'s connector, the one the server and the client use.
//!
//! `--user name:password` (etcd's flag; cairn-bench does not prompt for a
//! missing password): each connection authenticates once when it connects
//! and every call carries the token (gRPC metadata `token`, added by
//! [`Chan`]'s interceptor). A call refused because the token expired or
//! is out of date is sent again once with a new token, as etcd's clientv3
//! under its benchmark does ([`Conn::renew_token`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use cairn_proto::etcdserverpb::{auth_client::AuthClient, AuthenticateRequest};
use cairn_tls::client::{tonic_url, ClientTls, Connector};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;

use crate::h2chan::H2Channel;
use crate::Error;

/// A channel whose calls carry the connection's auth token, if it has one.
pub type Chan = InterceptedService<H2Channel, TokenInterceptor>;

/// One benchmark connection: a channel to every endpoint, used in turn.
#[derive(Debug)]
pub struct Conn {
    /// One connection per endpoint.
    channels: Vec<H2Channel>,
    /// The next channel's index (round-robin).
    next: AtomicUsize,
    /// `--user`'s credentials and the token they got, if given.
    auth: Option<Arc<Auth>>,
}

/// `--user name:password`.
#[derive(Clone, PartialEq, Eq)]
pub struct UserPassword {
    /// The user name.
    pub user: String,
    /// The password (never printed).
    pub password: String,
}

impl std::fmt::Debug for UserPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:<password>", self.user)
    }
}

/// Parses `--user`: etcd splits at the first colon. Without one etcd's
/// benchmark prompts for the password; cairn-bench refuses.
pub fn parse_user(text: &str) -> Result<UserPassword, String> {
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok(UserPassword {
            user: user.to_string(),
            password: password.to_string(),
        }),
        _ => Err("expected name:password (cairn-bench does not prompt for a password)".into()),
    }
}

/// A connection's credentials and current token.
struct Auth {
    /// Who to authenticate as.
    credentials: UserPassword,
    /// The token (`None` while the cluster has auth disabled); a std lock
    /// held only to copy the value.
    token: RwLock<Option<AsciiMetadataValue>>,
    /// One renewal at a time: calls refused together share it.
    renewing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Auth {
    /// The user only: neither the password nor the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("user", &self.credentials.user)
            .finish_non_exhaustive()
    }
}

impl Auth {
    fn token(&self) -> Option<AsciiMetadataValue> {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Adds the connection's token to each call.
#[derive(Debug, Clone)]
pub struct TokenInterceptor(Option<Arc<Auth>>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = self.0.as_ref().and_then(|auth| auth.token()) {
            request.metadata_mut().insert("token", token);
        }
        Ok(request)
    }
}

/// True for the answers that ask for a new token (as named by
/// [`error_text`]): clientv3's `shouldRefreshToken`, etcd 3.5.1's form of
/// the old-revision refusal included.
pub fn needs_new_token(error: &str) -> bool {
    matches!(
        error,
        "etcdserver: invalid auth token"
            | "etcdserver: revision of auth store is old"
            | "etcdserver: user name is empty"
            | "rpc error: code = Unknown desc = auth: revision in header is old"
    )
}

/// `127.0.0.1:2379` -> `http://127.0.0.1:2379` (`https://` when `tls`); a
/// URL with a scheme is kept.
pub fn endpoint_uri(endpoint: &str, tls: bool) -> String {
    let endpoint = endpoint.trim();
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

/// The TLS of a run's connections, from `--cacert`/`--cert`/`--key`.
pub fn client_tls(options: &cairn_tls::client::ClientOptions) -> Result<ClientTls, Error> {
    ClientTls::new(options, &cairn_tls::Policy::default())
        .map_err(|e| Error::new(format!("bad TLS settings: {e}")))
}

impl Conn {
    /// Connects to every endpoint now, so that connection set-up is not
    /// measured as the first requests' latency. `dial_timeout` bounds each
    /// connect (none when zero, etcd's default). `tls` is the run's TLS, if
    /// any TLS flag was given.
    pub async fn connect(
        endpoints: &[String],
        dial_timeout: Duration,
        tls: Option<&ClientTls>,
        user: Option<&UserPassword>,
    ) -> Result<Conn, Error> {
        if endpoints.is_empty() {
            return Err(Error::new("no endpoint given (--endpoints)"));
        }
        let mut channels = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let uri = endpoint_uri(endpoint, tls.is_some());
            // The connector does the TLS; the URL names the host and port.
            let (plain, over_tls) = tonic_url(&uri);
            let target: http::Uri = plain
                .parse()
                .map_err(|e| Error::new(format!("bad endpoint {endpoint:?}: {e}")))?;
            // TLS or not, the connector gathers a connection's small writes
            // into one system call (`cairn_tls::coalesce`).
            let Some(connector) = Connector::for_url(None, over_tls, tls) else {
                return Err(Error::new(format!(
                    "{uri}: an https:// endpoint needs --cacert (or --insecure-skip-tls-verify)"
                )));
            };
            let channel = H2Channel::connect(&target, over_tls, connector, dial_timeout)
                .await
                .map_err(|e| Error::new(format!("dial error: {uri}: {}", with_sources(&*e))))?;
            channels.push(channel);
        }
        let conn = Conn {
            channels,
            next: AtomicUsize::new(0),
            auth: user.map(|credentials| {
                Arc::new(Auth {
                    credentials: credentials.clone(),
                    token: RwLock::new(None),
                    renewing: tokio::sync::Mutex::new(()),
                })
            }),
        };
        conn.authenticate().await?;
        Ok(conn)
    }

    /// The channel for the next call (round-robin over the endpoints).
    pub fn pick(&self) -> Chan {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        InterceptedService::new(
            self.channels[i].clone(),
            TokenInterceptor(self.auth.clone()),
        )
    }

    /// The token calls carry now (to hand to [`Conn::renew_token`]).
    pub fn token(&self) -> Option<AsciiMetadataValue> {
        self.auth.as_ref().and_then(|auth| auth.token())
    }

    /// Whether the connection has `--user` credentials.
    pub fn has_credentials(&self) -> bool {
        self.auth.is_some()
    }

    /// Authenticates again after a call sent with `stale` was refused,
    /// unless another call already did.
    pub async fn renew_token(&self, stale: Option<&AsciiMetadataValue>) -> Result<(), Error> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        let _one_at_a_time = auth.renewing.lock().await;
        if auth.token().as_ref() != stale {
            return Ok(());
        }
        self.authenticate().await
    }

    /// `Auth.Authenticate` on the next endpoint; stores the token (none
    /// while auth is disabled, as clientv3 accepts).
    async fn authenticate(&self) -> Result<(), Error> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        let request = AuthenticateRequest {
            name: auth.credentials.user.clone(),
            password: auth.credentials.password.clone(),
        };
        let token = match AuthClient::new(self.channels[i].clone())
            .authenticate(request)
            .await
        {
            Ok(response) => {
                let token = response.into_inner().token;
                Some(AsciiMetadataValue::try_from(token.as_str()).map_err(|_| {
                    Error::new("authenticate: the token is not valid gRPC metadata")
                })?)
            }
            Err(status)
                if status.code() == tonic::Code::FailedPrecondition
                    && status.message() == "etcdserver: authentication is not enabled" =>
            {
                None
            }
            Err(status) => {
                return Err(Error::new(format!(
                    "authenticate as {}: {}",
                    auth.credentials.user,
                    error_text(&status)
                )))
            }
        };
        *auth.token.write().unwrap_or_else(PoisonError::into_inner) = token;
        Ok(())
    }
}

/// An error and its causes, `a: b: c`.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How a failed call is named in the error distribution: etcd's server
/// errors by their message (clientv3 turns them into errors whose text is
/// the message), anything else as grpc-go prints a status.
pub fn error_text(status: &tonic::Status) -> String {
    let message = status.message();
    if message.starts_with("etcdserver: ") || message.starts_with("mvcc: ") {
        message.to_string()
    } else {
        format!("rpc error: code = {:?} desc = {message}", status.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_error_texts() {
        assert_eq!(
            endpoint_uri("127.0.0.1:2379", false),
            "http://127.0.0.1:2379"
        );
        assert_eq!(endpoint_uri(" https://h:1 ", false), "https://h:1");
        // With TLS flags, clientv3 dials a scheme-less endpoint over TLS and
        // an http:// one without.
        assert_eq!(
            endpoint_uri("127.0.0.1:2379", true),
            "https://127.0.0.1:2379"
        );
        assert_eq!(endpoint_uri("http://h:1", true), "http://h:1");
        assert_eq!(
            error_text(&tonic::Status::unavailable("etcdserver: no leader")),
            "etcdserver: no leader"
        );
        assert_eq!(
            error_text(&tonic::Status::deadline_exceeded("late")),
            "rpc error: code = DeadlineExceeded desc = late"
        );
    }

    #[test]
    fn user_flag_and_token_refusals() {
        let parsed = parse_user("alice:pa:ss").unwrap();
        assert_eq!(
            (parsed.user.as_str(), parsed.password.as_str()),
            ("alice", "pa:ss")
        );
        assert_eq!(format!("{parsed:?}"), "alice:<password>");
        assert_eq!(parse_user("alice:").unwrap().password, "");
        assert!(parse_user("alice").is_err() && parse_user(":pw").is_err());
        for (status, renew) in [
            (
                tonic::Status::unauthenticated("etcdserver: invalid auth token"),
                true,
            ),
            (
                tonic::Status::invalid_argument("etcdserver: revision of auth store is old"),
                true,
            ),
            (
                tonic::Status::unknown("auth: revision in header is old"),
                true,
            ),
            (
                tonic::Status::invalid_argument("etcdserver: user name is empty"),
                true,
            ),
            (
                tonic::Status::permission_denied("etcdserver: permission denied"),
                false,
            ),
        ] {
            assert_eq!(needs_new_token(&error_text(&status)), renew, "{status:?}");
        }
    }
}
