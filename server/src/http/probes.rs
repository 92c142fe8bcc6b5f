//! `GET /livez` and `GET /readyz`, as etcd 3.6 (and 3.5.11+) answers them:
//! a list of named checks, each also served alone under its own path
//! (`/readyz/linearizable_read`).
//!
//! - `/livez`: `serializable_read` (the member answers from its own
//!   store). No alarm makes it fail: a liveness probe that failed on
//!   CORRUPT would have the member restarted in a loop.
//! - `/readyz`: `data_corruption` (no CORRUPT alarm), `serializable_read`,
//!   `linearizable_read` (a ReadIndex round: there is a leader and a
//!   quorum), `non_learner`.
//!
//! 200 with `ok` when every check passes (`?verbose` lists each check
//! first: `[+]name ok`); 503 with the list when one fails (`[-]name
//! failed: reason`). `?exclude=name` skips a check (an unknown name is
//! only logged, as etcd does). Each check's result is recorded in
//! `etcd_server_healthcheck` and `etcd_server_healthchecks_total`.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use cairn_proto::etcdserverpb::{AlarmType, RangeRequest};

use crate::member::Apis;
use crate::mvcc::{KeyRange, RangeOptions};

/// A check's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    DataCorruption,
    SerializableRead,
    LinearizableRead,
    NonLearner,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
            Check::NonLearner => "non_learner",
        }
    }

    /// Runs the check: why it failed, if it did.
    async fn run(self, apis: &Arc<Apis>) -> Result<(), String> {
        match self {
            Check::DataCorruption => {
                if apis
                    .proposer()
                    .machine()
                    .tables()
                    .has_alarm(AlarmType::Corrupt)
                {
                    return Err("alarm activated: CORRUPT".into());
                }
                Ok(())
            }
            Check::SerializableRead => {
                // The store itself, not the KV API: that one refuses every
                // read under CORRUPT, which must fail readiness only.
                let store = Arc::clone(apis.store());
                let read = tokio::task::spawn_blocking(move || {
                    let options = RangeOptions {
                        limit: 1,
                        ..RangeOptions::default()
                    };
                    store.range(&KeyRange::new(b"", b""), options)
                })
                .await;
                match read {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(crate::error::EtcdError::from(e).to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Check::LinearizableRead => {
                let read = RangeRequest {
                    key: vec![0],
                    limit: 1,
                    keys_only: true,
                    serializable: false,
                    ..RangeRequest::default()
                };
                let timeout = apis.proposer().request_timeout();
                match tokio::time::timeout(
                    timeout,
                    apis.kv().range(read, &crate::auth::Caller::Member),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(crate::error::EtcdError::Timeout.to_string()),
                }
            }
            Check::NonLearner => {
                if apis.raft_status().is_learner {
                    return Err("not supported for learner".into());
                }
                Ok(())
            }
        }
    }
}

/// Which endpoint: its checks, in etcd's order.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Livez,
    Readyz,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Livez => "livez",
            Kind::Readyz => "readyz",
        }
    }

    fn checks(self) -> &'static [Check] {
        match self {
            Kind::Livez => &[Check::SerializableRead],
            Kind::Readyz => &[
                Check::DataCorruption,
                Check::SerializableRead,
                Check::LinearizableRead,
                Check::NonLearner,
            ],
        }
    }
}

/// `router` with etcd's health endpoints: `/health`, `/livez`, `/readyz`
/// and each check's own path.
pub(super) fn routes(router: axum::Router<Arc<Apis>>) -> axum::Router<Arc<Apis>> {
    use axum::routing::get;
    router
        .route("/health", get(super::health::health))
        .route("/livez", get(livez))
        .route("/livez/{check}", get(livez_one))
        .route("/readyz", get(readyz))
        .route("/readyz/{check}", get(readyz_one))
}

/// `GET /livez`.
pub(super) async fn livez(state: State<Arc<Apis>>, query: RawQuery) -> Response {
    all(Kind::Livez, state, query).await
}

/// `GET /readyz`.
pub(super) async fn readyz(state: State<Arc<Apis>>, query: RawQuery) -> Response {
    all(Kind::Readyz, state, query).await
}

/// `GET /livez/{check}`.
pub(super) async fn livez_one(
    state: State<Arc<Apis>>,
    check: Path<String>,
    query: RawQuery,
) -> Response {
    one(Kind::Livez, state, check, query).await
}

/// `GET /readyz/{check}`.
pub(super) async fn readyz_one(
    state: State<Arc<Apis>>,
    check: Path<String>,
    query: RawQuery,
) -> Response {
    one(Kind::Readyz, state, check, query).await
}

/// The query's values of `name` (`?exclude=a&exclude=b`), and whether
/// `name` is there at all (`?verbose`).
fn query_values<'a>(query: &'a Option<String>, name: &str) -> (bool, Vec<&'a str>) {
    let mut present = false;
    let mut values = Vec::new();
    for pair in query.as_deref().unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            present = true;
            if !value.is_empty() {
                values.push(value);
            }
        }
    }
    (present, values)
}

async fn all(kind: Kind, State(apis): State<Arc<Apis>>, RawQuery(query): RawQuery) -> Response {
    let (_, excluded) = query_values(&query, "exclude");
    let unknown: Vec<&str> = excluded
        .iter()
        .copied()
        .filter(|e| !kind.checks().iter().any(|c| c.name() == *e))
        .collect();
    if !unknown.is_empty() {
        // For version compatibility, etcd does not fail the request.
        tracing::warn!(missing_health_checks = ?unknown, "some health checks cannot be excluded");
    }
    let checks: Vec<Check> = kind
        .checks()
        .iter()
        .copied()
        .filter(|c| !excluded.contains(&c.name()))
        .collect();
    answer(kind, &apis, &checks, &query).await
}

async fn one(
    kind: Kind,
    State(apis): State<Arc<Apis>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    match kind.checks().iter().find(|c| c.name() == name) {
        Some(check) => answer(kind, &apis, &[*check], &query).await,
        None => super::not_found(axum::http::Request::new(())).await,
    }
}

/// Runs `checks` and answers as etcd's `newHealthHandler`.
async fn answer(
    kind: Kind,
    apis: &Arc<Apis>,
    checks: &[Check],
    query: &Option<String>,
) -> Response {
    let mut report = String::new();
    let mut failed = false;
    for check in checks {
        let result = check.run(apis).await;
        if let Some(m) = apis.metrics() {
            m.server
                .record_check(kind.name(), check.name(), result.is_ok());
        }
        match result {
            Ok(()) => report.push_str(&format!("[+]{} ok\n", check.name())),
            Err(reason) => {
                failed = true;
                report.push_str(&format!("[-]{} failed: {reason}\n", check.name()));
            }
        }
    }
    if failed {
        tracing::error!(path = %format!("/{}", kind.name()), reason = %report, "Health check error");
        // Go's http.Error: the text and a newline, failed checks always
        // listed.
        return super::go_text(StatusCode::SERVICE_UNAVAILABLE, format!("{report}\n"));
    }
    let (verbose, _) = query_values(query, "verbose");
    let body = if verbose {
        format!("{report}ok\n")
    } else {
        "ok\n".to_string()
    };
    super::go_text(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_read_as_go_reads_them() {
        let query = Some("exclude=a&verbose&exclude=&exclude=b".to_string());
        assert_eq!(
            super::query_values(&query, "exclude"),
            (true, vec!["a", "b"])
        );
        assert_eq!(super::query_values(&query, "verbose"), (true, vec![]));
        assert_eq!(super::query_values(&None, "verbose"), (false, vec![]));
    }
}
