//! Username/password authentication, as etcd's clientv3 does it: the client
//! calls `Auth.Authenticate` once ([`Client::with_credentials`]), sends the
//! token it gets as the gRPC metadata `token` on every call, and when a
//! member refuses the token (expired, unknown to that member, or issued
//! before the last change to users and roles) it authenticates again and
//! sends the call once more.
//!
//! Which answers mean "get a new token and retry" (clientv3's
//! `shouldRefreshToken`):
//!
//! - `Unauthenticated` "etcdserver: invalid auth token": a simple token
//!   that expired (`--auth-token-ttl`) or was made by another member, or a
//!   JWT past its `exp`;
//! - "etcdserver: revision of auth store is old" (`InvalidArgument`; etcd
//!   3.5.1 sends it as `Unknown` "auth: revision in header is old"): the
//!   token predates a change to users, roles or permissions;
//! - "etcdserver: user name is empty" (`InvalidArgument`): the call carried
//!   no token, for example because auth was enabled after this client
//!   connected.
//!
//! All three are refused before anything is applied, so a write is safe to
//! send again. A watch etcd cancels at creation with one of them as the
//! reason is opened again the same way (clientv3's `shouldRetryWatch`). The call is retried once per failure of this kind; if the
//! new token is refused too, that answer is returned.

use std::sync::{PoisonError, RwLock};

use cairn_proto::etcdserverpb::{auth_client::AuthClient, AuthenticateRequest};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};

use crate::retry::{self, Kind};
use crate::{Client, Error};

/// The gRPC metadata key etcd reads the token from.
pub(crate) const TOKEN_KEY: &str = "token";

/// etcd's `ErrGRPCInvalidAuthToken` (code `Unauthenticated`).
pub(crate) const INVALID_TOKEN: &str = "etcdserver: invalid auth token";
/// etcd's `ErrGRPCAuthOldRevision` (code `InvalidArgument`).
pub(crate) const OLD_REVISION: &str = "etcdserver: revision of auth store is old";
/// The same refusal as etcd 3.5.1 sends it (code `Unknown`: its gRPC error
/// table had no entry for it yet).
pub(crate) const OLD_REVISION_3_5_1: &str = "auth: revision in header is old";
/// etcd's `ErrGRPCUserEmpty` (code `InvalidArgument`).
pub(crate) const USER_EMPTY: &str = "etcdserver: user name is empty";
/// etcd's `ErrGRPCAuthNotEnabled` (code `FailedPrecondition`): an
/// `Authenticate` while auth is off. Not an error for
/// [`Client::with_credentials`]: calls then go without a token, as in
/// clientv3.
pub(crate) const AUTH_NOT_ENABLED: &str = "etcdserver: authentication is not enabled";

/// A user's credentials and the token they earned, shared by every clone
/// of the client that was given them.
pub(crate) struct Credentials {
    /// The user name sent to `Authenticate`.
    user: String,
    /// The password sent to `Authenticate`; never printed.
    password: String,
    /// The current token, `None` before the first `Authenticate` or while
    /// the cluster has auth disabled. A std lock: held only to copy the
    /// value, never across an await.
    token: RwLock<Option<AsciiMetadataValue>>,
    /// Serialises re-authentication, so that many calls refused at once
    /// get one new token, not one each.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Credentials {
    /// The user only: neither the password nor the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub(crate) fn new(user: String, password: String) -> Credentials {
        Credentials {
            user,
            password,
            token: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The current token.
    pub(crate) fn token(&self) -> Option<AsciiMetadataValue> {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_token(&self, token: Option<AsciiMetadataValue>) {
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = token;
    }
}

/// True if `err` asks for a new token (see the module docs); a missing
/// token counts only for a client that has credentials. A watch refused
/// for its token (etcd cancels it at creation with the error as the cancel
/// reason) counts too, as in clientv3's `shouldRetryWatch`.
pub(crate) fn should_refresh(err: &Error, has_credentials: bool) -> bool {
    let (code, message) = match err {
        Error::Status(status) => (Some(status.code()), status.message()),
        Error::WatchCanceled(reason) => (None, reason.as_str()),
        _ => return false,
    };
    let code_is = |want: tonic::Code| code.is_none_or(|code| code == want);
    match message {
        INVALID_TOKEN => code_is(tonic::Code::Unauthenticated),
        OLD_REVISION => code_is(tonic::Code::InvalidArgument),
        OLD_REVISION_3_5_1 => code_is(tonic::Code::Unknown),
        USER_EMPTY => has_credentials && code_is(tonic::Code::InvalidArgument),
        _ => false,
    }
}

impl Client {
    /// This client with a user's credentials: authenticates now
    /// (`Auth.Authenticate` on the current endpoint, failing over like a
    /// read) and sends the token with every call from then on, on this
    /// client and its clones. A refused token is replaced as the module
    /// docs say. Fails with the server's answer when the name or password
    /// is wrong ("etcdserver: authentication failed, invalid user ID or
    /// password"); succeeds without a token while the cluster has auth
    /// disabled (the first call refused for want of one then
    /// authenticates), as etcd's clientv3.
    pub async fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<Client, Error> {
        let credentials = std::sync::Arc::new(Credentials::new(user.into(), password.into()));
        self.auth = Some(credentials.clone());
        self.authenticate(&credentials).await?;
        Ok(self)
    }

    /// The token, if this client has credentials and auth is on.
    pub(crate) fn token(&self) -> Option<AsciiMetadataValue> {
        self.auth.as_ref().and_then(|c| c.token())
    }

    /// Gets a new token after a call sent with `stale` was refused, unless
    /// another call already replaced it meanwhile. Without credentials
    /// there is nothing to renew (the call is simply sent again, as
    /// clientv3 does after an old-revision refusal).
    pub(crate) async fn refresh_token(
        &self,
        stale: Option<&AsciiMetadataValue>,
    ) -> Result<(), Error> {
        let Some(credentials) = &self.auth else {
            return Ok(());
        };
        let _one_at_a_time = credentials.refreshing.lock().await;
        if credentials.token().as_ref() != stale {
            return Ok(());
        }
        self.authenticate(credentials).await
    }

    /// `Auth.Authenticate` with `credentials`, failing over like a read
    /// (one round over the endpoints: a second token is harmless); stores
    /// the token.
    async fn authenticate(&self, credentials: &Credentials) -> Result<(), Error> {
        let request = AuthenticateRequest {
            name: credentials.user.clone(),
            password: credentials.password.clone(),
        };
        let endpoints = self.endpoints().len();
        let mut tried = 0;
        loop {
            let (index, channel) = self.current();
            let answer = AuthClient::new(channel)
                .authenticate(request.clone())
                .await
                .map_err(Error::Status);
            let err = match answer {
                Ok(response) => {
                    let token = response.into_inner().token;
                    let token = MetadataValue::try_from(token.as_str()).map_err(|_| {
                        Error::Status(tonic::Status::internal(
                            "the server's auth token is not valid gRPC metadata",
                        ))
                    })?;
                    credentials.set_token(Some(token));
                    return Ok(());
                }
                Err(Error::Status(status))
                    if status.code() == tonic::Code::FailedPrecondition
                        && status.message() == AUTH_NOT_ENABLED =>
                {
                    credentials.set_token(None);
                    return Ok(());
                }
                Err(err) => err,
            };
            tried += 1;
            if tried >= endpoints
                || retry::decide(Kind::Read, retry::classify(&err)) != retry::Action::TryNext
            {
                return Err(err);
            }
            self.fail_over(index);
        }
    }
}

/// The metadata entry a request carries for `token`.
pub(crate) fn add_token<T>(request: &mut tonic::Request<T>, token: Option<AsciiMetadataValue>) {
    if let Some(token) = token {
        request.metadata_mut().insert(TOKEN_KEY, token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_answers_ask_for_a_new_token() {
        let status = |code, msg: &str| Error::Status(tonic::Status::new(code, msg));
        use tonic::Code::*;
        for (err, with, without) in [
            (status(Unauthenticated, INVALID_TOKEN), true, true),
            (status(InvalidArgument, OLD_REVISION), true, true),
            (status(Unknown, OLD_REVISION_3_5_1), true, true),
            (status(InvalidArgument, USER_EMPTY), true, false),
            (
                status(
                    InvalidArgument,
                    "etcdserver: authentication failed, invalid user ID or password",
                ),
                false,
                false,
            ),
            (
                status(PermissionDenied, "etcdserver: permission denied"),
                false,
                false,
            ),
            (status(Unavailable, INVALID_TOKEN), false, false),
            (
                Error::UnknownOutcome {
                    source: tonic::Status::unauthenticated(INVALID_TOKEN),
                },
                false,
                false,
            ),
            // A watch canceled at creation, its reason the error.
            (Error::WatchCanceled(INVALID_TOKEN.into()), true, true),
            (Error::WatchCanceled(OLD_REVISION_3_5_1.into()), true, true),
            (Error::WatchCanceled(USER_EMPTY.into()), true, false),
            (
                Error::WatchCanceled("etcdserver: permission denied".into()),
                false,
                false,
            ),
        ] {
            assert_eq!(should_refresh(&err, true), with, "{err}");
            assert_eq!(should_refresh(&err, false), without, "{err}");
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = Credentials::new("alice".into(), "s3cret".into());
        c.set_token(Some(MetadataValue::from_static("tok.en.value")));
        let text = format!("{c:?}");
        assert!(text.contains("alice"));
        assert!(
            !text.contains("s3cret") && !text.contains("tok.en"),
            "{text}"
        );
    }
}
