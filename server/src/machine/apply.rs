//! Applying one raft entry: decode it, run its command in one write
//! transaction committed with the entry's index, answer its waiter.
//!
//! An entry at or below the applied index is skipped ([`Applying::at`]
//! refuses it), so replay after a crash is idempotent. A request error (say,
//! a revoke of an unknown lease) still consumes the entry: the index is
//! recorded and the error goes to the waiter.

use cairn_proto::cairnpb::{self, auth_request::Request as AuthRequest};
use cairn_proto::etcdserverpb::{CompactionResponse, TxnRequest, TxnResponse};
use prost::Message;
use tokio::sync::oneshot;

use super::{Applied, Error, Machine, MemberChange, Outcome};
use crate::apply;
use crate::auth::{check, AuthInfo, Checker};
use crate::entry::{self, Command};
use crate::error::EtcdError;
use crate::lease::LeaseTxn;
use crate::mvcc::WriteTxn;

impl Machine {
    /// Applies the normal entry at `index` whose data is `data` (empty: the
    /// no-op a new leader appends). A request that fails (say, a revoke of
    /// an unknown lease) still consumes the entry: the error goes to the
    /// waiter and the index is recorded. So does an entry that does not
    /// decode (only an older version could have proposed one): every member
    /// applies it as the same error and goes on. `Err` only when the member
    /// cannot go on (the disk failed).
    pub fn apply_entry(&self, index: u64, data: &bytes::Bytes) -> Result<(), Error> {
        match Applying::at(self, index) {
            Some(applying) => applying.entry(data.clone()),
            None => Ok(()),
        }
    }

    /// Runs a Txn that writes nothing against the current state, without a
    /// log entry: the transaction is dropped, never committed.
    pub fn read_only_txn(&self, req: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        let mut txn = self.store.write();
        let mut leases = LeaseTxn::new(&self.lessor);
        apply::txn(&mut txn, &mut leases, req)
    }
}

/// One entry being applied: the machine, and the index every change it
/// makes is committed with.
pub(super) struct Applying<'m> {
    /// The state the entry changes.
    machine: &'m Machine,
    /// The entry's index: recorded as applied in the same write as the
    /// entry's effects, so a restart resumes right after it.
    index: u64,
}

impl<'m> Applying<'m> {
    /// The entry at `index`, unless it is already applied (replayed after a
    /// crash, or below an installed snapshot): then None, and it is skipped.
    pub(super) fn at(machine: &'m Machine, index: u64) -> Option<Self> {
        (index > machine.applied_index()).then_some(Self { machine, index })
    }

    /// Applies the normal entry whose data is `data` (see
    /// [`Machine::apply_entry`]).
    fn entry(&self, data: bytes::Bytes) -> Result<(), Error> {
        if data.is_empty() {
            return self.record_index();
        }
        let entry = match entry::decode(data) {
            Ok(entry) => entry,
            Err(undecodable) => {
                tracing::error!(index = self.index, error = %undecodable, "applying an undecodable raft entry as an error");
                self.record_index()?;
                if let Some(id) = undecodable.id {
                    self.machine.waiters.answer(id, Err(undecodable.error()));
                }
                return Ok(());
            }
        };
        let Some(command) = entry.command else {
            return self.record_index();
        };
        let op = command.op();
        let start = std::time::Instant::now();
        let outcome = match self.refused(&command, entry.auth.as_ref()) {
            Some(refusal) => {
                self.record_index()?;
                Err(refusal)
            }
            None => self.execute(command)?,
        };
        if let Some(m) = self.machine.metrics.get() {
            // etcd counts a compaction of an already compacted revision
            // as a success.
            let success = matches!(outcome, Ok(_) | Err(EtcdError::Compacted));
            m.applied(op, success, crate::metrics::since(start));
            match &outcome {
                Ok(Applied::LeaseGrant(r)) => {
                    m.lease.granted.inc();
                    m.lease.ttl.observe(r.ttl as f64);
                }
                Ok(Applied::LeaseRevoke(_)) => m.lease.revoked.inc(),
                _ => {}
            }
        }
        self.machine.waiters.answer(entry.id, outcome);
        Ok(())
    }

    /// Applies a membership change raft has already made. `context` is the
    /// proposal's `ConfChangeContext` (empty for a change raft made by
    /// itself).
    pub(super) fn member_change(
        &self,
        change: MemberChange,
        node: u64,
        context: &[u8],
    ) -> Result<(), Error> {
        // Raft has already changed its configuration: the member table must
        // follow even if the context (who asked, the new member's URLs) is
        // unreadable, on every member alike.
        let ctx = cairnpb::ConfChangeContext::decode(context).unwrap_or_else(|e| {
            tracing::error!(index = self.index, error = %e, "undecodable conf change context; applying the change without it");
            cairnpb::ConfChangeContext::default()
        });
        let members = self
            .machine
            .tables
            .change_member(self.index, change, node, ctx.member)?;
        self.machine
            .waiters
            .answer(ctx.request_id, Ok(Applied::Members(members)));
        Ok(())
    }

    /// Records the index as applied with no other change.
    fn record_index(&self) -> Result<(), Error> {
        self.machine.store.write().commit(Some(self.index))?;
        Ok(())
    }

    /// Runs `f` in one write transaction committed with the index. A request
    /// error rolls the transaction back and records only the index.
    fn write<R>(
        &self,
        f: impl FnOnce(&mut WriteTxn<'_>, &mut LeaseTxn<'_>) -> Result<R, EtcdError>,
    ) -> Result<Result<R, EtcdError>, Error> {
        let mut txn = self.machine.store.write();
        let mut leases = LeaseTxn::new(&self.machine.lessor);
        match f(&mut txn, &mut leases) {
            Ok(resp) => {
                let changes = leases.finish(&mut txn);
                self.machine
                    .lessor
                    .apply_committed(changes, || txn.commit(Some(self.index)))?;
                Ok(Ok(resp))
            }
            Err(e) => {
                drop(leases);
                drop(txn);
                self.record_index()?;
                Ok(Err(e))
            }
        }
    }

    /// etcd's `authApplierV3`: while auth is enabled, the entry's caller
    /// must be allowed to do what it asks, by the auth state at this index
    /// (so every member decides alike). Writes check their keys (see
    /// [`crate::auth::check`]); compaction and auth changes need the root
    /// role; an authentication is checked by its own rules. The member's
    /// own proposals are not checked. One atomic load while auth is off.
    fn refused(
        &self,
        command: &Command,
        header: Option<&cairnpb::AuthHeader>,
    ) -> Option<EtcdError> {
        let auth = &self.machine.auth;
        if !auth.enabled() || header.is_some_and(|h| h.internal) {
            return None;
        }
        let state = auth.state();
        let caller = header.map(|h| AuthInfo {
            user: h.username.clone(),
            revision: h.revision,
        });
        let checker = Checker::new(&state, caller.as_ref());
        let lessor = &self.machine.lessor;
        let lease_keys = |id: i64| lessor.keys(id).unwrap_or_default();
        let result = match command {
            Command::Put(r) => checker.put(r, &lease_keys),
            Command::DeleteRange(r) => checker.delete_range(r),
            Command::Txn(r) => checker.txn(r, &lease_keys),
            Command::LeaseRevoke(r) => checker.lease_keys(&lease_keys(r.id)),
            Command::Compaction(_) => check::admin(&state, caller.as_ref()),
            Command::Auth(AuthRequest::Authenticate(_)) => Ok(()),
            Command::Auth(_) => check::admin(&state, caller.as_ref()),
            _ => Ok(()),
        };
        result.err()
    }

    fn execute(&self, command: Command) -> Result<Outcome, Error> {
        let index = self.index;
        let tables = &self.machine.tables;
        Ok(match command {
            Command::Put(r) => self.write(|t, l| apply::put(t, l, r))?.map(Applied::Put),
            Command::DeleteRange(r) => self
                .write(|t, l| apply::delete_range(t, l, &r))?
                .map(Applied::DeleteRange),
            Command::Txn(r) => self.write(|t, l| apply::txn(t, l, &r))?.map(Applied::Txn),
            Command::LeaseGrant(r) => self
                .write(|t, l| apply::lease_grant(t, l, &r))?
                .map(Applied::LeaseGrant),
            Command::LeaseRevoke(r) => self
                .write(|t, l| apply::lease_revoke(t, l, &r))?
                .map(Applied::LeaseRevoke),
            Command::LeaseCheckpoint(r) => self
                .write(|t, l| apply::lease_checkpoint(t, l, &r))?
                .map(Applied::LeaseCheckpoint),
            Command::Compaction(r) => self.compact(r.revision)?,
            Command::Alarm(r) => Ok(Applied::Alarm(tables.alarm(index, &r)?)),
            Command::MemberAttributes(m) => tables
                .update_member(index, m.id, |known| cairnpb::Member {
                    name: m.name,
                    client_urls: m.client_urls,
                    zone: m.zone,
                    ..known
                })?
                .map(Applied::Members)
                .ok_or(EtcdError::MemberNotFound),
            Command::RotateDataKey(id) => {
                if let Some(keys) = &self.machine.keys {
                    keys.activate(id)?;
                }
                self.record_index()?;
                Ok(Applied::KeyRotated(id))
            }
            Command::Downgrade(info) => {
                tables.set_downgrade(index, info)?;
                Ok(Applied::Downgraded)
            }
            Command::Auth(request) => self
                .machine
                .auth
                .apply(&self.machine.store, index, request)?
                .map(Applied::Auth),
            Command::MemberPeerUrls(m) => tables
                .update_member(index, m.id, |known| cairnpb::Member {
                    peer_urls: m.peer_urls,
                    ..known
                })?
                .map(Applied::Members)
                .ok_or(EtcdError::MemberNotFound),
        })
    }

    /// Compaction: the logical part now, the physical deletion on its own
    /// thread (its end reported through the returned receiver).
    fn compact(&self, revision: i64) -> Result<Outcome, Error> {
        let job = match self.machine.store.compact(revision) {
            Ok(job) => job,
            Err(crate::mvcc::Error::Compacted) => {
                self.record_index()?;
                return Ok(Err(EtcdError::Compacted));
            }
            Err(crate::mvcc::Error::FutureRev) => {
                self.record_index()?;
                return Ok(Err(EtcdError::FutureRev));
            }
            Err(e) => return Err(e.into()),
        };
        self.record_index()?;
        let (tx, rx) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("cairn-compaction".into())
            .spawn(move || {
                let result = job.run().map_err(|e| {
                    tracing::error!(error = %e, revision, "compaction failed");
                    EtcdError::from(e)
                });
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            // The records stay until the next compaction or restart resumes it.
            tracing::error!(error = %e, "cannot start the compaction thread");
        }
        Ok(Ok(Applied::Compaction(
            CompactionResponse { header: None },
            rx,
        )))
    }
}
