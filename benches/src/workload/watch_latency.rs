//! watch-latency: `--streams` x `--watchers-per-stream` watchers on one key;
//! `--put-total` puts of it at `--put-rate` from a connection of their own;
//! each event is timed from its put's completion.

use std::collections::HashMap;
use std::time::Instant;

use cairn_proto::etcdserverpb::{kv_client::KvClient, PutRequest};
use tokio::task::JoinSet;

use super::{create_request, join_error, outcome, Env, WatchStream};
use crate::cli::WatchLatencyArgs;
use crate::limiter::Limiter;
use crate::progress::Progress;
use crate::report::Report;
use crate::rng::Rng;
use crate::Error;

/// `watch-latency`.
pub(crate) async fn watch_latency(env: &Env, a: &WatchLatencyArgs) -> Result<Vec<Report>, Error> {
    let mut rng = Rng::seeded();
    let key = rng.bytes(a.key_size);
    let value = rng.bytes(a.val_size);
    let puts = a.put_total;

    // Watchers: stream s on client s % clients; every watcher created before
    // the first put.
    let mut streams = Vec::with_capacity(a.streams);
    for s in 0..a.streams {
        if a.watchers_per_stream == 0 {
            break;
        }
        let conn = env.client_conn(s % env.clients());
        let request = || create_request(key.clone(), 0, a.prevkv);
        let mut stream = WatchStream::open(conn.pick(), request(), 1).await?;
        let mut ids = vec![stream.created().await?];
        for _ in 1..a.watchers_per_stream {
            stream.send(request()).await?;
            ids.push(stream.created().await?);
        }
        streams.push((stream, ids));
    }
    let watchers: usize = streams.iter().map(|(_, ids)| ids.len()).sum();
    let put_conn = env.extra_conn().await?;

    let progress = Progress::start((puts * watchers) as u64);
    let mut receiving = JoinSet::new();
    for (mut stream, ids) in streams {
        let progress = progress.clone();
        receiving.spawn(async move {
            let slot: HashMap<i64, usize> =
                ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
            let mut times: Vec<Vec<Instant>> =
                ids.iter().map(|_| Vec::with_capacity(puts)).collect();
            let mut complete = times.iter().filter(|t| t.len() >= puts).count();
            while complete < times.len() {
                let response = stream.next().await?;
                let received = Instant::now();
                let Some(t) = slot.get(&response.watch_id).and_then(|&i| times.get_mut(i)) else {
                    continue;
                };
                for _ in &response.events {
                    if t.len() < puts {
                        t.push(received);
                        progress.inc();
                        if t.len() == puts {
                            complete += 1;
                        }
                    }
                }
            }
            Ok::<_, Error>(times)
        });
    }

    // The puts, one after another.
    let limiter = Limiter::new(a.put_rate, a.put_rate);
    let start = Instant::now();
    let mut put_recorder = env.recorder();
    let mut put_done = Vec::with_capacity(puts);
    for _ in 0..puts {
        limiter.wait().await;
        let request = PutRequest {
            key: key.clone(),
            value: value.clone(),
            ..PutRequest::default()
        };
        let started = Instant::now();
        let result = outcome(KvClient::new(put_conn.pick()).put(request).await);
        let ended = Instant::now();
        if let Err(message) = result {
            return Err(Error::new(format!(
                "Failed to Put for watch latency benchmark: {message}"
            )));
        }
        put_recorder.record(started, ended, Ok(()));
        put_done.push(ended);
    }
    let puts_took = start.elapsed();

    let mut event_recorder = env.recorder();
    while let Some(done) = receiving.join_next().await {
        for times in done.map_err(join_error)?? {
            for (&put_end, &event) in put_done.iter().zip(&times) {
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
