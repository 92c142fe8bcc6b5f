//! The raft thread's inbox: the [`Input`]s the rest of the member sends,
//! and the peers' raft streams on plain TCP, which the thread reads itself.
//!
//! Why the thread reads those streams itself: a message read by a task
//! crossed two hand-offs between threads on its way to raft (a tokio worker
//! woken by the socket, then the raft thread woken by the worker); read
//! here, it crosses one (the raft thread woken by the socket). So the
//! thread waits on both at once: a mio `Poll` holds the streams and a
//! `Waker`, which a sender sets off when it finds the thread asleep
//! ([`Inbox::send`]). A TLS stream is read by its task, which sends each
//! message as an [`Input::Step`] (`crate::raft::stream::StreamReceiver`).
//!
//! The wake-up protocol: before it sleeps, the thread raises `asleep` and
//! looks at the channel once more; a sender pushes its input first and then
//! takes `asleep` down, waking the thread if it was up. Either the thread's
//! last look finds the input, or the sender finds the flag up and wakes it
//! (both sides `SeqCst`).
//!
//! Before it sleeps, a thread whose last sleeps arrivals cut short yields
//! the core a few times, or spins a while, looking at the channel and the
//! streams after each yield (the rules, and why, in `idle.rs`): under 1,000
//! clients' linearizable reads the raft threads slept twice as often
//! without the yields as on std's channel, which backs off the same way,
//! and a lone writer's puts find the threads they wake awake
//! (docs/benchmarks.md). A thread whose inputs come far apart sleeps at
//! once.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use super::idle::Idle;
use super::Input;
use crate::raft::stream::{Frames, Inbound, StreamError};
use crate::raft::RequestError;

/// The waker's token (streams count up from 0).
const WAKER: Token = Token(usize::MAX);
/// The most bytes read from one stream per round, so that a burst on one
/// (a follower catching up) does not hold up the rest of the round.
const READ_PER_ROUND: usize = 1024 * 1024;
/// How long a busy thread goes without looking at its streams at most.
const POLL_WHEN_BUSY: Duration = Duration::from_micros(200);
/// One read's size.
const READ_CHUNK: usize = 64 * 1024;

/// The sending end: whoever gives the raft thread work holds a clone.
#[derive(Clone, Debug)]
pub struct Inbox {
    /// The inputs. Declared before `senders`, so that the last sender's
    /// channel is closed before its drop wakes the thread.
    tx: Sender<Input>,
    /// How the thread is woken when it sleeps, and when the last sender
    /// goes.
    senders: Arc<Senders>,
}

/// What every [`Inbox`] shares: the last one gone wakes the thread, which
/// finds the channel closed and ends, instead of sleeping on until its tick.
#[derive(Debug)]
struct Senders {
    /// Shared with the receiver, which raises `asleep` in it.
    wake: Arc<Wake>,
}

impl Drop for Senders {
    fn drop(&mut self) {
        self.wake.wake();
    }
}

/// How a sender wakes the raft thread.
#[derive(Debug)]
struct Wake {
    /// Sets off the thread's poll.
    waker: Waker,
    /// The thread is asleep (or about to be): the next sender wakes it.
    asleep: AtomicBool,
}

impl Wake {
    /// Sets the poll off. A wake that fails (an eventfd write) leaves the
    /// thread to its next tick.
    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "cannot wake the raft thread");
        }
    }
}

impl Inbox {
    /// Queues `input` for the raft thread ([`RequestError::Stopped`], and
    /// `input` dropped, once the thread is gone).
    pub fn send(&self, input: Input) -> Result<(), RequestError> {
        self.tx.send(input).map_err(|_| RequestError::Stopped)?;
        let wake = &self.senders.wake;
        if wake.asleep.swap(false, Ordering::SeqCst) {
            wake.wake();
        }
        Ok(())
    }
}

/// A stream the raft thread reads.
struct Reading {
    /// The connection, registered with the poll.
    tcp: mio::net::TcpStream,
    /// What has arrived on it.
    frames: Frames,
    /// The poll reported the peer's close (or an error): the stream is read
    /// to its end, since no later event will come to say there is more.
    ending: bool,
}

/// The raft thread's end.
pub struct InboxReceiver {
    /// The inputs.
    rx: Receiver<Input>,
    /// Shared with the senders.
    wake: Arc<Wake>,
    /// The streams' readiness and the waker.
    poll: Poll,
    /// `poll`'s buffer.
    events: Events,
    /// The streams this thread reads, by token.
    streams: HashMap<Token, Reading>,
    /// The next stream's token.
    next: usize,
    /// Streams that may have bytes to read: readable since they were last
    /// read to the end.
    readable: Vec<Token>,
    /// One read's buffer (kept for its allocation).
    chunk: Vec<u8>,
    /// When the streams were last polled.
    polled: Instant,
    /// How soon arrivals ended the last sleeps: whether the next wait
    /// yields or spins first.
    idle: Idle,
}

impl std::fmt::Debug for InboxReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxReceiver")
            .field("streams", &self.streams.len())
            .finish()
    }
}

/// A new inbox: its senders' end and the raft thread's.
pub fn inbox() -> io::Result<(Inbox, InboxReceiver)> {
    let poll = Poll::new()?;
    let wake = Arc::new(Wake {
        waker: Waker::new(poll.registry(), WAKER)?,
        asleep: AtomicBool::new(false),
    });
    let (tx, rx) = mpsc::channel();
    let receiver = InboxReceiver {
        rx,
        wake: Arc::clone(&wake),
        poll,
        events: Events::with_capacity(64),
        streams: HashMap::new(),
        next: 0,
        readable: Vec::new(),
        chunk: vec![0; READ_CHUNK],
        polled: Instant::now(),
        idle: Idle::default(),
    };
    let senders = Arc::new(Senders { wake });
    Ok((Inbox { tx, senders }, receiver))
}

impl InboxReceiver {
    /// One round's inputs, at most `max` of them from the channel, in
    /// `out`: what has arrived, or else whatever arrives first within
    /// `wait` (nothing, if nothing does). An error once every [`Inbox`] is
    /// gone and the channel is empty.
    pub fn recv_round(
        &mut self,
        wait: Duration,
        max: usize,
        out: &mut Vec<Input>,
    ) -> Result<(), RecvTimeoutError> {
        self.take_queued(max, out)?;
        if !out.is_empty() {
            // A round with inputs looks at the streams too once they have
            // gone unpolled for a while, so that a thread kept busy by its
            // channel still reads them (a poll every round of a busy thread
            // is a system call per round for nothing).
            if self.polled.elapsed() >= POLL_WHEN_BUSY {
                self.poll(Duration::ZERO);
            }
            self.read_streams(out);
            return Ok(());
        }
        if !self.readable.is_empty() {
            // A stream left with more to read: read on before any wait.
            self.read_streams(out);
            if !out.is_empty() || !self.readable.is_empty() {
                return Ok(());
            }
        }
        // Nothing queued. If inputs have been coming close together or
        // back to back, give the threads that send them the core, looking
        // after each turn, before sleeping (see the module doc).
        let before = self.idle.before_sleep();
        let began = Instant::now();
        let (mut yields, mut last_yield, mut found) = (0, Duration::ZERO, false);
        while !found && before.goes_on(yields, began.elapsed(), last_yield) {
            let yielding = Instant::now();
            std::thread::yield_now();
            last_yield = yielding.elapsed();
            yields += 1;
            self.take_queued(max, out)?;
            if out.is_empty() {
                self.poll(Duration::ZERO);
            }
            self.read_streams(out);
            found = !out.is_empty() || !self.readable.is_empty();
        }
        if !before.spin.is_zero() {
            self.idle.spun(found);
        }
        if found {
            return Ok(());
        }
        // Then wait. The wait's poll returns at once if a stream is
        // readable, so a thread that did not yield makes no zero-wait poll
        // before it (an empty channel was two polls before it slept, one of
        // them for nothing).
        self.wake.asleep.store(true, Ordering::SeqCst);
        self.take_queued(max, out)?;
        if out.is_empty() {
            let slept = Instant::now();
            let woken = self.poll(wait);
            self.idle.slept(woken, slept.elapsed());
        }
        self.wake.asleep.store(false, Ordering::SeqCst);
        self.take_queued(max, out)?;
        self.read_streams(out);
        Ok(())
    }

    /// Reads `stream` from now on; it is closed when this receiver is
    /// dropped (the raft thread stops) or the peer closes it.
    pub fn add_stream(&mut self, stream: Inbound) {
        let token = Token(self.next);
        self.next += 1;
        let mut tcp = mio::net::TcpStream::from_std(stream.tcp);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut tcp, token, Interest::READABLE)
        {
            // Dropped: the peer finds it closed and dials again.
            tracing::warn!(error = %e, "cannot read a raft stream");
            return;
        }
        let frames = stream.frames;
        let reading = Reading {
            tcp,
            frames,
            ending: false,
        };
        self.streams.insert(token, reading);
        // Bytes may have arrived before it was registered.
        self.readable.push(token);
    }

    /// A queued input, if one is there: the channel alone, without the
    /// streams (what a test that plays a member reads).
    pub fn try_recv(&self) -> Result<Input, TryRecvError> {
        self.rx.try_recv()
    }

    /// The queued inputs.
    pub fn try_iter(&self) -> mpsc::TryIter<'_, Input> {
        self.rx.try_iter()
    }

    /// The next queued input, waiting up to `wait` for it.
    pub fn recv_timeout(&self, wait: Duration) -> Result<Input, RecvTimeoutError> {
        self.rx.recv_timeout(wait)
    }

    fn take_queued(&self, max: usize, out: &mut Vec<Input>) -> Result<(), RecvTimeoutError> {
        for _ in 0..max {
            match self.rx.try_recv() {
                Ok(input) => out.push(input),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) if out.is_empty() => {
                    return Err(RecvTimeoutError::Disconnected)
                }
                Err(TryRecvError::Disconnected) => break,
            }
        }
        Ok(())
    }

    /// Waits up to `wait` for a stream to turn readable or the waker; true
    /// if either did.
    fn poll(&mut self, wait: Duration) -> bool {
        self.polled = Instant::now();
        if let Err(e) = self.poll.poll(&mut self.events, Some(wait)) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::warn!(error = %e, "the raft thread's poll failed");
            }
            return false;
        }
        let mut any = false;
        for event in &self.events {
            any = true;
            let token = event.token();
            if token == WAKER {
                continue;
            }
            if event.is_read_closed() || event.is_error() {
                if let Some(stream) = self.streams.get_mut(&token) {
                    stream.ending = true;
                }
            }
            if !self.readable.contains(&token) {
                self.readable.push(token);
            }
        }
        any
    }

    /// Reads the readable streams: their messages go to `out`; a stream
    /// that closes or fails is dropped (its peer reconnects).
    fn read_streams(&mut self, out: &mut Vec<Input>) {
        for token in std::mem::take(&mut self.readable) {
            let Some(stream) = self.streams.get_mut(&token) else {
                continue;
            };
            match read(stream, &mut self.chunk, out) {
                Ok(Some(true)) => self.readable.push(token),
                Ok(Some(false)) => {}
                ended => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "a raft stream ended");
                    }
                    if let Some(mut stream) = self.streams.remove(&token) {
                        let _ = self.poll.registry().deregister(&mut stream.tcp);
                    }
                }
            }
        }
    }
}

/// Reads what `stream` has, up to [`READ_PER_ROUND`]: its messages go to
/// `out`. Whether it may have more (`Some(true)`), has none for now
/// (`Some(false)`), or was closed by the peer (`None`).
///
/// A read that fills less than `chunk` took all the socket had, so the
/// stream is not read again until the poll reports it: epoll reports
/// every arrival on an edge-triggered socket (epoll and kqueue, as tokio
/// relies on too). One more read to see it would block was a failing
/// system call per wake-up: two per put on each follower, four on the
/// leader. The exception is a stream whose close the poll has reported:
/// its last bytes and its close may have come as one event, so it is read
/// until the read that finds the end.
fn read(
    stream: &mut Reading,
    chunk: &mut [u8],
    out: &mut Vec<Input>,
) -> Result<Option<bool>, StreamError> {
    let mut read = 0;
    while read < READ_PER_ROUND {
        match stream.tcp.read(chunk) {
            Ok(0) => return stream.frames.closed().map(|()| None),
            Ok(n) => {
                read += n;
                stream
                    .frames
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
                stream.frames.decode(|msg| {
                    out.push(Input::Step(msg));
                    Ok(())
                })?;
                if n < chunk.len() && !stream.ending {
                    return Ok(Some(false));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(false)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(true))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Instant;

    use ::raft::eraftpb::{Entry, Message, MessageType};

    use super::*;
    use crate::raft::stream::encode_frames;

    /// How long any phase may take before the test fails.
    const DEADLINE: Duration = Duration::from_secs(10);

    fn append(index: u64, bytes: usize) -> Message {
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgAppend);
        (msg.from, msg.to, msg.index) = (2, 1, index);
        msg.set_entries(
            vec![Entry {
                index: index + 1,
                data: vec![index as u8; bytes].into(),
                ..Default::default()
            }]
            .into(),
        );
        msg
    }

    /// A plain TCP stream handed over to the thread (queued as
    /// `Input::Stream`, not yet registered), and the peer's end of it. The
    /// inbox is returned so the thread's channel stays open.
    fn handed_over() -> (std::net::TcpStream, Inbox, InboxReceiver) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let (inbox, receiver) = inbox().unwrap();
        let stream = Inbound {
            tcp: accepted,
            frames: Frames::new(None),
        };
        inbox.send(Input::Stream(stream)).unwrap();
        (peer, inbox, receiver)
    }

    #[test]
    fn a_sender_wakes_the_sleeping_thread() {
        let (inbox, mut receiver) = inbox().unwrap();
        let (answers, answered) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut round = Vec::new();
            // Each round sleeps for a minute unless woken.
            while receiver
                .recv_round(Duration::from_secs(60), 16, &mut round)
                .is_ok()
            {
                for input in round.drain(..) {
                    if let Input::TransferLeader(n) = input {
                        answers.send(n).unwrap();
                    }
                }
            }
        });
        // Every input wakes it, whether it is asleep or about to be.
        for n in 0..200 {
            inbox.send(Input::TransferLeader(n)).unwrap();
            assert_eq!(
                answered.recv_timeout(DEADLINE),
                Ok(n),
                "woken for input {n}"
            );
        }
        // And the senders' end gone wakes it to end (each round would
        // otherwise sleep a minute first).
        drop(inbox);
        assert_eq!(
            answered.recv_timeout(DEADLINE),
            Err(RecvTimeoutError::Disconnected),
            "the thread (and its end of `answers`) gone"
        );
        thread.join().unwrap();
    }

    #[test]
    fn the_thread_reads_a_handed_over_stream_until_its_peer_closes_it() {
        // Given a plain TCP stream handed over to the thread.
        let (mut peer, _inbox, mut receiver) = handed_over();

        // When the peer writes messages, one cut between two writes and one
        // larger than a round reads.
        let sent: Vec<Message> = vec![append(1, 100), append(2, 3 * READ_PER_ROUND), append(3, 10)];
        let mut frames = Vec::new();
        encode_frames(&mut frames, sent.clone());
        let writer = std::thread::spawn(move || {
            peer.write_all(&frames[..50]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            peer.write_all(&frames[50..]).unwrap();
            peer
        });

        // Then the thread gets them in order, as steps.
        let deadline = Instant::now() + DEADLINE;
        let mut got = Vec::new();
        let mut round = Vec::new();
        while got.len() < sent.len() {
            assert!(
                Instant::now() < deadline,
                "not every message within {DEADLINE:?}"
            );
            receiver
                .recv_round(Duration::from_millis(100), 16, &mut round)
                .unwrap();
            for input in round.drain(..) {
                match input {
                    Input::Stream(stream) => receiver.add_stream(stream),
                    Input::Step(msg) => got.push(msg),
                    other => panic!("unexpected input {other:?}"),
                }
            }
        }
        assert!(got == sent, "in order");

        // And when the peer closes it, the thread lets it go.
        drop(writer.join().unwrap());
        while !receiver.streams.is_empty() {
            assert!(Instant::now() < deadline, "the stream is still read");
            receiver
                .recv_round(Duration::from_millis(100), 16, &mut round)
                .unwrap();
            assert!(round.is_empty());
        }
    }

    #[test]
    fn only_a_sleep_that_an_arrival_cut_short_keeps_the_thread_from_sleeping_at_once() {
        let (inbox, mut receiver) = inbox().unwrap();
        let mut round = Vec::new();
        // A wait that runs out (a tick due at once, or later) marks nothing.
        for wait in [Duration::ZERO, Duration::from_millis(1)] {
            receiver.recv_round(wait, 16, &mut round).unwrap();
            assert!(round.is_empty());
            assert!(
                receiver.idle.sleeps_at_once(),
                "yields or spins after a wait of {wait:?} that ran out"
            );
        }
        // Nor does an arrival long after the sleep began.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            inbox.send(Input::Campaign).unwrap();
            inbox
        });
        let deadline = Instant::now() + DEADLINE;
        while round.is_empty() {
            assert!(Instant::now() < deadline, "no input within {DEADLINE:?}");
            receiver.recv_round(DEADLINE, 16, &mut round).unwrap();
        }
        assert!(matches!(round.as_slice(), [Input::Campaign]));
        assert!(
            receiver.idle.sleeps_at_once(),
            "yields or spins after a sleep of at least 5 ms"
        );
        drop(sender.join().unwrap());
    }

    #[test]
    fn a_last_message_that_comes_with_its_close_is_read_and_the_stream_let_go() {
        // Given a handed-over stream the thread has registered and read.
        let (mut peer, _inbox, mut receiver) = handed_over();
        let mut round = Vec::new();
        receiver.recv_round(Duration::ZERO, 16, &mut round).unwrap();
        for input in round.drain(..) {
            match input {
                Input::Stream(stream) => receiver.add_stream(stream),
                other => panic!("unexpected input {other:?}"),
            }
        }
        receiver.recv_round(Duration::ZERO, 16, &mut round).unwrap();
        assert!(round.is_empty());

        // When the peer sends a message and closes the stream while the
        // thread is not polling (on loopback both are queued before `drop`
        // returns, so one poll reports them together).
        let sent = append(1, 100);
        let mut frames = Vec::new();
        encode_frames(&mut frames, vec![sent.clone()]);
        peer.write_all(&frames).unwrap();
        drop(peer);

        // Then the thread gets the message and lets the stream go, although
        // its read of the message did not fill the buffer.
        let deadline = Instant::now() + DEADLINE;
        let mut got = Vec::new();
        while !receiver.streams.is_empty() {
            assert!(
                Instant::now() < deadline,
                "the stream is still read, {} messages in",
                got.len()
            );
            receiver
                .recv_round(Duration::from_millis(100), 16, &mut round)
                .unwrap();
            for input in round.drain(..) {
                match input {
                    Input::Step(msg) => got.push(msg),
                    other => panic!("unexpected input {other:?}"),
                }
            }
        }
        assert!(got == vec![sent]);
    }
}
