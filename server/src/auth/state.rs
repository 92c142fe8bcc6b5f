//! The replicated auth store as plain data (etcd's `auth/store.go`, minus
//! the tokens): the enabled flag, the revision, users and roles, and etcd's
//! rule for each change. Deterministic: every member applies the same
//! change to the same state and gets the same state and answer.
//!
//! A change is applied to a copy ([`AuthState::apply`]); the caller writes
//! the copy's record ([`AuthState::encode`]) in the entry's write batch and
//! swaps it in only once that batch is on disk.
//!
//! The revision starts at 1 (etcd commits revision 1 when it creates its
//! auth buckets) and grows by one with every change, except enabling (which
//! keeps it, as etcd does), a grant of a role the user already has, and
//! authentication.

use std::collections::BTreeMap;

use cairn_proto::authpb::permission::Type as PermissionType;
use cairn_proto::authpb::{Permission, Role, User, UserAddOptions};
use cairn_proto::cairnpb::{self, auth_request::Request};
use cairn_proto::etcdserverpb::{
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserRevokeRoleRequest,
};
use prost::Message;

use super::perm::UserPermissions;
use super::{ROOT_ROLE, ROOT_USER};
use crate::error::EtcdError;

/// The auth store of one member, as every member holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthState {
    /// Whether requests are checked (AuthEnable / AuthDisable).
    enabled: bool,
    /// Grows with every change: a write whose caller was identified at an
    /// older revision is refused at apply ("revision of auth store is old").
    revision: u64,
    /// Users by name: password hash (bcrypt), sorted roles, options.
    users: BTreeMap<String, User>,
    /// Roles by name, each with its permissions sorted by key.
    roles: BTreeMap<String, Role>,
    /// Each user's permissions (union of its roles), derived from `users`
    /// and `roles` after every change: checked on every request.
    permissions: BTreeMap<String, UserPermissions>,
}

impl Default for AuthState {
    fn default() -> Self {
        Self {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            permissions: BTreeMap::new(),
        }
    }
}

/// What applying a change produced, besides the new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing more.
    None,
    /// Auth was enabled: tokens may be handed out.
    Enabled,
    /// Auth was disabled: every token is void.
    Disabled,
    /// This user's password changed or it was deleted: its tokens are void.
    InvalidateUser(String),
    /// Authentication of this user succeeded: assign it a token.
    Authenticated {
        /// The user.
        user: String,
        /// The random part of a simple token, chosen by the proposer.
        simple_token: String,
    },
}

fn corrupt(e: prost::DecodeError) -> String {
    e.to_string()
}

/// etcd's `isValidPermissionRange`: a key, and a range end that is empty
/// (one key), after the key, or `"\0"` (from the key on).
pub fn valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || key < range_end || range_end == [0])
}

impl AuthState {
    /// The state a record holds.
    pub fn decode(record: &[u8]) -> Result<Self, String> {
        let pb = cairnpb::AuthState::decode(record).map_err(corrupt)?;
        let mut state = Self {
            enabled: pb.enabled,
            revision: pb.revision,
            users: pb
                .users
                .into_iter()
                .map(|u| (String::from_utf8_lossy(&u.name).into_owned(), u))
                .collect(),
            roles: pb
                .roles
                .into_iter()
                .map(|r| (String::from_utf8_lossy(&r.name).into_owned(), r))
                .collect(),
            permissions: BTreeMap::new(),
        };
        state.derive_permissions();
        Ok(state)
    }

    /// The record of this state (users and roles in name order).
    pub fn encode(&self) -> Vec<u8> {
        cairnpb::AuthState {
            enabled: self.enabled,
            revision: self.revision,
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
        }
        .encode_to_vec()
    }

    /// Whether auth is enabled.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A user.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// A role.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every user name, in order.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Every role name, in order.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// A user's permissions (None: no such user).
    pub fn permissions(&self, user: &str) -> Option<&UserPermissions> {
        self.permissions.get(user)
    }

    /// Whether `user` exists and holds the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(has_root_role)
    }

    /// Whether `user` holds `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    fn derive_permissions(&mut self) {
        let roles = &self.roles;
        self.permissions = self
            .users
            .iter()
            .map(|(name, user)| {
                let grants = user
                    .roles
                    .iter()
                    .filter_map(|r| roles.get(r))
                    .flat_map(|r| r.key_permission.iter());
                (name.clone(), UserPermissions::from_grants(grants))
            })
            .collect();
    }

    fn bump(&mut self) {
        self.revision += 1;
    }

    /// Applies `request` to this state (etcd's rules and errors). On error
    /// the state is unchanged (callers apply to a copy anyway).
    pub fn apply(&mut self, request: Request) -> Result<Effect, EtcdError> {
        let effect = match request {
            Request::Enable(_) => {
                if self.enabled {
                    return Ok(Effect::None);
                }
                match self.users.get(ROOT_USER) {
                    None => return Err(EtcdError::RootUserNotExist),
                    Some(u) if !has_root_role(u) => return Err(EtcdError::RootRoleNotExist),
                    Some(_) => {}
                }
                self.enabled = true;
                return Ok(Effect::Enabled);
            }
            Request::Disable(_) => {
                if !self.enabled {
                    return Ok(Effect::None);
                }
                self.enabled = false;
                Effect::Disabled
            }
            Request::Authenticate(a) => {
                if !self.enabled {
                    return Err(EtcdError::AuthNotEnabled);
                }
                match self.users.get(&a.name) {
                    Some(u) if !no_password(u) => {}
                    _ => return Err(EtcdError::AuthFailed),
                }
                return Ok(Effect::Authenticated {
                    user: a.name,
                    simple_token: a.simple_token,
                });
            }
            Request::UserAdd(r) => self.user_add(r)?,
            Request::UserDelete(r) => {
                if self.enabled && r.name == ROOT_USER {
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                if self.users.remove(&r.name).is_none() {
                    return Err(EtcdError::UserNotFound);
                }
                Effect::InvalidateUser(r.name)
            }
            Request::UserChangePassword(r) => self.user_change_password(r)?,
            Request::UserGrantRole(r) => {
                if r.role != ROOT_ROLE && !self.roles.contains_key(&r.role) {
                    if !self.users.contains_key(&r.user) {
                        return Err(EtcdError::UserNotFound);
                    }
                    return Err(EtcdError::RoleNotFound);
                }
                let user = self.users.get_mut(&r.user).ok_or(EtcdError::UserNotFound)?;
                match user.roles.binary_search(&r.role) {
                    // etcd ignores a duplicate grant, without a new revision.
                    Ok(_) => return Ok(Effect::None),
                    Err(at) => user.roles.insert(at, r.role),
                }
                Effect::None
            }
            Request::UserRevokeRole(r) => self.user_revoke_role(r)?,
            Request::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(EtcdError::RoleEmpty);
                }
                if self.roles.contains_key(&r.name) {
                    return Err(EtcdError::RoleAlreadyExist);
                }
                let role = Role {
                    name: r.name.clone().into_bytes(),
                    key_permission: Vec::new(),
                };
                self.roles.insert(r.name, role);
                Effect::None
            }
            Request::RoleGrantPermission(r) => self.role_grant_permission(r)?,
            Request::RoleRevokePermission(r) => self.role_revoke_permission(r)?,
            Request::RoleDelete(r) => {
                if self.enabled && r.role == ROOT_ROLE {
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                if self.roles.remove(&r.role).is_none() {
                    return Err(EtcdError::RoleNotFound);
                }
                for user in self.users.values_mut() {
                    user.roles.retain(|name| *name != r.role);
                }
                Effect::None
            }
        };
        self.bump();
        self.derive_permissions();
        Ok(effect)
    }

    fn user_add(&mut self, r: AuthUserAddRequest) -> Result<Effect, EtcdError> {
        if r.name.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        if self.users.contains_key(&r.name) {
            return Err(EtcdError::UserAlreadyExist);
        }
        let options = r.options.unwrap_or(UserAddOptions { no_password: false });
        let password = if options.no_password {
            Vec::new()
        } else {
            decode_hash(&r.hashed_password)?
        };
        let user = User {
            name: r.name.clone().into_bytes(),
            password,
            roles: Vec::new(),
            options: Some(options),
        };
        self.users.insert(r.name, user);
        Ok(Effect::None)
    }

    fn user_change_password(
        &mut self,
        r: AuthUserChangePasswordRequest,
    ) -> Result<Effect, EtcdError> {
        let user = self.users.get_mut(&r.name).ok_or(EtcdError::UserNotFound)?;
        user.password = if no_password(user) {
            Vec::new()
        } else {
            decode_hash(&r.hashed_password)?
        };
        Ok(Effect::InvalidateUser(r.name))
    }

    fn user_revoke_role(&mut self, r: AuthUserRevokeRoleRequest) -> Result<Effect, EtcdError> {
        if self.enabled && r.name == ROOT_USER && r.role == ROOT_ROLE {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        let user = self.users.get_mut(&r.name).ok_or(EtcdError::UserNotFound)?;
        let before = user.roles.len();
        user.roles.retain(|role| *role != r.role);
        if user.roles.len() == before {
            return Err(EtcdError::RoleNotGranted);
        }
        Ok(Effect::None)
    }

    fn role_grant_permission(
        &mut self,
        r: AuthRoleGrantPermissionRequest,
    ) -> Result<Effect, EtcdError> {
        let perm = r.perm.ok_or(EtcdError::PermissionNotGiven)?;
        if !valid_permission_range(&perm.key, &perm.range_end) {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        let role = self.roles.get_mut(&r.name).ok_or(EtcdError::RoleNotFound)?;
        let kind = PermissionType::try_from(perm.perm_type).unwrap_or(PermissionType::Read);
        match role
            .key_permission
            .iter_mut()
            .find(|p| p.key == perm.key && p.range_end == perm.range_end)
        {
            Some(existing) => existing.perm_type = kind as i32,
            None => {
                let at = role
                    .key_permission
                    .partition_point(|p| p.key.as_slice() < perm.key.as_slice());
                role.key_permission.insert(
                    at,
                    Permission {
                        perm_type: kind as i32,
                        key: perm.key,
                        range_end: perm.range_end,
                    },
                );
            }
        }
        Ok(Effect::None)
    }

    fn role_revoke_permission(
        &mut self,
        r: AuthRoleRevokePermissionRequest,
    ) -> Result<Effect, EtcdError> {
        let role = self.roles.get_mut(&r.role).ok_or(EtcdError::RoleNotFound)?;
        let before = role.key_permission.len();
        role.key_permission
            .retain(|p| !(p.key == r.key && p.range_end == r.range_end));
        if role.key_permission.len() == before {
            return Err(EtcdError::PermissionNotGranted);
        }
        Ok(Effect::None)
    }
}

fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|r| r == ROOT_ROLE)
}

/// Whether a user was created with `no_password` (it cannot authenticate
/// with a password, only by its TLS certificate).
pub fn no_password(user: &User) -> bool {
    user.options.as_ref().is_some_and(|o| o.no_password)
}

/// The bcrypt hash an entry carries (base64, as etcd's `hashedPassword`).
fn decode_hash(hashed: &str) -> Result<Vec<u8>, EtcdError> {
    use base64::Engine as _;
    // Empty: etcd's UserChangePassword with an empty password, which
    // leaves a hash nothing matches. Not base64: only a proposer that
    // skipped hashing makes it; etcd's ErrNoPasswordUser has no gRPC
    // mapping, so it is answered as a failed authentication, changing
    // nothing.
    base64::engine::general_purpose::STANDARD
        .decode(hashed)
        .map_err(|_| EtcdError::AuthFailed)
}
