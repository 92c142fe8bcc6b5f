//! Micro-benchmarks of the hot paths that need no network: MVCC put and
//! range, the key index, sealing, and the raft log append. On the in-memory
//! engine, so the figures are CPU cost, not the disk's; a paginated list on
//! RocksDB under sealing (what a Kubernetes list costs a member), read from
//! its block cache.
//!
//! `cargo bench -p cairn-server --bench hot_paths`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic on failure

use std::sync::Arc;

use cairn_proto::etcdserverpb::RangeRequest;
use cairn_server::apply;
use cairn_server::mvcc::{KeyRange, RangeOptions, Revision, Store, TreeIndex};
use cairn_server::raft::RaftStorage;
use cairn_server::storage::crypto::{DataKey, KeyRing, MasterKey};
use cairn_server::storage::{Engine, MemoryEngine, RocksEngine, SealedEngine};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message;
use raft::eraftpb::Entry;

fn store_with(keys: u64) -> Store {
    let store = Store::open(Arc::new(MemoryEngine::new()), false).unwrap();
    for i in 0..keys {
        let mut txn = store.write();
        txn.put(format!("key{i:08}").as_bytes(), vec![b'v'; 256], 0);
        txn.commit(None).unwrap();
    }
    store
}

fn mvcc(c: &mut Criterion) {
    let mut group = c.benchmark_group("mvcc");
    group.throughput(Throughput::Elements(1));
    let store = store_with(0);
    let mut i = 0u64;
    group.bench_function("put (one txn, 256 B)", |b| {
        b.iter(|| {
            i += 1;
            let mut txn = store.write();
            txn.put(
                format!("key{:08}", i % 10_000).as_bytes(),
                vec![b'v'; 256],
                0,
            );
            txn.commit(None).unwrap();
        })
    });
    // The same with the member's metrics counting (etcd's mvcc counters and
    // the commit histogram): what the metrics cost on the write path.
    let store = store_with(0);
    let metrics = cairn_server::metrics::Metrics::new(cairn_server::metrics::Level::Basic, 1);
    store.set_metrics(metrics.unwrap().store());
    group.bench_function("put (one txn, 256 B), with metrics", |b| {
        b.iter(|| {
            i += 1;
            let mut txn = store.write();
            txn.put(
                format!("key{:08}", i % 10_000).as_bytes(),
                vec![b'v'; 256],
                0,
            );
            txn.commit(None).unwrap();
        })
    });
    let store = store_with(10_000);
    group.bench_function("range one key of 10k", |b| {
        b.iter(|| {
            let r = store
                .range(&KeyRange::new(b"key00005000", b""), RangeOptions::default())
                .unwrap();
            black_box(r.kvs.len())
        })
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("range 100 keys of 10k", |b| {
        b.iter(|| {
            let r = store
                .range(
                    &KeyRange::new(b"key00005000", b"key00005100"),
                    RangeOptions::default(),
                )
                .unwrap();
            black_box(r.kvs.len())
        })
    });
    group.finish();
}

/// A Kubernetes list: a 10,000-key prefix in pages of 500 at a fixed
/// revision, from a sealed RocksDB (its records written in scattered key
/// order, as a live cluster's are).
fn list(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rocks: Arc<dyn Engine> = Arc::new(RocksEngine::open(dir.path()).unwrap());
    let sealed: Arc<dyn Engine> =
        Arc::new(SealedEngine::open(rocks, MasterKey::from_bytes([7; 32])).unwrap());
    let store = Store::open(Arc::clone(&sealed), false).unwrap();
    for i in 0..10_000u64 {
        let k = (i * 7_919) % 10_000;
        let mut txn = store.write();
        txn.put(
            format!("/registry/pods/{k:08}").as_bytes(),
            vec![b'v'; 256],
            0,
        );
        txn.commit(None).unwrap();
    }
    // Out of the memtable into table files, as a live member's records are.
    sealed.defragment().unwrap();
    let rev = store.current_revision();
    let mut group = c.benchmark_group("list");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("10k keys in pages of 500, RocksDB, sealed", |b| {
        b.iter(|| {
            // As kube-apiserver pages: from just after the last key given,
            // at the first page's revision.
            let mut start = b"/registry/pods/".to_vec();
            let mut listed = 0;
            loop {
                let page = store
                    .range(
                        &KeyRange::new(&start, b"/registry/pods0"),
                        RangeOptions {
                            limit: 500,
                            rev,
                            ..RangeOptions::default()
                        },
                    )
                    .unwrap();
                listed += page.kvs.len();
                match page.kvs.last() {
                    Some(last) if page.count > page.kvs.len() => {
                        start = [last.key.as_slice(), b"\0"].concat();
                    }
                    _ => break,
                }
            }
            assert_eq!(listed, 10_000);
        })
    });
    // The same pages as the gRPC port answers them: the key-values decoded
    // and the response encoded, or the stored records spliced into it.
    let pages: Vec<RangeRequest> = (0..20)
        .map(|page| RangeRequest {
            key: if page == 0 {
                b"/registry/pods/".to_vec()
            } else {
                format!("/registry/pods/{:08}\0", page * 500 - 1).into_bytes()
            },
            range_end: b"/registry/pods0".to_vec(),
            limit: 500,
            revision: rev,
            ..RangeRequest::default()
        })
        .collect();
    // Each way: the keys a page gives, and its encoded answer.
    type Answer = fn(&Store, &RangeRequest) -> (usize, Vec<u8>);
    let ways: [(&str, Answer); 2] = [
        ("decoded and encoded", |store, page| {
            let answer = apply::range(store, page).unwrap();
            (answer.kvs.len(), answer.encode_to_vec())
        }),
        ("spliced", |store, page| {
            let answer = apply::range_reply(store, page).unwrap();
            (answer.kvs.len(), answer.encode_to_vec())
        }),
    ];
    for (way, answer) in ways {
        let name = format!("10k keys in pages of 500, sealed, {way}");
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut listed = 0;
                for page in &pages {
                    let (keys, wire) = answer(&store, page);
                    listed += keys;
                    black_box(wire);
                }
                assert_eq!(listed, 10_000);
            })
        });
    }
    group.finish();
}

fn key_index(c: &mut Criterion) {
    let mut group = c.benchmark_group("key index");
    let mut index = TreeIndex::new();
    for i in 0..100_000i64 {
        index.put(
            format!("key{i:08}").as_bytes(),
            Revision::new(i + 2, 0),
            i + 1,
        );
    }
    group.throughput(Throughput::Elements(1));
    let mut i = 0i64;
    group.bench_function("get of 100k keys", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            black_box(index.get(format!("key{i:08}").as_bytes(), 0))
        })
    });
    let mut rev = 200_000i64;
    group.bench_function("put (new revision of an existing key)", |b| {
        b.iter(|| {
            rev += 1;
            black_box(index.put(
                format!("key{:08}", rev % 100_000).as_bytes(),
                Revision::new(rev, 0),
                rev - 1,
            ));
        })
    });
    group.finish();
}

fn sealing(c: &mut Criterion) {
    let mut group = c.benchmark_group("sealing");
    let ring = KeyRing::new(1, DataKey::generate().unwrap());
    let value = vec![b'v'; 256];
    let sealed = ring.seal("kv", b"0000000000000002", &value).unwrap();
    group.throughput(Throughput::Bytes(256));
    group.bench_function("seal 256 B", |b| {
        b.iter(|| black_box(ring.seal("kv", b"0000000000000002", &value).unwrap()))
    });
    group.bench_function("open 256 B", |b| {
        b.iter(|| black_box(ring.open("kv", b"0000000000000002", &sealed).unwrap()))
    });
    group.finish();
}

fn raft_log(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft log");
    for batch in [1u64, 64] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("append {batch} entries of 300 B"), |b| {
            b.iter_batched(
                || {
                    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
                    let dir = tempfile::tempdir().unwrap();
                    (RaftStorage::open(engine, dir.path()).unwrap(), dir)
                },
                |(log, dir)| {
                    let entries: Vec<Entry> = (1..=batch)
                        .map(|index| Entry {
                            index,
                            term: 1,
                            data: vec![b'd'; 300].into(),
                            ..Entry::default()
                        })
                        .collect();
                    log.append(&entries, None, false).unwrap();
                    // Dropped outside the timing: the log, then its directory.
                    (log, dir)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, mvcc, list, key_index, sealing, raft_log);
criterion_main!(benches);
