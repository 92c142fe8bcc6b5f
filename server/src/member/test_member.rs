//! A single-voter member for unit tests: production's write path end to
//! end (a raft node of one voter, its log on the member's engine), on
//! tokio's paused clock (`start_paused`, moved only by
//! `tokio::time::advance`). Also a follower cut off from its peers, and
//! the bare state machine, for the proposer's tests.

use std::sync::Arc;
use std::time::Duration;

use super::{Apis, Identity, Limits, Replication};
use crate::lease::{Clock, Lessor, LessorConfig};
use crate::machine::Machine;
use crate::mvcc::Store;
use crate::raft::{NodeConfig, RaftHandle, RaftStorage};
use crate::storage::Engine;

/// The test member's ids.
pub const IDENTITY: Identity = Identity {
    cluster_id: 0xc1,
    member_id: 0x8e9e_05c5_2164_694d,
};

/// etcd's default limits.
pub const LIMITS: Limits = Limits {
    max_request_bytes: 1536 * 1024,
    max_txn_ops: 128,
};

/// A lone voter: the APIs of a member on `engine` (recovering what it
/// holds) with its own single-voter raft node, its log on the same engine,
/// lessor promoted now. Production's write path end to end; the raft thread
/// stops when it is dropped, so the engine can be reopened.
pub struct TestMember {
    /// The member's APIs (what the tests call, through `Deref`).
    apis: Apis,
    /// The raft thread's handle, to stop it.
    raft: RaftHandle,
    /// The raft thread, joined on drop.
    thread: Option<std::thread::JoinHandle<()>>,
    /// Keeps a blocking-pool task running while the member lives: tokio's
    /// paused clock must not jump ahead (and time requests out) while the
    /// runtime waits on the raft thread, which it cannot see. Tests move
    /// the clock with `advance` only.
    _hold_clock: std::sync::mpsc::Sender<()>,
    /// Its data directory, kept while the member runs.
    _disk: Disk,
}

/// A member's data directory for tests: its engine and its raft log's
/// directory (temporary, removed with the last clone). A member restarted
/// on the same `Disk` finds what it left.
#[derive(Clone)]
pub struct Disk {
    /// The engine (a memory engine unless a test gives another).
    pub engine: Arc<dyn Engine>,
    /// The raft log's directory.
    log_dir: Arc<tempfile::TempDir>,
}

impl Disk {
    /// A fresh directory on a memory engine.
    pub fn new() -> Self {
        Self::on(Arc::new(crate::storage::MemoryEngine::new()))
    }

    /// A fresh raft log directory beside `engine`.
    pub fn on(engine: Arc<dyn Engine>) -> Self {
        Self {
            engine,
            log_dir: Arc::new(tempfile::tempdir().unwrap()),
        }
    }
}

impl std::ops::Deref for TestMember {
    type Target = Apis;

    fn deref(&self) -> &Apis {
        &self.apis
    }
}

impl Drop for TestMember {
    fn drop(&mut self) {
        self.raft.send(crate::raft::Input::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// tokio's clock as the runtime that made it sees it, from any thread: the
/// raft thread applies grants and renewals, and must read the paused test
/// clock the tests advance, not the wall clock.
#[derive(Debug)]
struct RuntimeClock(tokio::runtime::Handle);

impl Clock for RuntimeClock {
    fn now(&self) -> tokio::time::Instant {
        let _runtime = self.0.enter();
        tokio::time::Instant::now()
    }
}

/// Delivers nothing: a lone voter has no peers, and a test follower never
/// reaches its own.
struct NoPeers;

impl crate::raft::node::Transport for NoPeers {
    fn send(&self, _messages: Vec<::raft::eraftpb::Message>) {}
}

/// The state machine on `engine`, recovering what it holds; its lessor
/// (with `config`) promoted now.
pub fn machine_on(engine: Arc<dyn Engine>, config: LessorConfig) -> Arc<Machine> {
    let store = Arc::new(Store::open(engine, true).unwrap());
    let clock = Arc::new(RuntimeClock(tokio::runtime::Handle::current()));
    let lessor = Lessor::recover(config, clock, &store).unwrap();
    lessor.leader_only().promote();
    Arc::new(Machine::new(store, Arc::new(lessor)))
}

/// A lone voter on `disk`, recovering what it holds; its lessor (with
/// `config`) promoted now.
pub fn member_on(disk: &Disk, config: LessorConfig) -> TestMember {
    let member = start(disk, config, &[]);
    assert!(member.raft.status().is_leader, "a lone voter leads at once");
    member
}

/// A member of a new cluster of itself and the voters `others`, which it
/// never reaches: a follower that knows no leader (a lone member of a
/// partition).
pub fn follower_on(disk: &Disk, others: &[u64]) -> TestMember {
    start(disk, LessorConfig::default(), others)
}

/// A member on `disk` whose raft node's peers are `others` (none: a
/// lone voter), bootstrapped if `disk` holds no raft configuration yet.
fn start(disk: &Disk, config: LessorConfig, others: &[u64]) -> TestMember {
    let machine = machine_on(Arc::clone(&disk.engine), config);
    let log = Arc::new(RaftStorage::open(Arc::clone(&disk.engine), disk.log_dir.path()).unwrap());
    if ::raft::Storage::initial_state(log.as_ref())
        .unwrap()
        .conf_state
        .voters
        .is_empty()
    {
        let members: Vec<_> = std::iter::once(IDENTITY.member_id)
            .chain(others.iter().copied())
            .map(|id| cairn_proto::cairnpb::Member {
                id,
                ..Default::default()
            })
            .collect();
        crate::bootstrap::open::new_cluster(&machine, &log, IDENTITY.cluster_id, &members).unwrap();
    }
    let node = NodeConfig {
        id: IDENTITY.member_id,
        heartbeat: Duration::from_millis(100),
        election_ticks: 10,
        snapshot_count: 100_000,
        catch_up_entries: 5_000,
    };
    let (raft, thread) = crate::raft::node::start(
        node,
        log,
        Arc::clone(&machine),
        Arc::new(NoPeers),
        crate::raft::inbox().unwrap(),
        None,
    )
    .unwrap();
    let (hold, held) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || held.recv());
    let replication = Replication {
        raft: raft.clone(),
        request_timeout: REQUEST_TIMEOUT,
        leader_change_grace: Duration::from_secs(1),
        broken_stale_reads: false,
    };
    // Tokens are assigned on the raft thread: they read the runtime's
    // (paused) clock too.
    machine
        .auth()
        .set_tokens(Arc::new(crate::auth::SimpleTokens::with_clock(
            Duration::ZERO,
            Arc::new(RuntimeClock(tokio::runtime::Handle::current())),
        )));
    TestMember {
        apis: Apis::builder(machine, IDENTITY, LIMITS, replication)
            .with_bcrypt_cost(crate::auth::password::MIN_COST)
            .build(),
        raft,
        thread: Some(thread),
        _hold_clock: hold,
        _disk: disk.clone(),
    }
}

/// How long a proposal or read may wait (etcd's default: 5 s plus two
/// election timeouts).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);
