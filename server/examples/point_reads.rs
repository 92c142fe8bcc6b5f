//! Why a point read costs more in a large store: one sealed RocksDB store
//! of N keys (one put per revision, as a member applies them), then random
//! single-key reads among its first 10,000 keys and among all N, timed layer
//! by layer in one process — the key index alone (a copy of the store's,
//! built beside it), RocksDB's read of the record alone (by its revision
//! key; sealed bytes), the same read unsealed, and the whole
//! `Store::range` (index, read, unsealing, decoding). No gRPC, no raft, no
//! client sharing the cores: what `restart.sh`'s range at 10,000 and at
//! 1,000,000 keys leaves of a member's read.
//!
//! `cargo run --release -p cairn-server --example point_reads -- [keys] [reads] [small|all]`
//!
//! With `small` or `all`, only the whole range among that set is run (for
//! `perf record`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_server::mvcc::{KeyRange, RangeOptions, Revision, Store, TreeIndex};
use cairn_server::storage::crypto::MasterKey;
use cairn_server::storage::{try_get_many, Cf, Engine, RocksEngine, SealedEngine};

/// The key of the `i`th put (8 bytes, as cairn-bench's default key size).
fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// xorshift64: the same sequence of random key numbers for every layer.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs `read` on `reads` random key numbers below `among`; ns per read.
fn time(
    reads: u64,
    among: u64,
    mut read: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let start = Instant::now();
    for _ in 0..reads {
        read(rng.below(among))?;
    }
    Ok(start.elapsed().as_nanos() as f64 / reads as f64)
}

/// A read of key number `i` through one layer.
type Read<'a> = dyn FnMut(u64) -> anyhow::Result<()> + 'a;

/// How many times each figure is measured.
const PASSES: usize = 5;

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Reads the record of key number `i` (put at revision `i + 2`) from `engine`.
fn read_record(engine: &dyn Engine, i: u64) -> anyhow::Result<()> {
    let record = [Revision::new(i as i64 + 2, 0).record_key(false)];
    try_get_many::<anyhow::Error>(engine, Cf::Kv, &record, |_, bytes| {
        anyhow::ensure!(bytes.is_some(), "record of key {i} missing");
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let keys: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let reads: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let profile = args.next();
    let small = keys.min(10_000);

    let dir = tempfile::tempdir()?;
    let rocks = Arc::new(RocksEngine::open(dir.path())?);
    let sealed: Arc<dyn Engine> = Arc::new(SealedEngine::open(
        Arc::clone(&rocks) as Arc<dyn Engine>,
        MasterKey::from_bytes([7; 32]),
    )?);
    let store = Store::open(Arc::clone(&sealed), false)?;
    let started = Instant::now();
    let value = vec![b'v'; 256];
    for i in 0..keys {
        let mut txn = store.write();
        txn.put(&key(i), value.clone(), 0);
        txn.commit(None)?;
    }
    // The key index as the store holds it: one revision per key (the store
    // opened empty, so key i was put at revision i + 2).
    let mut index = TreeIndex::new();
    for i in 0..keys {
        index.put(&key(i), Revision::new(i as i64 + 2, 0), i as i64 + 1);
    }
    let loaded = started.elapsed();
    // Reads timed while RocksDB compacts would share the cores with it.
    let settle = Instant::now();
    while rocks.background_busy() && settle.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "loaded {keys} keys in {:.1} s, compactions settled {:.1} s later; {reads} reads per figure, ns per read",
        loaded.as_secs_f64(),
        settle.elapsed().as_secs_f64(),
    );

    println!(
        "{:<34} {:>12} {:>12} {:>7}",
        "layer",
        format!("among {small}"),
        format!("among {keys}"),
        "ratio"
    );
    // The layers, each a read of key number i.
    let mut layers: Vec<(&str, Box<Read<'_>>)> = vec![
        (
            "key index",
            Box::new(|i| {
                let at = keys as i64 + 1;
                anyhow::ensure!(index.get(&key(i), at).is_some(), "key {i} not indexed");
                Ok(())
            }),
        ),
        (
            "key index, as a range reads it",
            Box::new(|i| {
                let at = keys as i64 + 1;
                let one = KeyRange::new(&key(i), b"");
                anyhow::ensure!(index.range(&one, at).count() == 1, "key {i} not indexed");
                Ok(())
            }),
        ),
        (
            "RocksDB read of the sealed record",
            Box::new(|i| read_record(rocks.as_ref(), i)),
        ),
        (
            "the same, unsealed",
            Box::new(|i| read_record(sealed.as_ref(), i)),
        ),
        (
            "Store::range (all of it)",
            Box::new(|i| {
                let got = store.range(&KeyRange::new(&key(i), b""), RangeOptions::default())?;
                anyhow::ensure!(got.kvs.len() == 1, "key {i} not read");
                Ok(())
            }),
        ),
    ];
    // For a profiler: only the whole range, among the small set or all.
    if let Some(among) = profile {
        let among = match among.as_str() {
            "all" => keys,
            "small" => small,
            other => anyhow::bail!("expected small or all, got {other}"),
        };
        let (_, range) = layers
            .last_mut()
            .ok_or_else(|| anyhow::anyhow!("no layers"))?;
        let ns = time(reads, among, range)?;
        println!("Store::range among {among}: {ns:.0} ns per read");
        return Ok(());
    }
    // Passes interleave the two sets, so that a swing of the machine lands
    // on both; the medians are printed.
    let mut samples = vec![(Vec::new(), Vec::new()); layers.len()];
    for _ in 0..PASSES {
        for ((_, read), (a, b)) in layers.iter_mut().zip(&mut samples) {
            a.push(time(reads, small, &mut *read)?);
            b.push(time(reads, keys, &mut *read)?);
        }
    }
    for ((name, _), (a, b)) in layers.iter().zip(&mut samples) {
        let (a, b) = (median(a), median(b));
        println!("{name:<34} {a:>12.0} {b:>12.0} {:>7.2}", b / a);
    }
    Ok(())
}
