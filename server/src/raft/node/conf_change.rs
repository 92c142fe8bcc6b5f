//! Applying a committed conf change: raft's configuration first, then the
//! conf state on disk, then the state machine's member table
//! ([`StateMachine::apply_member_change`]). A member that applies its own
//! removal stops its loop.

use ::raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType,
};
use protobuf::Message as _;

use super::{machine_failed, Node, Transport};
use crate::raft::{Error, MemberChange, StateMachine};

impl<T: Transport, M: StateMachine> Node<T, M> {
    /// Applies the conf change in `entry`. A change raft refuses (say,
    /// removing the last voter) changes nothing but still consumes its index.
    pub(super) fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), Error> {
        let change = decode(entry)?;
        let conf_state = match self.raw.apply_conf_change(&change) {
            Ok(cs) => cs,
            Err(e) => {
                // Refused by raft: nothing changes; record the index so the
                // entry is not replayed.
                tracing::warn!(error = %e, "conf change refused by raft");
                self.machine
                    .apply_entry(entry.index, &bytes::Bytes::new())
                    .map_err(machine_failed)?;
                return Ok(());
            }
        };
        self.log.set_conf_state(&conf_state)?;
        let Some((kind, node)) = member_change(&change) else {
            self.machine
                .apply_entry(entry.index, &bytes::Bytes::new())
                .map_err(machine_failed)?;
            return Ok(());
        };
        self.machine
            .apply_member_change(entry.index, kind, node, &change.context)
            .map_err(machine_failed)?;
        if kind == MemberChange::Remove && node == self.config.id {
            self.removed = true;
        }
        Ok(())
    }
}

/// The change carried by a conf-change entry, the V1 form (never proposed
/// by Cairn, but raft's own) as a one-change V2.
fn decode(entry: &Entry) -> Result<ConfChangeV2, Error> {
    if entry.get_entry_type() == EntryType::EntryConfChange {
        let mut cc = ConfChange::default();
        cc.merge_from_bytes(&entry.data)
            .map_err(|e| Error::Decode("conf change", e.to_string()))?;
        let mut single = ConfChangeSingle::default();
        single.set_change_type(cc.get_change_type());
        single.node_id = cc.node_id;
        let mut v2 = ConfChangeV2::default();
        v2.mut_changes().push(single);
        v2.context = cc.context;
        Ok(v2)
    } else {
        let mut cc = ConfChangeV2::default();
        cc.merge_from_bytes(&entry.data)
            .map_err(|e| Error::Decode("conf change", e.to_string()))?;
        Ok(cc)
    }
}

/// What the state machine hears of `change`: its first change (Cairn
/// proposes one per conf change); none for an empty change.
fn member_change(change: &ConfChangeV2) -> Option<(MemberChange, u64)> {
    let single = change.changes.first()?;
    let kind = match single.get_change_type() {
        ConfChangeType::AddNode => MemberChange::AddVoter,
        ConfChangeType::AddLearnerNode => MemberChange::AddLearner,
        ConfChangeType::RemoveNode => MemberChange::Remove,
    };
    Some((kind, single.node_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: EntryType, data: Vec<u8>) -> Entry {
        let mut entry = Entry::default();
        entry.set_entry_type(kind);
        entry.index = 7;
        entry.data = data.into();
        entry
    }

    #[test]
    fn a_v1_conf_change_reads_as_a_one_change_v2() {
        // Given a V1 conf change (raft's own form), with a context.
        let mut v1 = ConfChange::default();
        v1.set_change_type(ConfChangeType::AddLearnerNode);
        v1.node_id = 4;
        v1.context = b"ctx".to_vec().into();
        let entry = entry(EntryType::EntryConfChange, v1.write_to_bytes().unwrap());

        // When it is decoded.
        let change = decode(&entry).unwrap();

        // Then it is one change, with the same kind, node and context.
        assert_eq!(change.changes.len(), 1);
        assert_eq!(member_change(&change), Some((MemberChange::AddLearner, 4)));
        assert_eq!(change.context.as_ref(), b"ctx");
    }

    #[test]
    fn each_change_type_is_the_member_change_of_its_kind() {
        // Given a V2 change of each type.
        for (kind, expected) in [
            (ConfChangeType::AddNode, MemberChange::AddVoter),
            (ConfChangeType::AddLearnerNode, MemberChange::AddLearner),
            (ConfChangeType::RemoveNode, MemberChange::Remove),
        ] {
            let mut single = ConfChangeSingle::default();
            single.set_change_type(kind);
            single.node_id = 9;
            let mut v2 = ConfChangeV2::default();
            v2.mut_changes().push(single);
            let entry = entry(EntryType::EntryConfChangeV2, v2.write_to_bytes().unwrap());

            // When it is decoded, then the state machine hears that kind.
            let change = decode(&entry).unwrap();
            assert_eq!(member_change(&change), Some((expected, 9)));
        }

        // An empty change tells the state machine nothing.
        assert_eq!(member_change(&ConfChangeV2::default()), None);
    }

    #[test]
    fn a_conf_change_that_does_not_decode_stops_the_loop() {
        // Given an entry whose bytes are no conf change.
        let entry = entry(EntryType::EntryConfChangeV2, vec![0xff, 0xff, 0xff]);

        // When it is decoded, then it is a decode error (the loop stops:
        // a committed entry raft wrote itself cannot be skipped).
        assert!(matches!(
            decode(&entry),
            Err(Error::Decode("conf change", _))
        ));
    }
}
