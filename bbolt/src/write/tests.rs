//! The writer's files read back by the reader, and the reader on damaged
//! and truncated files (every byte flipped, every length cut: an error or
//! a successful read, never a panic).

use std::io::Cursor;

use super::*;
use crate::{Db, Item};

type Tree = Vec<(Vec<u8>, Value)>;

/// A bucket's expected contents.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Plain(Vec<u8>),
    Bucket(Tree),
}

fn write_tree<W: Write + Seek>(w: &mut Writer<W>, tree: &Tree) -> BucketRoot {
    let mut roots = Vec::new();
    for (_, v) in tree {
        roots.push(match v {
            Value::Bucket(t) => Some(write_tree(w, t)),
            Value::Plain(_) => None,
        });
    }
    let mut b = w.bucket();
    for ((k, v), root) in tree.iter().zip(roots) {
        match (v, root) {
            (Value::Plain(v), _) => b.put_value(k, v).unwrap(),
            (_, Some(root)) => b.put(k, Entry::Bucket(root)).unwrap(),
            _ => unreachable!(),
        }
    }
    b.finish().unwrap()
}

fn file_of(tree: &Tree) -> Vec<u8> {
    let mut w = Writer::new(Cursor::new(Vec::new())).unwrap();
    let root = write_tree(&mut w, tree);
    w.finish(root).unwrap().into_inner()
}

fn read_bucket(b: crate::Bucket<'_>) -> Result<Tree, Error> {
    let mut out = Vec::new();
    b.for_each::<Error>(|k, item| {
        let v = match item {
            Item::Value(v) => Value::Plain(v.to_vec()),
            Item::Bucket(b) => Value::Bucket(read_bucket(b)?),
        };
        out.push((k.to_vec(), v));
        Ok(())
    })?;
    Ok(out)
}

fn read_file(file: &[u8]) -> Result<Tree, Error> {
    read_bucket(Db::open(file)?.root())
}

/// etcd-like: a `key` bucket of `n` revision-like keys with values of
/// varied sizes (some over a page), `meta`, an empty bucket, a nested one.
fn sample(n: u32) -> Tree {
    let keys = (0..n)
        .map(|i| {
            let size = match i % 97 {
                0 => 9000,
                1 => 4070,
                _ => (i % 300) as usize,
            };
            (
                [&u64::from(i).to_be_bytes()[..], b"_", &[0u8; 8]].concat(),
                Value::Plain(vec![(i % 251) as u8; size]),
            )
        })
        .collect();
    vec![
        (b"empty".to_vec(), Value::Bucket(vec![])),
        (b"key".to_vec(), Value::Bucket(keys)),
        (
            b"meta".to_vec(),
            Value::Bucket(vec![
                (b"a".to_vec(), Value::Plain(vec![])),
                (b"b".to_vec(), Value::Plain(b"x".to_vec())),
                (
                    b"nested".to_vec(),
                    Value::Bucket(vec![(b"k".to_vec(), Value::Plain(b"v".to_vec()))]),
                ),
            ]),
        ),
    ]
}

#[test]
fn round_trip_small_and_large() {
    for n in [0, 1, 2, 300, 5000] {
        let tree = sample(n);
        let file = file_of(&tree);
        assert_eq!(file.len() % PAGE_SIZE, 0);
        let db = Db::open(&file).unwrap();
        assert_eq!(db.pages() as usize * PAGE_SIZE, file.len());
        assert_eq!(db.txid(), 2);
        assert!(db.freelist().is_some());
        assert_eq!(read_file(&file).unwrap(), tree, "n = {n}");
        // Descent finds every key of a multi-level bucket.
        let key = db.bucket(b"key").unwrap().unwrap();
        for i in (0..n).step_by(7) {
            let k = [&u64::from(i).to_be_bytes()[..], b"_", &[0u8; 8]].concat();
            assert!(matches!(key.get(&k).unwrap(), Some(Item::Value(_))));
        }
        assert!(key.get(b"zzz").unwrap().is_none());
        assert!(db.bucket(b"nope").unwrap().is_none());
        // A digest after the pages (etcd's snapshot) is ignored.
        let mut with_trailer = file.clone();
        with_trailer.extend_from_slice(&[7u8; 32]);
        assert_eq!(read_file(&with_trailer).unwrap(), tree);
    }
}

#[test]
fn refuses_bad_input() {
    let mut w = Writer::new(Cursor::new(Vec::new())).unwrap();
    let mut b = w.bucket();
    b.put_value(b"b", b"1").unwrap();
    assert!(matches!(b.put_value(b"a", b"1"), Err(Error::Input(_))));
    assert!(matches!(b.put_value(b"b", b"1"), Err(Error::Input(_))));
    assert!(matches!(b.put_value(b"", b"1"), Err(Error::Input(_))));
    assert!(matches!(
        b.put_value(&vec![1u8; MAX_KEY + 1], b"1"),
        Err(Error::Input(_))
    ));
}

#[test]
fn inline_buckets_are_read() {
    // bbolt keeps small buckets inline in their parent's value: header
    // with root 0, then a leaf page of their own.
    let mut inline = vec![0u8; BUCKET_HEADER];
    let mut page = vec![0u8; PAGE_HEADER + 2 * ELEMENT];
    header(&mut page, 0, LEAF, 2, 0);
    for (i, (k, v)) in [(&b"x"[..], &b"1"[..]), (b"yy", b"22")].iter().enumerate() {
        let e = PAGE_HEADER + i * ELEMENT;
        let pos = (page.len() - e) as u32;
        page[e + 4..e + 8].copy_from_slice(&pos.to_le_bytes());
        page[e + 8..e + 12].copy_from_slice(&(k.len() as u32).to_le_bytes());
        page[e + 12..e + 16].copy_from_slice(&(v.len() as u32).to_le_bytes());
        page.extend_from_slice(k);
        page.extend_from_slice(v);
    }
    inline.extend_from_slice(&page);
    let mut w = Writer::new(Cursor::new(Vec::new())).unwrap();
    let mut b = w.bucket();
    b.leaf.size += ELEMENT + 6 + inline.len();
    b.leaf
        .entries
        .push((b"inline".to_vec(), inline, u64::from(BUCKET_LEAF)));
    let root = b.finish().unwrap();
    let file = w.finish(root).unwrap().into_inner();
    assert_eq!(
        read_file(&file).unwrap(),
        vec![(
            b"inline".to_vec(),
            Value::Bucket(vec![
                (b"x".to_vec(), Value::Plain(b"1".to_vec())),
                (b"yy".to_vec(), Value::Plain(b"22".to_vec())),
            ])
        )]
    );
}

#[test]
fn a_short_bucket_header_is_damage() {
    for len in [0, 8, 15] {
        let mut w = Writer::new(Cursor::new(Vec::new())).unwrap();
        let mut b = w.bucket();
        b.leaf.size += ELEMENT + 1 + len;
        b.leaf
            .entries
            .push((b"b".to_vec(), vec![0u8; len], u64::from(BUCKET_LEAF)));
        let root = b.finish().unwrap();
        let file = w.finish(root).unwrap().into_inner();
        assert!(
            matches!(read_file(&file), Err(Error::Damaged { .. })),
            "{len}"
        );
    }
}

#[test]
fn not_bbolt_truncated_and_damaged() {
    assert!(matches!(Db::open(b""), Err(Error::NotBbolt(_))));
    assert!(matches!(Db::open(&[0u8; 9000]), Err(Error::NotBbolt(_))));
    assert!(matches!(
        Db::open(b"CAIRNSNAP1 and some more bytes to make it long enough: padding padding padding padding"),
        Err(Error::NotBbolt(_))
    ));
    let file = file_of(&sample(300));
    // Cut anywhere past the metas: truncated.
    for cut in [2 * PAGE_SIZE, file.len() - PAGE_SIZE, file.len() - 1] {
        assert!(
            matches!(Db::open(&file[..cut]), Err(Error::Truncated { .. })),
            "cut at {cut}"
        );
    }
    // Both metas damaged: refused; one damaged: the other is used.
    let mut both = file.clone();
    both[PAGE_HEADER + 20] ^= 1;
    both[PAGE_SIZE + PAGE_HEADER + 20] ^= 1;
    assert!(matches!(Db::open(&both), Err(Error::Damaged { .. })));
    let mut one = file.clone();
    one[PAGE_SIZE + PAGE_HEADER + 20] ^= 1;
    assert_eq!(Db::open(&one).unwrap().txid(), 1);
    // A damaged page header: found when read.
    let db = Db::open(&file).unwrap();
    let mut bad = file.clone();
    let last_data_page = (db.pages() as usize - 2) * PAGE_SIZE;
    bad[last_data_page + 8] = 0x40;
    assert!(matches!(read_file(&bad), Err(Error::Damaged { .. })));
}

#[test]
fn every_flip_and_every_cut_is_an_error_or_a_read_never_a_panic() {
    let file = file_of(&sample(40));
    for at in 0..file.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = file.clone();
            bad[at] ^= bit;
            let _ = read_file(&bad);
        }
        // Bytes set to large and small values (lengths and offsets).
        for value in [0xff, 0x08, 0x00] {
            let mut bad = file.clone();
            bad[at] = value;
            let _ = read_file(&bad);
        }
    }
    for cut in 0..file.len() {
        assert!(read_file(&file[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn random_mutations_are_an_error_or_a_read_never_a_panic() {
    // A fixed-seed generator (deterministic): 1 to 4 bytes changed at a
    // time, to values that make lengths, offsets and page ids small or big.
    let file = file_of(&sample(300));
    let rounds: u64 = std::env::var("BBOLT_FUZZ_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..rounds {
        let mut bad = file.clone();
        for _ in 0..=next() % 4 {
            let at = (next() % bad.len() as u64) as usize;
            bad[at] = match next() % 4 {
                0 => 0,
                1 => 0xff,
                2 => (next() % 32) as u8,
                _ => bad[at] ^ (1 << (next() % 8)),
            };
        }
        let _ = read_file(&bad);
    }
}
