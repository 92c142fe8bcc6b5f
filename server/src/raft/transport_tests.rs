//! The sending side's ownership of its tasks, in phases: peer tasks and
//! snapshot transfers run until [`Peers::stop`], which ends and joins them
//! all; a transfer cut short is reported failed; nothing starts afterwards.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use ::raft::eraftpb::{MessageType, Snapshot};
use tokio::net::TcpListener;

use super::*;

/// How long any phase may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// The next report the raft thread would get, polled until [`DEADLINE`].
async fn next_report(inputs: &Receiver<Input>) -> Input {
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
    let (inputs, reports) = std::sync::mpsc::channel();
    let peers = Peers::new(1, resolve, inputs, Dialer::default());

    // When raft sends to 2, then 2's task starts and, unable to connect,
    // reports it unreachable.
    peers.send(vec![message(2)]);
    assert!(matches!(next_report(&reports).await, Input::Unreachable(2)));
    let queue = peers.queue(2);
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
    peers.send(vec![message(2), snapshot(3)]);
    assert!(matches!(reports.try_recv(), Ok(Input::Unreachable(2))));
    assert!(matches!(
        reports.try_recv(),
        Ok(Input::SnapshotSent {
            to: 3,
            failed: true
        })
    ));
    assert!(lock(&peers.tasks).is_empty(), "no task was started");
    acceptor.abort();
}
