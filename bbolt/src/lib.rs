//! bbolt database files, read and written without Go: the format of etcd's
//! backend (`member/snap/db`) and of `etcdctl snapshot save` files. Knows
//! nothing of etcd: buckets of sorted keys and values, nested buckets.
//!
//! The layout (bbolt 1.3, little-endian throughout):
//! - the file is a sequence of pages of `page_size` bytes (4096 here);
//!   every page starts with a 16-byte header: page id (u64), flags (u16:
//!   branch 0x01, leaf 0x02, meta 0x04, freelist 0x10), element count
//!   (u16), overflow (u32: how many more pages this one spans);
//! - pages 0 and 1 are meta pages (after the header: magic `0xED0CDAED`,
//!   version 2, page size, flags, the root bucket (root page id, sequence),
//!   the freelist page id (`u64::MAX`: none), the high-water mark (pages in
//!   use), the transaction id, and the FNV-1a 64 checksum of the meta before
//!   it). bbolt writes them alternately; the valid one with the higher
//!   transaction id is current;
//! - a branch page holds 16-byte elements (key offset from the element,
//!   key size, child page id), a leaf page 16-byte elements (flags: 0x01 for
//!   a nested bucket; key offset from the element; key size; value size),
//!   then the keys and values; a page bigger than `page_size` spans
//!   `overflow` following pages;
//! - a nested bucket's value is its root page id and sequence (16 bytes);
//!   root 0 means an inline bucket, whose leaf page follows in the value.
//!
//! [`Db`] reads a file held in memory, checking every offset and length
//! against the file (a damaged or truncated file is an [`Error`], never a
//! panic or an unbounded allocation). [`Writer`] writes a fresh, compact
//! file that bbolt opens.

mod read;
mod write;

pub use read::{Bucket, Db, Item};
pub use write::{BucketRoot, Entry, Writer};

/// The page size of files written here (bbolt's default on Linux).
pub const PAGE_SIZE: usize = 4096;

/// `magic` of a meta page.
const MAGIC: u32 = 0xED0C_DAED;
/// The only format version bbolt writes.
const VERSION: u32 = 2;
/// Page header length: id, flags, count, overflow.
const PAGE_HEADER: usize = 16;
/// A branch or leaf element's length.
const ELEMENT: usize = 16;
/// A nested bucket's header inside its parent's leaf value.
const BUCKET_HEADER: usize = 16;
/// Meta fields before the checksum (what the checksum covers).
const META_CHECKED: usize = 56;
/// Meta length, checksum included.
const META_LEN: usize = META_CHECKED + 8;
/// `freelist` of a meta page when the freelist is not stored.
const NO_FREELIST: u64 = u64::MAX;

/// Page flags.
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const FREELIST: u16 = 0x10;
/// Leaf element flag of a nested bucket.
const BUCKET_LEAF: u32 = 0x01;

/// Errors reading or writing a bbolt file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither meta page is a bbolt meta page.
    #[error("not a bbolt database file: {0}")]
    NotBbolt(&'static str),
    /// The file ends before a page it needs.
    #[error("truncated bbolt file: {need} bytes needed, the file has {have}")]
    Truncated {
        /// Bytes the file should have (at least).
        need: u64,
        /// Bytes it has.
        have: u64,
    },
    /// A page or element is inconsistent (a damaged file).
    #[error("damaged bbolt file: page {page}: {reason}")]
    Damaged {
        /// The page where the damage shows.
        page: u64,
        /// What is wrong.
        reason: String,
    },
    /// The writer was given keys out of order, a duplicate or an empty key.
    #[error("bbolt writer: {0}")]
    Input(String),
    /// Writing the file failed.
    #[error("writing the bbolt file: {0}")]
    Io(#[from] std::io::Error),
}

/// FNV-1a 64 of a meta page's fields (bbolt's meta checksum).
fn meta_checksum(fields: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(fields);
    hasher.finish()
}

/// Little-endian u16/u32/u64 at `at` of `bytes`, if it is there.
fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fnv1a_64_known_values() {
        // The FNV-1a 64 test vectors.
        assert_eq!(super::meta_checksum(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::meta_checksum(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::meta_checksum(b"foobar"), 0x85944171f73967e8);
    }
}
