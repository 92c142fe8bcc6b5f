//! watch-get: serializable gets while `--watchers` unsynced watchers catch
//! up on `--events` past revisions of one key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cairn_proto::etcdserverpb::{kv_client::KvClient, PutRequest, RangeRequest};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::{create_request, join_error, outcome, Env, WatchStream};
use crate::cli::WatchGetArgs;
use crate::conn::error_text;
use crate::progress::Progress;
use crate::report::Report;
use crate::Error;

/// The key the watchers watch (etcd's).
const WATCH_KEY: &[u8] = b"watchkey";
/// The key the gets read (etcd's; it need not exist).
const GET_KEY: &[u8] = b"abc";

/// `watch-get`.
pub(crate) async fn watch_get(env: &Env, a: &WatchGetArgs) -> Result<Vec<Report>, Error> {
    if a.streams == 0 {
        return Err(Error::new("expected positive --streams, got (0)"));
    }
    let get_conn = env.extra_conn().await?;

    // The history the watchers will replay: --events puts of the key.
    let mut from_revision = 0;
    let writer = env.client_conn(0);
    for i in 0..a.events {
        let request = PutRequest {
            key: WATCH_KEY.to_vec(),
            value: i.to_string().into_bytes(),
            ..PutRequest::default()
        };
        let response = KvClient::new(writer.pick())
            .put(request)
            .await
            .map_err(|s| Error::new(format!("put {i}: {}", error_text(&s))))?
            .into_inner();
        if i == 0 {
            from_revision = response.header.map_or(0, |h| h.revision);
        }
    }

    let progress = Progress::start((a.watchers * a.events) as u64);
    let first_watch = Arc::new(Notify::new());
    let (finished, _) = watch::channel(false);
    let start = Instant::now();

    // The gets: from the first watch created until every watcher is done.
    let getting = {
        let first_watch = Arc::clone(&first_watch);
        let mut done = finished.subscribe();
        let mut recorder = env.recorder();
        tokio::spawn(async move {
            tokio::select! {
                _ = done.wait_for(|f| *f) => return recorder,
                () = first_watch.notified() => {}
            }
            loop {
                let request = RangeRequest {
                    key: GET_KEY.to_vec(),
                    serializable: true,
                    ..RangeRequest::default()
                };
                let mut kv = KvClient::new(get_conn.pick());
                let started = Instant::now();
                let result = tokio::select! {
                    _ = done.wait_for(|f| *f) => break,
                    r = kv.range(request) => r,
                };
                recorder.record(started, Instant::now(), outcome(result));
            }
            recorder
        })
    };

    // Watcher i on stream i % streams; stream s on client s % clients.
    let mut watching = JoinSet::new();
    for s in 0..a.streams {
        let count = (a.watchers + a.streams - 1 - s) / a.streams;
        if count == 0 {
            continue;
        }
        let conn = env.client_conn(s % env.clients());
        let (first_watch, progress, events) =
            (Arc::clone(&first_watch), progress.clone(), a.events);
        watching.spawn(async move {
            let request = || create_request(WATCH_KEY.to_vec(), from_revision, false);
            let mut stream = WatchStream::open(conn.pick(), request(), count).await?;
            for _ in 1..count {
                stream.send(request()).await?;
            }
            let mut seen: HashMap<i64, usize> = HashMap::new();
            let mut created = 0;
            let mut complete = 0;
            while complete < count {
                let response = stream.next().await?;
                if response.created {
                    created += 1;
                    if created == 1 {
                        first_watch.notify_one();
                    }
                }
                if response.events.is_empty() {
                    continue;
                }
                let got = seen.entry(response.watch_id).or_insert(0);
                if *got >= events {
                    continue;
                }
                let before = *got;
                *got = (before + response.events.len()).min(events);
                progress.add((*got - before) as u64);
                if *got == events {
                    complete += 1;
                }
            }
            // Keep the stream open until every stream is done, as etcd's
            // watchers stay until the end.
            Ok::<_, Error>(stream)
        });
    }
    let mut open = Vec::new();
    let mut failure = None;
    while let Some(done) = watching.join_next().await {
        match done.map_err(join_error).and_then(|r| r) {
            Ok(stream) => open.push(stream),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    finished.send_replace(true);
    let recorder = getting.await.map_err(join_error)?;
    let took = start.elapsed();
    progress.finish();
    drop(open);
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(vec![env.report(
        "watch-get",
        took,
        vec![recorder],
        "Get during watch summary:\n",
        "",
    )])
}
