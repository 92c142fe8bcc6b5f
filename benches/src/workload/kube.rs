//! kube: Kubernetes-shaped traffic, as kube-apiserver drives etcd (Cairn's
//! addition to etcd's workloads; see [`KubeArgs`]).
//!
//! 1. Set-up (not measured): `--keys` objects `PREFIX pod-NNNNNN` are created
//!    with kube-apiserver's create (`Txn[create_revision == 0] -> Put`).
//! 2. One watch of the whole prefix from the next revision, with progress
//!    notifications, and a progress request every `--progress-interval` (as
//!    kube-apiserver's watch cache asks for them).
//! 3. `--total` operations from `--clients` clients: an optimistic update of
//!    a random object (`Txn[mod_revision == r] -> Put else Get`, `r` the
//!    revision this client last saw of it; a conflict refreshes it), and one
//!    in `--list-every` a whole paginated list of the prefix at one revision
//!    (`--page-size` keys a page; the later pages at the first page's
//!    revision, as kube-apiserver's paginated lists are).
//! 4. Once the operations are done, the watcher is given until it has seen
//!    the last update's revision.
//!
//! Reports: `kube` (every operation), `kube-update`, `kube-list` (one whole
//! list is one request) and `kube-watch` (each update's event, timed from
//! the update's response to the event's arrival; 0 when the event came
//! first).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::prefix_end;

use cairn_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    request_op::Request,
    response_op::Response,
    watch_request::RequestUnion,
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest,
};
use tokio::sync::watch;

use super::{closed_loop, join_error, Env, WatchStream};
use crate::cli::KubeArgs;
use crate::conn::{error_text, Chan};
use crate::limiter::Limiter;
use crate::progress::Progress;
use crate::report::{Recorder, Report};
use crate::rng::Rng;
use crate::Error;

/// How long the watcher may take, after the last update, to deliver it.
const WATCH_DRAIN: Duration = Duration::from_secs(60);

/// One operation of the measured part.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// An optimistic update of object i.
    Update(usize),
    /// A whole paginated list.
    List,
}

/// What the operations share.
struct Shared {
    /// The objects' keys.
    keys: Vec<Vec<u8>>,
    /// The value every write puts.
    value: Vec<u8>,
    /// The last mod revision seen of each object: the `r` of its next
    /// update's compare.
    revisions: Vec<AtomicI64>,
    /// Each successful update's revision and when its response came (the
    /// start of its event's latency).
    updated: Mutex<Vec<(i64, Instant)>>,
    /// Updates whose compare failed (another client got there first).
    conflicts: AtomicU64,
    /// `--prefix`: where a list starts.
    prefix: Vec<u8>,
    /// The prefix's range end.
    end: Vec<u8>,
    /// `--page-size`.
    page_size: i64,
}

/// `kube`.
pub(crate) async fn kube(env: &Env, a: &KubeArgs) -> Result<Vec<Report>, Error> {
    if a.keys == 0 {
        return Err(Error::new("expected positive --keys, got (0)"));
    }
    if a.page_size <= 0 {
        return Err(Error::new(format!(
            "expected positive --page-size, got ({})",
            a.page_size
        )));
    }
    let mut rng = Rng::seeded();
    let shared = Arc::new(Shared {
        keys: (0..a.keys)
            .map(|i| format!("{}pod-{i:06}", a.prefix).into_bytes())
            .collect(),
        value: rng.bytes(a.val_size),
        revisions: (0..a.keys).map(|_| AtomicI64::new(0)).collect(),
        updated: Mutex::new(Vec::with_capacity(a.total)),
        conflicts: AtomicU64::new(0),
        prefix: a.prefix.as_bytes().to_vec(),
        end: prefix_end(a.prefix.as_bytes()),
        page_size: a.page_size,
    });

    // 1. The objects.
    let creating = Progress::hidden(a.keys as u64);
    let s = Arc::clone(&shared);
    let call = move |_client: usize, channel: Chan, i: usize| {
        let s = Arc::clone(&s);
        async move { s.create(channel, i).await }
    };
    let (_, created) = closed_loop(
        env,
        a.keys,
        1,
        Limiter::new(0, 1),
        &creating,
        |i| Ok((0, i)),
        call,
    )
    .await?;
    if let Some(error) = created.iter().flatten().find_map(Recorder::first_error) {
        return Err(Error::new(format!("creating the objects: {error}")));
    }
    let start_revision = shared
        .revisions
        .iter()
        .map(|r| r.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0)
        + 1;

    // 2. The watcher.
    let (last_tx, last_rx) = watch::channel(None);
    let watcher = tokio::spawn(watch_prefix(
        env.client_conn(0).pick(),
        a.prefix.as_bytes().to_vec(),
        shared.end.clone(),
        start_revision,
        a.progress_interval,
        last_rx,
    ));

    // 3. The operations.
    let list_every = a.list_every;
    let keys = a.keys as u64;
    let make = move |i: usize| {
        if list_every > 0 && i % list_every == list_every - 1 {
            return Ok((1, Op::List));
        }
        let k = usize::try_from(rng.below(keys)).unwrap_or(0);
        Ok((0, Op::Update(k)))
    };
    let s = Arc::clone(&shared);
    let call = move |_client: usize, channel: Chan, op: Op| {
        let s = Arc::clone(&s);
        async move {
            match op {
                Op::Update(k) => s.update(channel, k).await,
                Op::List => s.list(channel).await,
            }
        }
    };
    let progress = Progress::start(a.total as u64);
    let outcome = closed_loop(
        env,
        a.total,
        2,
        Limiter::new(a.rate, 1),
        &progress,
        make,
        call,
    )
    .await;
    let (took, mut by_kind) = match outcome {
        Ok(done) => done,
        Err(e) => {
            watcher.abort();
            return Err(e);
        }
    };

    // 4. The watcher's events.
    let updated = std::mem::take(&mut *crate::lock(&shared.updated));
    let last = updated.iter().map(|&(r, _)| r).max().unwrap_or(0);
    // The receiver lives in the watcher task; if it already ended, its
    // result below says why.
    let _ = last_tx.send(Some(last));
    let seen = watcher.await.map_err(join_error)??;
    let ended: HashMap<i64, Instant> = updated.into_iter().collect();
    let mut events = env.recorder();
    for (revision, arrived) in seen {
        if let Some(&put_end) = ended.get(&revision) {
            events.record(put_end.min(arrived), arrived, Ok(()));
        }
    }
    let conflicts = shared.conflicts.load(Ordering::Relaxed);

    let lists = by_kind.pop().unwrap_or_default();
    let updates = by_kind.pop().unwrap_or_default();
    let every: Vec<Recorder> = updates.iter().chain(&lists).cloned().collect();
    Ok(vec![
        env.report(
            "kube-update",
            took,
            updates,
            "\nOptimistic updates:\n",
            format!("Conflicts (compare failed, object re-read): {conflicts}\n"),
        ),
        env.report("kube-list", took, lists, "\nWhole paginated lists:\n", ""),
        env.report(
            "kube-watch",
            took,
            vec![events],
            "\nWatch events of the prefix:\n",
            "",
        ),
        env.report("kube", took, every, "\nEvery operation:\n", ""),
    ])
}

impl Shared {
    /// kube-apiserver's create: `Txn[create_revision == 0] -> Put`.
    async fn create(&self, channel: Chan, i: usize) -> Result<(), String> {
        let key = self.key(i)?;
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                ..Compare::default()
            }],
            success: vec![self.put(key)],
            failure: Vec::new(),
        };
        let response = KvClient::new(channel)
            .txn(txn)
            .await
            .map_err(|s| error_text(&s))?
            .into_inner();
        if !response.succeeded {
            return Err(format!("object {i} exists already (use a fresh prefix)"));
        }
        let revision = response.header.map_or(0, |h| h.revision);
        self.saw(i, revision);
        Ok(())
    }

    /// kube-apiserver's update: `Txn[mod_revision == r] -> Put else Get`.
    async fn update(&self, channel: Chan, i: usize) -> Result<(), String> {
        let key = self.key(i)?;
        let seen = self
            .revisions
            .get(i)
            .map_or(0, |r| r.load(Ordering::Relaxed));
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::ModRevision(seen)),
                ..Compare::default()
            }],
            success: vec![self.put(key.clone())],
            failure: vec![RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key,
                    ..RangeRequest::default()
                })),
            }],
        };
        let response = KvClient::new(channel)
            .txn(txn)
            .await
            .map_err(|s| error_text(&s))?
            .into_inner();
        let ended = Instant::now();
        if response.succeeded {
            let revision = response.header.map_or(0, |h| h.revision);
            self.saw(i, revision);
            if let Ok(mut updated) = self.updated.lock() {
                updated.push((revision, ended));
            }
            return Ok(());
        }
        self.conflicts.fetch_add(1, Ordering::Relaxed);
        let current = response
            .responses
            .into_iter()
            .find_map(|r| match r.response {
                Some(Response::ResponseRange(range)) => range.kvs.into_iter().next(),
                _ => None,
            });
        match current {
            Some(kv) => {
                self.saw(i, kv.mod_revision);
                Ok(())
            }
            None => Err(format!("object {i} is gone")),
        }
    }

    /// A whole paginated list of the prefix at the first page's revision;
    /// it must see every object.
    async fn list(&self, channel: Chan) -> Result<(), String> {
        let mut client = KvClient::new(channel);
        let mut from = self.prefix.clone();
        let mut revision = 0;
        let mut seen = 0usize;
        loop {
            let page = RangeRequest {
                key: from,
                range_end: self.end.clone(),
                limit: self.page_size,
                revision,
                ..RangeRequest::default()
            };
            let response = client
                .range(page)
                .await
                .map_err(|s| error_text(&s))?
                .into_inner();
            if revision == 0 {
                revision = response.header.map_or(0, |h| h.revision);
            }
            seen += response.kvs.len();
            let Some(last) = response.kvs.last() else {
                break;
            };
            if !response.more {
                break;
            }
            // The next page starts just after the last key.
            from = last.key.clone();
            from.push(0);
        }
        if seen != self.keys.len() {
            return Err(format!(
                "a list saw {seen} of the {} objects",
                self.keys.len()
            ));
        }
        Ok(())
    }

    fn key(&self, i: usize) -> Result<Vec<u8>, String> {
        self.keys
            .get(i)
            .cloned()
            .ok_or_else(|| format!("no object {i}"))
    }

    fn put(&self, key: Vec<u8>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key,
                value: self.value.clone(),
                ..PutRequest::default()
            })),
        }
    }

    /// Notes that object i was at `revision` (never going back).
    fn saw(&self, i: usize, revision: i64) {
        if let Some(r) = self.revisions.get(i) {
            r.fetch_max(revision, Ordering::Relaxed);
        }
    }
}

/// The watcher: every event's revision and arrival, until it has seen
/// revision `last` (once the operations are done and say which it is).
async fn watch_prefix(
    channel: Chan,
    prefix: Vec<u8>,
    end: Vec<u8>,
    start_revision: i64,
    progress_interval: Duration,
    mut last: watch::Receiver<Option<i64>>,
) -> Result<Vec<(i64, Instant)>, Error> {
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix,
            range_end: end,
            start_revision,
            progress_notify: true,
            ..WatchCreateRequest::default()
        })),
    };
    let mut stream = WatchStream::open(channel, create, 4).await?;
    stream.created().await?;
    let mut ticker =
        (!progress_interval.is_zero()).then(|| tokio::time::interval(progress_interval));
    let mut seen = Vec::new();
    // Everything up to this revision has been delivered.
    let mut through = start_revision - 1;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if let Some(l) = *last.borrow() {
            if through >= l {
                return Ok(seen);
            }
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + WATCH_DRAIN);
        }
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let give_up = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            response = stream.next() => {
                let response = response?;
                let arrived = Instant::now();
                if response.events.is_empty() {
                    // A progress notification: nothing older is still to come.
                    if let Some(h) = response.header {
                        through = through.max(h.revision);
                    }
                }
                for event in &response.events {
                    if let Some(kv) = &event.kv {
                        seen.push((kv.mod_revision, arrived));
                        through = through.max(kv.mod_revision);
                    }
                }
            }
            _ = tick => {
                let request = WatchRequest {
                    request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                };
                stream.send(request).await?;
            }
            changed = last.changed() => {
                if changed.is_err() && last.borrow().is_none() {
                    return Err(Error::new("the operations ended without saying where"));
                }
            }
            _ = give_up => {
                return Err(Error::new(format!(
                    "the watch had delivered up to revision {through} when the updates had reached {} ({}s later)",
                    last.borrow().unwrap_or(0),
                    WATCH_DRAIN.as_secs()
                )));
            }
        }
    }
}
