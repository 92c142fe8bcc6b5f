//! The auth store inside the state machine: writes checked at apply with
//! the entry's header, auth changes applied and persisted, tokens assigned
//! by the Authenticate entry, the record moved by snapshots and reloaded
//! by a restart.

use std::sync::Arc;

use base64::Engine as _;
use cairn_proto::authpb::permission::Type as PermissionType;
use cairn_proto::authpb::Permission;
use cairn_proto::cairnpb::{auth_request::Request, AuthHeader, InternalAuthenticate};
use cairn_proto::etcdserverpb::{
    AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest, AuthUserAddRequest,
    AuthUserGrantRoleRequest, CompactionRequest, PutRequest,
};

use super::{Applied, Machine, Outcome};
use crate::entry::{self, Command};
use crate::error::EtcdError;
use crate::lease::{Lessor, LessorConfig, TokioClock};
use crate::mvcc::Store;
use crate::storage::{Engine, MemoryEngine};

fn machine_on(engine: Arc<dyn Engine>) -> Machine {
    let store = Arc::new(Store::open(engine, true).unwrap());
    let lessor = Arc::new(Lessor::new(LessorConfig::default(), Arc::new(TokioClock)));
    Machine::open(store, lessor).unwrap()
}

fn header(user: &str, revision: u64) -> Option<AuthHeader> {
    Some(AuthHeader {
        username: user.into(),
        revision,
        internal: false,
    })
}

fn internal() -> Option<AuthHeader> {
    Some(AuthHeader {
        internal: true,
        ..Default::default()
    })
}

/// Applies `command` with `auth` as the next entry of `m`.
fn apply(m: &Machine, auth: Option<AuthHeader>, command: Command) -> Outcome {
    let index = m.applied_index() + 1;
    let id = 1000 + index;
    let mut waiter = m.waiters().register(id);
    m.apply_entry(
        index,
        &entry::encode_with(id, auth, command).unwrap().into(),
    )
    .unwrap();
    let outcome = waiter.try_recv().unwrap();
    m.waiters().cancel(id);
    outcome
}

fn auth(request: Request) -> Command {
    Command::Auth(request)
}

fn put(key: &str) -> Command {
    Command::Put(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

fn refusal(outcome: Outcome) -> Option<EtcdError> {
    outcome.err()
}

#[test]
fn writes_are_checked_at_apply_and_the_store_survives_snapshot_and_restart() {
    let m = machine_on(Arc::new(MemoryEngine::new()));
    let hash = base64::engine::general_purpose::STANDARD.encode("$2b$04$x");
    for request in [
        Request::UserAdd(AuthUserAddRequest {
            name: "root".into(),
            hashed_password: hash.clone(),
            ..Default::default()
        }),
        Request::UserGrantRole(AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        }),
        Request::UserAdd(AuthUserAddRequest {
            name: "alice".into(),
            hashed_password: hash.clone(),
            ..Default::default()
        }),
        Request::RoleAdd(AuthRoleAddRequest { name: "w".into() }),
        Request::RoleGrantPermission(AuthRoleGrantPermissionRequest {
            name: "w".into(),
            perm: Some(Permission {
                perm_type: PermissionType::Readwrite as i32,
                key: b"a/".to_vec(),
                range_end: b"a0".to_vec(),
            }),
        }),
        Request::UserGrantRole(AuthUserGrantRoleRequest {
            user: "alice".into(),
            role: "w".into(),
        }),
    ] {
        assert!(matches!(
            apply(&m, None, auth(request)),
            Ok(Applied::Auth(None))
        ));
    }
    // Auth off: anyone writes.
    assert!(apply(&m, None, put("x")).is_ok());
    assert!(apply(&m, None, auth(Request::Enable(AuthEnableRequest {}))).is_ok());
    assert!(m.auth().enabled());
    let rev = m.auth().state().revision();

    // Auth on: checked with the entry's header, the same on every member.
    assert_eq!(
        refusal(apply(&m, None, put("a/1"))),
        Some(EtcdError::UserEmpty)
    );
    assert!(apply(&m, header("alice", rev), put("a/1")).is_ok());
    assert_eq!(
        refusal(apply(&m, header("alice", rev), put("b"))),
        Some(EtcdError::PermissionDenied)
    );
    assert_eq!(
        refusal(apply(&m, header("alice", rev - 1), put("a/2"))),
        Some(EtcdError::AuthOldRevision)
    );
    assert_eq!(
        refusal(apply(
            &m,
            header("alice", rev),
            Command::Compaction(CompactionRequest {
                revision: 1,
                physical: false
            })
        )),
        Some(EtcdError::PermissionDenied)
    );
    assert_eq!(
        refusal(apply(
            &m,
            header("alice", rev),
            auth(Request::RoleAdd(AuthRoleAddRequest { name: "x".into() }))
        )),
        Some(EtcdError::PermissionDenied)
    );
    // The member's own entries are not checked; root may do anything.
    assert!(apply(&m, internal(), put("b")).is_ok());
    assert!(apply(&m, header("root", rev), put("c")).is_ok());
    // A refused write changed nothing, yet consumed its index.
    assert_eq!(m.store().current_revision(), 5);

    // Authenticate: every member assigns the token "<prefix>.<index>".
    let index = m.applied_index() + 1;
    let token = match apply(
        &m,
        None,
        auth(Request::Authenticate(InternalAuthenticate {
            name: "alice".into(),
            simple_token: "abcdefghijklmnop".into(),
        })),
    ) {
        Ok(Applied::Auth(Some(token))) => token,
        other => panic!("{other:?}"),
    };
    assert_eq!(token, format!("abcdefghijklmnop.{index}"));
    assert_eq!(
        m.auth().tokens().info(&token, rev),
        Some(("alice".to_string(), rev))
    );

    // A snapshot carries the auth record; a restart reloads it.
    let data = m.snapshot_data().unwrap();
    let other = machine_on(Arc::new(MemoryEngine::new()));
    other.restore(&data).unwrap();
    assert_eq!(*other.auth().state(), *m.auth().state());
    assert!(other.auth().enabled());
    let restarted = machine_on(Arc::clone(m.store().engine()));
    assert_eq!(*restarted.auth().state(), *m.auth().state());
    // Tokens are memory only.
    assert_eq!(restarted.auth().tokens().info(&token, rev), None);
}
