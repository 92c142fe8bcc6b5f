//! One Ready, in the order raft-rs documents (see the steps in [`super`]).

use ::raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot};

use super::{machine_failed, Node, Transport};
use crate::metrics::server::SLOW_APPLY;
use crate::raft::{Error, StateMachine};

impl<T: Transport, M: StateMachine> Node<T, M> {
    /// Processes the Ready raft has, if any, and answers the reads whose
    /// index is applied.
    pub(super) fn on_ready(&mut self) -> Result<(), Error> {
        if !self.raw.has_ready() {
            self.reads.answer(self.machine.applied_index());
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // 1. Messages that may leave before persisting.
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }
        // 2. A snapshot from the leader.
        if *ready.snapshot() != Snapshot::default() {
            let snapshot = ready.snapshot().clone();
            self.install_snapshot(&snapshot)?;
        }
        // 3. Committed entries.
        self.apply(ready.take_committed_entries())?;
        if self.removed {
            // Removed: nothing of this Ready matters any more (see `run`).
            return Ok(());
        }
        // 4. New entries and hard state: one write, synced when raft needs
        // it (new entries, or a term/vote change). A hard state whose only
        // change is the commit index needs no fsync (etcd's MustSync): a
        // lost commit index is learned again from the leader. Without this,
        // every heartbeat carrying a new commit index cost a follower an
        // fsync before it could answer (and a ReadIndex round waits for
        // those answers).
        if !ready.entries().is_empty() || ready.hs().is_some() {
            let sync = ready.must_sync();
            self.log.append(ready.entries(), ready.hs(), sync)?;
        }
        // 5. Messages that promise what was just persisted.
        if !ready.persisted_messages().is_empty() {
            self.send(ready.take_persisted_messages());
        }
        // 6. ReadIndex results.
        for rs in ready.take_read_states() {
            self.reads.read_state(&rs.request_ctx, rs.index);
        }
        // 7. Advance.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.raw.raft.hard_state();
            hs.commit = commit;
            // Not synced: a lost commit index is learned again from the leader.
            self.log.append(&[], Some(&hs), false)?;
        }
        if !light.messages().is_empty() {
            self.send(light.take_messages());
        }
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.reads.answer(self.machine.applied_index());
        self.maybe_compact_log()?;
        Ok(())
    }

    /// Hands `messages` to the transport. A leader's heartbeat to a peer
    /// that leaves more than two heartbeat intervals after the previous one
    /// is counted in etcd_server_heartbeat_send_failures_total, as etcd
    /// counts it (the leader is likely overloaded, say by a slow disk).
    fn send(&mut self, messages: Vec<Message>) {
        if let Some(m) = &self.metrics {
            let now = std::time::Instant::now();
            let late = self.config.heartbeat * 2;
            for msg in &messages {
                if msg.get_msg_type() != MessageType::MsgHeartbeat {
                    continue;
                }
                if let Some(last) = self.heartbeats.insert(msg.to, now) {
                    if now.duration_since(last) > late {
                        m.heartbeat_send_failures.inc();
                    }
                }
            }
        }
        self.transport.send(messages);
    }

    /// Applies committed entries in log order, up to this member's removal.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), Error> {
        if !entries.is_empty() {
            self.publish_commit();
        }
        for entry in entries {
            if self.removed {
                break;
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    let start = std::time::Instant::now();
                    self.machine
                        .apply_entry(entry.index, &entry.data)
                        .map_err(machine_failed)?;
                    if let Some(m) = &self.metrics {
                        if start.elapsed() > SLOW_APPLY {
                            m.slow_apply.inc();
                        }
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(&entry)?
                }
            }
        }
        Ok(())
    }
}
