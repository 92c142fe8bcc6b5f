//! The state machine without raft: tables, applying entries, snapshots, each
//! over a memory engine and checked again after reloading from the engine
//! (what a restart sees).

use std::sync::Arc;

use cairn_proto::cairnpb::{self, ConfChangeContext, DowngradeInfo, Member};
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmType, CompactionRequest, LeaseRevokeRequest, PutRequest,
};
use prost::Message;

use super::{Applied, Machine, MemberChange, Outcome, Tables};
use crate::entry::{self, Command};
use crate::error::EtcdError;
use crate::lease::{Lessor, LessorConfig, TokioClock};
use crate::mvcc::Store;
use crate::raft::StateMachine;
use crate::storage::{Cf, Engine, MemoryEngine, WriteBatch};

/// A new member's state machine on `engine`.
fn machine_on(engine: Arc<dyn Engine>) -> Machine {
    let store = Arc::new(Store::open(engine, true).unwrap());
    let lessor = Arc::new(Lessor::new(LessorConfig::default(), Arc::new(TokioClock)));
    Machine::open(store, lessor).unwrap()
}

fn machine() -> Machine {
    machine_on(Arc::new(MemoryEngine::new()))
}

/// What a restart loads from the same engine.
fn reopened(m: &Machine) -> Machine {
    machine_on(Arc::clone(m.store().engine()))
}

fn member(id: u64, name: &str, peer: &str, is_learner: bool) -> Member {
    Member {
        id,
        name: name.into(),
        peer_urls: if peer.is_empty() {
            Vec::new()
        } else {
            vec![peer.into()]
        },
        is_learner,
        ..Default::default()
    }
}

/// The parts of a member table a test looks at.
fn summary(members: &[Member]) -> Vec<(u64, String, Vec<String>, bool)> {
    members
        .iter()
        .map(|m| (m.id, m.name.clone(), m.peer_urls.clone(), m.is_learner))
        .collect()
}

fn row(id: u64, name: &str, peer: &str, is_learner: bool) -> (u64, String, Vec<String>, bool) {
    let m = member(id, name, peer, is_learner);
    (m.id, m.name, m.peer_urls, m.is_learner)
}

/// One change of the member table, as the state machine applies it.
enum Change {
    /// A raft conf change, with the member record its proposal carried.
    Raft(MemberChange, u64, Option<Member>),
    /// A MemberAttributes entry: a new name.
    Name(u64, &'static str),
    /// A MemberPeerUrls entry.
    PeerUrl(u64, &'static str),
}

fn apply_change(tables: &Tables, index: u64, change: Change) -> Option<Vec<Member>> {
    match change {
        Change::Raft(change, node, proposed) => {
            Some(tables.change_member(index, change, node, proposed).unwrap())
        }
        Change::Name(id, name) => tables
            .update_member(index, id, |m| Member {
                name: name.into(),
                ..m
            })
            .unwrap(),
        Change::PeerUrl(id, url) => tables
            .update_member(index, id, |m| Member {
                peer_urls: vec![url.into()],
                ..m
            })
            .unwrap(),
    }
}

#[test]
fn member_table_follows_adds_updates_and_removals() {
    use MemberChange::*;
    let m = machine();
    let cases = [
        // A learner added with the record its proposal carried.
        (
            Change::Raft(AddLearner, 2, Some(member(0, "", "http://b:2380", false))),
            Some(vec![row(2, "", "http://b:2380", true)]),
        ),
        // A voter raft added by itself: nothing but its id.
        (
            Change::Raft(AddVoter, 1, None),
            Some(vec![
                row(1, "", "", false),
                row(2, "", "http://b:2380", true),
            ]),
        ),
        (
            Change::Name(1, "a"),
            Some(vec![
                row(1, "a", "", false),
                row(2, "", "http://b:2380", true),
            ]),
        ),
        // Promotion keeps the known record; a proposed one is ignored.
        (
            Change::Raft(AddVoter, 2, Some(member(0, "x", "http://x:1", true))),
            Some(vec![
                row(1, "a", "", false),
                row(2, "", "http://b:2380", false),
            ]),
        ),
        (
            Change::PeerUrl(2, "http://b2:2380"),
            Some(vec![
                row(1, "a", "", false),
                row(2, "", "http://b2:2380", false),
            ]),
        ),
        // An unknown member: not found, nothing changes.
        (Change::Name(9, "z"), None),
        (Change::PeerUrl(9, "http://z:1"), None),
        (
            Change::Raft(Remove, 2, None),
            Some(vec![row(1, "a", "", false)]),
        ),
        // Removing an unknown member changes nothing.
        (
            Change::Raft(Remove, 7, None),
            Some(vec![row(1, "a", "", false)]),
        ),
    ];
    let mut expected_table = Vec::new();
    for (i, (change, expected)) in cases.into_iter().enumerate() {
        let index = 10 + i as u64;
        let after = apply_change(m.tables(), index, change);
        assert_eq!(after.as_deref().map(summary), expected, "case {i}");
        if let Some(table) = expected {
            expected_table = table;
        }
        // The entry is consumed either way.
        assert_eq!(m.applied_index(), index, "case {i}");
        assert_eq!(summary(&m.tables().members()), expected_table, "case {i}");
        let restarted = reopened(&m);
        assert_eq!(
            summary(&restarted.tables().members()),
            expected_table,
            "case {i}"
        );
    }
    assert_eq!(m.tables().member(1).map(|m| m.name), Some("a".into()));
    assert_eq!(m.tables().member(2), None);
}

fn alarm_request(action: AlarmAction, member_id: u64, alarm: AlarmType) -> AlarmRequest {
    AlarmRequest {
        action: action as i32,
        member_id,
        alarm: alarm as i32,
    }
}

fn alarms(list: &[(u64, AlarmType)]) -> Vec<AlarmMember> {
    list.iter()
        .map(|(member_id, alarm)| AlarmMember {
            member_id: *member_id,
            alarm: *alarm as i32,
        })
        .collect()
}

#[test]
fn alarms_activate_and_deactivate() {
    use AlarmAction::*;
    use AlarmType::{Corrupt, Nospace};
    let m = machine();
    // (request, its answer, the alarms raised after it)
    let cases = [
        (
            alarm_request(Activate, 1, Nospace),
            alarms(&[(1, Nospace)]),
            alarms(&[(1, Nospace)]),
        ),
        (
            alarm_request(Activate, 2, Corrupt),
            alarms(&[(2, Corrupt)]),
            alarms(&[(1, Nospace), (2, Corrupt)]),
        ),
        // Raising the same alarm again lists it once.
        (
            alarm_request(Activate, 1, Nospace),
            alarms(&[(1, Nospace)]),
            alarms(&[(1, Nospace), (2, Corrupt)]),
        ),
        // Alarm type NONE is never raised.
        (
            alarm_request(Activate, 3, AlarmType::None),
            Vec::new(),
            alarms(&[(1, Nospace), (2, Corrupt)]),
        ),
        // Deactivation answers with the alarm as it was.
        (
            alarm_request(Deactivate, 1, Nospace),
            alarms(&[(1, Nospace)]),
            alarms(&[(2, Corrupt)]),
        ),
        (
            alarm_request(Deactivate, 1, Nospace),
            Vec::new(),
            alarms(&[(2, Corrupt)]),
        ),
        // Get never reaches the log; if it did, it would change nothing.
        (
            alarm_request(Get, 0, AlarmType::None),
            Vec::new(),
            alarms(&[(2, Corrupt)]),
        ),
        (
            alarm_request(Deactivate, 2, Corrupt),
            alarms(&[(2, Corrupt)]),
            Vec::new(),
        ),
    ];
    for (i, (req, answer, raised)) in cases.into_iter().enumerate() {
        let index = 10 + i as u64;
        let resp = m.tables().alarm(index, &req).unwrap();
        assert_eq!(resp.alarms, answer, "case {i}");
        assert_eq!(m.applied_index(), index, "case {i}");
        assert_eq!(m.tables().alarms(), raised, "case {i}");
        assert_eq!(reopened(&m).tables().alarms(), raised, "case {i}");
        for t in [Nospace, Corrupt] {
            let up = raised.iter().any(|a| a.alarm == t as i32);
            assert_eq!(m.tables().has_alarm(t), up, "case {i} {t:?}");
        }
    }
}

#[test]
fn downgrade_job_is_enabled_and_cancelled() {
    let m = machine();
    for (index, enabled, expected) in [
        (5, true, Some("3.4.0".to_string())),
        (6, false, None),
        (7, true, Some("3.4.0".to_string())),
    ] {
        let info = DowngradeInfo {
            enabled,
            target_version: "3.4.0".into(),
        };
        m.tables().set_downgrade(index, info).unwrap();
        assert_eq!(m.tables().downgrade(), expected);
        assert_eq!(reopened(&m).tables().downgrade(), expected);
        assert_eq!(m.applied_index(), index);
    }
}

#[test]
fn bootstrap_starts_a_new_cluster_table() {
    let m = machine();
    let tables = m.tables();
    tables
        .change_member(2, MemberChange::AddVoter, 1, None)
        .unwrap();
    tables
        .alarm(
            3,
            &alarm_request(AlarmAction::Activate, 1, AlarmType::Nospace),
        )
        .unwrap();
    let info = DowngradeInfo {
        enabled: true,
        target_version: "3.4.0".into(),
    };
    tables.set_downgrade(4, info).unwrap();
    assert_eq!(tables.cluster_id(), 0);

    tables
        .bootstrap(5, 77, &[member(5, "e", "http://e:2380", false)])
        .unwrap();
    for m in [&m, &reopened(&m)] {
        let tables = m.tables();
        assert_eq!(tables.cluster_id(), 77);
        assert_eq!(
            summary(&tables.members()),
            vec![row(5, "e", "http://e:2380", false)]
        );
        assert!(tables.alarms().is_empty());
        assert_eq!(tables.downgrade(), None);
        assert_eq!(m.applied_index(), 5);
    }
}

/// Applies `command` as entry `index` proposed as `id`; returns what its
/// waiter got.
fn apply(m: &Machine, index: u64, id: u64, command: Command) -> Option<Outcome> {
    let mut waiter = m.waiters().register(id);
    m.apply_entry(index, &entry::encode(id, command).unwrap().into())
        .unwrap();
    let outcome = waiter.try_recv().ok();
    m.waiters().cancel(id);
    outcome
}

fn put(key: &str) -> Command {
    Command::Put(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

#[test]
fn an_entry_applies_once() {
    let m = machine();
    assert!(matches!(
        apply(&m, 2, 1, put("a")),
        Some(Ok(Applied::Put(_)))
    ));
    assert_eq!(m.store().current_revision(), 2);
    // Replayed (or below a snapshot): skipped, and nobody is answered.
    assert!(apply(&m, 2, 2, put("b")).is_none());
    assert!(apply(&m, 1, 3, put("c")).is_none());
    assert_eq!(m.store().current_revision(), 2);
    assert_eq!(m.applied_index(), 2);
    // An empty entry (a new leader's no-op) only moves the applied index.
    m.apply_entry(3, &bytes::Bytes::new()).unwrap();
    assert_eq!(m.applied_index(), 3);
    assert_eq!(m.store().current_revision(), 2);
}

#[test]
fn a_failed_request_consumes_its_entry() {
    let m = machine();
    let revoke = Command::LeaseRevoke(LeaseRevokeRequest { id: 42 });
    assert!(matches!(
        apply(&m, 2, 1, revoke),
        Some(Err(EtcdError::LeaseNotFound))
    ));
    let future = Command::Compaction(CompactionRequest {
        revision: 9,
        physical: false,
    });
    assert!(matches!(
        apply(&m, 3, 2, future),
        Some(Err(EtcdError::FutureRev))
    ));
    let unknown = Command::MemberAttributes(member(9, "z", "", false));
    assert!(matches!(
        apply(&m, 4, 3, unknown),
        Some(Err(EtcdError::MemberNotFound))
    ));
    assert_eq!(m.applied_index(), 4);
    assert_eq!(m.store().current_revision(), 1);
}

#[test]
fn an_undecodable_entry_is_answered_with_an_error() {
    let m = machine();
    // Proposal id 5, then a Txn (field 5) whose bytes are no TxnRequest.
    let data = [0x08, 5, 0x2a, 2, 0xff, 0xff];
    let mut waiter = m.waiters().register(5);
    m.apply_entry(2, &bytes::Bytes::copy_from_slice(&data))
        .unwrap();
    assert!(matches!(waiter.try_recv(), Ok(Err(EtcdError::Internal))));
    assert_eq!(m.applied_index(), 2);
}

#[test]
fn compaction_answers_with_its_physical_phase() {
    let m = machine();
    apply(&m, 2, 1, put("a"));
    apply(&m, 3, 2, put("a"));
    let compact = Command::Compaction(CompactionRequest {
        revision: 2,
        physical: true,
    });
    let Some(Ok(Applied::Compaction(_, done))) = apply(&m, 4, 3, compact) else {
        panic!("no compaction answer");
    };
    assert_eq!(done.blocking_recv().unwrap(), Ok(()));
    assert_eq!(m.store().compact_revision(), 2);
    assert_eq!(m.applied_index(), 4);
}

#[test]
fn a_member_change_answers_its_proposer() {
    let m = machine();
    let context = ConfChangeContext {
        request_id: 8,
        member: Some(member(0, "", "http://b:2380", false)),
    }
    .encode_to_vec();
    let mut waiter = m.waiters().register(8);
    StateMachine::apply_member_change(&m, 2, MemberChange::AddLearner, 2, &context).unwrap();
    let Ok(Ok(Applied::Members(members))) = waiter.try_recv() else {
        panic!("no member table for the proposer");
    };
    assert_eq!(summary(&members), vec![row(2, "", "http://b:2380", true)]);
    // Replayed: skipped.
    StateMachine::apply_member_change(&m, 2, MemberChange::Remove, 2, &[]).unwrap();
    assert_eq!(m.tables().members().len(), 1);
    // An unreadable context: the change applies without it.
    StateMachine::apply_member_change(&m, 3, MemberChange::AddVoter, 3, &[0xff]).unwrap();
    assert_eq!(
        summary(&m.tables().members()),
        vec![row(2, "", "http://b:2380", true), row(3, "", "", false)]
    );
    assert_eq!(m.applied_index(), 3);
}

#[test]
fn stopping_fails_every_waiter() {
    let m = machine();
    let mut a = m.waiters().register(1);
    let mut b = m.waiters().register(2);
    StateMachine::stopped(&m);
    assert!(matches!(a.try_recv(), Ok(Err(EtcdError::Stopped))));
    assert!(matches!(b.try_recv(), Ok(Err(EtcdError::Stopped))));
}

fn put_meta(m: &Machine, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(Cf::Meta, key, value);
    m.store().engine().write(batch, true).unwrap();
}

fn meta(m: &Machine, key: &[u8]) -> Option<Vec<u8>> {
    m.store().engine().get(Cf::Meta, key).unwrap()
}

#[test]
fn a_snapshot_moves_the_replicated_state_and_nothing_local() {
    let from = machine();
    from.tables()
        .bootstrap(1, 77, &[member(1, "a", "http://a:2380", false)])
        .unwrap();
    apply(&from, 2, 1, put("k"));
    from.tables()
        .alarm(
            3,
            &alarm_request(AlarmAction::Activate, 1, AlarmType::Nospace),
        )
        .unwrap();
    put_meta(&from, b"member_id", b"one");
    put_meta(&from, b"enc/key", b"from's key");
    let data_at_3 = from.snapshot_data().unwrap();
    let hash_at_3 = from.store().hash_kv(0).unwrap();
    // An entry applied once the snapshot's state is fixed is not in it.
    let mut told = None;
    let (index, data) = from
        .consistent_snapshot(&mut |index| {
            told = Some(index);
            apply(&from, 4, 1, put("late"));
        })
        .unwrap();
    assert_eq!((index, told), (3, Some(3)));
    assert_eq!(data, data_at_3);
    assert_eq!(from.applied_index(), 4);

    // Staged as a member stages it: nothing of the staging is left after.
    let dir = tempfile::tempdir().unwrap();
    let staged = dir.path().join(super::install::FILE_NAME);
    let to = machine().with_install_file(staged.clone());
    apply(&to, 2, 1, put("old"));
    put_meta(&to, b"member_id", b"two");
    put_meta(&to, b"enc/mine", b"to's key");
    to.restore(&data).unwrap();
    assert!(!staged.exists());
    assert_eq!(meta(&to, super::install::MARKER), None);
    for m in [&to, &reopened(&to)] {
        assert_eq!(m.applied_index(), 3);
        assert_eq!(m.store().hash_kv(0).unwrap(), hash_at_3);
        assert_eq!(m.tables().cluster_id(), 77);
        assert_eq!(
            summary(&m.tables().members()),
            vec![row(1, "a", "http://a:2380", false)]
        );
        assert_eq!(m.tables().alarms(), alarms(&[(1, AlarmType::Nospace)]));
        // This member's own records stay; the sender's never arrive.
        assert_eq!(meta(m, b"member_id"), Some(b"two".to_vec()));
        assert_eq!(meta(m, b"enc/mine"), Some(b"to's key".to_vec()));
        assert_eq!(meta(m, b"enc/key"), None);
    }
}

#[test]
fn corrupt_snapshot_data_is_refused_before_anything_changes() {
    let m = machine();
    apply(&m, 2, 1, put("a"));
    let unknown_cf = cairnpb::SnapshotRecord {
        cf: "raft".into(),
        key: b"k".to_vec(),
        value: Vec::new(),
    }
    .encode_length_delimited_to_vec();
    for data in [vec![0xff], unknown_cf] {
        let err = m.restore(&data).unwrap_err();
        assert!(
            matches!(err, super::Error::Corrupt { .. }),
            "{data:?}: {err}"
        );
        assert_eq!(m.applied_index(), 2);
        assert_eq!(m.store().current_revision(), 2);
    }
}

#[test]
fn a_snapshot_record_names_only_the_families_a_snapshot_carries() {
    for (name, cf) in [
        ("kv", Some(Cf::Kv)),
        ("lease", Some(Cf::Lease)),
        ("meta", Some(Cf::Meta)),
        ("auth", Some(Cf::Auth)),
        ("raft", None),
        ("raft_state", None),
        ("", None),
        ("KV", None),
    ] {
        assert_eq!(super::snapshot_cf(name), cf, "{name:?}");
    }
}
