//! The Auth API (etcd's `Authenticator`): every change is a raft entry
//! applied by every member (checked there: the root role, while auth is
//! on); reads (AuthStatus, UserGet/List, RoleGet/List) are served after a
//! ReadIndex round from the state this member has applied, checked the way
//! etcd's applier checks them (a user may read itself, and the roles it
//! holds).
//!
//! Passwords are hashed here, before proposing, so no entry holds one;
//! Authenticate checks the password here (rate-limited, see
//! [`Passwords`]) and proposes an entry naming only the user and the random
//! part of its token, as etcd's InternalAuthenticateRequest does.

use std::sync::Arc;

use cairn_proto::cairnpb::{auth_request::Request, InternalAuthenticate};
use cairn_proto::etcdserverpb::{
    AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGetRequest, AuthRoleGetResponse,
    AuthRoleGrantPermissionRequest, AuthRoleListResponse, AuthRoleRevokePermissionRequest,
    AuthStatusResponse, AuthUserAddRequest, AuthUserChangePasswordRequest, AuthUserDeleteRequest,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserListResponse,
    AuthUserRevokeRoleRequest, AuthenticateRequest,
};

use super::{unexpected, Proposer, Who};
use crate::auth::state::{no_password, valid_permission_range};
use crate::auth::{Caller, Passwords};
use crate::entry::Command;
use crate::error::EtcdError;
use crate::machine::Applied;

/// Attempts of Authenticate when the auth store changes between the
/// password check and the token (etcd retries until they agree).
const AUTHENTICATE_ATTEMPTS: usize = 3;

/// What the Auth service calls.
#[derive(Debug)]
pub struct AuthApi {
    /// Changes are proposed through it; reads wait on its ReadIndex.
    proposer: Arc<Proposer>,
    /// bcrypt at `--bcrypt-cost`, and the Authenticate rate limit.
    passwords: Passwords,
}

impl AuthApi {
    /// The Auth API over `proposer`.
    pub fn new(proposer: Arc<Proposer>, passwords: Passwords) -> Self {
        Self {
            proposer,
            passwords,
        }
    }

    /// The shared write path (headers).
    pub fn proposer(&self) -> &Arc<Proposer> {
        &self.proposer
    }

    /// Proposes an auth change for `caller` (refused at once, as it would
    /// be at apply, unless `caller` may administer auth).
    async fn change(&self, request: Request, caller: &Caller) -> Result<Option<String>, EtcdError> {
        let who = self.proposer.require_admin(caller).await?;
        self.propose(request, &who).await
    }

    /// Proposes an auth change for `who`, checked again at apply.
    async fn propose(&self, request: Request, who: &Who) -> Result<Option<String>, EtcdError> {
        match self
            .proposer
            .propose_as(Command::Auth(request), who.header())
            .await?
        {
            Applied::Auth(token) => Ok(token),
            other => Err(unexpected(other)),
        }
    }

    /// AuthEnable: refused without a `root` user holding the `root` role.
    pub async fn enable(&self, caller: &Caller) -> Result<(), EtcdError> {
        self.change(Request::Enable(Default::default()), caller)
            .await
            .map(drop)
    }

    /// AuthDisable (root only): every token becomes invalid.
    pub async fn disable(&self, caller: &Caller) -> Result<(), EtcdError> {
        self.change(Request::Disable(Default::default()), caller)
            .await
            .map(drop)
    }

    /// Reads the state after a ReadIndex round, for `caller`, who must be
    /// a root user unless `allowed` says otherwise.
    async fn read<T>(
        &self,
        caller: &Caller,
        allowed: impl FnOnce(&crate::auth::AuthState, Option<&str>) -> bool,
        read: impl FnOnce(&crate::auth::AuthState) -> Result<T, EtcdError>,
    ) -> Result<T, EtcdError> {
        self.proposer.check_serving()?;
        self.proposer.barrier().await?;
        let who = self.proposer.identify(caller).await?;
        let state = self.proposer.machine().auth().state();
        if who.is_checked() {
            if let Err(e) = who.admin(&state) {
                if !allowed(&state, who.user()) {
                    return Err(e);
                }
            }
        }
        read(&state)
    }

    /// AuthStatus (root only while enabled).
    pub async fn status(&self, caller: &Caller) -> Result<AuthStatusResponse, EtcdError> {
        self.read(
            caller,
            |_, _| false,
            |state| {
                Ok(AuthStatusResponse {
                    header: Some(self.proposer.header(0)),
                    enabled: state.enabled(),
                    auth_revision: state.revision(),
                })
            },
        )
        .await
    }

    /// Authenticate: the password is checked here; the token is assigned
    /// by every member when it applies the entry.
    pub async fn authenticate(&self, req: AuthenticateRequest) -> Result<String, EtcdError> {
        self.proposer.check_serving()?;
        self.proposer.barrier().await?;
        let auth = Arc::clone(self.proposer.machine().auth());
        let mut last = Err(EtcdError::AuthFailed);
        for _ in 0..AUTHENTICATE_ATTEMPTS {
            let checked = auth.state();
            if !checked.enabled() {
                return Err(EtcdError::AuthNotEnabled);
            }
            let hash = match checked.user(&req.name) {
                Some(user) if no_password(user) => return Err(EtcdError::NoPasswordUser),
                Some(user) => user.password.clone(),
                None => {
                    tracing::warn!(user = %req.name, "invalid authentication was requested: no such user");
                    return Err(EtcdError::AuthFailed);
                }
            };
            if !self.passwords.verify(req.password.clone(), hash).await? {
                tracing::info!(user = %req.name, "invalid password");
                return Err(EtcdError::AuthFailed);
            }
            let prefix = auth.tokens().prefix()?;
            let request = Request::Authenticate(InternalAuthenticate {
                name: req.name.clone(),
                simple_token: prefix,
            });
            last = match self
                .proposer
                .propose_as(Command::Auth(request), None)
                .await?
            {
                Applied::Auth(Some(token)) => Ok(token),
                other => Err(unexpected(other)),
            };
            if checked.revision() == auth.state().revision() {
                return last;
            }
            tracing::info!("revision when password checked became stale; retrying");
        }
        last
    }

    /// UserAdd: the password is hashed before proposing.
    pub async fn user_add(
        &self,
        mut req: AuthUserAddRequest,
        caller: &Caller,
    ) -> Result<(), EtcdError> {
        let who = self.proposer.require_admin(caller).await?;
        if req.name.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        let password = std::mem::take(&mut req.password);
        req.hashed_password = if req.options.as_ref().is_some_and(|o| o.no_password) {
            String::new()
        } else {
            self.passwords.hash(password).await?
        };
        self.propose(Request::UserAdd(req), &who).await.map(drop)
    }

    /// UserGet (root, or the user itself).
    pub async fn user_get(
        &self,
        req: AuthUserGetRequest,
        caller: &Caller,
    ) -> Result<AuthUserGetResponse, EtcdError> {
        self.read(
            caller,
            |_, user| user == Some(req.name.as_str()),
            |state| {
                let user = state.user(&req.name).ok_or(EtcdError::UserNotFound)?;
                Ok(AuthUserGetResponse {
                    header: Some(self.proposer.header(0)),
                    roles: user.roles.clone(),
                })
            },
        )
        .await
    }

    /// UserList (root only).
    pub async fn user_list(&self, caller: &Caller) -> Result<AuthUserListResponse, EtcdError> {
        self.read(
            caller,
            |_, _| false,
            |state| {
                Ok(AuthUserListResponse {
                    header: Some(self.proposer.header(0)),
                    users: state.user_names(),
                })
            },
        )
        .await
    }

    /// UserDelete (never `root` while auth is on).
    pub async fn user_delete(
        &self,
        req: AuthUserDeleteRequest,
        caller: &Caller,
    ) -> Result<(), EtcdError> {
        self.change(Request::UserDelete(req), caller)
            .await
            .map(drop)
    }

    /// UserChangePassword: the new password is hashed before proposing.
    pub async fn user_change_password(
        &self,
        mut req: AuthUserChangePasswordRequest,
        caller: &Caller,
    ) -> Result<(), EtcdError> {
        let who = self.proposer.require_admin(caller).await?;
        let password = std::mem::take(&mut req.password);
        // etcd hashes only a non-empty password: an empty one leaves the
        // user with no password that matches.
        req.hashed_password = if password.is_empty() {
            String::new()
        } else {
            self.passwords.hash(password).await?
        };
        self.propose(Request::UserChangePassword(req), &who)
            .await
            .map(drop)
    }

    /// UserGrantRole.
    pub async fn user_grant_role(
        &self,
        req: AuthUserGrantRoleRequest,
        caller: &Caller,
    ) -> Result<(), EtcdError> {
        self.change(Request::UserGrantRole(req), caller)
            .await
            .map(drop)
    }

    /// UserRevokeRole (root never loses the root role while auth is on).
    pub async fn user_revoke_role(
        &self,
        req: AuthUserRevokeRoleRequest,
        caller: &Caller,
    ) -> Result<(), EtcdError> {
        self.change(Request::UserRevokeRole(req), caller)
            .await
            .map(drop)
    }

    /// RoleAdd.
    pub async fn role_add(
        &self,
        req: AuthRoleAddRequest,
        caller: &Caller,
    ) -> Result<(), EtcdError> {
        let who = self.proposer.require_admin(caller).await?;
        if req.name.is_empty() {
            return Err(EtcdError::RoleEmpty);
        }
        self.propose(Request::RoleAdd(req), &who).await.map(drop)
    }

    /// RoleGet (root, or a user holding the role): the role's stored
    /// permissions (the root role's are empty, as etcd 3.5 reports them).
    pub async fn role_get(
        &self,
        req: AuthRoleGetRequest,
        caller: &Caller,
    ) -> Result<AuthRoleGetResponse, EtcdError> {
        self.read(
            caller,
            |state, user| user.is_some_and(|u| state.has_role(u, &req.role)),
            |state| {
                let role = state.role(&req.role).ok_or(EtcdError::RoleNotFound)?;
                Ok(AuthRoleGetResponse {
                    header: Some(self.proposer.header(0)),
                    perm: role.key_permission.clone(),
                })
            },
        )
        .await
    }

    /// RoleList (root only).
    pub async fn role_list(&self, caller: &Caller) -> Result<AuthRoleListResponse, EtcdError> {
        self.read(
            caller,
            |_, _| false,
            |state| {
                Ok(AuthRoleListResponse {
                    header: Some(self.proposer.header(0)),
                    roles: state.role_names(),
                })
            },
        )
        .await
    }

    /// RoleDelete (never `root` while auth is on); the role leaves every
    /// user holding it.
    pub async fn role_delete(
        &self,
        req: AuthRoleDeleteRequest,
        caller: &Caller,
    ) -> Result<(), EtcdError> {
        self.change(Request::RoleDelete(req), caller)
            .await
            .map(drop)
    }

    /// RoleGrantPermission: a permission with an empty key, or a range end
    /// at or before its key (other than `"\0"`), is refused before
    /// proposing ("invalid auth management").
    pub async fn role_grant_permission(
        &self,
        req: AuthRoleGrantPermissionRequest,
        caller: &Caller,
    ) -> Result<(), EtcdError> {
        let who = self.proposer.require_admin(caller).await?;
        let perm = req.perm.as_ref().ok_or(EtcdError::PermissionNotGiven)?;
        if !valid_permission_range(&perm.key, &perm.range_end) {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        self.propose(Request::RoleGrantPermission(req), &who)
            .await
            .map(drop)
    }

    /// RoleRevokePermission.
    pub async fn role_revoke_permission(
        &self,
        req: AuthRoleRevokePermissionRequest,
        caller: &Caller,
    ) -> Result<(), EtcdError> {
        self.change(Request::RoleRevokePermission(req), caller)
            .await
            .map(drop)
    }
}
