//! watch-latency: `--streams` x `--watchers-per-stream` watchers on one key
//! (with Cairn's `--key-space-size N`, spread over N keys: watcher w on key
//! w % N); `--put-total` puts at `--put-rate` from a connection of their own
//! (put i to key i % N; over several keys up to 64 at once, so that a high
//! `--put-rate` is reached); each event is timed from its put's completion.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use cairn_proto::etcdserverpb::{kv_client::KvClient, PutRequest};
use tokio::task::{JoinHandle, JoinSet};

use super::{create_request, join_error, outcome, Env, WatchStream};
use crate::cli::WatchLatencyArgs;
use crate::limiter::Limiter;
use crate::progress::Progress;
use crate::report::{Recorder, Report};
use crate::rng::Rng;
use crate::Error;

/// Puts under way at once over a key space (see the puts below).
const MAX_PUTS_IN_FLIGHT: usize = 64;

/// `watch-latency`.
pub(crate) async fn watch_latency(env: &Env, a: &WatchLatencyArgs) -> Result<Vec<Report>, Error> {
    if a.key_space_size == 0 {
        return Err(Error::new("expected positive --key-space-size, got (0)"));
    }
    let mut rng = Rng::seeded();
    let keys: Vec<Vec<u8>> = (0..a.key_space_size)
        .map(|_| rng.bytes(a.key_size))
        .collect();
    let value = rng.bytes(a.val_size);
    let puts = a.put_total;
    let space = keys.len();
    // The puts to key k: k, k + space, k + 2 space, ...
    let puts_to = move |k: usize| (puts + space - 1 - k) / space;

    // Watchers: stream s on client s % clients; watcher w (counted over
    // every stream) on key w % space; every watcher created before the
    // first put.
    let mut streams = Vec::with_capacity(a.streams);
    let mut w = 0;
    for s in 0..a.streams {
        if a.watchers_per_stream == 0 {
            break;
        }
        let conn = env.client_conn(s % env.clients());
        let request = |w: usize| create_request(keys[w % space].clone(), 0, a.prevkv);
        let mut stream = WatchStream::open(conn.pick(), request(w), 1).await?;
        let mut watching = vec![(stream.created().await?, w % space)];
        w += 1;
        for _ in 1..a.watchers_per_stream {
            stream.send(request(w)).await?;
            watching.push((stream.created().await?, w % space));
            w += 1;
        }
        streams.push((stream, watching));
    }
    let events: usize = streams
        .iter()
        .flat_map(|(_, watching)| watching.iter().map(|&(_, k)| puts_to(k)))
        .sum();
    let put_conn = env.extra_conn().await?;

    let progress = Progress::start(events as u64);
    let mut receiving = JoinSet::new();
    for (mut stream, watching) in streams {
        let progress = progress.clone();
        receiving.spawn(async move {
            let slot: HashMap<i64, usize> = watching
                .iter()
                .enumerate()
                .map(|(i, &(id, _))| (id, i))
                .collect();
            let wanted: Vec<usize> = watching.iter().map(|&(_, k)| puts_to(k)).collect();
            let mut times: Vec<Vec<Instant>> =
                wanted.iter().map(|&n| Vec::with_capacity(n)).collect();
            let mut complete = wanted.iter().filter(|&&n| n == 0).count();
            while complete < times.len() {
                let response = stream.next().await?;
                let received = Instant::now();
                let Some(&i) = slot.get(&response.watch_id) else {
                    continue;
                };
                let (Some(t), Some(&n)) = (times.get_mut(i), wanted.get(i)) else {
                    continue;
                };
                for _ in &response.events {
                    if t.len() < n {
                        t.push(received);
                        progress.inc();
                        if t.len() == n {
                            complete += 1;
                        }
                    }
                }
            }
            let keys: Vec<usize> = watching.iter().map(|&(_, k)| k).collect();
            Ok::<_, Error>((keys, times))
        });
    }

    // The puts: one after another on one key (etcd's workload); over a key
    // space, up to `depth` at once, awaited in order, so that put i is done
    // before put i + space (the next to its key) starts, and the j-th event
    // of a key is its j-th put's.
    let depth = space.clamp(1, MAX_PUTS_IN_FLIGHT);
    let limiter = Limiter::new(a.put_rate, a.put_rate);
    let start = Instant::now();
    let mut put_recorder = env.recorder();
    let mut put_done = Vec::with_capacity(puts);
    let mut in_flight = VecDeque::with_capacity(depth);
    for i in 0..puts {
        if in_flight.len() >= depth {
            if let Some(put) = in_flight.pop_front() {
                settle(put, &mut put_recorder, &mut put_done).await?;
            }
        }
        limiter.wait().await;
        let request = PutRequest {
            key: keys[i % space].clone(),
            value: value.clone(),
            ..PutRequest::default()
        };
        let channel = put_conn.pick();
        in_flight.push_back(tokio::spawn(async move {
            let started = Instant::now();
            let result = outcome(KvClient::new(channel).put(request).await);
            (started, Instant::now(), result)
        }));
    }
    while let Some(put) = in_flight.pop_front() {
        settle(put, &mut put_recorder, &mut put_done).await?;
    }
    let puts_took = start.elapsed();

    let mut event_recorder = env.recorder();
    while let Some(done) = receiving.join_next().await {
        let (keys, times) = done.map_err(join_error)??;
        for (k, times) in keys.into_iter().zip(times) {
            // The j-th event on key k is put k + j * space's.
            let put_ends = put_done.iter().skip(k).step_by(space);
            for (&put_end, &event) in put_ends.zip(&times) {
                // An event seen before its put returned counts as 0.
                event_recorder.record(put_end.min(event), event, Ok(()));
            }
        }
    }
    let events_took = start.elapsed();
    progress.finish();
    Ok(vec![
        env.report(
            "watch-latency-put",
            puts_took,
            vec![put_recorder],
            "\nPut summary:\n",
            "",
        ),
        env.report(
            "watch-latency",
            events_took,
            vec![event_recorder],
            "\nWatch events summary:\n",
            "",
        ),
    ])
}

/// One put of the workload: when it started and ended, and how.
type PutOutcome = (Instant, Instant, Result<(), String>);

/// Waits for `put`, records it and notes when it ended; a failed put ends
/// the workload (etcd's message).
async fn settle(
    put: JoinHandle<PutOutcome>,
    recorder: &mut Recorder,
    done: &mut Vec<Instant>,
) -> Result<(), Error> {
    let (started, ended, result) = put.await.map_err(join_error)?;
    if let Err(message) = result {
        return Err(Error::new(format!(
            "Failed to Put for watch latency benchmark: {message}"
        )));
    }
    recorder.record(started, ended, Ok(()));
    done.push(ended);
    Ok(())
}
