//! Watch fan-out figures: events per second delivered to many watchers of one
//! key, over one stream and over many streams; and the memory an idle watcher
//! costs the server.
//!
//! ```text
//! cargo run --release -p cairn-server --example watch_fanout -- [watchers] [puts]
//! cargo run --release -p cairn-server --example watch_fanout -- [watchers] [puts] ENDPOINT SERVER_PID
//! ```
//!
//! Without an endpoint a member runs in-process. With an endpoint and the
//! server's pid, the idle-watcher memory is read from the server's
//! `/proc/PID/status` (VmRSS) before and after creating the watchers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::proto::etcdserverpb::watch_client::WatchClient;
use cairn_client::proto::etcdserverpb::watch_request::RequestUnion;
use cairn_client::proto::etcdserverpb::{WatchCreateRequest, WatchRequest};
use cairn_client::{Client, Put};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))?;
    let kib = line.split_whitespace().nth(1).unwrap_or_default();
    Ok(kib.parse()?)
}

fn create(key: &str) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

/// Opens `streams` streams with `watchers` watchers of `key` in total, all
/// created; each stream's events are added to `counter`. The returned senders
/// keep the streams open.
async fn open(
    url: &str,
    key: &str,
    watchers: usize,
    streams: usize,
    counter: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<mpsc::Sender<WatchRequest>>> {
    let per_stream = watchers / streams;
    let mut keep = Vec::new();
    for _ in 0..streams {
        let mut client = WatchClient::connect(url.to_string()).await?;
        let (tx, rx) = mpsc::channel(per_stream + 1);
        for _ in 0..per_stream {
            tx.send(create(key)).await?;
        }
        let mut responses = client.watch(ReceiverStream::new(rx)).await?.into_inner();
        let mut created = 0;
        while created < per_stream {
            let resp = responses
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("stream closed"))?;
            if resp.created {
                created += 1;
            }
        }
        let counter = Arc::clone(&counter);
        tokio::spawn(async move {
            while let Ok(Some(resp)) = responses.message().await {
                counter.fetch_add(resp.events.len(), Ordering::Relaxed);
            }
        });
        keep.push(tx);
    }
    Ok(keep)
}

async fn fanout(
    client: &Client,
    url: &str,
    watchers: usize,
    streams: usize,
    puts: usize,
) -> anyhow::Result<()> {
    let key = format!("fan/{streams}");
    let counter = Arc::new(AtomicUsize::new(0));
    let keep = open(url, &key, watchers, streams, Arc::clone(&counter)).await?;
    let expected = (watchers / streams) * streams * puts;
    let start = Instant::now();
    for i in 0..puts {
        client.put(Put::new(key.clone(), format!("{i}"))).await?;
    }
    let writes = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while counter.load(Ordering::Relaxed) < expected {
        anyhow::ensure!(Instant::now() < deadline, "events not delivered in time");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    println!(
        "{watchers} watchers of one key on {streams} stream(s): {puts} puts in {:.2}s; \
         {expected} events delivered in {:.2}s = {:.0} events/s",
        writes.as_secs_f64(),
        elapsed.as_secs_f64(),
        expected as f64 / elapsed.as_secs_f64()
    );
    drop(keep);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let watchers: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let puts: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let (url, pid, member) = match (args.get(3), args.get(4)) {
        (Some(url), Some(pid)) => (url.clone(), Some(pid.parse::<u32>()?), None),
        _ => {
            let member = cairn_server::embed::start(cairn_server::embed::Config {
                data_dir: dir.path().join("data"),
                listen_client_urls: vec!["http://127.0.0.1:0".into()],
                listen_peer_urls: vec!["http://127.0.0.1:0".into()],
                ..Default::default()
            })
            .await?;
            (member.client_urls()[0].clone(), None, Some(member))
        }
    };
    let client = Client::connect(url.clone()).await?;
    fanout(&client, &url, watchers, 1, puts).await?;
    fanout(&client, &url, watchers, watchers.min(100), puts).await?;

    if let Some(pid) = pid {
        let idle = 10_000;
        let before = rss_kib(pid)?;
        let keep = open(&url, "idle", idle, 100, Arc::new(AtomicUsize::new(0))).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib(pid)?;
        println!(
            "{idle} idle watchers on 100 streams: server RSS {before} KiB -> {after} KiB = {:.0} bytes per watcher",
            (after.saturating_sub(before) * 1024) as f64 / idle as f64
        );
        drop(keep);
    }
    if let Some(member) = member {
        member.stop().await?;
    }
    Ok(())
}
