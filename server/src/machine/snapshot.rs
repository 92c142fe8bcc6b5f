//! The whole replicated state as snapshot data, and its installation.
//!
//! Snapshot data is every record of the `kv`, `lease`, `meta` and `auth`
//! column families as length-delimited `cairnpb.SnapshotRecord`s, except the
//! `meta` records that are this member's own (its id, its wrapped data
//! keys, the marker of an install under way): those never travel and are
//! never replaced. Installing is `install`'s.

use std::time::Instant;

use cairn_proto::cairnpb::SnapshotRecord;
use prost::Message;

use super::install::{self, BATCH_BYTES};
use super::{Error, Machine};
use crate::storage::{Cf, Scan, WriteBatch};

/// Meta keys that belong to this member only and never travel in a snapshot.
const LOCAL_META: [&[u8]; 2] = [b"member_id", install::MARKER];

/// The column families a snapshot carries.
pub(super) const REPLICATED: [Cf; 4] = [Cf::Kv, Cf::Lease, Cf::Meta, Cf::Auth];

/// Meta records that are this member's own: its id, its encryption keys
/// (wrapped by its own master key) and the marker of an install under
/// way, never sent in a snapshot nor replaced by one.
fn is_local_meta(key: &[u8]) -> bool {
    LOCAL_META.contains(&key) || key.starts_with(b"enc/")
}

/// The column family a snapshot record names (`SnapshotRecord.cf`), if
/// it is one a snapshot carries.
pub fn snapshot_cf(name: &str) -> Option<Cf> {
    REPLICATED.into_iter().find(|cf| cf.name() == name)
}

/// Whether record `key` of `cf` travels in a snapshot.
pub(super) fn replicated(cf: Cf, key: &[u8]) -> bool {
    !(cf == Cf::Meta && is_local_meta(key))
}

impl Machine {
    /// The whole replicated state as snapshot data: every record of the
    /// `kv` and `lease` column families and of `meta` (except this member's
    /// identity), as length-delimited `SnapshotRecord`s. Taken while
    /// nothing applies (on the raft thread, between two applies, or on a
    /// store no one writes), so it is the state at
    /// [`Machine::applied_index`].
    pub fn snapshot_data(&self) -> Result<Vec<u8>, Error> {
        self.encode_point_in_time(&mut || {})
    }

    /// [`Machine::snapshot_data`] from any thread, without holding writers
    /// back while it reads: the store's write lock (every state change
    /// commits under it) is held only until the engine has fixed its point
    /// in time. `fixed` is told the applied index the data is of, at that
    /// moment, before anything is read. Returns (applied index, data).
    pub fn consistent_snapshot(&self, fixed: &mut dyn FnMut(u64)) -> Result<(u64, Vec<u8>), Error> {
        let txn = self.store.write();
        let index = txn.applied_index();
        let mut txn = Some(txn);
        let data = self.encode_point_in_time(&mut || {
            drop(txn.take());
            fixed(index);
        })?;
        Ok((index, data))
    }

    /// Encodes the replicated records as they stood when the engine
    /// called `fixed`.
    fn encode_point_in_time(&self, fixed: &mut dyn FnMut()) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let mut failure = None;
        self.store
            .engine()
            .scan_point_in_time(&REPLICATED, fixed, &mut |cf, k, v| {
                if !replicated(cf, k) {
                    return Scan::Continue;
                }
                let record = SnapshotRecord {
                    cf: cf.name().to_string(),
                    key: k.to_vec(),
                    value: v.to_vec(),
                };
                match record.encode_length_delimited(&mut out) {
                    Ok(()) => Scan::Continue,
                    Err(e) => {
                        failure = Some(Error::Corrupt {
                            what: "snapshot record",
                            reason: e.to_string(),
                        });
                        Scan::Stop
                    }
                }
            })?;
        failure.map_or(Ok(out), Err)
    }

    /// Replaces the whole replicated state with snapshot `data`, then
    /// reloads the store, the lessor and the tables. Bad data is refused
    /// before anything changes; the state is written in batches (see
    /// `install`), staged first where a crash half-way must be finished at
    /// the next start (a member with an install file).
    pub fn restore(&self, data: &[u8]) -> Result<(), Error> {
        let started = Instant::now();
        let master = self.keys.as_ref().map(|k| k.master());
        let staging = self.install_file.as_deref().map(|path| (path, master));
        let checked = install::check_and_stage(data, staging)?;
        let mut last = WriteBatch::new();
        if let Some(marker) = checked.marker {
            self.store.engine().write(marker, true)?;
            last.delete(Cf::Meta, install::MARKER);
        }
        let staged = started.elapsed();
        self.store.replace_with_index(checked.index, |engine| {
            install::write_state(engine, data, BATCH_BYTES, last)
        })?;
        if let Some(path) = &self.install_file {
            install::remove_staged(path);
        }
        let replaced = started.elapsed();
        self.lessor.reload(&self.store)?;
        self.tables.load()?;
        self.auth.load(self.store.engine().as_ref())?;
        let ms = crate::duration::millis;
        tracing::info!(
            records = checked.records,
            check_and_stage_ms = ms(staged),
            write_and_index_ms = ms(replaced - staged),
            reload_ms = ms(started.elapsed() - replaced),
            "snapshot installed in the state machine"
        );
        Ok(())
    }
}
