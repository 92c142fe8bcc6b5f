//! What sealing costs per record, without the disk: the same writes and
//! reads on the in-memory engine, bare and under the sealing layer.
//!
//! `cargo run --release -p cairn-server --example seal_cost -- [records]`

use std::sync::Arc;
use std::time::Instant;

use cairn_server::storage::crypto::MasterKey;
use cairn_server::storage::{Cf, Engine, MemoryEngine, SealedEngine, WriteBatch};

fn run(name: &str, engine: &dyn Engine, records: u64) {
    let value = vec![b'v'; 256];
    let start = Instant::now();
    for i in 0..records {
        let mut b = WriteBatch::new();
        b.put(Cf::Kv, i.to_be_bytes().to_vec(), value.clone());
        if let Err(e) = engine.write(b, false) {
            eprintln!("write failed: {e}");
            return;
        }
    }
    let put = start.elapsed();
    let start = Instant::now();
    for i in 0..records {
        if !matches!(engine.get(Cf::Kv, &i.to_be_bytes()), Ok(Some(_))) {
            eprintln!("read failed at {i}");
            return;
        }
    }
    let get = start.elapsed();
    println!(
        "{name}: put {:.0} ns/record, get {:.0} ns/record (256 B values, {records} records)",
        put.as_nanos() as f64 / records as f64,
        get.as_nanos() as f64 / records as f64
    );
}

fn main() -> anyhow::Result<()> {
    let records: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    run("plain ", &MemoryEngine::new(), records);
    let sealed = SealedEngine::open(
        Arc::new(MemoryEngine::new()),
        MasterKey::from_bytes([7; 32]),
    )?;
    run("sealed", &sealed, records);
    Ok(())
}
