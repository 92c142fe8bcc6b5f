//! watch: create `--streams` x `--watch-per-stream` watchers over the
//! watched keys, then put `--put-total` times and time every event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::{kv_client::KvClient, PutRequest};
use tokio::task::JoinSet;

use super::{closed_loop, create_request, index, join_error, outcome, Env, WatchStream};
use crate::cli::WatchArgs;
use crate::conn::Chan;
use crate::keys::{check_key_size, fresh_key};
use crate::limiter::Limiter;
use crate::progress::Progress;
use crate::report::{Recorder, Report};
use crate::rng::Rng;
use crate::Error;

/// When each put was sent, as nanoseconds after a base instant plus one
/// (0: not sent yet); a put's value is its sequence number (8 bytes, big
/// endian), so an event is timed from the put that caused it.
struct PutTimeline {
    base: Instant,
    sent: Vec<AtomicU64>,
}

impl PutTimeline {
    fn new(puts: usize) -> PutTimeline {
        PutTimeline {
            base: Instant::now(),
            sent: (0..puts).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn mark(&self, seq: usize) {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        if let Some(slot) = self.sent.get(seq) {
            slot.store(nanos + 1, Ordering::Relaxed);
        }
    }

    fn sent_at(&self, value: &[u8]) -> Option<Instant> {
        let seq = u64::from_be_bytes(value.try_into().ok()?);
        let nanos = self
            .sent
            .get(usize::try_from(seq).ok()?)?
            .load(Ordering::Relaxed);
        (nanos > 0).then(|| self.base + Duration::from_nanos(nanos - 1))
    }
}

/// `watch`.
pub(crate) async fn watch(env: &Env, a: &WatchArgs) -> Result<Vec<Report>, Error> {
    check_key_size(a.key_size, a.key_space_size)?;
    if a.watched_key_total == 0 {
        return Err(Error::new("expected positive --watched-key-total, got (0)"));
    }
    let mut rng = Rng::seeded();
    let mut watched = Vec::with_capacity(a.watched_key_total);
    for i in 0..a.watched_key_total {
        let key_index = if a.sequential_keys {
            i % a.key_space_size
        } else {
            usize::try_from(rng.below(a.key_space_size as u64)).unwrap_or(0)
        };
        watched.push(fresh_key(a.key_size, index(key_index))?);
    }
    let watched = Arc::new(watched);
    let watches = a.streams.saturating_mul(a.watch_per_stream);
    let mut watchers_of: HashMap<&[u8], usize> = HashMap::new();
    for i in 0..watches {
        *watchers_of.entry(&watched[i % watched.len()]).or_insert(0) += 1;
    }
    let events_total: usize = (0..a.put_total)
        .map(|i| {
            watchers_of
                .get(&watched[i % watched.len()][..])
                .copied()
                .unwrap_or(0)
        })
        .sum();

    // Creation: each stream takes the next key and waits for each watch to
    // be created before asking for the next.
    let progress = Progress::start(watches as u64);
    let next_key = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut creating = JoinSet::new();
    for s in 0..a.streams {
        let conn = env.client_conn(s % env.clients());
        let (watched, next_key, progress) = (
            Arc::clone(&watched),
            Arc::clone(&next_key),
            progress.clone(),
        );
        let mut recorder = env.recorder();
        let per_stream = a.watch_per_stream;
        creating.spawn(async move {
            let mut stream: Option<WatchStream> = None;
            for _ in 0..per_stream {
                let i = next_key.fetch_add(1, Ordering::Relaxed);
                let request = create_request(watched[i % watched.len()].clone(), 0, false);
                let started = Instant::now();
                let open = match stream.take() {
                    Some(open) => {
                        open.send(request).await?;
                        open
                    }
                    None => WatchStream::open(conn.pick(), request, 1).await?,
                };
                let open = stream.insert(open);
                open.created().await?;
                recorder.record(started, Instant::now(), Ok(()));
                progress.inc();
            }
            Ok::<_, Error>((stream, recorder))
        });
    }
    let mut streams = Vec::new();
    let mut create_recorders = Vec::new();
    while let Some(done) = creating.join_next().await {
        let (stream, recorder) = done.map_err(join_error)??;
        streams.extend(stream);
        create_recorders.push(recorder);
    }
    let create_took = start.elapsed();
    progress.finish();
    let created = env.report(
        "watch-create",
        create_took,
        create_recorders,
        "Watch creation summary:\n",
        "",
    );

    // Events: every stream counts its events until all the expected ones
    // arrived; the puts go through every client, rate-limited.
    let progress = Progress::start(events_total as u64);
    let timeline = Arc::new(PutTimeline::new(a.put_total));
    let remaining = Arc::new(AtomicUsize::new(events_total));
    let (finished, _) = tokio::sync::watch::channel(events_total == 0);
    let finished = Arc::new(finished);
    let unattributed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut receiving = JoinSet::new();
    for mut stream in streams {
        let (timeline, remaining, finished, unattributed, progress) = (
            Arc::clone(&timeline),
            Arc::clone(&remaining),
            Arc::clone(&finished),
            Arc::clone(&unattributed),
            progress.clone(),
        );
        let mut recorder = env.recorder();
        receiving.spawn(async move {
            let mut done = finished.subscribe();
            loop {
                let response = tokio::select! {
                    _ = done.wait_for(|f| *f) => break,
                    response = stream.next() => response?,
                };
                let received = Instant::now();
                for event in response.events {
                    match event.kv.and_then(|kv| timeline.sent_at(&kv.value)) {
                        Some(sent) => recorder.record(sent, received, Ok(())),
                        None => {
                            unattributed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    progress.inc();
                    if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        finished.send_replace(true);
                    }
                }
            }
            Ok::<_, Error>(recorder)
        });
    }

    let put_timeline = Arc::clone(&timeline);
    let keys = Arc::clone(&watched);
    let make = move |i: usize| Ok((0, (i, keys[i % keys.len()].clone())));
    let call = move |_client: usize, channel: Chan, (seq, key): (usize, Vec<u8>)| {
        put_timeline.mark(seq);
        let request = PutRequest {
            key,
            value: (seq as u64).to_be_bytes().to_vec(),
            ..PutRequest::default()
        };
        async move { outcome(KvClient::new(channel).put(request).await) }
    };
    let puts = closed_loop(
        env,
        a.put_total,
        1,
        Limiter::new(a.put_rate, 1),
        &Progress::hidden(a.put_total as u64),
        make,
        call,
    )
    .await;
    // A failed put means its events never come: stop rather than wait.
    let (_, put_recorders) = puts?;
    if let Some(message) = put_recorders
        .iter()
        .flatten()
        .find_map(Recorder::first_error)
    {
        return Err(Error::new(format!(
            "a put of the watch workload failed: {message}"
        )));
    }

    let mut event_recorders = Vec::new();
    while let Some(done) = receiving.join_next().await {
        event_recorders.push(done.map_err(join_error)??);
    }
    let events_took = start.elapsed();
    progress.finish();
    let lost = unattributed.load(Ordering::Relaxed);
    if lost > 0 {
        eprintln!(
            "warning: {lost} watch events could not be matched to a put and are not in the summary"
        );
    }
    let events = env.report(
        "watch",
        events_took,
        event_recorders,
        "Watch events received summary:\n",
        "",
    );
    Ok(vec![created, events])
}
