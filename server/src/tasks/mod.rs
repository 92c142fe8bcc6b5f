//! A running member's background work, in one place, under one shutdown
//! signal (mini-redis's pattern): every task takes a [`Shutdown`], the
//! [`Tasks`] owner that made it holds the task in a `JoinSet`, and
//! [`Tasks::join`] sends the one signal and waits for every task to
//! return. Nothing is detached: dropping the owner aborts what is left.
//!
//! The tasks: following leadership (lessor promote/demote,
//! [`leadership`]), serving until stopped or failed ([`serving`]),
//! re-sealing after a key rotation ([`reseal`]), the corruption check
//! ([`corruption`]), publishing the member's attributes ([`publish`]),
//! catching watchers up ([`watchers`]), lease expiry and checkpoints
//! ([`lease_expiry`]) and auto compaction ([`compactor`]).

pub mod compactor;
pub mod corruption;
pub mod leadership;
pub mod lease_expiry;
pub mod publish;
pub mod reseal;
pub mod serving;
pub mod watchers;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{AutoCompaction, Config};
use crate::member::Apis;
use crate::raft::RaftStorage;
use crate::storage::crypto::SealedElsewhere;

/// A task's view of the shutdown signal. Cheap to clone; every clone sees
/// the same one signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Turns true once, when the owner stops. A closed channel (the owner
    /// dropped) counts as the signal too.
    signal: watch::Receiver<bool>,
}

impl Shutdown {
    /// Resolves once the member stops (at once if it already has).
    pub async fn recv(&mut self) {
        // An error means the owner is gone: that is a stop as well.
        let _ = self.signal.wait_for(|stop| *stop).await;
    }
}

/// Owns the background tasks of a member and their one shutdown signal.
#[derive(Debug)]
pub struct Tasks {
    /// The one signal: flipped to true once, by [`Tasks::signal`].
    signal: watch::Sender<bool>,
    /// Every task started through [`Tasks::spawn`]; aborted if the owner
    /// is dropped without [`Tasks::join`].
    set: JoinSet<()>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    /// An owner with no task yet.
    pub fn new() -> Self {
        Self {
            signal: watch::Sender::new(false),
            set: JoinSet::new(),
        }
    }

    /// A [`Shutdown`] for a task (or a server) started outside [`spawn`](Tasks::spawn).
    pub fn shutdown(&self) -> Shutdown {
        Shutdown {
            signal: self.signal.subscribe(),
        }
    }

    /// Starts `task`, which must return soon after its [`Shutdown`] fires.
    pub fn spawn<F>(&mut self, task: impl FnOnce(Shutdown) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let fut = task(self.shutdown());
        self.set.spawn(fut);
    }

    /// Sends the shutdown signal (once; later calls change nothing).
    pub fn signal(&self) {
        self.signal.send_replace(true);
    }

    /// Sends the shutdown signal and waits for every task to return. A
    /// task that panicked is logged, not propagated: the others still stop.
    pub async fn join(&mut self) {
        self.signal();
        while let Some(joined) = self.set.join_next().await {
            if let Err(e) = joined {
                if e.is_panic() {
                    tracing::error!(error = %e, "a background task panicked");
                }
            }
        }
    }
}

/// Starts a running member's background tasks on `tasks`: `client_urls`
/// are the URLs it publishes, `health` the gRPC health service it keeps,
/// `log` its raft log (whose entries key rotation re-seals).
pub fn start_member_tasks(
    tasks: &mut Tasks,
    member: &Arc<Apis>,
    log: &Arc<RaftStorage>,
    config: &Config,
    client_urls: Vec<String>,
    health: tonic_health::server::HealthReporter,
) {
    let store = Arc::clone(member.store());
    tasks.spawn(|shutdown| watchers::sync_watchers(store, shutdown));
    let lease = Arc::clone(member.lease());
    tasks.spawn(|shutdown| lease_expiry::run(lease, shutdown));
    let (proposer, lease) = (Arc::clone(member.proposer()), Arc::clone(member.lease()));
    tasks.spawn(|shutdown| leadership::follow_leadership(proposer, lease, shutdown));
    let m = Arc::clone(member);
    let (name, timeout) = (config.name.clone(), config.request_timeout());
    tasks.spawn(|shutdown| publish::publish(m, name, client_urls, timeout, shutdown));
    if let Some(keys) = member.proposer().machine().keys().cloned() {
        let resealed = member.metrics().map(|m| m.cairn.resealed.clone());
        let log: Arc<dyn SealedElsewhere> = Arc::<RaftStorage>::clone(log);
        let log = Arc::downgrade(&log);
        tasks.spawn(|shutdown| reseal::reseal(keys, log, resealed, shutdown));
    }
    if config.auto_compaction != AutoCompaction::Off {
        let (kv, mode) = (Arc::clone(member.kv()), config.auto_compaction);
        tracing::info!(?mode, "auto compaction enabled");
        tasks.spawn(|shutdown| async move {
            compactor::run(kv.as_ref(), mode, shutdown).await;
        });
    }
    let proposer = Arc::clone(member.proposer());
    tasks.spawn(|shutdown| serving::serve_until_stopped(proposer, health, shutdown));
    if !config.corrupt_check_time.is_zero() {
        let (maintenance, interval) = (Arc::clone(member.maintenance()), config.corrupt_check_time);
        tasks.spawn(|shutdown| corruption::check_corruption(maintenance, interval, shutdown));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn join_signals_once_and_waits_for_every_task() {
        let mut tasks = Tasks::new();
        let finished = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let finished = Arc::clone(&finished);
            tasks.spawn(|mut shutdown| async move {
                shutdown.recv().await;
                // Work after the signal still completes before join returns.
                tokio::task::yield_now().await;
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        let mut outside = tasks.shutdown();
        tasks.join().await;
        assert_eq!(finished.load(Ordering::SeqCst), 3);
        // A server's shutdown taken before the signal sees it too.
        tokio::time::timeout(std::time::Duration::from_secs(1), outside.recv())
            .await
            .expect("the signal reaches every Shutdown");
    }

    #[tokio::test]
    async fn a_panicking_task_does_not_stop_the_join() {
        let mut tasks = Tasks::new();
        tasks.spawn(|_| async { panic!("boom") });
        tasks.spawn(|mut shutdown| async move { shutdown.recv().await });
        tasks.join().await;
    }

    #[tokio::test]
    async fn dropping_the_owner_aborts_its_tasks() {
        let mut tasks = Tasks::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(|_| async move {
            // Never ends by itself; holds `tx` until aborted.
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(tasks);
        assert!(rx.await.is_err(), "the task was aborted and dropped tx");
    }
}
