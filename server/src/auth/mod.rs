//! Authentication and role-based access control (etcd's `auth` package).
//!
//! Only the permission checker exists yet ([`perm`]): the replicated auth
//! store, tokens and the Auth service come with the Auth issue's next steps.

pub mod perm;
