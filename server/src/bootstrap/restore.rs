//! `cairn snapshot restore`: a new data directory from a `snapshot save`
//! file; and [`restore_state`], its second half, which `cairn migrate
//! from-etcd` shares (the state there comes from an etcd file).

use std::sync::Arc;

use super::open::{
    initial_member_records, key_file_path, load_member_id, new_cluster, not_in_cluster, open_engine,
};
use super::Error;
use crate::config::Config;
use crate::lease::{Lessor, TokioClock};
use crate::machine::Machine;
use crate::mvcc::Store;
use crate::raft::RaftStorage;
use crate::storage::crypto::MasterKey;

/// Writes the state of a `snapshot save` file into a new data directory
/// and bootstraps a new cluster from it, with the membership of `config`
/// (`--name`, `--initial-cluster`, `--initial-cluster-token`,
/// `--initial-advertise-peer-urls`). Run once per member with the same
/// file; then start each member with the same flags. Returns the restored
/// revision.
pub fn restore_snapshot(file: &[u8], config: &Config) -> Result<i64, Error> {
    let master = MasterKey::load(key_file_path(config))?;
    let decoded = crate::snapshot::decode_file(file, Some(&master))
        .map_err(|e| Error::Restore(e.to_string()))?;
    restore_state(&decoded.data, config)
}

/// Writes replicated state `data` (snapshot records: what
/// [`Machine::snapshot_data`] yields) into a new data directory, sealed
/// under the member's master key, and bootstraps a new cluster from it with
/// the membership of `config`. Refuses an existing data directory. Returns
/// the restored revision.
pub fn restore_state(data: &[u8], config: &Config) -> Result<i64, Error> {
    let db_dir = config.data_dir.join("db");
    if db_dir.exists() || super::open::log_dir(&config.data_dir).exists() {
        return Err(Error::Restore(format!(
            "data directory {} already exists",
            config.data_dir.display()
        )));
    }
    let (members, cluster_id) = initial_member_records(config)?;
    // Closed when this returns: nobody waits for its release.
    let super::open::OpenedEngine { engine, keys, .. } = open_engine(config, &db_dir)?;
    let member_id = load_member_id(engine.as_ref(), config, None)?;
    if !members.iter().any(|m| m.id == member_id) {
        return Err(not_in_cluster(config));
    }
    let store = Arc::new(Store::open(Arc::clone(&engine), true)?);
    let lessor = Arc::new(Lessor::new(config.lessor_config(), Arc::new(TokioClock)));
    let machine = Machine::new(Arc::clone(&store), lessor).with_keys(keys);
    machine.restore(data)?;
    let log = RaftStorage::open(Arc::clone(&engine), &super::open::log_dir(&config.data_dir))?;
    new_cluster(&machine, &log, cluster_id, &members)?;
    Ok(store.current_revision())
}
