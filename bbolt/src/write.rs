//! Writing a fresh, compact bbolt file, one bucket at a time, streaming:
//! a bucket's keys arrive in order and its leaf pages are written as they
//! fill; its branch levels when it is finished. Nested buckets are written
//! first and given to their parent as [`Entry::Bucket`].
//!
//! The file: pages 0 and 1 the metas (written last), then every bucket's
//! pages in the order they were finished, then an empty freelist page.
//! Pages are filled up to the page size; a single entry larger than a page
//! gets a page with overflow pages.

use std::io::{Seek, SeekFrom, Write};

use crate::{
    meta_checksum, Error, BRANCH, BUCKET_HEADER, BUCKET_LEAF, ELEMENT, FREELIST, LEAF, MAGIC, META,
    META_CHECKED, PAGE_HEADER, PAGE_SIZE, VERSION,
};

/// bbolt's limits on a key and a value.
const MAX_KEY: usize = 32768;
const MAX_VALUE: usize = (1 << 31) - 2;

/// The transaction id of meta page 0 (meta page 1 has the next one, so it
/// is the current one and meta 0 its identical fallback).
const FIRST_TXID: u64 = 1;

/// A bucket already written: what its parent stores for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketRoot {
    /// Its root page.
    root: u64,
}

/// A value to put in a bucket.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'v> {
    /// A plain value.
    Value(&'v [u8]),
    /// A nested bucket written before.
    Bucket(BucketRoot),
}

/// A new bbolt file being written to `out`.
pub struct Writer<W: Write + Seek> {
    /// Where the pages go, written in page order (so a `BufWriter` over a
    /// file sees one sequential stream until the metas are written).
    out: W,
    /// The next page id (pages 0 and 1 are the metas).
    next: u64,
    /// The page being serialised: one buffer reused for every page.
    page: Vec<u8>,
}

/// The entries of one page being filled: (key, value, leaf flags or child).
struct Node {
    /// (key, value, extra): a leaf's value and element flags, or a
    /// branch's empty value and child page id.
    entries: Vec<(Vec<u8>, Vec<u8>, u64)>,
    /// The page's size so far: header, elements, keys and values.
    size: usize,
}

impl Node {
    fn new() -> Self {
        Node {
            entries: Vec::new(),
            size: PAGE_HEADER,
        }
    }
}

impl<W: Write + Seek> Writer<W> {
    /// Starts a file at the current position of `out` (which should be its
    /// start): room for the two meta pages is left.
    pub fn new(mut out: W) -> Result<Self, Error> {
        out.write_all(&[0u8; 2 * PAGE_SIZE])?;
        Ok(Writer {
            out,
            next: 2,
            page: Vec::new(),
        })
    }

    /// Starts a bucket; put its entries in key order, then
    /// [`BucketWriter::finish`] it.
    pub fn bucket(&mut self) -> BucketWriter<'_, W> {
        BucketWriter {
            writer: self,
            leaf: Node::new(),
            children: Vec::new(),
            last: None,
        }
    }

    /// Writes the freelist page and the two meta pages with `root` as the
    /// root bucket (whose entries are the top-level buckets), and returns
    /// the output, flushed.
    pub fn finish(mut self, root: BucketRoot) -> Result<W, Error> {
        let freelist = self.next;
        self.page.clear();
        self.page.resize(PAGE_SIZE, 0);
        header(&mut self.page, freelist, FREELIST, 0, 0);
        self.out.write_all(&self.page)?;
        self.next += 1;
        self.out.seek(SeekFrom::Start(0))?;
        for id in 0..2u64 {
            let mut page = vec![0u8; PAGE_SIZE];
            header(&mut page, id, META, 0, 0);
            let meta = &mut page[PAGE_HEADER..];
            meta[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            meta[4..8].copy_from_slice(&VERSION.to_le_bytes());
            meta[8..12].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
            // flags (12..16) and the root bucket's sequence (24..32) are 0.
            meta[16..24].copy_from_slice(&root.root.to_le_bytes());
            meta[32..40].copy_from_slice(&freelist.to_le_bytes());
            meta[40..48].copy_from_slice(&self.next.to_le_bytes());
            meta[48..56].copy_from_slice(&(FIRST_TXID + id).to_le_bytes());
            let sum = meta_checksum(&meta[..META_CHECKED]);
            meta[META_CHECKED..META_CHECKED + 8].copy_from_slice(&sum.to_le_bytes());
            self.out.write_all(&page)?;
        }
        self.out
            .seek(SeekFrom::Start(self.next * PAGE_SIZE as u64))?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Writes `node` as the next page(s), of kind `flags`; returns its id.
    fn write_node(&mut self, node: &Node, flags: u16) -> Result<u64, Error> {
        let id = self.next;
        let pages = node.size.div_ceil(PAGE_SIZE).max(1);
        let page = &mut self.page;
        page.clear();
        page.resize(pages * PAGE_SIZE, 0);
        let count = node.entries.len();
        header(page, id, flags, count as u16, (pages - 1) as u32);
        let mut data = PAGE_HEADER + count * ELEMENT;
        for (i, (key, value, extra)) in node.entries.iter().enumerate() {
            let e = PAGE_HEADER + i * ELEMENT;
            let pos = (data - e) as u32;
            if flags == LEAF {
                page[e..e + 4].copy_from_slice(&(*extra as u32).to_le_bytes());
                page[e + 4..e + 8].copy_from_slice(&pos.to_le_bytes());
                page[e + 8..e + 12].copy_from_slice(&(key.len() as u32).to_le_bytes());
                page[e + 12..e + 16].copy_from_slice(&(value.len() as u32).to_le_bytes());
            } else {
                page[e..e + 4].copy_from_slice(&pos.to_le_bytes());
                page[e + 4..e + 8].copy_from_slice(&(key.len() as u32).to_le_bytes());
                page[e + 8..e + 16].copy_from_slice(&extra.to_le_bytes());
            }
            page[data..data + key.len()].copy_from_slice(key);
            data += key.len();
            page[data..data + value.len()].copy_from_slice(value);
            data += value.len();
        }
        self.out.write_all(page)?;
        self.next += pages as u64;
        Ok(id)
    }
}

/// A page header: id, flags, count, overflow.
fn header(page: &mut [u8], id: u64, flags: u16, count: u16, overflow: u32) {
    page[0..8].copy_from_slice(&id.to_le_bytes());
    page[8..10].copy_from_slice(&flags.to_le_bytes());
    page[10..12].copy_from_slice(&count.to_le_bytes());
    page[12..16].copy_from_slice(&overflow.to_le_bytes());
}

/// One bucket being written (see [`Writer::bucket`]).
pub struct BucketWriter<'w, W: Write + Seek> {
    /// The file its pages are written to.
    writer: &'w mut Writer<W>,
    /// The leaf page being filled.
    leaf: Node,
    /// The leaf pages written: (first key, page id), for the branch levels.
    children: Vec<(Vec<u8>, u64)>,
    /// The last key put, to refuse keys out of order.
    last: Option<Vec<u8>>,
}

impl<W: Write + Seek> BucketWriter<'_, W> {
    /// Puts `key` with `entry`; keys must be non-empty and strictly
    /// increasing.
    pub fn put(&mut self, key: &[u8], entry: Entry<'_>) -> Result<(), Error> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(Error::Input(format!("key of {} bytes", key.len())));
        }
        if self.last.as_deref().is_some_and(|last| last >= key) {
            return Err(Error::Input(format!(
                "key {key:02x?} not after the previous key"
            )));
        }
        let (value, flags) = match entry {
            Entry::Value(v) if v.len() > MAX_VALUE => {
                return Err(Error::Input(format!("value of {} bytes", v.len())));
            }
            Entry::Value(v) => (v.to_vec(), 0),
            Entry::Bucket(b) => {
                let mut v = vec![0u8; BUCKET_HEADER];
                v[..8].copy_from_slice(&b.root.to_le_bytes());
                (v, u64::from(BUCKET_LEAF))
            }
        };
        let size = ELEMENT + key.len() + value.len();
        if !self.leaf.entries.is_empty() && self.leaf.size + size > PAGE_SIZE {
            self.flush_leaf()?;
        }
        self.leaf.size += size;
        self.leaf.entries.push((key.to_vec(), value, flags));
        self.last = Some(key.to_vec());
        Ok(())
    }

    /// Puts a plain value.
    pub fn put_value(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.put(key, Entry::Value(value))
    }

    fn flush_leaf(&mut self) -> Result<(), Error> {
        let node = std::mem::replace(&mut self.leaf, Node::new());
        let first = node
            .entries
            .first()
            .map(|e| e.0.clone())
            .unwrap_or_default();
        let id = self.writer.write_node(&node, LEAF)?;
        self.children.push((first, id));
        Ok(())
    }

    /// Writes what is left of the bucket and its branch levels; returns
    /// its root for the parent. An empty bucket is one empty leaf page.
    pub fn finish(mut self) -> Result<BucketRoot, Error> {
        if !self.leaf.entries.is_empty() || self.children.is_empty() {
            self.flush_leaf()?;
        }
        let mut level = std::mem::take(&mut self.children);
        while level.len() > 1 {
            let mut upper = Vec::new();
            let mut node = Node::new();
            for (key, child) in level {
                let size = ELEMENT + key.len();
                if !node.entries.is_empty() && node.size + size > PAGE_SIZE {
                    let full = std::mem::replace(&mut node, Node::new());
                    upper.push((
                        full.entries[0].0.clone(),
                        self.writer.write_node(&full, BRANCH)?,
                    ));
                }
                node.size += size;
                node.entries.push((key, Vec::new(), child));
            }
            upper.push((
                node.entries[0].0.clone(),
                self.writer.write_node(&node, BRANCH)?,
            ));
            level = upper;
        }
        let root = level.first().map(|c| c.1).unwrap_or(0);
        Ok(BucketRoot { root })
    }
}

#[cfg(test)]
mod tests;
