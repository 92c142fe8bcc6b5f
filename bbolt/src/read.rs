//! Reading a bbolt file held in memory. Every offset, length and page id is
//! checked against the file before it is used; the tree walk is bounded by
//! the number of pages (a cycle or shared page is damage, found without
//! recursion past [`MAX_DEPTH`]).

use crate::{
    le_u16, le_u32, le_u64, meta_checksum, Error, BRANCH, BUCKET_HEADER, BUCKET_LEAF, ELEMENT,
    LEAF, MAGIC, META, META_CHECKED, META_LEN, NO_FREELIST, PAGE_HEADER, VERSION,
};

/// Deeper than any real tree (bbolt's fan-out makes 10 levels billions of
/// keys); deeper means a cycle or damage.
const MAX_DEPTH: usize = 64;

/// An open bbolt file: its current meta page's root and sizes. Cheap to
/// copy; every [`Bucket`] carries one.
#[derive(Debug, Clone, Copy)]
pub struct Db<'a> {
    /// The whole file, so that pages are slices of it (no copy of any value).
    data: &'a [u8],
    /// From the current meta page: every page id is a multiple of it.
    page_size: usize,
    /// Pages in use (the meta's high-water mark): a page id at or above it
    /// is damage.
    pages: u64,
    /// The root bucket's root page.
    root: u64,
    /// The current meta's transaction id (reported, not needed to read).
    txid: u64,
    /// The freelist page, if one is stored (reported, not needed to read).
    freelist: Option<u64>,
}

/// A meta page's fields, once its magic, version and checksum hold.
struct Meta {
    /// Where meta page 1 and every other page start.
    page_size: u32,
    /// The root bucket's page: where every read starts.
    root: u64,
    /// The freelist page (`u64::MAX`: not stored), reported only.
    freelist: u64,
    /// The high-water mark: pages at or past it are not the database's.
    pages: u64,
    /// Which of the two valid metas is current (the higher).
    txid: u64,
}

/// Why a meta page was not taken.
enum MetaProblem {
    /// Not even the magic: not a bbolt page.
    NoMagic,
    /// The file ends inside it.
    Short,
    /// Magic present, but the version or checksum is wrong.
    Bad(&'static str),
}

fn read_meta(data: &[u8], at: usize) -> Result<Meta, MetaProblem> {
    let start = at.checked_add(PAGE_HEADER).ok_or(MetaProblem::Short)?;
    let Some(meta) = data.get(start..start + META_LEN) else {
        return Err(MetaProblem::Short);
    };
    let field = |i: usize| le_u64(meta, i).unwrap_or(0);
    if le_u32(meta, 0) != Some(MAGIC) {
        return Err(MetaProblem::NoMagic);
    }
    if le_u32(meta, 4) != Some(VERSION) {
        return Err(MetaProblem::Bad("unsupported version"));
    }
    if le_u16(data, at + 8).is_none_or(|flags| flags & META == 0) {
        return Err(MetaProblem::Bad("not flagged as a meta page"));
    }
    if meta_checksum(&meta[..META_CHECKED]) != field(META_CHECKED) {
        return Err(MetaProblem::Bad("checksum mismatch"));
    }
    Ok(Meta {
        page_size: le_u32(meta, 8).unwrap_or(0),
        root: field(16),
        freelist: field(32),
        pages: field(40),
        txid: field(48),
    })
}

/// A bucket: the root bucket, or one nested in another.
#[derive(Debug, Clone, Copy)]
pub struct Bucket<'a> {
    /// The file its pages are in.
    db: Db<'a>,
    /// Where its tree starts.
    root: Root<'a>,
    /// How deep it is nested (the root bucket: 0): bounded, so that a
    /// damaged file whose bucket holds itself ends in an error.
    depth: usize,
}

/// Where a bucket's tree starts.
#[derive(Debug, Clone, Copy)]
enum Root<'a> {
    /// A page of the file.
    Page(u64),
    /// An inline bucket: its leaf page is inside its parent's value.
    Inline(&'a [u8]),
}

/// A bucket's entry: a value, or a nested bucket.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    /// A key's value (a slice of the file).
    Value(&'a [u8]),
    /// A nested bucket.
    Bucket(Bucket<'a>),
}

impl<'a> Db<'a> {
    /// Opens the bbolt file `data` (its pages; anything after the last page
    /// in use, such as etcd's snapshot digest, is ignored). Refuses a file
    /// whose meta pages are not bbolt's or are both damaged, and a file
    /// shorter than its meta says.
    pub fn open(data: &'a [u8]) -> Result<Self, Error> {
        let have = data.len() as u64;
        let first = read_meta(data, 0);
        // Meta page 1 sits one page in: the page size of meta 0 if it is
        // valid, else bbolt's usual sizes.
        let sizes: Vec<usize> = match &first {
            Ok(m) => vec![m.page_size as usize],
            Err(_) => vec![4096, 8192, 16384, 32768, 65536, 1024, 2048],
        };
        let mut second = Err(MetaProblem::Short);
        for size in sizes {
            second = read_meta(data, size);
            if second.is_ok() {
                break;
            }
        }
        let meta = match (first, second) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(m), Err(_)) | (Err(_), Ok(m)) => m,
            (Err(a), Err(b)) => return Err(no_meta(data, a, b)),
        };
        let page_size = meta.page_size as usize;
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(Error::Damaged {
                page: 0,
                reason: format!("page size {page_size}"),
            });
        }
        let need = meta.pages.saturating_mul(page_size as u64);
        if need > have {
            return Err(Error::Truncated { need, have });
        }
        if meta.root < 2 || meta.root >= meta.pages {
            return Err(Error::Damaged {
                page: 0,
                reason: format!("root page {} outside 2..{}", meta.root, meta.pages),
            });
        }
        Ok(Db {
            data,
            page_size,
            pages: meta.pages,
            root: meta.root,
            txid: meta.txid,
            freelist: (meta.freelist != NO_FREELIST).then_some(meta.freelist),
        })
    }

    /// The page size.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Pages in use (the file's bbolt part is this many pages long).
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The current transaction id.
    pub fn txid(&self) -> u64 {
        self.txid
    }

    /// The freelist page, when the file stores one.
    pub fn freelist(&self) -> Option<u64> {
        self.freelist
    }

    /// The root bucket (whose entries are the top-level buckets).
    pub fn root(&self) -> Bucket<'a> {
        Bucket {
            db: *self,
            root: Root::Page(self.root),
            depth: 0,
        }
    }

    /// The top-level bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>, Error> {
        self.root().bucket(name)
    }

    /// Page `id` with its overflow pages, checked to be a page of `kind`
    /// (flags) inside the file.
    fn page(&self, id: u64, kind: u16) -> Result<&'a [u8], Error> {
        let damaged = |reason: String| Error::Damaged { page: id, reason };
        if id < 2 || id >= self.pages {
            return Err(damaged(format!("page id outside 2..{}", self.pages)));
        }
        let at = (id as usize).saturating_mul(self.page_size);
        let header = self
            .data
            .get(at..at + PAGE_HEADER)
            .ok_or_else(|| damaged("beyond the end of the file".into()))?;
        if le_u64(header, 0) != Some(id) {
            return Err(damaged("page header holds another page id".into()));
        }
        let flags = le_u16(header, 8).unwrap_or(0);
        if flags & kind == 0 {
            return Err(damaged(format!("flags {flags:#x}, expected {kind:#x}")));
        }
        let overflow = u64::from(le_u32(header, 12).unwrap_or(0));
        if id + overflow >= self.pages {
            return Err(damaged(format!(
                "overflow of {overflow} pages past the end"
            )));
        }
        let len = (overflow as usize + 1) * self.page_size;
        self.data
            .get(at..at + len)
            .ok_or_else(|| damaged("beyond the end of the file".into()))
    }
}

/// Why neither meta page could be used.
fn no_meta(data: &[u8], first: MetaProblem, second: MetaProblem) -> Error {
    match (first, second) {
        (MetaProblem::Bad(why), _) | (_, MetaProblem::Bad(why)) => Error::Damaged {
            page: 0,
            reason: format!("no valid meta page ({why})"),
        },
        (MetaProblem::Short, _) if data.get(16..20) == Some(&MAGIC.to_le_bytes()[..]) => {
            Error::Truncated {
                need: (PAGE_HEADER + META_LEN) as u64,
                have: data.len() as u64,
            }
        }
        (MetaProblem::Short, _) => Error::NotBbolt("too short for a bbolt file"),
        (MetaProblem::NoMagic, _) => Error::NotBbolt("no bbolt meta page"),
    }
}

/// One element of a leaf page: flags, key, value.
struct LeafElement<'a> {
    /// 0x01: the value is a nested bucket's header.
    flags: u32,
    /// The key (a slice of its page).
    key: &'a [u8],
    /// The value, or the nested bucket's header (and inline page).
    value: &'a [u8],
}

/// The elements of a leaf page `page` (a file page or an inline one).
fn leaf_elements(page: &[u8], id: u64) -> Result<Vec<LeafElement<'_>>, Error> {
    let damaged = |reason: &str| Error::Damaged {
        page: id,
        reason: reason.to_string(),
    };
    let count = usize::from(le_u16(page, 10).ok_or_else(|| damaged("short page header"))?);
    if PAGE_HEADER + count * ELEMENT > page.len() {
        return Err(damaged("more elements than the page holds"));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let e = PAGE_HEADER + i * ELEMENT;
        let word = |o: usize| le_u32(page, e + o).unwrap_or(0) as usize;
        let (flags, pos, ksize, vsize) = (word(0) as u32, word(4), word(8), word(12));
        let key_at = e.saturating_add(pos);
        let value_at = key_at.saturating_add(ksize);
        let end = value_at.saturating_add(vsize);
        if end > page.len() {
            return Err(damaged("element beyond its page"));
        }
        out.push(LeafElement {
            flags,
            key: &page[key_at..value_at],
            value: &page[value_at..end],
        });
    }
    Ok(out)
}

/// The (key, child page) elements of a branch page.
fn branch_elements(page: &[u8], id: u64) -> Result<Vec<(&[u8], u64)>, Error> {
    let damaged = |reason: &str| Error::Damaged {
        page: id,
        reason: reason.to_string(),
    };
    let count = usize::from(le_u16(page, 10).ok_or_else(|| damaged("short page header"))?);
    if count == 0 {
        return Err(damaged("empty branch page"));
    }
    if PAGE_HEADER + count * ELEMENT > page.len() {
        return Err(damaged("more elements than the page holds"));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let e = PAGE_HEADER + i * ELEMENT;
        let pos = le_u32(page, e).unwrap_or(0) as usize;
        let ksize = le_u32(page, e + 4).unwrap_or(0) as usize;
        let child = le_u64(page, e + 8).unwrap_or(0);
        let key_at = e.saturating_add(pos);
        let end = key_at.saturating_add(ksize);
        if end > page.len() {
            return Err(damaged("element beyond its page"));
        }
        out.push((&page[key_at..end], child));
    }
    Ok(out)
}

/// The walk of one bucket's tree: visits bounded by the file's pages, keys
/// checked to increase.
struct Walk<'a, 'f, E> {
    /// The file.
    db: Db<'a>,
    /// Pages visited: more than the file has means a loop.
    visited: u64,
    /// The last key visited: the next must be greater (damage otherwise).
    last: Option<&'a [u8]>,
    /// The bucket's nesting depth.
    depth: usize,
    /// The caller's visitor.
    visit: &'f mut dyn FnMut(&'a [u8], Item<'a>) -> Result<(), E>,
}

impl<'a, E: From<Error>> Walk<'a, '_, E> {
    fn page(&mut self, id: u64, depth: usize) -> Result<(), E> {
        self.visited += 1;
        if depth > MAX_DEPTH || self.visited > self.db.pages {
            return Err(Error::Damaged {
                page: id,
                reason: "the tree loops".into(),
            }
            .into());
        }
        let page = self.db.page(id, BRANCH | LEAF)?;
        if le_u16(page, 8).unwrap_or(0) & BRANCH != 0 {
            for (_, child) in branch_elements(page, id)? {
                self.page(child, depth + 1)?;
            }
            Ok(())
        } else {
            self.leaf(page, id)
        }
    }

    fn leaf(&mut self, page: &'a [u8], id: u64) -> Result<(), E> {
        for element in leaf_elements(page, id)? {
            if self.last.is_some_and(|last| last >= element.key) {
                return Err(Error::Damaged {
                    page: id,
                    reason: "keys out of order".into(),
                }
                .into());
            }
            self.last = Some(element.key);
            let item = self.db.item(&element, id, self.depth)?;
            (self.visit)(element.key, item)?;
        }
        Ok(())
    }
}

impl<'a> Db<'a> {
    /// A leaf element as an item: its value, or the bucket it holds.
    fn item(&self, element: &LeafElement<'a>, id: u64, depth: usize) -> Result<Item<'a>, Error> {
        if element.flags & BUCKET_LEAF == 0 {
            return Ok(Item::Value(element.value));
        }
        let damaged = |reason: &str| Error::Damaged {
            page: id,
            reason: reason.to_string(),
        };
        let root = le_u64(element.value, 0).ok_or_else(|| damaged("short bucket header"))?;
        let inline = element
            .value
            .get(BUCKET_HEADER..)
            .ok_or_else(|| damaged("short bucket header"))?;
        let root = if root == 0 {
            if inline.len() < PAGE_HEADER || le_u16(inline, 8).unwrap_or(0) & LEAF == 0 {
                return Err(damaged("inline bucket without a leaf page"));
            }
            Root::Inline(inline)
        } else {
            Root::Page(root)
        };
        if depth >= MAX_DEPTH {
            return Err(damaged("buckets nested too deep"));
        }
        Ok(Item::Bucket(Bucket {
            db: *self,
            root,
            depth: depth + 1,
        }))
    }
}

impl<'a> Bucket<'a> {
    /// Calls `visit` with every entry of the bucket, in key order. Stops at
    /// the first error, `visit`'s own or the file's damage.
    pub fn for_each<E: From<Error>>(
        &self,
        mut visit: impl FnMut(&'a [u8], Item<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut walk = Walk {
            db: self.db,
            visited: 0,
            last: None,
            depth: self.depth,
            visit: &mut visit,
        };
        match self.root {
            Root::Page(id) => walk.page(id, 0),
            Root::Inline(page) => walk.leaf(page, 0),
        }
    }

    /// The entry under `key`, if any (a descent, not a scan).
    pub fn get(&self, key: &[u8]) -> Result<Option<Item<'a>>, Error> {
        let (id, leaf) = match self.root {
            Root::Inline(page) => (0, page),
            Root::Page(mut id) => {
                let mut depth = 0;
                loop {
                    let page = self.db.page(id, BRANCH | LEAF)?;
                    if le_u16(page, 8).unwrap_or(0) & LEAF != 0 {
                        break (id, page);
                    }
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(Error::Damaged {
                            page: id,
                            reason: "the tree loops".into(),
                        });
                    }
                    let elements = branch_elements(page, id)?;
                    // The last child whose first key is <= key.
                    let at = elements
                        .partition_point(|(k, _)| *k <= key)
                        .saturating_sub(1);
                    id = elements[at].1;
                }
            }
        };
        for element in leaf_elements(leaf, id)? {
            if element.key == key {
                return self.db.item(&element, id, self.depth).map(Some);
            }
        }
        Ok(None)
    }

    /// The nested bucket `name`, if there is one (a value under that key is
    /// not a bucket: None).
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>, Error> {
        Ok(match self.get(name)? {
            Some(Item::Bucket(b)) => Some(b),
            _ => None,
        })
    }
}
