//! Key generation, as etcd's benchmark does it.
//!
//! etcd writes the key *index* with Go's `binary.PutVarint` (zig-zag, then
//! little-endian base-128) into a zeroed buffer of `--key-size` bytes. The
//! put, txn-put and txn-mixed workloads reuse ONE buffer for the whole run,
//! so a short varint leaves the tail of a longer, earlier one in place (after
//! index 64, written as `80 01`, index 0 is the key `00 01 00 ...`, not
//! `00 00 00 ...`). [`KeyGen`] keeps that buffer so the keys sent are the
//! same bytes etcd's tool sends; the watch workload makes a fresh buffer per
//! key ([`fresh_key`]), as etcd does there.

use crate::Error;

/// The longest varint of a 64-bit value (Go's `binary.MaxVarintLen64`).
pub const MAX_VARINT_LEN: usize = 10;

/// Go's `binary.PutVarint`: writes `value` zig-zag encoded as a base-128
/// varint at the start of `buf` and returns how many bytes it wrote, or
/// `None` when `buf` is too short (Go panics there).
pub fn put_varint(buf: &mut [u8], value: i64) -> Option<usize> {
    // Zig-zag: 0, -1, 1, -2, 2 ... become 0, 1, 2, 3, 4 ...
    let shifted = (value as u64) << 1;
    let zigzag = if value < 0 { !shifted } else { shifted };
    put_uvarint(buf, zigzag)
}

/// Go's `binary.PutUvarint`: seven bits per byte, least significant group
/// first, the high bit set on every byte but the last.
pub fn put_uvarint(buf: &mut [u8], mut value: u64) -> Option<usize> {
    let mut written = 0;
    while value >= 0x80 {
        *buf.get_mut(written)? = (value as u8) | 0x80;
        value >>= 7;
        written += 1;
    }
    *buf.get_mut(written)? = value as u8;
    Some(written + 1)
}

/// How many bytes [`put_varint`] needs for `value`.
pub fn varint_len(value: i64) -> usize {
    let mut scratch = [0u8; MAX_VARINT_LEN];
    put_varint(&mut scratch, value).unwrap_or(MAX_VARINT_LEN)
}

/// Refuses a `--key-size` that cannot hold the varint of the largest key
/// index (`key_space_size - 1`); etcd's tool would panic mid-run instead.
pub fn check_key_size(key_size: usize, key_space_size: usize) -> Result<(), Error> {
    if key_space_size == 0 {
        return Err(Error::new(format!(
            "expected positive --key-space-size, got ({key_space_size})"
        )));
    }
    let largest = i64::try_from(key_space_size - 1).unwrap_or(i64::MAX);
    let needed = varint_len(largest);
    if key_size < needed {
        return Err(Error::new(format!(
            "--key-size {key_size} cannot hold key index {largest} ({needed} bytes as a varint)"
        )));
    }
    Ok(())
}

/// The reused key buffer of etcd's put, txn-put and txn-mixed workloads.
#[derive(Debug, Clone)]
pub struct KeyGen {
    buf: Vec<u8>,
}

impl KeyGen {
    /// A generator of `key_size`-byte keys, its buffer zeroed.
    pub fn new(key_size: usize) -> KeyGen {
        KeyGen {
            buf: vec![0; key_size],
        }
    }

    /// Writes `index` into the shared buffer and returns a copy of the whole
    /// buffer (the key). Fails if the varint does not fit (see
    /// [`check_key_size`], which callers run first).
    pub fn key(&mut self, index: i64) -> Result<Vec<u8>, Error> {
        match put_varint(&mut self.buf, index) {
            Some(_) => Ok(self.buf.clone()),
            None => Err(Error::new(format!(
                "key index {index} does not fit in a {}-byte key",
                self.buf.len()
            ))),
        }
    }
}

/// A key from a fresh zeroed buffer (etcd's watch workload).
pub fn fresh_key(key_size: usize, index: i64) -> Result<Vec<u8>, Error> {
    KeyGen::new(key_size).key(index)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn varint(value: i64) -> Vec<u8> {
        let mut buf = [0u8; MAX_VARINT_LEN];
        let n = put_varint(&mut buf, value).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn put_varint_matches_hand_computed_bytes() {
        // zig-zag(v) = 2v for v >= 0, -2v-1 for v < 0; then 7 bits a byte,
        // low group first, continuation bit 0x80.
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(1), [0x02]);
        assert_eq!(varint(-1), [0x01]);
        assert_eq!(varint(2), [0x04]);
        assert_eq!(varint(-2), [0x03]);
        assert_eq!(varint(63), [0x7e]); // 126
        assert_eq!(varint(-64), [0x7f]); // 127
        assert_eq!(varint(64), [0x80, 0x01]); // 128 = 0 + 1*128
        assert_eq!(varint(-65), [0x81, 0x01]); // 129
        assert_eq!(varint(100), [0xc8, 0x01]); // 200 = 72 + 1*128
        assert_eq!(varint(8191), [0xfe, 0x7f]); // 16382 = 126 + 127*128
        assert_eq!(varint(8192), [0x80, 0x80, 0x01]); // 16384 = 128^2
                                                      // 200000 = 64 + 26*128 + 12*128^2
        assert_eq!(varint(100_000), [0xc0, 0x9a, 0x0c]);
        // 2^63-1 -> 2^64-2: 0xfe, then eight 0xff, then 0x01.
        let mut max = vec![0xfe];
        max.extend([0xff; 8]);
        max.push(0x01);
        assert_eq!(varint(i64::MAX), max);
        // -2^63 -> 2^64-1: nine 0xff, then 0x01.
        let mut min = vec![0xff; 9];
        min.push(0x01);
        assert_eq!(varint(i64::MIN), min);
    }

    #[test]
    fn uvarint_and_lengths() {
        let mut buf = [0u8; MAX_VARINT_LEN];
        assert_eq!(put_uvarint(&mut buf, 300), Some(2));
        assert_eq!(&buf[..2], [0xac, 0x02]); // 300 = 44 + 2*128
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(63), 1);
        assert_eq!(varint_len(64), 2);
        assert_eq!(varint_len(99_999), 3);
        assert_eq!(varint_len(i64::MAX), 10);
    }

    #[test]
    fn too_short_buffer_is_refused() {
        let mut buf = [0u8; 1];
        assert_eq!(put_varint(&mut buf, 64), None);
        assert_eq!(put_varint(&mut [], 0), None);
        assert!(KeyGen::new(1).key(64).is_err());
        assert!(check_key_size(2, 8192).is_ok()); // largest index 8191 needs 2
        assert!(check_key_size(2, 8193).is_err()); // largest 8192 needs 3
        assert!(check_key_size(3, 8193).is_ok());
        assert!(check_key_size(0, 1).is_err());
        let err = check_key_size(8, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected positive --key-space-size, got (0)"
        );
    }

    #[test]
    fn keys_are_padded_to_key_size() {
        assert_eq!(fresh_key(8, 0).unwrap(), [0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(fresh_key(8, 5).unwrap(), [10, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(fresh_key(4, 64).unwrap(), [0x80, 0x01, 0, 0]);
        assert_eq!(fresh_key(3, 100_000).unwrap(), [0xc0, 0x9a, 0x0c]);
        assert_eq!(fresh_key(32, 1).unwrap().len(), 32);
    }

    #[test]
    fn shared_buffer_keeps_the_tail_of_longer_keys() {
        // etcd's put with --sequential-keys --key-space-size 100: index i%100.
        let mut keys = KeyGen::new(4);
        assert_eq!(keys.key(0).unwrap(), [0x00, 0, 0, 0]);
        assert_eq!(keys.key(63).unwrap(), [0x7e, 0, 0, 0]);
        assert_eq!(keys.key(64).unwrap(), [0x80, 0x01, 0, 0]);
        assert_eq!(keys.key(99).unwrap(), [0xc6, 0x01, 0, 0]); // 198
                                                               // Wrapped back to 0: one byte written, the 0x01 stays.
        assert_eq!(keys.key(0).unwrap(), [0x00, 0x01, 0, 0]);
        assert_eq!(keys.key(1).unwrap(), [0x02, 0x01, 0, 0]);
        // A three-byte varint then leaves its third byte behind too.
        assert_eq!(keys.key(8192).unwrap(), [0x80, 0x80, 0x01, 0]);
        assert_eq!(keys.key(64).unwrap(), [0x80, 0x01, 0x01, 0]);
    }
}
