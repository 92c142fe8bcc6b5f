//! Who sent a gRPC request, as etcd reads it: metadata `token` (or
//! `authorization`, the name etcd's JSON gateway passes the HTTP
//! `Authorization` header under), else the verified Common Name of the
//! client's certificate (`--client-cert-auth`), else nobody. Only read
//! while auth is enabled: otherwise one atomic load, no allocation.

use crate::auth::Caller;
use crate::member::Proposer;

/// The caller of `request`, for the member whose `proposer` serves it.
pub fn of<T>(request: &tonic::Request<T>, proposer: &Proposer) -> Caller {
    if !proposer.machine().auth().enabled() {
        return Caller::Anonymous;
    }
    let metadata = request.metadata();
    if let Some(token) = metadata
        .get("token")
        .or_else(|| metadata.get("authorization"))
    {
        // A token that is not text is no token anyone was given.
        return Caller::Token(token.to_str().unwrap_or_default().to_string());
    }
    match cairn_tls::server::ConnInfo::of(request.extensions()).and_then(|c| c.common_name.clone())
    {
        Some(name) => Caller::CommonName(name),
        None => Caller::Anonymous,
    }
}
