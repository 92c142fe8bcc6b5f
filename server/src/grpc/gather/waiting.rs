//! The calls of one connection that wait, polled by the connection's task
//! when they are woken (see the parent module).
//!
//! Why not `futures_util`'s `FuturesUnordered`: each time it has polled all
//! of its futures once, it wakes its task, to yield. A connection's lone
//! call (one client's put) is polled once to register its waker, and the
//! connection's task would be scheduled again for nothing each time. Here
//! a poll polls the calls woken since the last one, once each, and wakes
//! nobody.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use atomic_waker::AtomicWaker;
use slab::Slab;

use super::{poll_call, Call};
use crate::locks::lock;

/// A connection's waiting calls.
#[derive(Default)]
pub(super) struct WaitingCalls {
    /// Each call, with its waker's state and the waker its polls get (it
    /// queues the call's key).
    calls: Slab<(Call, Arc<CallWaker>, Waker)>,
    /// The keys of the calls woken since the last poll, and the task.
    woken: Arc<Woken>,
    /// The keys a poll works through, kept to reuse its allocation.
    polling: Vec<usize>,
}

/// What a call's waker reaches.
#[derive(Default)]
struct Woken {
    /// Keys of woken calls, in the order of their wakes, each once until
    /// it is polled (a key reused after its call finished may be polled
    /// once more: a spurious poll, which a future allows).
    keys: Mutex<Vec<usize>>,
    /// The connection's task, registered at each poll.
    task: AtomicWaker,
}

/// The waker of the call under `key`.
struct CallWaker {
    woken: Arc<Woken>,
    key: usize,
    /// Whether `key` is in the queue already: a call woken many times
    /// between two polls (a watch stream's events) is queued and polled
    /// once.
    queued: AtomicBool,
}

impl Wake for CallWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            lock(&self.woken.keys).push(self.key);
        }
        self.woken.task.wake();
    }
}

impl WaitingCalls {
    /// Adds `call`, to be polled (with its own waker) at the next poll.
    pub(super) fn push(&mut self, call: Call) {
        let entry = self.calls.vacant_entry();
        let key = entry.key();
        let state = Arc::new(CallWaker {
            woken: Arc::clone(&self.woken),
            key,
            queued: AtomicBool::new(true),
        });
        let waker = Waker::from(Arc::clone(&state));
        entry.insert((call, state, waker));
        lock(&self.woken.keys).push(key);
    }

    /// Polls each call woken since the last poll once; drops those that
    /// finish. Later wakes reach the task of `cx`.
    pub(super) fn poll(&mut self, cx: &Context<'_>) {
        self.woken.task.register(cx.waker());
        std::mem::swap(&mut self.polling, &mut *lock(&self.woken.keys));
        for key in self.polling.drain(..) {
            let Some((call, state, waker)) = self.calls.get_mut(key) else {
                continue;
            };
            // Before the poll: a wake during it queues the call again.
            state.queued.store(false, Ordering::Release);
            if poll_call(call, &mut Context::from_waker(waker)).is_ready() {
                drop(self.calls.remove(key));
            }
        }
    }

    /// How many calls wait.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }

    /// The calls that still wait, for tasks of their own.
    pub(super) fn into_calls(self) -> impl Iterator<Item = Call> {
        self.calls.into_iter().map(|(_, (call, _, _))| call)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Poll;

    use super::super::tests::CountingWaker;
    use super::*;

    #[test]
    fn a_poll_polls_the_woken_calls_once_and_wakes_nobody() {
        let (task, waker) = CountingWaker::new();
        let cx = Context::from_waker(&waker);
        let mut waiting = WaitingCalls::default();
        // Phase 1: two calls that wait, each keeping its waker; the first
        // poll polls both once (registering them) and wakes nobody.
        let polls = Arc::new(AtomicUsize::new(0));
        let wakers: Arc<Mutex<Vec<Waker>>> = Arc::default();
        let finish = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for _ in 0..2 {
            let (polls, wakers, finish) =
                (Arc::clone(&polls), Arc::clone(&wakers), Arc::clone(&finish));
            waiting.push(Box::pin(std::future::poll_fn(move |cx| {
                polls.fetch_add(1, Ordering::SeqCst);
                if finish.load(Ordering::SeqCst) {
                    return Poll::Ready(());
                }
                wakers.lock().unwrap().push(cx.waker().clone());
                Poll::Pending
            })));
        }
        waiting.poll(&cx);
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        assert_eq!(task.wakes(), 0, "no wake of its own");
        // Phase 2: a poll with nothing woken polls nothing.
        waiting.poll(&cx);
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        // Phase 3: one call is woken, twice: the task is, and the next poll
        // polls that call alone, once, which finishes and is dropped.
        finish.store(true, Ordering::SeqCst);
        let first = wakers.lock().unwrap().remove(0);
        first.wake_by_ref();
        first.wake();
        assert_eq!(task.wakes(), 1);
        waiting.poll(&cx);
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        assert_eq!(waiting.len(), 1);
        // Phase 4: the other one is left for a task of its own.
        assert_eq!(waiting.into_calls().count(), 1);
    }

    #[test]
    fn a_call_woken_twice_between_polls_is_polled_once() {
        let mut waiting = WaitingCalls::default();
        let polls = Arc::new(AtomicUsize::new(0));
        let waker: Arc<Mutex<Option<Waker>>> = Arc::default();
        let (counted, kept) = (Arc::clone(&polls), Arc::clone(&waker));
        waiting.push(Box::pin(std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::SeqCst);
            *kept.lock().unwrap() = Some(cx.waker().clone());
            Poll::<()>::Pending
        })));
        let cx = Context::from_waker(Waker::noop());
        waiting.poll(&cx);
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        let call = waker.lock().unwrap().take().unwrap();
        call.wake_by_ref();
        call.wake_by_ref();
        waiting.poll(&cx);
        assert_eq!(polls.load(Ordering::SeqCst), 2, "polled once for two wakes");
        // A wake after that poll queues it again.
        call.wake();
        waiting.poll(&cx);
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_call_that_panics_is_dropped_and_the_others_stay() {
        let waker = Waker::noop();
        let cx = Context::from_waker(waker);
        let mut waiting = WaitingCalls::default();
        waiting.push(Box::pin(async { panic!("a broken call") }));
        waiting.push(Box::pin(std::future::pending()));
        waiting.poll(&cx);
        assert_eq!(waiting.len(), 1);
    }
}
