//! Server-chosen lease ids (etcd's `pkg/idutil` request-id generator).
//!
//! An id is laid out as | member id: 2 bytes | timestamp: 5 bytes | counter: 1 byte |.
//! The low 16 bits of the member id keep members from colliding; the
//! millisecond timestamp taken at start-up keeps a restarted member from
//! reusing the ids of its previous run; each id adds one to the 6-byte
//! suffix (the counter may carry into the timestamp, on purpose). Lease ids
//! are masked to a positive `i64`, as etcd does.
//!
//! Ids are chosen before a grant is applied, so that applying stays
//! deterministic: with raft, the chosen id travels inside the proposal.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the timestamp part.
const TS_BITS: u32 = 5 * 8;
/// Bits of the counter part.
const COUNT_BITS: u32 = 8;
/// Bits below the member-id prefix.
const SUFFIX_BITS: u32 = TS_BITS + COUNT_BITS;

/// The low `n` bits of `x`.
fn low_bits(x: u64, n: u32) -> u64 {
    x & (u64::MAX >> (64 - n))
}

/// Generates unique ids for one member.
#[derive(Debug)]
pub struct IdGenerator {
    /// The member id's low 16 bits, shifted into the top two bytes: the part
    /// that differs between members.
    prefix: u64,
    /// Timestamp and counter; incremented for every id. Atomic so that
    /// concurrent grants never share an id without taking a lock.
    suffix: AtomicU64,
}

impl IdGenerator {
    /// A generator for `member_id`, started at `unix_millis` (milliseconds
    /// since the Unix epoch, from the wall clock at start-up).
    pub fn new(member_id: u64, unix_millis: u64) -> Self {
        let prefix = (member_id & 0xffff) << SUFFIX_BITS;
        let suffix = low_bits(unix_millis, TS_BITS) << COUNT_BITS;
        Self {
            prefix,
            suffix: AtomicU64::new(suffix),
        }
    }

    /// A generator for `member_id` started now.
    pub fn now(member_id: u64) -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, crate::duration::millis);
        Self::new(member_id, millis)
    }

    /// The next id.
    pub fn next(&self) -> u64 {
        let suffix = self.suffix.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        self.prefix | low_bits(suffix, SUFFIX_BITS)
    }

    /// The next id usable as a lease id: positive (etcd masks the sign bit
    /// off, and skips 0, which means "no lease").
    pub fn next_lease_id(&self) -> i64 {
        loop {
            let id = (self.next() & (i64::MAX as u64)) as i64;
            if id != 0 {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_etcd() {
        // member 0x8e9e05c52164694d -> prefix 0x694d; time 0x0123456789ab ms
        // keeps its low 5 bytes (0x23456789ab), shifted over the counter byte.
        let g = IdGenerator::new(0x8e9e_05c5_2164_694d, 0x0123_4567_89ab);
        assert_eq!(g.next(), 0x694d_2345_6789_ab01);
        assert_eq!(g.next(), 0x694d_2345_6789_ab02);
    }

    #[test]
    fn counter_carries_into_timestamp_and_wraps_inside_suffix() {
        let g = IdGenerator::new(0x1, 0xff_ffff_ffff);
        // suffix = 0xffffffffff00; +0xff reaches 0xffffffffffff, +1 wraps to 0.
        for _ in 0..0xff {
            g.next();
        }
        assert_eq!(g.next(), 0x0001_0000_0000_0000);
        let g = IdGenerator::new(0x1, 0x1);
        for _ in 0..0xff {
            g.next();
        }
        assert_eq!(g.next(), 0x0001_0000_0000_0200);
    }

    #[test]
    fn lease_ids_are_positive() {
        let g = IdGenerator::new(0xffff, 0);
        let id = g.next_lease_id();
        assert!(id > 0);
        assert_eq!(id, 0x7fff_0000_0000_0001);
    }
}
