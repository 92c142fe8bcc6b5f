//! Three members in this process, measured: sequential put latency, put
//! throughput with 100 concurrent clients, linearizable and serializable
//! read throughput, and the time from killing the leader to the next
//! successful write.
//!
//! `cargo run --release -p cairn-server --example cluster_bench [-- OPS]`

use std::time::{Duration, Instant};

use cairn_client::{Client, Get, Put};
use cairn_server::embed::{self, Config, Handle, Listeners};

async fn free_port() -> anyhow::Result<u16> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?.port())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn throughput<F, Fut>(clients: &[Client], total: usize, op: F) -> anyhow::Result<f64>
where
    F: Fn(Client, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let per = total / clients.len();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (w, c) in clients.iter().enumerate() {
        let c = c.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                op(c.clone(), w * per + i).await?;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per * clients.len()) as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ops: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let mut ports = Vec::new();
    for _ in 0..3 {
        ports.push((free_port().await?, free_port().await?));
    }
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut handles: Vec<Option<Handle>> = Vec::new();
    for (i, (c, p)) in ports.iter().enumerate() {
        let config = Config {
            name: format!("m{i}"),
            data_dir: dir.path().join(format!("m{i}")),
            listen_client_urls: vec![format!("http://127.0.0.1:{c}")],
            advertise_client_urls: vec![format!("http://127.0.0.1:{c}")],
            listen_peer_urls: vec![format!("http://127.0.0.1:{p}")],
            initial_advertise_peer_urls: vec![format!("http://127.0.0.1:{p}")],
            initial_cluster: initial.clone(),
            zone: format!("az-{}", (b'a' + i as u8) as char),
            ..Config::default()
        };
        handles.push(Some(embed::start_with(config, Listeners::default()).await?));
    }
    let leader = loop {
        let status = handles[0].as_ref().map(|h| h.member().raft_status());
        if let Some(s) = status.filter(|s| s.leader != 0) {
            let found = handles.iter().position(|h| {
                h.as_ref()
                    .is_some_and(|h| h.member().identity().member_id == s.leader)
            });
            if let Some(i) = found {
                break i;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let url = |i: usize| format!("http://127.0.0.1:{}", ports[i].0);
    let lc = Client::connect(url(leader)).await?;
    let value = vec![b'v'; 256];

    // Sequential put latency through the leader.
    let mut lat = Vec::with_capacity(ops);
    for i in 0..ops {
        let t = Instant::now();
        lc.put(Put::new(format!("seq{i:08}"), value.clone()))
            .await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "sequential put ({ops}): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );

    // One client, reads one after the other.
    for (name, serializable) in [("linearizable", false), ("serializable", true)] {
        let mut lat = Vec::with_capacity(ops);
        for i in 0..ops {
            let get = Get::key(format!("seq{:08}", i % 1000));
            let get = if serializable {
                get.serializable()
            } else {
                get
            };
            let t = Instant::now();
            lc.get(get).await?;
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "{name} get, 1 client ({ops}): p50 {:.2} ms, p99 {:.2} ms",
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3
        );
    }

    // 100 concurrent clients over 10 connections to the leader.
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(Client::connect(url(leader)).await?);
    }
    let clients: Vec<Client> = (0..100).map(|i| conns[i % 10].clone()).collect();
    let v = value.clone();
    let puts = throughput(&clients, ops * 5, move |c, i| {
        let v = v.clone();
        async move {
            c.put(Put::new(format!("par{:08}", i % 100_000), v)).await?;
            Ok(())
        }
    })
    .await?;
    println!("put, 100 clients: {puts:.0} ops/s");

    let lin = throughput(&clients, ops * 5, |c, i| async move {
        c.get(Get::key(format!("par{:08}", i % 1000))).await?;
        Ok(())
    })
    .await?;
    println!("linearizable get, 100 clients: {lin:.0} ops/s");
    let ser = throughput(&clients, ops * 5, |c, i| async move {
        c.get(Get::key(format!("par{:08}", i % 1000)).serializable())
            .await?;
        Ok(())
    })
    .await?;
    println!("serializable get, 100 clients: {ser:.0} ops/s");
    drop((clients, conns, lc));

    // Leader kill -> next successful write through a survivor.
    let survivor = (leader + 1) % 3;
    let sc = Client::connect(url(survivor)).await?;
    if let Some(h) = handles[leader].take() {
        h.kill().await;
    }
    let killed = Instant::now();
    loop {
        if sc.put(Put::new("after-kill", "x")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "leader kill -> next successful write: {:.0} ms",
        killed.elapsed().as_secs_f64() * 1e3
    );
    for h in handles.into_iter().flatten() {
        h.kill().await;
    }
    Ok(())
}
