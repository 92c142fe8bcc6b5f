//! A reference point, not a benchmark suite: sequential puts then sequential
//! gets through cairn-client against an in-process single member.
//!
//! `cargo run --release -p cairn-server --example seq_putget -- [count]`

use std::time::{Duration, Instant};

use cairn_client::{Client, Get, Put};
use cairn_server::embed::{self, Config};

fn report(what: &str, mut samples: Vec<Duration>, total: Duration) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{what}: {} ops in {:.2}s = {:.0} ops/s; latency p50 {:?} p99 {:?} max {:?}",
        samples.len(),
        total.as_secs_f64(),
        samples.len() as f64 / total.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir()?;
    let member = embed::start(Config {
        data_dir: dir.path().join("data"),
        listen_client_urls: vec!["http://127.0.0.1:0".into()],
        listen_peer_urls: vec!["http://127.0.0.1:0".into()],
        ..Config::default()
    })
    .await?;
    let client = Client::connect(member.client_urls()[0].clone()).await?;
    let value = vec![b'v'; 256];

    let mut samples = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        client
            .put(Put::new(format!("key{i:08}"), value.clone()))
            .await?;
        samples.push(t.elapsed());
    }
    report("put (256 B values, fsync each)", samples, start.elapsed());

    let mut samples = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        let r = client.get(Get::key(format!("key{i:08}"))).await?;
        anyhow::ensure!(r.kvs.len() == 1, "key{i:08} missing");
        samples.push(t.elapsed());
    }
    report("get", samples, start.elapsed());
    member.stop().await?;
    Ok(())
}
