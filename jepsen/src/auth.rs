//! Runs with auth on (`--auth`): once the cluster has a leader, the harness
//! adds the user `root` with a password, the role `root`, grants it and
//! enables auth, all through the Auth API (what `etcdctl user add`, `role
//! add`, `user grant-role` and `auth enable` send). From then on every
//! client of the run (the workloads, the control plane, the reference watch)
//! authenticates as root and sends its token with each call; cairn-client
//! renews a token a member refuses (expired, made by a member that since
//! restarted, or older than an auth change) and sends the call again, as
//! etcd's clientv3 does, so faults that make members forget their tokens
//! show up as extra `Authenticate` calls, never as failed ops.

use anyhow::{Context, Result};
use cairn_client::proto::authpb::UserAddOptions;
use cairn_client::proto::etcdserverpb::auth_client::AuthClient;
use cairn_client::proto::etcdserverpb::{
    AuthEnableRequest, AuthRoleAddRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
};
use cairn_client::Client;

/// The user every client of an auth run is.
pub const ROOT_USER: &str = "root";
/// Its password (a test value: the run's cluster lives on loopback only).
pub const ROOT_PASSWORD: &str = "cairn-jepsen-root";

/// A user and password for cairn-client's `with_credentials`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// Its password (never printed).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:<password>", self.user)
    }
}

impl Credentials {
    /// The run's root user.
    pub fn root() -> Credentials {
        Credentials {
            user: ROOT_USER.into(),
            password: ROOT_PASSWORD.into(),
        }
    }

    /// `client`, authenticated as this user.
    pub async fn apply(&self, client: Client) -> Result<Client, cairn_client::Error> {
        client
            .with_credentials(self.user.clone(), self.password.clone())
            .await
    }
}

/// Adds root (user and role), grants the role and enables auth, through
/// `client` (auth still off). Each step is a write sent once: the cluster
/// has just elected its leader and no fault runs yet.
pub async fn enable(client: &Client) -> Result<Credentials> {
    let mut auth = AuthClient::new(client.channel());
    auth.user_add(AuthUserAddRequest {
        name: ROOT_USER.into(),
        password: ROOT_PASSWORD.into(),
        options: Some(UserAddOptions { no_password: false }),
        hashed_password: String::new(),
    })
    .await
    .context("user add root")?;
    auth.role_add(AuthRoleAddRequest {
        name: ROOT_USER.into(),
    })
    .await
    .context("role add root")?;
    auth.user_grant_role(AuthUserGrantRoleRequest {
        user: ROOT_USER.into(),
        role: ROOT_USER.into(),
    })
    .await
    .context("user grant-role root root")?;
    auth.auth_enable(AuthEnableRequest {})
        .await
        .context("auth enable")?;
    Ok(Credentials::root())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_not_printed() {
        assert_eq!(format!("{:?}", Credentials::root()), "root:<password>");
    }
}
