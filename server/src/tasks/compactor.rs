//! Auto compaction, as etcd's `v3compactor` does it
//! (`--auto-compaction-mode`, `--auto-compaction-retention`, read into
//! [`AutoCompaction`]). Only the
//! leader compacts, and through the replicated write path (a Compaction
//! request, like a client's), so every member compacts at the same revision.
//!
//! - **periodic** (retention a duration; a bare integer is hours): the
//!   current revision is sampled every tenth of min(retention, 1 h); once
//!   the retention has passed since the start (and then every min(retention,
//!   1 h) after a success), the store is compacted at the revision sampled
//!   one retention ago.
//! - **revision** (retention a number of revisions): every 5 minutes, the
//!   store is compacted at current revision − retention, if that is positive
//!   and new.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::Shutdown;
use crate::config::AutoCompaction;
use crate::error::EtcdError;

/// How often the revision mode looks (etcd's `revInterval`).
pub const REVISION_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The longest compaction interval of the periodic mode.
const HOUR: Duration = Duration::from_secs(3600);
/// The periodic mode samples the revision this many times per interval.
const RETRY_DIVISOR: u32 = 10;

/// What the compactor needs of a member.
pub trait Compactable: Send + Sync {
    /// The store's current revision.
    fn current_revision(&self) -> i64;
    /// Whether this member leads (only the leader compacts).
    fn is_leader(&self) -> bool;
    /// Compacts at `revision` through the write path.
    fn compact(&self, revision: i64) -> impl Future<Output = Result<(), EtcdError>> + Send;
}

impl Compactable for crate::member::KvApi {
    fn current_revision(&self) -> i64 {
        self.proposer().store().current_revision()
    }

    fn is_leader(&self) -> bool {
        self.proposer().raft_status().is_leader
    }

    async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let req = cairn_proto::etcdserverpb::CompactionRequest {
            revision,
            physical: false,
        };
        crate::member::KvApi::compact(self, req, &crate::auth::Caller::Member)
            .await
            .map(|_| ())
    }
}

/// Runs `mode` against `target` until the member stops.
pub async fn run(target: &impl Compactable, mode: AutoCompaction, shutdown: Shutdown) {
    match mode {
        AutoCompaction::Off => {}
        AutoCompaction::Periodic(period) => periodic(target, period, shutdown).await,
        AutoCompaction::Revision(retention) => revisions(target, retention, shutdown).await,
    }
}

/// Sleeps `d`; false once the member stops.
async fn wait(d: Duration, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        () = shutdown.recv() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// Compacts at `revision`; true if it is done (a revision already
/// compacted counts, as in etcd).
async fn compact_at(target: &impl Compactable, revision: i64, mode: &str) -> bool {
    tracing::info!(revision, mode, "starting auto compaction");
    match target.compact(revision).await {
        Ok(()) | Err(EtcdError::Compacted) => {
            tracing::info!(revision, mode, "completed auto compaction");
            true
        }
        Err(e) => {
            tracing::warn!(revision, mode, error = %e, "failed auto compaction; will retry");
            false
        }
    }
}

async fn periodic(target: &impl Compactable, period: Duration, mut shutdown: Shutdown) {
    let compact_interval = period.min(HOUR);
    let retry = compact_interval / RETRY_DIVISOR;
    let retentions = (period.as_nanos() / retry.as_nanos().max(1)) as usize + 1;
    // revs[0] is the revision one period ago (or the oldest sample yet).
    let mut revs = VecDeque::with_capacity(retentions + 1);
    let mut last_revision = 0;
    let mut last_success = Instant::now();
    let mut base_interval = period;
    loop {
        revs.push_back(target.current_revision());
        if revs.len() > retentions {
            revs.pop_front();
        }
        if !wait(retry, &mut shutdown).await {
            return;
        }
        if !target.is_leader() {
            continue;
        }
        let revision = revs.front().copied().unwrap_or(0);
        if last_success.elapsed() < base_interval || revision == last_revision || revision <= 0 {
            continue;
        }
        // After the first compaction, every compaction interval.
        base_interval = compact_interval;
        if compact_at(target, revision, "periodic").await {
            last_success = Instant::now();
            last_revision = revision;
        }
    }
}

async fn revisions(target: &impl Compactable, retention: i64, mut shutdown: Shutdown) {
    let mut previous = 0;
    loop {
        if !wait(REVISION_INTERVAL, &mut shutdown).await {
            return;
        }
        if !target.is_leader() {
            continue;
        }
        let revision = target.current_revision() - retention;
        if revision <= 0 || revision == previous {
            continue;
        }
        if compact_at(target, revision, "revision").await {
            previous = revision;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Tasks;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Fake {
        revision: AtomicI64,
        follower: AtomicBool,
        compactions: Mutex<Vec<(Duration, i64)>>,
        start: Mutex<Option<Instant>>,
    }

    impl Compactable for Fake {
        fn current_revision(&self) -> i64 {
            self.revision.load(Ordering::SeqCst)
        }
        fn is_leader(&self) -> bool {
            !self.follower.load(Ordering::SeqCst)
        }
        async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
            let start = self.start.lock().unwrap().unwrap();
            self.compactions
                .lock()
                .unwrap()
                .push((start.elapsed(), revision));
            Ok(())
        }
    }

    /// Runs `mode` for `minutes` of paused time; the revision is 100 + the
    /// minute (one write a minute). Returns (when, revision) per compaction.
    async fn drive(
        mode: AutoCompaction,
        minutes: u64,
        follower_until: u64,
    ) -> Vec<(Duration, i64)> {
        let fake = Arc::new(Fake::default());
        *fake.start.lock().unwrap() = Some(Instant::now());
        fake.revision.store(100, Ordering::SeqCst);
        fake.follower.store(follower_until > 0, Ordering::SeqCst);
        let mut tasks = Tasks::new();
        {
            let fake = Arc::clone(&fake);
            tasks.spawn(|shutdown| async move { run(fake.as_ref(), mode, shutdown).await });
        }
        for minute in 1..=minutes {
            // Just before each whole minute, so samples see the minute's
            // revision.
            tokio::time::sleep(Duration::from_secs(60) - Duration::from_millis(1)).await;
            fake.revision.store(100 + minute as i64, Ordering::SeqCst);
            if minute == follower_until {
                fake.follower.store(false, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tasks.join().await;
        let got = fake.compactions.lock().unwrap().clone();
        got
    }

    fn at(minutes: u64, revision: i64) -> (Duration, i64) {
        (Duration::from_secs(minutes * 60), revision)
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_keeps_one_retention_of_history() {
        // 10 minutes: sampled every minute, eleven samples kept; the first
        // compaction once 10 minutes have passed, at the oldest sample (the
        // start); then every 10 minutes, at the sample taken 11 minutes
        // before (etcd's arithmetic: the window is one period plus one
        // sampling interval).
        let got = drive(AutoCompaction::Periodic(Duration::from_secs(600)), 33, 0).await;
        assert_eq!(got, vec![at(10, 100), at(20, 109), at(30, 119)]);
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_longer_than_an_hour_compacts_hourly() {
        // 2 hours: sampled every 6 minutes, 21 samples kept; first after 2
        // hours, at the start's revision; then hourly, at the sample taken
        // 2 h 6 min before.
        let got = drive(AutoCompaction::Periodic(Duration::from_secs(7200)), 250, 0).await;
        assert_eq!(got, vec![at(120, 100), at(180, 154), at(240, 214)]);
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_leader_compacts() {
        let got = drive(AutoCompaction::Periodic(Duration::from_secs(600)), 33, 25).await;
        assert_eq!(got, vec![at(25, 114)]);
    }

    #[tokio::test(start_paused = true)]
    async fn revision_mode_keeps_that_many_revisions() {
        // Every 5 minutes: current - 10, when positive and new.
        let got = drive(AutoCompaction::Revision(10), 16, 0).await;
        assert_eq!(got, vec![at(5, 95), at(10, 100), at(15, 105)]);
        let got = drive(AutoCompaction::Revision(1000), 16, 0).await;
        assert!(got.is_empty());
        assert_eq!(drive(AutoCompaction::Off, 16, 0).await, vec![]);
    }
}
