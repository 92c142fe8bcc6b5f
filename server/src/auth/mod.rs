//! Authentication and role-based access control (etcd's `auth` package).
//!
//! The permission checker ([`perm`]) and the JWT token provider ([`jwt`],
//! with the parsing of `--auth-token`); the replicated auth store, simple
//! tokens and the Auth service come with the Auth issue's next steps.

pub mod jwt;
pub mod perm;
