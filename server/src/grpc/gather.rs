//! A connection's calls run in the connection's own task, so that the
//! answers to a burst of requests, or to a batch of writes committed
//! together, leave in one write.
//!
//! hyper gives each HTTP/2 stream's call to its executor as soon as it reads
//! the stream's headers. With tokio's executor every call became a task of
//! its own, and every call that finished woke the connection's task, which
//! tokio runs next (its "LIFO slot"): each answer was framed and flushed
//! alone before the next call ran, a `send` of its own (0.57–0.60 a
//! response on a single member under reads from 1,000 clients,
//! docs/benchmarks.md, "Calls answered where their connection reads
//! them"), and the connection's task polled once more per call.
//!
//! [`GatheringExecutor`] instead hands a call to the connection being polled
//! on this thread, if any ([`answer_gathered`] marks it); once the
//! connection's poll has read all it could, each call it gathered is polled
//! there once. A call that finishes (a read answered from memory) has put its
//! answer in the connection's queue and woken it; the connection is then
//! polled again at once, in the same poll of its task, and writes every such
//! answer in one go. A call that must wait (a write for its commit, a
//! linearizable read for its round, a watch for its events) joins the
//! connection's waiting calls, which its task polls when one is woken: the
//! puts of one committed batch, woken together by the apply, answer in one
//! poll of the task and so in one write (a task each, they were flushed one
//! by one, "Answers of a committed batch written together").
//! When the connection ends, the calls still waiting go on in tasks of
//! their own.

use std::cell::RefCell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

use waiting::WaitingCalls;

mod waiting;

/// A call hyper handed over, not yet polled.
type Call = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    /// The calls of the connection being polled on this thread (none: no
    /// connection is, and a call is spawned at once).
    static GATHERED: RefCell<Option<Vec<Call>>> = const { RefCell::new(None) };
}

/// hyper's executor for the client port's connections: a call is gathered by
/// the connection that read it (see the module), anything else spawned.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct GatheringExecutor;

impl<F> hyper::rt::Executor<F> for GatheringExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut fut = Some(fut);
        GATHERED.with(|g| {
            if let Some(calls) = g.borrow_mut().as_mut() {
                calls.extend(fut.take().map(|call| Box::pin(call) as Call));
            }
        });
        if let Some(fut) = fut {
            tokio::spawn(fut);
        }
    }
}

/// How many times one poll of a connection goes round (run the calls that
/// are ready, read and write) before it lets the thread's other tasks run.
const ROUNDS_PER_POLL: usize = 16;

/// Drives `connection` (served with [`GatheringExecutor`]) to its end,
/// starting the calls each of its polls reads right after that poll, and
/// polling those that wait when they are woken.
pub(super) async fn answer_gathered<C: Future>(connection: C) -> C::Output {
    let mut connection = pin!(connection);
    let mut calls: Vec<Call> = Vec::new();
    let mut waiting = WaitingCalls::default();
    let relay = Arc::new(Relay::default());
    let relay_waker = Waker::from(Arc::clone(&relay));
    std::future::poll_fn(|cx| {
        relay.task.register(cx.waker());
        let mut relayed = Context::from_waker(&relay_waker);
        for round in 0..ROUNDS_PER_POLL {
            // The calls the connection read last, and the waiting ones that
            // were woken (their wakes reach this task's own waker, which
            // `waiting` is polled with): an answer wakes the connection,
            // which the relay notes while held.
            relay.hold();
            calls.drain(..).for_each(|call| start(call, &mut waiting));
            waiting.poll(cx);
            let answered = relay.release();
            // Nothing for the connection to write, and nothing read since
            // its last poll (a wake from its socket reaches the task).
            if round > 0 && !answered {
                return Poll::Pending;
            }
            let outer = GATHERED.with(|g| g.replace(Some(std::mem::take(&mut calls))));
            let polled = connection.as_mut().poll(&mut relayed);
            calls = GATHERED.with(|g| g.replace(outer)).unwrap_or_default();
            if polled.is_ready() {
                calls.drain(..).for_each(|call| start(call, &mut waiting));
                std::mem::take(&mut waiting).into_calls().for_each(|call| {
                    tokio::spawn(call);
                });
                return polled;
            }
            if calls.is_empty() {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// The waker a connection is polled with: it wakes the connection's task,
/// except while the connection's calls are started (see [`answer_gathered`]),
/// when it only notes that it was woken.
#[derive(Default)]
struct Relay {
    /// The connection's task, registered at each of its polls (a wake that
    /// reaches it takes it: the task's next poll registers it again).
    task: AtomicWaker,
    /// [`OPEN`], [`HELD`] or [`HELD_WOKEN`].
    state: AtomicU8,
}

/// Wakes reach the task.
const OPEN: u8 = 0;
/// Wakes are held; none came yet.
const HELD: u8 = 1;
/// Wakes are held; one came.
const HELD_WOKEN: u8 = 2;

impl Relay {
    fn hold(&self) {
        self.state.store(HELD, Ordering::SeqCst);
    }

    /// Opens again; whether a wake came while held.
    fn release(&self) -> bool {
        self.state.swap(OPEN, Ordering::SeqCst) == HELD_WOKEN
    }
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A wake from another thread while held is noted too, and whoever
        // releases re-polls the connection on seeing it; one that finds the
        // relay open (or opened meanwhile) wakes the task.
        match self
            .state
            .compare_exchange(HELD, HELD_WOKEN, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) | Err(HELD_WOKEN) => return,
            Err(_) => {}
        }
        self.task.wake();
    }
}

/// Polls `call` once here; adds it to `waiting` if it must wait. Its first
/// poll sees a waker that does nothing: `waiting` polls a call it is given
/// once more at its next poll, with the call's own waker.
fn start(mut call: Call, waiting: &mut WaitingCalls) {
    if poll_call(&mut call, &mut Context::from_waker(Waker::noop())).is_pending() {
        waiting.push(call);
    }
}

/// Polls a call that the connection's task runs; its panic ends only the
/// call (as a spawned call's panic ends only its task): it is reported
/// done and dropped, h2 resets its stream, the connection's other calls
/// go on.
fn poll_call(call: &mut Call, cx: &mut Context<'_>) -> Poll<()> {
    catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))).unwrap_or_else(|_| {
        tracing::error!("a call panicked; its stream is reset");
        Poll::Ready(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use hyper::rt::Executor;

    use super::*;

    /// A future that is pending `n` times (waking itself), then done.
    struct PendingFor(usize, Arc<AtomicUsize>);

    impl Future for PendingFor {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.1.fetch_add(1, Ordering::SeqCst);
            if self.0 == 0 {
                return Poll::Ready(());
            }
            self.0 -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn calls_read_by_a_connection_start_after_its_poll_and_waiting_ones_finish_in_tasks() {
        let polls = Arc::new(AtomicUsize::new(0));
        let done_at_once = Arc::new(AtomicUsize::new(0));
        let waits = Arc::new(AtomicUsize::new(0));
        // A "connection" whose one poll hands over two calls, then checks
        // that neither has run yet.
        let (ready, waiting) = (Arc::clone(&done_at_once), Arc::clone(&waits));
        let seen = Arc::clone(&polls);
        let connection = std::future::poll_fn(move |_| {
            GatheringExecutor.execute(PendingFor(0, Arc::clone(&ready)));
            GatheringExecutor.execute(PendingFor(3, Arc::clone(&waiting)));
            assert_eq!(ready.load(Ordering::SeqCst), 0, "gathered, not run");
            seen.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(7)
        });
        assert_eq!(answer_gathered(connection).await, 7);
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        assert_eq!(
            done_at_once.load(Ordering::SeqCst),
            1,
            "done in its one poll"
        );
        // The waiting call went on in a task of its own until done.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while waits.load(Ordering::SeqCst) < 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the spawned call ran"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(waits.load(Ordering::SeqCst), 4);
        // Outside a connection's poll, a call is spawned as it is.
        let outside = Arc::new(AtomicUsize::new(0));
        GatheringExecutor.execute(PendingFor(0, Arc::clone(&outside)));
        while outside.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the spawned call ran"
            );
            tokio::task::yield_now().await;
        }
    }

    /// A task's waker that counts its wakes.
    pub(super) struct CountingWaker(AtomicUsize);

    impl CountingWaker {
        /// The count, and a waker that adds to it.
        pub(super) fn new() -> (Arc<Self>, Waker) {
            let task = Arc::new(Self(AtomicUsize::new(0)));
            let waker = Waker::from(Arc::clone(&task));
            (task, waker)
        }

        pub(super) fn wakes(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn answers_leave_in_the_poll_that_read_them_and_later_wakes_reach_the_task() {
        let (task, waker) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        // Phase 1: the call the first poll reads answers at once and wakes
        // its connection, as h2 does when an answer is queued: the
        // connection is polled again within the same poll of the task (the
        // answer's write), and the task is not scheduled once more.
        let mut polls = 0;
        let answering = std::future::poll_fn(|cx| {
            polls += 1;
            if polls > 1 {
                return Poll::Ready(polls);
            }
            let connection = cx.waker().clone();
            GatheringExecutor.execute(async move { connection.wake() });
            Poll::Pending
        });
        let mut answering = pin!(answer_gathered(answering));
        assert_eq!(answering.as_mut().poll(&mut cx), Poll::Ready(2));
        assert_eq!(task.wakes(), 0, "not woken");
        // Phase 2: a call that does not wake it leaves the connection
        // waiting; a wake that comes later (its socket, a spawned call's
        // answer) reaches the task.
        let stored = Arc::new(Mutex::new(None::<Waker>));
        let keep = Arc::clone(&stored);
        let mut polls = 0;
        let waiting = std::future::poll_fn(move |cx| {
            polls += 1;
            if polls > 1 {
                return Poll::Ready(polls);
            }
            *keep.lock().unwrap() = Some(cx.waker().clone());
            GatheringExecutor.execute(async {});
            Poll::Pending
        });
        let mut waiting = pin!(answer_gathered(waiting));
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(task.wakes(), 0);
        stored.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.wakes(), 1, "the later wake arrived");
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Ready(2));
    }

    #[tokio::test]
    async fn a_call_that_panics_leaves_the_others_to_run() {
        let ran = Arc::new(AtomicUsize::new(0));
        let after = Arc::clone(&ran);
        let connection = std::future::poll_fn(move |_| {
            GatheringExecutor.execute(async { panic!("a broken call") });
            GatheringExecutor.execute(PendingFor(0, Arc::clone(&after)));
            Poll::Ready(())
        });
        answer_gathered(connection).await;
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    /// What a committed batch is to its puts: closed, then opened once,
    /// waking every call that waits on it.
    #[derive(Default)]
    struct Gate {
        open: std::sync::atomic::AtomicBool,
        waiting: Mutex<Vec<Waker>>,
    }

    impl Gate {
        fn open(&self) {
            self.open.store(true, Ordering::SeqCst);
            self.waiting.lock().unwrap().drain(..).for_each(Waker::wake);
        }

        /// Done once the gate is open.
        async fn opened(&self) {
            std::future::poll_fn(|cx| {
                if self.open.load(Ordering::SeqCst) {
                    return Poll::Ready(());
                }
                self.waiting.lock().unwrap().push(cx.waker().clone());
                Poll::Pending
            })
            .await;
        }
    }

    /// A connection as h2 is one to its calls: answers queued by calls wake
    /// it, and its poll writes all that are queued in one write.
    #[derive(Default)]
    struct Answers {
        /// The answers queued and not yet written.
        queued: AtomicUsize,
        /// How many answers each write carried.
        writes: Mutex<Vec<usize>>,
        /// The waker of the connection's last poll.
        connection: Mutex<Option<Waker>>,
    }

    impl Answers {
        /// A call's answer: queued, and the connection woken.
        fn answer(&self) {
            self.queued.fetch_add(1, Ordering::SeqCst);
            if let Some(connection) = self.connection.lock().unwrap().as_ref() {
                connection.wake_by_ref();
            }
        }

        /// The connection's poll: writes what is queued.
        fn write(&self, cx: &Context<'_>) {
            *self.connection.lock().unwrap() = Some(cx.waker().clone());
            let queued = self.queued.swap(0, Ordering::SeqCst);
            if queued > 0 {
                self.writes.lock().unwrap().push(queued);
            }
        }
    }

    #[test]
    fn calls_woken_together_answer_in_one_write_of_their_connection() {
        let (task, waker) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        let gate = Arc::new(Gate::default());
        let answers = Arc::new(Answers::default());
        // Phase 1: the connection's first poll reads three calls, each of
        // which waits on the gate (a put on its commit): none answers, the
        // task waits, and nothing is spawned (no runtime here to spawn on).
        let (calls_gate, calls_answers) = (Arc::clone(&gate), Arc::clone(&answers));
        let seen = Arc::clone(&answers);
        let mut polls = 0;
        let connection = std::future::poll_fn(move |cx| {
            polls += 1;
            seen.write(cx);
            if polls == 1 {
                for _ in 0..3 {
                    let (gate, answers) = (Arc::clone(&calls_gate), Arc::clone(&calls_answers));
                    GatheringExecutor.execute(async move {
                        gate.opened().await;
                        answers.answer();
                    });
                }
            }
            if seen.writes.lock().unwrap().iter().sum::<usize>() == 3 {
                return Poll::Ready(polls);
            }
            Poll::Pending
        });
        let mut connection = pin!(answer_gathered(connection));
        assert_eq!(connection.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(task.wakes(), 0);
        assert!(answers.writes.lock().unwrap().is_empty());
        // Phase 2: the gate opens (the batch is applied): the calls' wakes
        // reach the connection's task, whose next poll runs all three and
        // writes their answers together.
        gate.open();
        assert!(task.wakes() >= 1, "the task was woken");
        assert_eq!(connection.as_mut().poll(&mut cx), Poll::Ready(2));
        assert_eq!(*answers.writes.lock().unwrap(), vec![3], "one write");
    }

    #[test]
    fn a_waiting_call_that_panics_leaves_the_connection_and_its_calls() {
        let (_, waker) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        let gate = Arc::new(Gate::default());
        let ran = Arc::new(AtomicUsize::new(0));
        let (calls_gate, calls_ran) = (Arc::clone(&gate), Arc::clone(&ran));
        let mut polls = 0;
        let connection = std::future::poll_fn(move |_| {
            polls += 1;
            if polls == 1 {
                let gate = Arc::clone(&calls_gate);
                GatheringExecutor.execute(async move {
                    gate.opened().await;
                    panic!("a broken call");
                });
                let (gate, ran) = (Arc::clone(&calls_gate), Arc::clone(&calls_ran));
                GatheringExecutor.execute(async move {
                    gate.opened().await;
                    ran.fetch_add(1, Ordering::SeqCst);
                });
            }
            Poll::<()>::Pending
        });
        let mut connection = pin!(answer_gathered(connection));
        assert_eq!(connection.as_mut().poll(&mut cx), Poll::Pending);
        gate.open();
        assert_eq!(connection.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the other call ran");
    }
}
