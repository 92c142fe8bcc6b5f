//! `watch`: watchers of the whole keyspace, one per zone, that resume after
//! every fault from the last revision they saw + 1; and two writers on `w/`
//! keys so that there is something to see even alone. Every response is
//! recorded as it came ([`WatchEvent`]), and so is every (re)creation, so
//! that [`crate::checker::watch`] can compare them with each other and with
//! the reference watch that [`reference`] takes at the end.
//!
//! A stream that stays silent for `STALL` is taken as broken and reopened:
//! members send a progress notification every second (the harness starts
//! them with `--experimental-watch-progress-notify-interval 1s`), so silence
//! means the connection is cut (a partition holds it open without traffic).

use std::time::Duration;

use anyhow::Result;
use cairn_client::proto::mvccpb::event::EventType;
use cairn_client::{
    Client, Error, Get, Put, TlsOptions, Watch, WatchEvent as ClientEvent, Watcher,
};

use super::{header_revision, parse_value, Effect, Env, Process};
use crate::history::{
    Call, KvEvent, KvEventKind, Record, Recorder, Ret, WatchEvent, WatchRecord, REFERENCE_WATCHER,
};
use crate::rng::Rng;

/// Silence after which a stream counts as broken.
const STALL: Duration = Duration::from_secs(5);
/// Writers of the workload.
const WRITERS: usize = 2;
/// How long watchers may take to catch up after the heal.
const CATCH_UP: Duration = Duration::from_secs(60);

pub async fn run(env: Env, mut rng: Rng, base: u32) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..WRITERS {
        let env = env.clone();
        let rng = rng.split();
        tasks.spawn(async move { writer(env, rng, base, n).await });
    }
    for n in 0..env.clients.max(1) {
        let env = env.clone();
        tasks.spawn(async move { watcher(env, base + 100 + n as u32, n).await });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn writer(mut env: Env, mut rng: Rng, base: u32, n: usize) -> Result<()> {
    let (_zone, client) = env.client(n).await?;
    let mut p = Process::new(base + n as u32, WRITERS as u32, "watch", &env);
    let mut value = (n as u64) << 40;
    while !env.stopped() {
        value += 1;
        let key = format!("w/{}", rng.below(10));
        let call = Call::Write {
            key: key.clone(),
            value,
        };
        p.invoke(call, Effect::Write, || async {
            let resp = client
                .put(Put::new(key.as_str(), value.to_string()))
                .await?;
            Ok(Ret::Write {
                revision: header_revision(&resp.header),
            })
        })
        .await;
        env.pause().await;
    }
    Ok(())
}

/// The current revision, asked until a member answers (or `within` passes).
async fn current_revision(client: &Client, within: Duration) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(Ok(resp)) = tokio::time::timeout(
            Duration::from_secs(2),
            client.get(Get::key("w/").count_only()),
        )
        .await
        {
            return Some(header_revision(&resp.header));
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One watcher: runs until the stop, then until it has seen the revision
/// current after the heal.
async fn watcher(env: Env, id: u32, n: usize) -> Result<()> {
    let (_zone, client) = env.client(n).await?;
    let mut healed = env.healed.clone();
    let mut target: Option<i64> = None;
    let mut session = Session::new(env.recorder.clone(), id, client.clone(), 0);
    let deadline_after_heal = loop {
        tokio::select! {
            _ = healed.wait_for(|h| *h) => break tokio::time::Instant::now() + CATCH_UP,
            _ = session.step() => {}
        }
    };
    while tokio::time::Instant::now() < deadline_after_heal {
        if target.is_none() {
            target = current_revision(&client, Duration::from_secs(5)).await;
        }
        if let Some(t) = target {
            if session.next_revision > t {
                break;
            }
        }
        let _ = tokio::time::timeout_at(deadline_after_heal, session.step()).await;
    }
    session.stop();
    Ok(())
}

/// A watch of the whole keyspace that records what it gets and resumes.
struct Session {
    recorder: Recorder,
    id: u32,
    client: Client,
    /// The next revision needed (0: from now on, until the first open).
    next_revision: i64,
    watcher: Option<Watcher>,
    /// Failed opens in a row (for the backoff).
    failures: u32,
}

impl Session {
    fn new(recorder: Recorder, id: u32, client: Client, start: i64) -> Self {
        Session {
            recorder,
            id,
            client,
            next_revision: start,
            watcher: None,
            failures: 0,
        }
    }

    fn record(&self, what: WatchEvent) {
        self.recorder.record(Record::Watch(WatchRecord {
            watcher: self.id,
            at: self.recorder.now(),
            what,
        }));
    }

    /// Opens the stream if needed, then waits for one response (or a stall).
    async fn step(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            let spec = Watch::key("")
                .all()
                .progress_notify()
                .start_revision(self.next_revision);
            match tokio::time::timeout(STALL, self.client.watch(spec)).await {
                Ok(Ok(w)) => {
                    let resumed = self.next_revision != 0;
                    self.next_revision = w.next_revision();
                    self.record(WatchEvent::Created {
                        prefix: String::new(),
                        start_revision: self.next_revision,
                        resumed,
                    });
                    self.watcher = Some(w);
                    self.failures = 0;
                }
                Ok(Err(Error::Compacted { compact_revision })) => {
                    self.record(WatchEvent::Compacted { compact_revision });
                    // Resume from the compacted revision, as etcd's docs
                    // tell clients to (it is served, and whole).
                    self.next_revision = compact_revision;
                }
                Ok(Err(e)) => self.broken(e.to_string()).await,
                Err(_) => self.broken("opening the watch timed out".into()).await,
            }
            return;
        };
        match tokio::time::timeout(STALL, watcher.next()).await {
            Ok(Ok(ClientEvent::Events { revision, events })) => {
                let events: Vec<KvEvent> = events.iter().filter_map(convert).collect();
                if let Some(last) = events.last() {
                    self.next_revision = self.next_revision.max(last.revision + 1);
                }
                self.next_revision = self.next_revision.max(watcher.next_revision());
                self.record(WatchEvent::Events {
                    header_revision: revision,
                    events,
                });
            }
            Ok(Ok(ClientEvent::Progress { revision })) => {
                self.next_revision = self.next_revision.max(watcher.next_revision());
                self.record(WatchEvent::Progress {
                    header_revision: revision,
                });
            }
            Ok(Err(Error::Compacted { compact_revision })) => {
                self.watcher = None;
                self.record(WatchEvent::Compacted { compact_revision });
                // Resume from the compacted revision, as etcd's docs tell
                // clients to (it is served, and whole).
                self.next_revision = compact_revision;
            }
            Ok(Err(e)) => {
                self.watcher = None;
                self.broken(e.to_string()).await;
            }
            Err(_) => {
                self.watcher = None;
                self.broken(format!("no response for {STALL:?}")).await;
            }
        }
    }

    async fn broken(&mut self, error: String) {
        self.record(WatchEvent::Broken { error });
        self.failures += 1;
        let backoff = Duration::from_millis(50 * 2u64.pow(self.failures.min(5)));
        tokio::time::sleep(backoff).await;
    }

    fn stop(self) {
        self.record(WatchEvent::Stopped);
    }
}

fn convert(event: &cairn_client::proto::mvccpb::Event) -> Option<KvEvent> {
    let kv = event.kv.as_ref()?;
    let kind = if event.r#type == EventType::Delete as i32 {
        KvEventKind::Delete
    } else {
        KvEventKind::Put
    };
    Some(KvEvent {
        revision: kv.mod_revision,
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        kind,
        value: match kind {
            KvEventKind::Put => parse_value(&kv.value),
            KvEventKind::Delete => None,
        },
        create_revision: kv.create_revision,
        version: kv.version,
    })
}

/// The reference watch: after the workloads, every revision from the first
/// still available up to the current one, recorded as watcher
/// [`REFERENCE_WATCHER`]. `tls`: the clients' TLS, in a TLS cluster;
/// `credentials`: root's, in a run with auth.
pub async fn reference(
    recorder: Recorder,
    endpoints: Vec<String>,
    tls: Option<&TlsOptions>,
    credentials: Option<&crate::auth::Credentials>,
) -> Result<()> {
    let mut client = Client::connect_all_tls(endpoints, tls).await?;
    if let Some(credentials) = credentials {
        client = credentials.apply(client).await?;
    }
    let Some(target) = current_revision(&client, Duration::from_secs(30)).await else {
        anyhow::bail!("no member answers: no reference watch");
    };
    let mut session = Session::new(recorder, REFERENCE_WATCHER, client, 1);
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    while session.next_revision <= target && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout_at(deadline, session.step()).await;
    }
    session.stop();
    Ok(())
}
