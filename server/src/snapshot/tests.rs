//! The snapshot file: round trips sealed and plain, what etcd's tools can
//! read of it, wrong keys, every kind of damage, and the earlier format.

use super::*;
use crate::mvcc::Revision;

/// State records as `Machine::snapshot_data` writes them, kv out of order
/// to check the file sorts them.
fn state() -> (Vec<u8>, Vec<u8>) {
    let kv: Vec<(Vec<u8>, Vec<u8>)> = [3i64, 2, 4]
        .iter()
        .map(|r| {
            (
                Revision::new(*r, 0).record_key(false),
                format!("value-{r}").into_bytes(),
            )
        })
        .collect();
    let others = [
        (
            "lease",
            b"\x00\x00\x00\x00\x00\x00\x00\x07".to_vec(),
            b"\x08\x07".to_vec(),
        ),
        (
            "meta",
            b"applied_index".to_vec(),
            9u64.to_be_bytes().to_vec(),
        ),
        ("auth", b"state".to_vec(), b"\x08\x01".to_vec()),
    ];
    let (mut data, mut want) = (Vec::new(), Vec::new());
    for (k, v) in &kv {
        record("kv", k, v, &mut data);
    }
    let mut sorted = kv.clone();
    sorted.sort();
    for (k, v) in &sorted {
        record("kv", k, v, &mut want);
    }
    for (cf, k, v) in &others {
        record(cf, k, v, &mut data);
        record(cf, k, v, &mut want);
    }
    (data, want)
}

#[test]
fn round_trip_sealed_and_plain() {
    let master = MasterKey::from_bytes([7; 32]);
    let (data, want) = state();
    let file = encode_file(42, &data, Some(&master)).unwrap();
    // etcdctl's check of a snapshot stream.
    assert_eq!(file.len() % 512, 32);
    let decoded = decode_file(&file, Some(&master)).unwrap();
    assert_eq!((decoded.index, decoded.other_keys), (42, 3));
    assert_eq!(decoded.data, want);
    // No value in the clear.
    assert!(!file.windows(7).any(|w| w == b"value-3"));
    let plain = encode_file(42, &data, None).unwrap();
    let decoded = decode_file(&plain, None).unwrap();
    assert_eq!((decoded.index, decoded.other_keys), (42, 2));
    assert_eq!(decoded.data, want);
}

#[test]
fn etcd_tools_see_the_revisions() {
    let master = MasterKey::from_bytes([7; 32]);
    let file = encode_file(42, &state().0, Some(&master)).unwrap();
    let db = Db::open(&file[..file.len() - DIGEST_LEN]).unwrap();
    let mut revisions = Vec::new();
    db.bucket(b"key")
        .unwrap()
        .unwrap()
        .for_each::<cairn_bbolt::Error>(|k, _| {
            revisions.push(Revision::from_record_key(k).unwrap().0.main);
            Ok(())
        })
        .unwrap();
    assert_eq!(revisions, [2, 3, 4]);
}

#[test]
fn wrong_or_missing_key_is_refused() {
    let master = MasterKey::from_bytes([7; 32]);
    let file = encode_file(1, &state().0, Some(&master)).unwrap();
    let other = MasterKey::from_bytes([8; 32]);
    assert!(matches!(
        decode_file(&file, Some(&other)),
        Err(Error::WrongKey)
    ));
    assert!(matches!(decode_file(&file, None), Err(Error::WrongKey)));
}

#[test]
fn every_flip_and_cut_is_refused() {
    let master = MasterKey::from_bytes([7; 32]);
    let file = encode_file(1, &state().0, Some(&master)).unwrap();
    for at in 0..file.len() {
        let mut bad = file.clone();
        bad[at] ^= 0x10;
        assert!(decode_file(&bad, Some(&master)).is_err(), "flip at {at}");
    }
    for cut in (0..file.len()).step_by(13) {
        assert!(
            decode_file(&file[..cut], Some(&master)).is_err(),
            "cut {cut}"
        );
    }
    // A sealed value changed with the digest made to match: its seal
    // fails.
    let body = &file[..file.len() - DIGEST_LEN];
    let db = Db::open(body).unwrap();
    let Some(Item::Value(v)) = db
        .bucket(b"key")
        .unwrap()
        .unwrap()
        .get(&Revision::new(3, 0).record_key(false))
        .unwrap()
    else {
        panic!("no record 3")
    };
    let at = v.as_ptr() as usize - body.as_ptr() as usize + v.len() - 1;
    let mut bad = body.to_vec();
    bad[at] ^= 1;
    let digest = ring::digest::digest(&ring::digest::SHA256, &bad);
    bad.extend_from_slice(digest.as_ref());
    let err = decode_file(&bad, Some(&master)).unwrap_err();
    assert!(err.to_string().contains("authentication"), "{err}");
    assert!(decode_file(b"nope", None).is_err());
}

/// A file of the earlier format, as it was written.
fn legacy(index: u64, state: &[u8]) -> Vec<u8> {
    let body = (LEGACY_HEADER + state.len()).div_ceil(512) * 512;
    let mut out = Vec::new();
    out.extend_from_slice(LEGACY_MAGIC);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(&(state.len() as u64).to_be_bytes());
    out.extend_from_slice(state);
    out.resize(body, 0);
    let digest = ring::digest::digest(&ring::digest::SHA256, &out);
    out.extend_from_slice(digest.as_ref());
    out
}

#[test]
fn the_earlier_format_still_reads() {
    let master = MasterKey::from_bytes([7; 32]);
    let (data, _) = state();
    let plain = decode_file(&legacy(5, &data), None).unwrap();
    assert_eq!((plain.index, plain.data.as_slice()), (5, data.as_slice()));
    let (ring, wrapped) = KeyRing::fresh_wrapped(&master, FILE_KEY_ID).unwrap();
    let sealed = ring.seal(STATE_CF, &5u64.to_be_bytes(), &data).unwrap();
    let state = [LEGACY_SEALED, &wrapped, &sealed].concat();
    let decoded = decode_file(&legacy(5, &state), Some(&master)).unwrap();
    assert_eq!(decoded.data, data);
    assert!(matches!(
        decode_file(&legacy(5, &state), None),
        Err(Error::WrongKey)
    ));
}
