//! A leader fed by scripted followers: the followers' ReadIndex requests
//! that arrive while a round is in flight share the leader's next round,
//! and each is answered with its own context.

use super::*;

/// What the test reads of a member it plays: the messages the node under
/// test sent it, and every ReadIndex round context seen on a heartbeat.
struct Played {
    messages: Receiver<Message>,
    contexts: HashSet<Vec<u8>>,
}

/// Plays member `id` on `net`: votes for whoever asks and acknowledges
/// appends and plain heartbeats itself (so that the node under test is
/// elected and stays leader under check-quorum); every other message goes
/// to the test.
fn play(net: &Arc<Network>, id: u64) -> Played {
    let (tx, rx) = node::inbox().unwrap();
    let (out, messages) = std::sync::mpsc::channel();
    net.inputs.lock().unwrap().insert(id, tx);
    // Weak: the network holds this member's inbox, so a strong reference
    // here would keep both alive after the test.
    let net = Arc::downgrade(net);
    std::thread::spawn(move || {
        while let Ok(input) = rx.recv_timeout(Duration::MAX) {
            let Input::Step(msg) = input else { continue };
            let mut reply = Message::default();
            (reply.from, reply.to, reply.term) = (id, msg.from, msg.term);
            match msg.get_msg_type() {
                MessageType::MsgRequestPreVote => {
                    reply.set_msg_type(MessageType::MsgRequestPreVoteResponse);
                }
                MessageType::MsgRequestVote => {
                    reply.set_msg_type(MessageType::MsgRequestVoteResponse);
                }
                MessageType::MsgAppend => {
                    reply.set_msg_type(MessageType::MsgAppendResponse);
                    reply.index = msg.index + msg.entries.len() as u64;
                }
                MessageType::MsgHeartbeat if msg.context.is_empty() => {
                    reply.set_msg_type(MessageType::MsgHeartbeatResponse);
                }
                _ => {
                    let _ = out.send(msg);
                    continue;
                }
            }
            let Some(net) = net.upgrade() else { return };
            let to = net.inputs.lock().unwrap().get(&reply.to).cloned();
            if let Some(to) = to {
                let _ = to.send(Input::Step(reply));
            }
        }
    });
    Played {
        messages,
        contexts: HashSet::new(),
    }
}

impl Played {
    /// The next message `f` picks (polled for up to 10 s); the contexts of
    /// the rounds passed on the way are noted.
    async fn next(&mut self, what: &str, f: impl Fn(&Message) -> bool) -> Message {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.messages.try_recv() {
                Ok(msg) => {
                    if msg.get_msg_type() == MessageType::MsgHeartbeat {
                        self.contexts.insert(msg.context.to_vec());
                    }
                    if f(&msg) {
                        return msg;
                    }
                }
                Err(_) => {
                    assert!(Instant::now() < deadline, "no {what} within 10 s");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }

    /// The next round's context other than `not`.
    async fn round_other_than(&mut self, not: &[u8]) -> Vec<u8> {
        let msg = self
            .next("ReadIndex round", |m| {
                m.get_msg_type() == MessageType::MsgHeartbeat && *m.context != *not
            })
            .await;
        msg.context.to_vec()
    }

    /// The next answer to a forwarded ReadIndex request: its context and
    /// read index.
    async fn read_index_answer(&mut self) -> (Vec<u8>, u64) {
        let msg = self
            .next("MsgReadIndexResp", |m| {
                m.get_msg_type() == MessageType::MsgReadIndexResp
            })
            .await;
        assert_eq!(msg.entries.len(), 1, "{msg:?}");
        (msg.entries[0].data.to_vec(), msg.index)
    }

    /// Every round context this member has been sent, the rest of its
    /// messages read.
    fn contexts(&mut self) -> HashSet<Vec<u8>> {
        while let Ok(msg) = self.messages.try_recv() {
            if msg.get_msg_type() == MessageType::MsgHeartbeat {
                self.contexts.insert(msg.context.to_vec());
            }
        }
        self.contexts.clone()
    }
}

/// Follower `from`'s ReadIndex request with context `ctx`, as raft-rs
/// forwards it (a local message: term 0).
fn forwarded(from: u64, ctx: &[u8]) -> Input {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgReadIndex);
    (msg.from, msg.to) = (from, 1);
    let entry = Entry {
        data: ctx.to_vec().into(),
        ..Entry::default()
    };
    msg.set_entries(vec![entry].into());
    Input::Step(msg)
}

/// Member `from`'s acknowledgement of round `ctx` at `term`.
fn acknowledged(from: u64, term: u64, ctx: &[u8]) -> Input {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgHeartbeatResponse);
    (msg.from, msg.to, msg.term) = (from, 1, term);
    msg.context = ctx.to_vec().into();
    Input::Step(msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_reads_arriving_during_a_round_share_the_next_one() {
    // Given node 1 of {1, 2, 3} leading, with its term's entry committed;
    // the test plays 2 and 3.
    let net = Arc::new(Network::default());
    let mut two = play(&net, 2);
    let mut three = play(&net, 3);
    let one = start(1, &[1, 2, 3], &net);
    until("node 1 leads and committed its term's entry", || {
        let s = one.handle.status();
        s.is_leader && s.commit >= 2
    })
    .await;
    let status = one.handle.status();
    let (term, commit) = (status.term, status.commit);

    // When 2 forwards a ReadIndex request, then a round leaves for it.
    one.handle.send(forwarded(2, b"two"));
    let first = two.round_other_than(b"").await;

    // When 3 and 2 forward requests while that round is in flight, and 2
    // then acknowledges it.
    one.handle.send(forwarded(3, b"three"));
    one.handle.send(forwarded(2, b"two, again"));
    one.handle.send(acknowledged(2, term, &first));

    // Then 2's first request is answered with its own context and the
    // commit index.
    assert_eq!(two.read_index_answer().await, (b"two".to_vec(), commit));

    // And ONE round leaves for both later requests; once acknowledged, each
    // is answered with its own context.
    let second = two.round_other_than(&first).await;
    one.handle.send(acknowledged(3, term, &second));
    assert_eq!(three.read_index_answer().await, (b"three".to_vec(), commit));
    assert_eq!(
        two.read_index_answer().await,
        (b"two, again".to_vec(), commit)
    );

    // Every round either follower saw was one of those two (raft-rs alone
    // sends a round per forwarded request, with the request's context).
    let rounds: HashSet<Vec<u8>> = [first, second].into_iter().collect();
    let mut seen = two.contexts();
    seen.extend(three.contexts());
    seen.remove(&Vec::new());
    assert_eq!(seen, rounds);
}
