//! Who a request comes from, as every member API resolves it (etcd's
//! `AuthInfoFromCtx`): a [`Caller`] from the transport becomes a [`Who`].
//!
//! While auth is off this is one atomic load and nothing else: no token is
//! looked up, nothing is allocated. While it is on, a token must be known
//! here (a simple token made by another member's Authenticate entry is
//! waited for until this member has applied that entry, within the request
//! timeout) or the request is refused with "invalid auth token"; with no
//! token, the certificate's Common Name (`--client-cert-auth`) is the user;
//! with neither, the caller has no credentials, which every check refuses
//! with "user name is empty".

use cairn_proto::cairnpb::AuthHeader;

use super::Proposer;
use crate::auth::{check, AuthInfo, AuthState, Caller, Checker};
use crate::error::EtcdError;

/// A caller resolved against this member's auth store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// The member itself: never checked (its entries say so).
    Member,
    /// Auth was off when the request arrived: not checked here; its entry
    /// carries no credentials (refused at apply if auth is on by then).
    AuthOff,
    /// A client while auth is on: a user (None: no credentials).
    Client(Option<AuthInfo>),
}

impl Who {
    /// The auth header of this caller's raft entries.
    pub fn header(&self) -> Option<AuthHeader> {
        match self {
            Who::Member => Some(AuthHeader {
                username: String::new(),
                revision: 0,
                internal: true,
            }),
            Who::AuthOff | Who::Client(None) => None,
            Who::Client(Some(info)) => Some(AuthHeader {
                username: info.user.clone(),
                revision: info.revision,
                internal: false,
            }),
        }
    }

    /// Whether requests of this caller are checked.
    pub fn is_checked(&self) -> bool {
        matches!(self, Who::Client(_))
    }

    /// The permission checker of this caller against `state`.
    pub fn checker<'a>(&self, state: &'a AuthState) -> Checker<'a> {
        match self {
            Who::Member | Who::AuthOff => Checker::all(),
            Who::Client(info) => Checker::new(state, info.as_ref()),
        }
    }

    /// etcd's `IsAdminPermitted` for this caller against `state`.
    pub fn admin(&self, state: &AuthState) -> Result<(), EtcdError> {
        match self {
            Who::Member | Who::AuthOff => Ok(()),
            Who::Client(info) => check::admin(state, info.as_ref()),
        }
    }

    /// The user, if one was identified.
    pub fn user(&self) -> Option<&str> {
        match self {
            Who::Client(Some(info)) => Some(&info.user),
            _ => None,
        }
    }

    /// etcd's check after a serialized read: the auth store changed while
    /// the request was served ("revision of auth store is old").
    pub fn still_current(&self, state: &AuthState) -> Result<(), EtcdError> {
        match self {
            Who::Client(Some(info)) if info.revision != 0 && info.revision != state.revision() => {
                Err(EtcdError::AuthOldRevision)
            }
            _ => Ok(()),
        }
    }
}

impl Proposer {
    /// Resolves `caller` (see the module documentation).
    pub async fn identify(&self, caller: &Caller) -> Result<Who, EtcdError> {
        if matches!(caller, Caller::Member) {
            return Ok(Who::Member);
        }
        let auth = self.machine().auth();
        if !auth.enabled() {
            return Ok(Who::AuthOff);
        }
        match caller {
            Caller::Member => Ok(Who::Member),
            Caller::Anonymous => Ok(Who::Client(None)),
            Caller::CommonName(name) => Ok(Who::Client(Some(AuthInfo {
                user: name.clone(),
                revision: auth.state().revision(),
            }))),
            Caller::Token(token) => {
                let tokens = auth.tokens();
                if let Some(index) = tokens.needs_index(token) {
                    self.wait_applied_index(index).await?;
                }
                match tokens.info(token, auth.state().revision()) {
                    Some((user, revision)) => Ok(Who::Client(Some(AuthInfo { user, revision }))),
                    None => {
                        tracing::warn!("invalid auth token");
                        Err(EtcdError::InvalidAuthToken)
                    }
                }
            }
        }
    }

    /// Refuses `caller` unless it may administer the cluster (the root
    /// role, while auth is on).
    pub async fn require_admin(&self, caller: &Caller) -> Result<Who, EtcdError> {
        let who = self.identify(caller).await?;
        if who.is_checked() {
            who.admin(&self.machine().auth().state())?;
        }
        Ok(who)
    }

    /// Waits until this member has applied `index` (a simple token's
    /// entry), up to the request timeout; a token whose entry is not
    /// applied by then is invalid here.
    async fn wait_applied_index(&self, index: u64) -> Result<(), EtcdError> {
        if self.machine().applied_index() >= index {
            return Ok(());
        }
        let mut status = self.replication().raft.subscribe();
        let deadline = tokio::time::Instant::now() + self.request_timeout();
        while self.machine().applied_index() < index {
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(EtcdError::Stopped),
                Err(_) => return Err(EtcdError::InvalidAuthToken),
            }
        }
        Ok(())
    }
}
