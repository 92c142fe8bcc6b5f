//! Key-range permissions: which keys a user may read and write, and the
//! check every request makes (etcd's `auth/range_perm_cache.go`).
//!
//! A role grants READ, WRITE or READWRITE on a key (`range_end` empty), a
//! range `[key, range_end)`, or everything from a key on (`range_end` =
//! `"\0"`). A user's permissions are the union over its roles, kept as two
//! sorted lists of disjoint, merged intervals (read, write). A request on
//! one key is permitted if an interval holds the key; a request on a range
//! only if the intervals together cover the whole range — as etcd's
//! interval tree answers `Stab` and `Contains`.
//!
//! Worked example: roles grant READ on `[a, c)` and READ on `[c, e)`, and
//! WRITE on `b`:
//!
//! ```text
//! read:  [a, e)          (the two ranges merged: they touch at c)
//! write: [b, b\0)        (one key is the range [b, b + "\0"))
//! Range a..d  -> permitted (inside [a, e))
//! Range a..f  -> refused   ([e, f) is not covered)
//! Put b       -> permitted;  Put ba -> refused
//! ```

use cairn_proto::authpb::permission::Type as PermissionType;
use cairn_proto::authpb::Permission;

/// The end of an interval: a key (exclusive), or no end (`range_end` "\0").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    /// Up to this key, excluded.
    Key(Vec<u8>),
    /// To the end of the key space.
    Unbounded,
}

/// `[key, range_end)` as etcd reads a request's or permission's range:
/// empty `range_end` is the key alone, `"\0"` is everything from `key`.
fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, End) {
    let end = match range_end {
        [] => {
            let mut next = key.to_vec();
            next.push(0);
            End::Key(next)
        }
        [0] => End::Unbounded,
        end => End::Key(end.to_vec()),
    };
    (key.to_vec(), end)
}

/// Disjoint, merged intervals, sorted by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// (start, end), start < end, no two overlapping or touching.
    intervals: Vec<(Vec<u8>, End)>,
}

impl RangeSet {
    /// Adds `[key, range_end)` (an empty or inverted range adds nothing).
    pub fn add(&mut self, key: &[u8], range_end: &[u8]) {
        let (start, end) = interval(key, range_end);
        if End::Key(start.clone()) >= end {
            return;
        }
        self.intervals.push((start, end));
        self.intervals.sort();
        let mut merged: Vec<(Vec<u8>, End)> = Vec::with_capacity(self.intervals.len());
        for (start, end) in self.intervals.drain(..) {
            match merged.last_mut() {
                Some((_, last_end)) if End::Key(start.clone()) <= *last_end => {
                    if end > *last_end {
                        *last_end = end;
                    }
                }
                _ => merged.push((start, end)),
            }
        }
        self.intervals = merged;
    }

    /// Whether the request range `[key, range_end)` (etcd's reading of
    /// `range_end`) is wholly inside these intervals.
    pub fn covers(&self, key: &[u8], range_end: &[u8]) -> bool {
        let (start, end) = interval(key, range_end);
        // The last interval starting at or before `start`: merged intervals
        // never touch, so only it can hold the whole range.
        let index = self
            .intervals
            .partition_point(|(s, _)| s.as_slice() <= start.as_slice());
        index > 0 && self.intervals[index - 1].1 >= end
    }

    /// Whether nothing is permitted.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }
}

/// What one user may read and write (the union of its roles).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPermissions {
    /// Ranges the user may read.
    pub read: RangeSet,
    /// Ranges the user may write.
    pub write: RangeSet,
}

impl UserPermissions {
    /// The permissions `grants` give together.
    pub fn from_grants<'a>(grants: impl IntoIterator<Item = &'a Permission>) -> Self {
        let mut permissions = UserPermissions::default();
        for grant in grants {
            let kind = PermissionType::try_from(grant.perm_type).unwrap_or(PermissionType::Read);
            if matches!(kind, PermissionType::Read | PermissionType::Readwrite) {
                permissions.read.add(&grant.key, &grant.range_end);
            }
            if matches!(kind, PermissionType::Write | PermissionType::Readwrite) {
                permissions.write.add(&grant.key, &grant.range_end);
            }
        }
        permissions
    }

    /// Whether the user may read `[key, range_end)`.
    pub fn can_read(&self, key: &[u8], range_end: &[u8]) -> bool {
        self.read.covers(key, range_end)
    }

    /// Whether the user may write `[key, range_end)`.
    pub fn can_write(&self, key: &[u8], range_end: &[u8]) -> bool {
        self.write.covers(key, range_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(kind: PermissionType, key: &str, end: &str) -> Permission {
        Permission {
            perm_type: kind as i32,
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_worked_example() {
        let p = UserPermissions::from_grants(&[
            grant(PermissionType::Read, "a", "c"),
            grant(PermissionType::Read, "c", "e"),
            grant(PermissionType::Write, "b", ""),
        ]);
        assert!(p.can_read(b"a", b"d"));
        assert!(!p.can_read(b"a", b"f"));
        assert!(p.can_write(b"b", b""));
        assert!(!p.can_write(b"ba", b""));
    }

    /// A grant: (type, key, range_end).
    type Grant = (PermissionType, &'static str, &'static str);

    #[test]
    fn keys_ranges_prefixes_and_from_key() {
        use PermissionType::*;
        // (grants, request key, request range_end, read allowed, write allowed)
        let cases: &[(&[Grant], &str, &str, bool, bool)] = &[
            // one key
            (&[(Read, "foo", "")], "foo", "", true, false),
            (&[(Read, "foo", "")], "fo", "", false, false),
            (&[(Read, "foo", "")], "foo0", "", false, false),
            (&[(Readwrite, "foo", "")], "foo", "", true, true),
            // a range: its keys, not its end, and sub-ranges only
            (&[(Write, "a", "c")], "b", "", false, true),
            (&[(Write, "a", "c")], "c", "", false, false),
            (&[(Write, "a", "c")], "a", "c", false, true),
            (&[(Write, "a", "c")], "a", "c\0", false, false),
            // a prefix ("foo/" .. "foo0")
            (&[(Read, "foo/", "foo0")], "foo/bar", "", true, false),
            (&[(Read, "foo/", "foo0")], "foo/", "foo0", true, false),
            (&[(Read, "foo/", "foo0")], "foo", "", false, false),
            // from a key on
            (&[(Read, "m", "\0")], "z", "", true, false),
            (&[(Read, "m", "\0")], "m", "\0", true, false),
            (&[(Read, "m", "\0")], "l", "\0", false, false),
            // everything
            (&[(Read, "\0", "\0")], "", "\0", false, false),
            (&[(Read, "", "\0")], "\0", "\0", true, false),
            // adjacent and overlapping grants merge
            (&[(Read, "a", "b"), (Read, "b", "c")], "a", "c", true, false),
            (
                &[(Read, "a", "b"), (Read, "c", "d")],
                "a",
                "d",
                false,
                false,
            ),
            (&[(Read, "a", "m"), (Read, "c", "z")], "b", "y", true, false),
            (&[(Read, "a", "b"), (Read, "a", "\0")], "q", "", true, false),
            // an inverted or empty grant grants nothing
            (&[(Read, "c", "a")], "b", "", false, false),
            // nothing granted
            (&[], "a", "", false, false),
        ];
        for (grants, key, end, read, write) in cases {
            let grants: Vec<Permission> = grants.iter().map(|(k, a, b)| grant(*k, a, b)).collect();
            let p = UserPermissions::from_grants(&grants);
            assert_eq!(
                p.can_read(key.as_bytes(), end.as_bytes()),
                *read,
                "read {key:?}..{end:?} with {grants:?}"
            );
            assert_eq!(
                p.can_write(key.as_bytes(), end.as_bytes()),
                *write,
                "write {key:?}..{end:?} with {grants:?}"
            );
        }
    }
}
