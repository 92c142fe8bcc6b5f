//! A lone follower fed by a scripted leader: the test plays the leader,
//! reading what the node under test sends it and answering by hand.

use super::*;

/// Member `id`'s inbox on `net`: the test plays that member, reading what
/// the node under test sends it.
fn inbox(net: &Network, id: u64) -> InboxReceiver {
    let (tx, rx) = node::inbox().unwrap();
    net.inputs.lock().unwrap().insert(id, tx);
    rx
}

/// The next message of type `kind` in `inbox` (others are skipped),
/// polled for up to 10 s.
async fn next_message(inbox: &InboxReceiver, kind: MessageType) -> Message {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match inbox.try_recv() {
            Ok(Input::Step(msg)) if msg.get_msg_type() == kind => return msg,
            Ok(_) => continue,
            Err(_) => {
                assert!(Instant::now() < deadline, "no {kind:?} within 10 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// A message from the scripted leader 1 to node 2, at term 2.
fn from_leader(kind: MessageType) -> Message {
    let mut msg = Message::default();
    msg.set_msg_type(kind);
    msg.from = 1;
    msg.to = 2;
    msg.term = 2;
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_follower_installs_the_leaders_snapshot_and_goes_on_from_it() {
    // Given node 2 of {1, 2}, alone: the test plays leader 1.
    let net = Arc::new(Network::default());
    let leader = inbox(&net, 1);
    let two = start(2, &[1, 2], &net);

    // When leader 1 sends a snapshot at index 50 (term 2) holding "abc".
    let mut snap = from_leader(MessageType::MsgSnapshot);
    let mut snapshot = Snapshot::default();
    let meta = snapshot.mut_metadata();
    (meta.index, meta.term) = (50, 2);
    meta.mut_conf_state().voters = vec![1, 2];
    let mut data = 50u64.to_be_bytes().to_vec();
    data.extend_from_slice(&[3, b'a', b'b', b'c']);
    snapshot.data = data.into();
    snap.set_snapshot(snapshot);
    two.handle.send(Input::Step(snap));

    // Then node 2 answers that it has everything up to 50, having
    // installed it in the state machine and in the log.
    let ack = next_message(&leader, MessageType::MsgAppendResponse).await;
    assert!(!ack.reject);
    assert_eq!(ack.index, 50);
    let state = two.fake.state();
    assert_eq!((state.restores, state.index), (1, 50));
    assert_eq!(two.fake.data(), vec![b"abc".to_vec()]);
    assert_eq!(two.log.first_index().unwrap(), 51);
    assert_eq!(two.log.term(50).unwrap(), 2);
    until("status follows leader 1 at 50", || {
        let s = two.handle.status();
        (s.leader, s.term, s.commit) == (1, 2, 50)
    })
    .await;

    // When leader 1 appends entry 51 after it and commits it.
    let waiter = two.fake.waiters.register(77);
    let mut append = from_leader(MessageType::MsgAppend);
    (append.log_term, append.index, append.commit) = (2, 50, 51);
    let mut entry = Entry::default();
    (entry.term, entry.index) = (2, 51);
    entry.data = proposal(77, b"d").into();
    append.mut_entries().push(entry);
    two.handle.send(Input::Step(append));

    // Then the entry applies on top of the snapshot's state.
    let applied = tokio::time::timeout(Duration::from_secs(10), waiter).await;
    assert_eq!(applied.expect("applied in time"), Ok(51));
    assert_eq!(two.fake.data(), vec![b"abc".to_vec(), proposal(77, b"d")]);

    // When the follower gets proposals (right after a heartbeat, so it
    // still knows its leader): a leader-only one is refused as NotLeader,
    // never forwarded; any other is forwarded to the leader.
    let mut heartbeat = from_leader(MessageType::MsgHeartbeat);
    heartbeat.commit = 51;
    two.handle.send(Input::Step(heartbeat));
    assert_eq!(
        two.handle.propose_as_leader(proposal(78, b"lo")).await,
        Err(RequestError::NotLeader)
    );
    two.handle.propose(proposal(79, b"fw")).await.unwrap();
    let forwarded = next_message(&leader, MessageType::MsgPropose).await;
    let data: Vec<&[u8]> = forwarded.entries.iter().map(|e| e.data.as_ref()).collect();
    assert_eq!(data, vec![proposal(79, b"fw").as_slice()]);
}
