//! The sending side, in phases: peer tasks and snapshot transfers run
//! until [`Peers::stop`], which ends and joins them all; a transfer cut
//! short is reported failed; nothing starts afterwards. And the raft
//! thread's own writes: made while the task is idle, never out of order.

use std::sync::mpsc::{Receiver, TryRecvError};

use crate::raft::node::{inbox, InboxReceiver};
use std::time::{Duration, Instant};

use ::raft::eraftpb::{MessageType, Snapshot};
use tokio::net::TcpListener;

use super::*;

/// How long any phase may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// The next report the raft thread would get, polled until [`DEADLINE`].
async fn next_report(inputs: &InboxReceiver) -> Input {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match inputs.try_recv() {
            Ok(input) => return input,
            Err(TryRecvError::Disconnected) => panic!("the reports' channel closed"),
            Err(TryRecvError::Empty) if Instant::now() > deadline => {
                panic!("no report within {DEADLINE:?}")
            }
            Err(TryRecvError::Empty) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

fn message(to: u64) -> Message {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgHeartbeat);
    msg.from = 1;
    msg.to = to;
    msg
}

fn snapshot(to: u64) -> Message {
    let mut msg = message(to);
    msg.set_msg_type(MessageType::MsgSnapshot);
    msg.set_snapshot(Snapshot {
        data: vec![7; 1024].into(),
        ..Default::default()
    });
    msg
}

#[tokio::test]
async fn peer_tasks_and_transfers_end_and_are_joined_on_stop() {
    // Given member 1's peers: nothing is known of 2's URL, and 3 accepts
    // connections but never answers (a hung peer).
    let hung = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", hung.local_addr().unwrap());
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(8);
    let acceptor = tokio::spawn(async move {
        // Holds every connection open, so the transfer hangs rather than
        // failing.
        while let Ok((socket, _)) = hung.accept().await {
            let _ = accepted_tx.send(socket).await;
        }
    });
    let resolve: Resolver = Arc::new(move |id| (id == 3).then(|| url.clone()));
    let (inputs, reports) = inbox().unwrap();
    let peers = Peers::new(1, resolve, inputs, Dialer::default());

    // When raft sends to 2, then 2's task starts and, unable to connect,
    // reports it unreachable.
    peers.send(vec![message(2)]);
    assert!(matches!(next_report(&reports).await, Input::Unreachable(2)));
    let queue = peers.link(2).queue.clone();
    assert!(!queue.is_closed(), "2's task keeps trying");

    // When raft sends a snapshot to 3, then the transfer is under way.
    peers.send(vec![snapshot(3)]);
    let _held = tokio::time::timeout(DEADLINE, accepted.recv())
        .await
        .expect("the transfer connected")
        .expect("the acceptor runs");

    // When the peers stop, then every task has ended by the time `stop`
    // returns: 2's queue has no reader any more, and the hung transfer is
    // reported failed (whatever else 2's task reported meanwhile).
    tokio::time::timeout(DEADLINE, peers.stop())
        .await
        .expect("stop returns although a peer hangs");
    assert!(queue.is_closed(), "2's task ended");
    let mut snapshot_failed = false;
    while let Ok(report) = reports.try_recv() {
        match report {
            Input::SnapshotSent { to: 3, failed } => snapshot_failed = failed,
            Input::Unreachable(2) => {}
            other => panic!("unexpected report {other:?}"),
        }
    }
    assert!(snapshot_failed, "the cut transfer is reported failed");

    // Then nothing starts any more: messages are reported unreachable and
    // snapshots failed at once.
    // (A snapshot goes its own way, so the two reports come in either
    // order.)
    peers.send(vec![message(2), snapshot(3)]);
    let (mut unreachable, mut failed) = (false, false);
    while let Ok(report) = reports.try_recv() {
        match report {
            Input::Unreachable(2) => unreachable = true,
            Input::SnapshotSent {
                to: 3,
                failed: true,
            } => failed = true,
            other => panic!("unexpected report {other:?}"),
        }
    }
    assert!(unreachable && failed, "both reported at once");
    assert!(lock(&peers.tasks).is_empty(), "no task was started");
    acceptor.abort();
}

/// A peer that reads a raft stream on a thread of its own (so that it
/// runs while the test's runtime is blocked) and passes on each message;
/// after the first, it stops reading until `resume` is sent.
fn blocking_peer() -> (String, Receiver<Message>, std::sync::mpsc::Sender<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let (resume, resumed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut preface = [0; stream::PREFACE.len()];
        conn.read_exact(&mut preface).unwrap();
        conn.write_all(&[stream::ACCEPTED]).unwrap();
        for read in 0.. {
            if read == 1 && resumed.recv().is_err() {
                return;
            }
            let mut len = [0; 4];
            if conn.read_exact(&mut len).is_err() {
                return;
            }
            let mut frame = vec![0; u32::from_be_bytes(len) as usize];
            conn.read_exact(&mut frame).unwrap();
            if tx.send(Message::parse_from_bytes(&frame).unwrap()).is_err() {
                return;
            }
        }
    });
    (url, rx, resume)
}

fn append(to: u64, index: u64, bytes: usize) -> Message {
    let mut msg = message(to);
    msg.set_msg_type(MessageType::MsgAppend);
    msg.index = index;
    msg.set_entries(
        vec![::raft::eraftpb::Entry {
            index: index + 1,
            data: vec![index as u8; bytes].into(),
            ..Default::default()
        }]
        .into(),
    );
    msg
}

/// Polls `ready` until it holds, letting the runtime run meanwhile.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !ready() {
        assert!(Instant::now() < deadline, "not within {DEADLINE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_raft_thread_writes_while_the_task_is_idle_and_never_out_of_order() {
    // Given member 1's stream to 2, open and idle (its task waiting on an
    // empty queue).
    let (url, received, resume) = blocking_peer();
    let resolve: Resolver = Arc::new(move |id| (id == 2).then(|| url.clone()));
    let (inputs, _reports) = inbox().unwrap();
    let peers = Peers::new(1, resolve, inputs, Dialer::default());
    let link = peers.link(2);
    until("the stream is open and idle", || {
        let turn = lock(&link.turn);
        turn.tcp.is_some() && !turn.busy
    })
    .await;

    // When raft sends, then the message arrives with the runtime blocked
    // (this test's one thread waits here): the task did not write it.
    peers.send(vec![message(2)]);
    let arrived = received.recv_timeout(DEADLINE);
    assert_eq!(
        arrived.ok(),
        Some(message(2)),
        "written by the sender itself"
    );
    assert!(!lock(&link.turn).busy);

    // When raft sends more than the connection takes (the peer not
    // reading): batches small enough for the sender to write until one is
    // written in part, the rest of it and everything after it queued for
    // the task; then larger batches, the task's anyway.
    let kib = 1024;
    let mut sent: Vec<Message> = (0..400).map(|i| append(2, i, 60 * kib)).collect();
    for msg in &sent {
        peers.send(vec![msg.clone()]);
    }
    assert!(
        lock(&link.turn).busy,
        "a write was cut short: the task's turn"
    );
    let sizes = [100, 30 * kib, 1024 * kib, 100];
    let more = (400..440).map(|i| append(2, i, sizes[i as usize % sizes.len()]));
    sent.extend(more);
    for batch in sent[400..].chunks(2) {
        peers.send(batch.to_vec());
    }

    // Then, once the peer reads again, everything arrives, in raft's order.
    resume.send(()).unwrap();
    let mut got = Vec::new();
    until("every message arrives", || {
        got.extend(received.try_iter());
        got.len() >= sent.len()
    })
    .await;
    assert!(got == sent, "the stream's order is raft's");

    // And once the task has written it all, the turn is the sender's again.
    until("the task hands the turn back", || !lock(&link.turn).busy).await;

    // And the connection closes with the task: nothing writes to it after
    // the peers stop.
    peers.stop().await;
    assert!(lock(&link.turn).tcp.is_none());
}

#[test]
fn the_rest_of_a_write_is_dropped_on_another_connection() {
    let rest = || Queued::Rest {
        conn: 1,
        bytes: vec![0, 0, 0, 9, 1],
    };
    assert!(matches!(rest().on(1), Some(Outgoing::Encoded(b)) if b == [0, 0, 0, 9, 1]));
    assert!(
        rest().on(2).is_none(),
        "half a frame would corrupt a new stream"
    );
    assert!(matches!(
        Queued::Message(message(2)).on(2),
        Some(Outgoing::Message(_))
    ));
}
