//! `GET /health`, as etcd 3.5 answers it: `{"health":"true","reason":""}`
//! with 200, or `"false"` and the reason with 503 when an alarm is raised
//! (`?exclude=NOSPACE` ignores that alarm), when there is no leader, or
//! when a read fails within the request timeout (linearizable unless
//! `?serializable=true`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_proto::etcdserverpb::{AlarmType, RangeRequest};

use crate::member::Apis;

/// The handler.
pub(super) async fn health(
    State(apis): State<Arc<Apis>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let serializable = query.get("serializable").is_some_and(|v| v == "true");
    let excluded: Vec<&str> = query
        .get("exclude")
        .map(|e| e.split(',').collect())
        .unwrap_or_default();
    let checked = check(&apis, serializable, &excluded).await;
    if let Some(m) = apis.metrics() {
        match checked {
            Ok(()) => m.server.health_success.inc(),
            Err(_) => m.server.health_failures.inc(),
        }
    }
    match checked {
        Ok(()) => answer(StatusCode::OK, "true", String::new()),
        Err(reason) => answer(StatusCode::SERVICE_UNAVAILABLE, "false", reason),
    }
}

fn answer(status: StatusCode, health: &'static str, reason: String) -> Response {
    let body = serde_json::json!({ "health": health, "reason": reason }).to_string();
    if status != StatusCode::OK {
        // etcd answers an unhealthy member through Go's `http.Error`: its
        // headers, and a newline after the body.
        return (
            status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            format!("{body}\n"),
        )
            .into_response();
    }
    // etcd writes it without a content type: Go sniffs text/plain.
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Why this member is not healthy, if it is not.
async fn check(apis: &Apis, serializable: bool, excluded: &[&str]) -> Result<(), String> {
    for alarm in apis.proposer().machine().tables().alarms() {
        let name = AlarmType::try_from(alarm.alarm)
            .map(|a| a.as_str_name())
            .unwrap_or("UNKNOWN");
        if !excluded.contains(&name) {
            return Err(format!("ALARM {name}"));
        }
    }
    if apis.raft_status().leader == 0 {
        return Err("RAFT NO LEADER".into());
    }
    let read = RangeRequest {
        key: b"health".to_vec(),
        serializable,
        ..RangeRequest::default()
    };
    match tokio::time::timeout(
        apis.proposer().request_timeout(),
        apis.kv().range(read, &crate::auth::Caller::Member),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("QGET ERROR:{e}")),
        Err(_) => Err("QGET ERROR:context deadline exceeded".into()),
    }
}
