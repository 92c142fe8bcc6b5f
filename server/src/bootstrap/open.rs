//! Opening a data directory: the master key, the sealed engine, this
//! member's id, the store, the lessor, the state machine and the raft log;
//! and a new cluster's first state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cairn_proto::cairnpb;

use super::ids::{cluster_id, member_id};
use super::released::{track, Released};
use super::Error;
use crate::config::{ClusterState, Config};
use crate::lease::{Lessor, TokioClock};
use crate::machine::{install, Machine};
use crate::mvcc::Store;
use crate::raft::RaftStorage;
use crate::storage::crypto::{KeyHandle, MasterKey};
use crate::storage::{Cf, Engine, RocksEngine, SealedEngine, WriteBatch};

/// Where this member's id is stored (`meta` column family).
const META_MEMBER_ID: &[u8] = b"member_id";

/// This member's id: the one stored in the data directory, or a new one from
/// its advertised peer URLs and the cluster token (stored at once, so that
/// it never changes for this data directory).
pub(super) fn load_member_id(
    engine: &dyn Engine,
    config: &Config,
    joined: Option<u64>,
) -> Result<u64, crate::storage::Error> {
    if let Some(id) = engine
        .get(Cf::Meta, META_MEMBER_ID)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes)
    {
        return Ok(id);
    }
    let id = joined.unwrap_or_else(|| {
        member_id(
            &config.initial_advertise_peer_urls,
            &config.initial_cluster_token,
        )
    });
    let mut batch = WriteBatch::new();
    batch.put(Cf::Meta, META_MEMBER_ID, id.to_be_bytes());
    engine.write(batch, true)?;
    Ok(id)
}

/// Runs one start-up phase and logs how long it took ("start-up phase",
/// info): the breakdown of a restart that `benches/restart.sh` collects.
pub(super) fn phase<T>(name: &'static str, run: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = run();
    let took_ms = crate::duration::millis_since(started);
    tracing::info!(phase = name, took_ms, "start-up phase");
    out
}

/// The master key file a config uses: the flag, or `<data-dir>.key`.
pub fn key_file_path(config: &Config) -> PathBuf {
    config.encryption_key_file.clone().unwrap_or_else(|| {
        let mut name = config.data_dir.as_os_str().to_os_string();
        name.push(".key");
        PathBuf::from(name)
    })
}

/// The master key: loaded from `--encryption-key-file`, or, without the
/// flag, from `<data-dir>.key`, generated there (mode 0600) on first start.
fn master_key(config: &Config) -> Result<MasterKey, Error> {
    let path = key_file_path(config);
    if config.encryption_key_file.is_none() && !path.exists() {
        tracing::warn!(
            path = %path.display(),
            "NO --encryption-key-file GIVEN: GENERATED A MASTER KEY BESIDE THE DATA DIRECTORY. \
             This is for development only: whoever reads the data directory's parent can read the data. \
             Keep the key elsewhere and pass --encryption-key-file in production."
        );
        return Ok(MasterKey::generate_file(&path)?);
    }
    Ok(MasterKey::load(&path)?)
}

/// What [`open_engine`] opens.
pub(super) struct OpenedEngine {
    /// The engine every layer writes through (sealed, but in
    /// `bench-plaintext` builds).
    pub engine: Arc<dyn Engine>,
    /// The handle key rotation uses; none when nothing is sealed.
    pub keys: Option<KeyHandle>,
    /// The master key this start replaces (`--previous-encryption-key-file`,
    /// loaded once): an install staged under it must still be read.
    pub previous: Option<MasterKey>,
    /// Resolves once RocksDB is closed again.
    pub released: Released,
}

/// Where a member keeps its raft log: beside RocksDB's `db`, in files of
/// its own (`crate::raft::RaftStorage`).
pub(crate) fn log_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("raft-log")
}

/// Opens the data directory's engine: RocksDB under the sealing layer
/// (master key rotation first, when a previous key file is given), the
/// handle on its keys that key rotation uses (none when nothing is sealed),
/// and a [`Released`] that resolves once RocksDB is closed again.
pub(super) fn open_engine(config: &Config, db_dir: &Path) -> Result<OpenedEngine, Error> {
    let master = phase("master key", || master_key(config))?;
    // A cache larger than the address space cannot be asked for: the most
    // there is, then (RocksDB allocates only what its blocks take).
    let kv_cache_bytes = usize::try_from(config.kv_cache_bytes).unwrap_or(usize::MAX);
    let (rocks, released) = track(phase("rocksdb open", || {
        RocksEngine::open_with_kv_cache(db_dir, kv_cache_bytes)
    })?);
    let raw: Arc<dyn Engine> = Arc::new(rocks);
    if cfg!(feature = "bench-plaintext") {
        tracing::warn!("built with bench-plaintext: NOTHING IS ENCRYPTED (benchmark builds only)");
        return Ok(OpenedEngine {
            engine: raw,
            keys: None,
            previous: None,
            released,
        });
    }
    let previous = match &config.previous_encryption_key_file {
        Some(file) => {
            let old = MasterKey::load(file)?;
            SealedEngine::rewrap(raw.as_ref(), &old, &master)?;
            Some(old)
        }
        None => None,
    };
    let sealed = Arc::new(phase("data keys", || SealedEngine::open(raw, master))?);
    let keys = KeyHandle::new(Arc::clone(&sealed));
    Ok(OpenedEngine {
        engine: sealed,
        keys: Some(keys),
        previous,
        released,
    })
}

/// The bootstrap member table from `--initial-cluster` (this member's name
/// filled in; the others publish theirs when they start) and its cluster id.
pub(super) fn initial_member_records(
    config: &Config,
) -> Result<(Vec<cairnpb::Member>, u64), Error> {
    let members: Vec<cairnpb::Member> = config
        .initial_members()?
        .into_iter()
        .map(|(name, urls)| cairnpb::Member {
            id: member_id(&urls, &config.initial_cluster_token),
            name: if name == config.name {
                name
            } else {
                String::new()
            },
            peer_urls: urls,
            ..cairnpb::Member::default()
        })
        .collect();
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    Ok((members, cluster_id(&ids)))
}

/// The refusal of a member that `--initial-cluster` does not name.
pub(super) fn not_in_cluster(config: &Config) -> Error {
    crate::config::Error::BadCluster(format!(
        "no member named {:?} with this member's peer URLs {:?}",
        config.name, config.initial_advertise_peer_urls
    ))
    .into()
}

/// What opening the data directory produced.
pub struct Opened {
    /// This member's id (stored in the data directory).
    pub member_id: u64,
    /// The cluster id `--initial-cluster` gives (the stored one, once
    /// applied, wins in the state machine).
    pub cluster_id: u64,
    /// The state machine over the store.
    pub machine: Arc<Machine>,
    /// Raft's log on the same engine.
    pub log: Arc<RaftStorage>,
    /// Resolves once every holder has let go of the engine.
    pub released: Released,
}

/// Opens the engine, the store and the raft log; bootstraps a new cluster's
/// first state when there is no raft state yet and the cluster is new;
/// applies `--force-new-cluster`.
pub(super) fn open(config: &Config, joined: Option<u64>) -> Result<Opened, Error> {
    let db_dir = config.data_dir.join("db");
    let OpenedEngine {
        engine,
        keys,
        previous,
        released,
    } = open_engine(config, &db_dir)?;
    let member_id = load_member_id(engine.as_ref(), config, joined)?;
    let (members, cluster_id) = initial_member_records(config)?;
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    // Before anything reads the store: a state half replaced by a snapshot
    // install that a crash cut short is finished from its staged data.
    // Staged under the master key of the time: the one this start
    // replaces, if it replaces one.
    let install_file = config.data_dir.join(install::FILE_NAME);
    let masters: Vec<&MasterKey> = keys
        .as_ref()
        .map(|k| k.master())
        .into_iter()
        .chain(previous.as_ref())
        .collect();
    phase("interrupted install", || {
        install::finish_interrupted(engine.as_ref(), &install_file, &masters)
    })?;
    // Raft's log goes through the same engine; the store's commits need
    // not be synced, since raft's log is the durable copy and a restart
    // replays it from the applied index.
    let store = Arc::new(phase("key index", || {
        Store::open(Arc::clone(&engine), false)
    })?);
    let lessor = phase("leases", || {
        Lessor::recover(config.lessor_config(), Arc::new(TokioClock), &store)
    })?;
    let machine = Arc::new(
        phase("member table", || Machine::open(store, Arc::new(lessor)))?
            .with_keys(keys)
            .with_install_file(install_file),
    );
    let log = Arc::new(phase("raft log", || {
        RaftStorage::open(Arc::clone(&engine), &log_dir(&config.data_dir))
    })?);
    let state = ::raft::Storage::initial_state(log.as_ref()).map_err(crate::raft::Error::from)?;
    let fresh = state.hard_state.term == 0
        && state.conf_state.voters.is_empty()
        && state.conf_state.learners.is_empty();
    if fresh && config.initial_cluster_state == ClusterState::New {
        if !ids.contains(&member_id) {
            return Err(not_in_cluster(config));
        }
        new_cluster(&machine, &log, cluster_id, &members)?;
    } else if !fresh && config.force_new_cluster {
        super::recovery::force_new_cluster(&machine, &log, member_id)?;
    }
    let commit = ::raft::Storage::initial_state(log.as_ref()).map_or(0, |s| s.hard_state.commit);
    let stored_cluster_id = match machine.tables().cluster_id() {
        0 => cluster_id,
        id => id,
    };
    crate::logging::lifecycle::starting_local_member(fresh, member_id, stored_cluster_id, commit);
    Ok(Opened {
        member_id,
        cluster_id,
        machine,
        log,
        released,
    })
}

/// Writes a new cluster's first state: the member table and the raft
/// configuration, as a snapshot at the store's applied index (1 for an
/// empty store; a restored store keeps its index). Members that join later
/// start empty and receive this state from the leader by snapshot.
pub fn new_cluster(
    machine: &Machine,
    log: &RaftStorage,
    cluster_id: u64,
    members: &[cairnpb::Member],
) -> Result<(), Error> {
    let index = machine.applied_index().max(1);
    machine.tables().bootstrap(index, cluster_id, members)?;
    let mut meta = ::raft::eraftpb::SnapshotMetadata {
        index,
        term: 1,
        ..Default::default()
    };
    meta.mut_conf_state().voters = members.iter().map(|m| m.id).collect();
    log.apply_snapshot(&meta)?;
    Ok(())
}
