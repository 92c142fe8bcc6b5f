//! Authentication and role-based access control (etcd's `auth` package).
//!
//! - [`state`]: the replicated auth store as data (users, roles, enabled,
//!   revision) and etcd's rule for every change.
//! - [`store`]: [`AuthStore`], that state in one member's state machine:
//!   one sealed record on disk, an `Arc` in memory, the token provider.
//! - [`check`]: the permission check of each request kind ([`Checker`]) and
//!   the admin check (the root role).
//! - [`perm`]: key-range permission intervals (read, write).
//! - [`token`]: [`TokenProvider`] and etcd's simple tokens.
//! - [`jwt`]: etcd's JWT tokens (`--auth-token jwt,...`) and the parsing
//!   of `--auth-token`.
//! - [`password`]: bcrypt, rate-limited, off the async threads.
//!
//! Who calls: gRPC metadata `token` (or `authorization`, as etcd's gateway
//! passes it) names a token; with `--client-cert-auth` and no token, the
//! client certificate's Common Name is the user. The gRPC layer turns that
//! into a [`Caller`]; the member's APIs resolve it into an [`AuthInfo`]
//! (user + the auth revision it was resolved at) only while auth is on.
//! Writes carry the `AuthInfo` in their raft entry and are checked when
//! they apply, against the replicated state, on every member alike; reads
//! are checked after their ReadIndex round, against the state this member
//! has applied by then.
//!
//! Watchers: a watch is checked when it is created, against the auth state
//! of that moment. As in etcd 3.5, a watcher already created is NOT checked
//! again: revoking a permission, deleting the user or disabling auth does
//! not cancel it, and it keeps receiving events until it or its stream is
//! closed. A later create on the same stream is checked against the state
//! at that later moment.

pub mod check;
pub mod jwt;
pub mod password;
pub mod perm;
pub mod state;
pub mod store;
pub mod token;

#[cfg(test)]
mod tests;

pub use check::Checker;
pub use password::Passwords;
pub use state::AuthState;
pub use store::AuthStore;
pub use token::{SimpleTokens, TokenProvider};

/// The user every Auth admin check asks for (etcd's `rootUser`).
pub const ROOT_USER: &str = "root";
/// The role that grants everything (etcd's `rootRole`).
pub const ROOT_ROLE: &str = "root";

/// A caller, identified (etcd's `AuthInfo`): a user name and the auth
/// revision its credentials were checked at. The empty user with revision
/// 0 is a caller without credentials.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthInfo {
    /// The user name.
    pub user: String,
    /// The auth store's revision when the credentials were checked.
    pub revision: u64,
}

/// Who sent a request, as the transport saw it (not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token and no certificate name: checked as no user.
    Anonymous,
    /// A token from the request's metadata.
    Token(String),
    /// The verified Common Name of the client's certificate
    /// (`--client-cert-auth`), used when no token was given.
    CommonName(String),
    /// The member itself (lease expiry, auto compaction, health checks):
    /// never checked.
    Member,
}

/// `--auth-token`: which kind of token Authenticate hands out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TokenKind {
    /// etcd's simple tokens (the default).
    #[default]
    Simple,
    /// JWT, with etcd's options (`jwt,pub-key=...,priv-key=...,sign-method=...,ttl=...`;
    /// the key files are read when the member starts).
    Jwt(jwt::JwtOptions),
}

impl TokenKind {
    /// Reads `--auth-token` as etcd does: the type before the first comma,
    /// then `key=value` options ([`jwt::parse_spec`]).
    pub fn parse(value: &str) -> Result<Self, String> {
        match jwt::parse_spec(value).map_err(|e| e.to_string())? {
            jwt::TokenSpec::Simple => Ok(TokenKind::Simple),
            jwt::TokenSpec::Jwt(options) => Ok(TokenKind::Jwt(options)),
        }
    }
}
