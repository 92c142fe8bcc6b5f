//! The auth store's rules (every change, its errors, its revision) and the
//! permission checks of every request kind, table-driven.

use base64::Engine as _;
use cairn_proto::authpb::permission::Type as PermissionType;
use cairn_proto::authpb::{Permission, UserAddOptions};
use cairn_proto::cairnpb::{auth_request::Request, InternalAuthenticate};
use cairn_proto::etcdserverpb::{
    compare, request_op, AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest,
    AuthRoleDeleteRequest, AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest,
    AuthUserAddRequest, AuthUserChangePasswordRequest, AuthUserDeleteRequest,
    AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
};

use super::check::{admin, Checker};
use super::state::{AuthState, Effect};
use super::AuthInfo;
use crate::error::EtcdError;

fn hashed(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn user_add(name: &str) -> Request {
    Request::UserAdd(AuthUserAddRequest {
        name: name.into(),
        hashed_password: hashed("$2b$04$fakehash"),
        ..Default::default()
    })
}

fn role_add(name: &str) -> Request {
    Request::RoleAdd(AuthRoleAddRequest { name: name.into() })
}

fn grant_role(user: &str, role: &str) -> Request {
    Request::UserGrantRole(AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    })
}

fn grant(role: &str, kind: PermissionType, key: &str, end: &str) -> Request {
    Request::RoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission {
            perm_type: kind as i32,
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        }),
    })
}

fn enable() -> Request {
    Request::Enable(AuthEnableRequest {})
}

/// A state with root (root role), alice (role `r`: read `a`..`m`, write
/// key `z`), enabled.
fn populated() -> AuthState {
    let mut s = AuthState::default();
    for r in [
        user_add("root"),
        grant_role("root", "root"),
        user_add("alice"),
        role_add("r"),
        grant("r", PermissionType::Read, "a", "m"),
        grant("r", PermissionType::Write, "z", ""),
        grant_role("alice", "r"),
        enable(),
    ] {
        s.apply(r).unwrap();
    }
    s
}

#[test]
fn every_change_with_its_errors_and_revisions() {
    let mut s = AuthState::default();
    assert_eq!(s.revision(), 1);
    // (request, expected result, revision after)
    let steps: Vec<(Request, Result<Effect, EtcdError>, u64)> = vec![
        (enable(), Err(EtcdError::RootUserNotExist), 1),
        (user_add(""), Err(EtcdError::UserEmpty), 1),
        (user_add("root"), Ok(Effect::None), 2),
        (user_add("root"), Err(EtcdError::UserAlreadyExist), 2),
        (enable(), Err(EtcdError::RootRoleNotExist), 2),
        (
            grant_role("nobody", "root"),
            Err(EtcdError::UserNotFound),
            2,
        ),
        (grant_role("root", "nope"), Err(EtcdError::RoleNotFound), 2),
        // The root role needs no RoleAdd.
        (grant_role("root", "root"), Ok(Effect::None), 3),
        // A duplicate grant is ignored without a revision.
        (grant_role("root", "root"), Ok(Effect::None), 3),
        (role_add(""), Err(EtcdError::RoleEmpty), 3),
        (role_add("r"), Ok(Effect::None), 4),
        (role_add("r"), Err(EtcdError::RoleAlreadyExist), 4),
        (
            Request::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: None,
            }),
            Err(EtcdError::PermissionNotGiven),
            4,
        ),
        (
            grant("r", PermissionType::Read, "b", "a"),
            Err(EtcdError::InvalidAuthMgmt),
            4,
        ),
        (
            grant("r", PermissionType::Read, "", "a"),
            Err(EtcdError::InvalidAuthMgmt),
            4,
        ),
        (
            grant("x", PermissionType::Read, "a", "b"),
            Err(EtcdError::RoleNotFound),
            4,
        ),
        (
            grant("r", PermissionType::Read, "a", "b"),
            Ok(Effect::None),
            5,
        ),
        // Same range again: its type is updated.
        (
            grant("r", PermissionType::Write, "a", "b"),
            Ok(Effect::None),
            6,
        ),
        (
            grant("r", PermissionType::Read, "m", "\0"),
            Ok(Effect::None),
            7,
        ),
        (
            Request::RoleRevokePermission(AuthRoleRevokePermissionRequest {
                role: "r".into(),
                key: b"zz".to_vec(),
                range_end: Vec::new(),
            }),
            Err(EtcdError::PermissionNotGranted),
            7,
        ),
        (
            Request::RoleRevokePermission(AuthRoleRevokePermissionRequest {
                role: "r".into(),
                key: b"m".to_vec(),
                range_end: b"\0".to_vec(),
            }),
            Ok(Effect::None),
            8,
        ),
        (enable(), Ok(Effect::Enabled), 8),
        // Enabling twice changes nothing.
        (enable(), Ok(Effect::None), 8),
        (
            Request::UserRevokeRole(AuthUserRevokeRoleRequest {
                name: "root".into(),
                role: "root".into(),
            }),
            Err(EtcdError::InvalidAuthMgmt),
            8,
        ),
        (
            Request::UserDelete(AuthUserDeleteRequest {
                name: "root".into(),
            }),
            Err(EtcdError::InvalidAuthMgmt),
            8,
        ),
        (
            Request::RoleDelete(AuthRoleDeleteRequest {
                role: "root".into(),
            }),
            Err(EtcdError::InvalidAuthMgmt),
            8,
        ),
        (user_add("alice"), Ok(Effect::None), 9),
        (grant_role("alice", "r"), Ok(Effect::None), 10),
        (
            Request::UserRevokeRole(AuthUserRevokeRoleRequest {
                name: "alice".into(),
                role: "root".into(),
            }),
            Err(EtcdError::RoleNotGranted),
            10,
        ),
        (
            Request::UserChangePassword(AuthUserChangePasswordRequest {
                name: "bob".into(),
                hashed_password: hashed("x"),
                ..Default::default()
            }),
            Err(EtcdError::UserNotFound),
            10,
        ),
        (
            Request::UserChangePassword(AuthUserChangePasswordRequest {
                name: "alice".into(),
                hashed_password: hashed("$2b$04$other"),
                ..Default::default()
            }),
            Ok(Effect::InvalidateUser("alice".into())),
            11,
        ),
        (
            Request::Authenticate(InternalAuthenticate {
                name: "alice".into(),
                simple_token: "abc".into(),
            }),
            Ok(Effect::Authenticated {
                user: "alice".into(),
                simple_token: "abc".into(),
            }),
            11,
        ),
        (
            Request::Authenticate(InternalAuthenticate {
                name: "nobody".into(),
                simple_token: "abc".into(),
            }),
            Err(EtcdError::AuthFailed),
            11,
        ),
        (
            Request::RoleDelete(AuthRoleDeleteRequest { role: "r".into() }),
            Ok(Effect::None),
            12,
        ),
        (
            Request::RoleDelete(AuthRoleDeleteRequest { role: "r".into() }),
            Err(EtcdError::RoleNotFound),
            12,
        ),
        (
            Request::UserDelete(AuthUserDeleteRequest {
                name: "alice".into(),
            }),
            Ok(Effect::InvalidateUser("alice".into())),
            13,
        ),
        (
            Request::UserDelete(AuthUserDeleteRequest {
                name: "alice".into(),
            }),
            Err(EtcdError::UserNotFound),
            13,
        ),
        (
            Request::Disable(AuthDisableRequest {}),
            Ok(Effect::Disabled),
            14,
        ),
        (
            Request::Disable(AuthDisableRequest {}),
            Ok(Effect::None),
            14,
        ),
        (
            Request::Authenticate(InternalAuthenticate {
                name: "root".into(),
                simple_token: "abc".into(),
            }),
            Err(EtcdError::AuthNotEnabled),
            14,
        ),
        // Once disabled, root may lose its role and be deleted.
        (
            Request::UserDelete(AuthUserDeleteRequest {
                name: "root".into(),
            }),
            Ok(Effect::InvalidateUser("root".into())),
            15,
        ),
    ];
    for (i, (request, expected, revision)) in steps.into_iter().enumerate() {
        let before = s.clone();
        let got = s.apply(request);
        assert_eq!(got, expected, "step {i}");
        if got.is_err() {
            assert_eq!(s, before, "step {i}: a refused change changes nothing");
        }
        assert_eq!(s.revision(), revision, "step {i}");
        // The record round-trips.
        assert_eq!(AuthState::decode(&s.encode()).unwrap(), s, "step {i}");
    }
    // A role deleted leaves its users.
    assert!(s.user_names().is_empty());
}

#[test]
fn the_role_of_a_deleted_role_leaves_every_user_and_no_password_users_cannot_log_in() {
    let mut s = populated();
    s.apply(Request::RoleDelete(AuthRoleDeleteRequest {
        role: "r".into(),
    }))
    .unwrap();
    assert!(!s.has_role("alice", "r"));
    assert!(!s.permissions("alice").unwrap().can_read(b"b", b""));
    s.apply(Request::UserAdd(AuthUserAddRequest {
        name: "cert".into(),
        options: Some(UserAddOptions { no_password: true }),
        ..Default::default()
    }))
    .unwrap();
    assert!(s.user("cert").unwrap().password.is_empty());
    assert_eq!(
        s.apply(Request::Authenticate(InternalAuthenticate {
            name: "cert".into(),
            simple_token: "x".into(),
        })),
        Err(EtcdError::AuthFailed)
    );
}

fn info(user: &str, revision: u64) -> Option<AuthInfo> {
    Some(AuthInfo {
        user: user.into(),
        revision,
    })
}

fn put(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn range_op(key: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.into(),
            range_end: end.into(),
            ..Default::default()
        })),
    }
}

fn compare_on(key: &str) -> Compare {
    Compare {
        key: key.into(),
        target: compare::CompareTarget::Version as i32,
        ..Default::default()
    }
}

#[test]
fn who_is_checked_and_in_what_order() {
    let s = populated();
    let rev = s.revision();
    let read_b = |caller: Option<AuthInfo>| Checker::new(&s, caller.as_ref()).read(b"b", b"");
    assert_eq!(read_b(None), Err(EtcdError::UserEmpty));
    assert_eq!(read_b(info("", 0)), Err(EtcdError::UserEmpty));
    assert_eq!(
        read_b(info("alice", rev - 1)),
        Err(EtcdError::AuthOldRevision)
    );
    assert_eq!(read_b(info("ghost", rev)), Err(EtcdError::PermissionDenied));
    assert_eq!(read_b(info("alice", rev)), Ok(()));
    // Root may do anything.
    assert_eq!(
        Checker::new(&s, info("root", rev).as_ref()).write(b"z", b"\0"),
        Ok(())
    );
    // Nothing to check, nothing refused (etcd checks per key).
    assert_eq!(
        Checker::new(&s, None).txn(&TxnRequest::default(), &|_| Vec::new()),
        Ok(())
    );
    // Admin: root only.
    assert_eq!(admin(&s, None), Err(EtcdError::UserEmpty));
    assert_eq!(
        admin(&s, info("ghost", rev).as_ref()),
        Err(EtcdError::UserNotFound)
    );
    assert_eq!(
        admin(&s, info("alice", rev).as_ref()),
        Err(EtcdError::PermissionDenied)
    );
    assert_eq!(admin(&s, info("root", rev).as_ref()), Ok(()));
    // Auth off: nothing is checked.
    let off = AuthState::default();
    assert_eq!(Checker::new(&off, None).write(b"x", b""), Ok(()));
    assert_eq!(admin(&off, None), Ok(()));
}

#[test]
fn permission_checks_per_request_kind() {
    let s = populated();
    let alice = info("alice", s.revision());
    let c = Checker::new(&s, alice.as_ref());
    // Lease 7 holds key "z" (writable), lease 8 holds "x" (not).
    let lease_keys = |id: i64| match id {
        7 => vec![b"z".to_vec()],
        8 => vec![b"x".to_vec()],
        _ => Vec::new(),
    };
    let denied = Err(EtcdError::PermissionDenied);
    let put_req = |key: &str, lease: i64, prev_kv: bool| PutRequest {
        key: key.into(),
        lease,
        prev_kv,
        ..Default::default()
    };
    let del = |key: &str, end: &str, prev_kv: bool| DeleteRangeRequest {
        key: key.into(),
        range_end: end.into(),
        prev_kv,
    };
    let cases: Vec<(&str, Result<(), EtcdError>)> = vec![
        (
            "range key",
            c.range(&RangeRequest {
                key: b"b".to_vec(),
                ..Default::default()
            }),
        ),
        (
            "range prefix inside",
            c.range(&RangeRequest {
                key: b"b/".to_vec(),
                range_end: b"b0".to_vec(),
                ..Default::default()
            }),
        ),
        (
            "range past the grant",
            c.range(&RangeRequest {
                key: b"a".to_vec(),
                range_end: b"z".to_vec(),
                ..Default::default()
            })
            .and(denied.clone()),
        ),
        (
            "range from key",
            c.range(&RangeRequest {
                key: b"b".to_vec(),
                range_end: vec![0],
                ..Default::default()
            }),
        ),
        (
            "put writable key",
            c.put(&put_req("z", 0, false), &lease_keys),
        ),
        (
            "put read-only key",
            c.put(&put_req("b", 0, false), &lease_keys),
        ),
        (
            "put with prev_kv (z: write only)",
            c.put(&put_req("z", 0, true), &lease_keys),
        ),
        (
            "put on a lease of writable keys",
            c.put(&put_req("z", 7, false), &lease_keys),
        ),
        (
            "put on a lease holding a key it cannot write",
            c.put(&put_req("z", 8, false), &lease_keys),
        ),
        ("delete writable key", c.delete_range(&del("z", "", false))),
        ("delete a range", c.delete_range(&del("a", "m", false))),
        (
            "delete with prev_kv (z: write only)",
            c.delete_range(&del("z", "", true)),
        ),
        ("lease revoke, writable keys", c.lease_keys(&lease_keys(7))),
        (
            "lease revoke, a key it cannot write",
            c.lease_keys(&lease_keys(8)),
        ),
        ("lease revoke, no keys", c.lease_keys(&lease_keys(9))),
        (
            "watch readable range",
            c.watch(&WatchCreateRequest {
                key: b"b".to_vec(),
                range_end: b"c".to_vec(),
                ..Default::default()
            }),
        ),
        (
            "watch everything",
            c.watch(&WatchCreateRequest {
                key: Vec::new(),
                range_end: vec![0],
                ..Default::default()
            }),
        ),
    ];
    let expected: Vec<Result<(), EtcdError>> = vec![
        Ok(()),
        Ok(()),
        denied.clone(),
        denied.clone(),
        Ok(()),
        denied.clone(),
        denied.clone(),
        Ok(()),
        denied.clone(),
        Ok(()),
        denied.clone(),
        denied.clone(),
        Ok(()),
        denied.clone(),
        Ok(()),
        Ok(()),
        denied.clone(),
    ];
    for ((name, got), want) in cases.into_iter().zip(expected) {
        assert_eq!(got, want, "{name}");
    }

    // Txn: compares read, every op of both branches, nested ones too.
    let txn =
        |compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>| TxnRequest {
            compare,
            success,
            failure,
        };
    let nested = |inner: TxnRequest| RequestOp {
        request: Some(request_op::Request::RequestTxn(inner)),
    };
    let txn_cases = vec![
        (
            "compare readable, put writable",
            txn(vec![compare_on("b")], vec![put("z")], vec![]),
            Ok(()),
        ),
        (
            "compare unreadable",
            txn(vec![compare_on("x")], vec![put("z")], vec![]),
            denied.clone(),
        ),
        (
            "failure branch checked too",
            txn(vec![], vec![put("z")], vec![put("b")]),
            denied.clone(),
        ),
        (
            "range op",
            txn(vec![], vec![range_op("a", "m")], vec![]),
            Ok(()),
        ),
        (
            "range op too wide",
            txn(vec![], vec![range_op("a", "n")], vec![]),
            denied.clone(),
        ),
        (
            "nested txn allowed",
            txn(
                vec![],
                vec![nested(txn(vec![compare_on("c")], vec![put("z")], vec![]))],
                vec![],
            ),
            Ok(()),
        ),
        (
            "nested txn's failure branch",
            txn(
                vec![],
                vec![nested(txn(vec![], vec![], vec![put("q")]))],
                vec![],
            ),
            denied.clone(),
        ),
        (
            "doubly nested compare",
            txn(
                vec![],
                vec![],
                vec![nested(txn(
                    vec![],
                    vec![nested(txn(vec![compare_on("z")], vec![], vec![]))],
                    vec![],
                ))],
            ),
            denied.clone(),
        ),
    ];
    for (name, req, want) in txn_cases {
        assert_eq!(c.txn(&req, &lease_keys), want, "{name}");
    }
}
