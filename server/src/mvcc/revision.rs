//! Revisions and their on-disk encoding.

/// A point in the store's history.
///
/// Every write transaction takes one `main` revision; the changes inside it are
/// numbered by `sub` (0, 1, 2, ...) in the order they were made. Ordering is
/// lexicographic on `(main, sub)`, which is also the byte order of
/// [`Revision::to_bytes`], so records sort by revision in the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The store-wide revision of the transaction.
    pub main: i64,
    /// The position of the change inside its transaction.
    pub sub: i64,
}

/// Length of an encoded revision: 8 bytes main, `_`, 8 bytes sub (etcd's layout).
pub const REV_BYTES_LEN: usize = 17;

/// Suffix byte appended to the record key of a deletion (a tombstone).
const TOMBSTONE_MARK: u8 = b't';

impl Revision {
    /// A revision.
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// Big-endian encoding: byte order equals revision order.
    pub fn to_bytes(self) -> [u8; REV_BYTES_LEN] {
        let mut out = [0u8; REV_BYTES_LEN];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8] = b'_';
        out[9..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    /// The record key of this revision: the encoding, plus a mark for tombstones.
    pub fn record_key(self, tombstone: bool) -> Vec<u8> {
        let mut key = self.to_bytes().to_vec();
        if tombstone {
            key.push(TOMBSTONE_MARK);
        }
        key
    }

    /// Decodes a record key into its revision and whether it is a tombstone.
    pub fn from_record_key(key: &[u8]) -> Option<(Self, bool)> {
        let tombstone = match key.len() {
            REV_BYTES_LEN => false,
            n if n == REV_BYTES_LEN + 1 && key[REV_BYTES_LEN] == TOMBSTONE_MARK => true,
            _ => return None,
        };
        if key[8] != b'_' {
            return None;
        }
        let main = i64::from_be_bytes(key[..8].try_into().ok()?);
        let sub = i64::from_be_bytes(key[9..REV_BYTES_LEN].try_into().ok()?);
        Some((Self { main, sub }, tombstone))
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.main, self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_table() {
        for (rev, tomb) in [
            (Revision::new(1, 0), false),
            (Revision::new(5, 3), true),
            (Revision::new(i64::MAX, i64::MAX), false),
        ] {
            let key = rev.record_key(tomb);
            assert_eq!(Revision::from_record_key(&key), Some((rev, tomb)));
        }
        assert_eq!(Revision::from_record_key(b"short"), None);
        let mut bad = Revision::new(1, 1).record_key(false);
        bad.push(b'x');
        assert_eq!(Revision::from_record_key(&bad), None);
    }

    proptest! {
        #[test]
        fn byte_order_is_revision_order(a in 0i64..i64::MAX, b in 0i64..1000, c in 0i64..i64::MAX, d in 0i64..1000) {
            let (x, y) = (Revision::new(a, b), Revision::new(c, d));
            prop_assert_eq!(x.cmp(&y), x.to_bytes().cmp(&y.to_bytes()));
        }
    }
}
