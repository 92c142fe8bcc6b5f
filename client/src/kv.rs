//! Builders for KV requests: [`Get`], [`Put`], [`Delete`], [`Txn`] with its
//! [`Compare`] guards and [`Op`] operations.
//!
//! Each builder is a plain value with consuming setters; `into_request` turns
//! it into the raw `etcdserverpb` message sent on the wire.

use cairn_proto::etcdserverpb::{
    compare, request_op, Compare as PbCompare, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};

/// Sort order for [`Get::sort`] (the `etcdserverpb` enum).
pub use cairn_proto::etcdserverpb::range_request::SortOrder;
/// Key-value field to sort on for [`Get::sort`] (the `etcdserverpb` enum).
pub use cairn_proto::etcdserverpb::range_request::SortTarget;

/// The `range_end` that selects every key starting with `prefix`, as etcd's
/// clientv3 `GetPrefixRangeEnd` computes it: drop trailing `0xff` bytes, then
/// increment the last byte. A prefix that is empty or all `0xff` has no upper
/// bound, so the result is `"\0"` (meaning "to the end of the keyspace").
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b != 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// Sets `key`/`range_end` to cover every key starting with `key`. An empty
/// key becomes `"\0"`..`"\0"` (the whole keyspace), as clientv3 does, because
/// etcd rejects an empty key.
pub(crate) fn apply_prefix(key: &mut Vec<u8>, range_end: &mut Vec<u8>) {
    if key.is_empty() {
        *key = vec![0];
        *range_end = vec![0];
    } else {
        *range_end = prefix_end(key);
    }
}

/// The key-range setters shared by every builder with `req.key` and
/// `req.range_end` (etcd's range conventions); `$verb` starts their docs.
macro_rules! key_range_setters {
    ($verb:literal) => {
        #[doc = concat!($verb, " `[key, end)`.")]
        pub fn range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
            self.req.range_end = end.into();
            self
        }

        #[doc = concat!($verb, " every key that starts with the key (see [`prefix_end`](crate::prefix_end)).")]
        pub fn prefix(mut self) -> Self {
            $crate::kv::apply_prefix(&mut self.req.key, &mut self.req.range_end);
            self
        }

        #[doc = concat!($verb, " every key `>=` the key (`range_end = \"\\0\"`).")]
        pub fn from_key(mut self) -> Self {
            self.req.range_end = vec![0];
            self
        }

        #[doc = concat!($verb, " the whole keyspace (`key = range_end = \"\\0\"`), whatever the key was.")]
        pub fn all(mut self) -> Self {
            self.req.key = vec![0];
            self.req.range_end = vec![0];
            self
        }
    };
}
pub(crate) use key_range_setters;

/// A range read (`KV.Range`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Get {
    req: RangeRequest,
}

impl Get {
    /// Read the single key `key` (turn it into a range with the other setters).
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Get {
            req: RangeRequest {
                key: key.into(),
                ..RangeRequest::default()
            },
        }
    }

    key_range_setters!("Read");

    /// Return at most `limit` keys (0 means no limit).
    pub fn limit(mut self, limit: i64) -> Self {
        self.req.limit = limit;
        self
    }

    /// Read as of `revision` (0 or less means the latest).
    pub fn revision(mut self, revision: i64) -> Self {
        self.req.revision = revision;
        self
    }

    /// Sort the results on `target` in `order`.
    pub fn sort(mut self, target: SortTarget, order: SortOrder) -> Self {
        self.req.sort_target = target as i32;
        self.req.sort_order = order as i32;
        self
    }

    /// Serve the read locally, without a quorum round trip (may be stale).
    pub fn serializable(mut self) -> Self {
        self.req.serializable = true;
        self
    }

    /// Return keys without values.
    pub fn keys_only(mut self) -> Self {
        self.req.keys_only = true;
        self
    }

    /// Return only the count of matching keys.
    pub fn count_only(mut self) -> Self {
        self.req.count_only = true;
        self
    }

    /// Keep only keys whose mod revision is `>= revision`.
    pub fn min_mod_revision(mut self, revision: i64) -> Self {
        self.req.min_mod_revision = revision;
        self
    }

    /// Keep only keys whose mod revision is `<= revision`.
    pub fn max_mod_revision(mut self, revision: i64) -> Self {
        self.req.max_mod_revision = revision;
        self
    }

    /// Keep only keys whose create revision is `>= revision`.
    pub fn min_create_revision(mut self, revision: i64) -> Self {
        self.req.min_create_revision = revision;
        self
    }

    /// Keep only keys whose create revision is `<= revision`.
    pub fn max_create_revision(mut self, revision: i64) -> Self {
        self.req.max_create_revision = revision;
        self
    }

    /// The raw `RangeRequest`.
    pub fn into_request(self) -> RangeRequest {
        self.req
    }
}

/// A single-key write (`KV.Put`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Put {
    req: PutRequest,
}

impl Put {
    /// Set `key` to `value`.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Put {
            req: PutRequest {
                key: key.into(),
                value: value.into(),
                ..PutRequest::default()
            },
        }
    }

    /// Attach the key to lease `id` (0 detaches it).
    pub fn lease(mut self, id: i64) -> Self {
        self.req.lease = id;
        self
    }

    /// Return the previous key-value in the response.
    pub fn prev_kv(mut self) -> Self {
        self.req.prev_kv = true;
        self
    }

    /// Keep the key's current value (the key must exist).
    pub fn ignore_value(mut self) -> Self {
        self.req.ignore_value = true;
        self
    }

    /// Keep the key's current lease (the key must exist).
    pub fn ignore_lease(mut self) -> Self {
        self.req.ignore_lease = true;
        self
    }

    /// The raw `PutRequest`.
    pub fn into_request(self) -> PutRequest {
        self.req
    }
}

/// A range delete (`KV.DeleteRange`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delete {
    req: DeleteRangeRequest,
}

impl Delete {
    /// Delete the single key `key` (turn it into a range with the other setters).
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Delete {
            req: DeleteRangeRequest {
                key: key.into(),
                ..DeleteRangeRequest::default()
            },
        }
    }

    key_range_setters!("Delete");

    /// Return the deleted key-values in the response.
    pub fn prev_kv(mut self) -> Self {
        self.req.prev_kv = true;
        self
    }

    /// The raw `DeleteRangeRequest`.
    pub fn into_request(self) -> DeleteRangeRequest {
        self.req
    }
}

/// How a [`Compare`] relates the stored field to the given operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// stored `==` operand
    Equal,
    /// stored `>` operand
    Greater,
    /// stored `<` operand
    Less,
    /// stored `!=` operand
    NotEqual,
}

impl From<CompareOp> for compare::CompareResult {
    fn from(op: CompareOp) -> Self {
        match op {
            CompareOp::Equal => compare::CompareResult::Equal,
            CompareOp::Greater => compare::CompareResult::Greater,
            CompareOp::Less => compare::CompareResult::Less,
            CompareOp::NotEqual => compare::CompareResult::NotEqual,
        }
    }
}

/// A transaction guard: compares one field of a key (or of every key in a
/// range) with an operand. A missing key has version, revisions and lease 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Compare {
    cmp: PbCompare,
}

impl Compare {
    fn new(
        key: impl Into<Vec<u8>>,
        op: CompareOp,
        target: compare::CompareTarget,
        operand: compare::TargetUnion,
    ) -> Self {
        Compare {
            cmp: PbCompare {
                result: compare::CompareResult::from(op) as i32,
                target: target as i32,
                key: key.into(),
                target_union: Some(operand),
                range_end: Vec::new(),
            },
        }
    }

    /// Compare the key's value with `value`.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Value,
            compare::TargetUnion::Value(value.into()),
        )
    }

    /// Compare the key's version (number of writes since creation).
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(version),
        )
    }

    /// Compare the key's create revision.
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(revision),
        )
    }

    /// Compare the key's mod revision.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(revision),
        )
    }

    /// Compare the key's lease ID.
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: i64) -> Self {
        Self::new(
            key,
            op,
            compare::CompareTarget::Lease,
            compare::TargetUnion::Lease(lease),
        )
    }

    /// Apply the comparison to every key in `[key, end)`.
    pub fn range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.cmp.range_end = end.into();
        self
    }

    /// Apply the comparison to every key that starts with the key.
    pub fn prefix(mut self) -> Self {
        apply_prefix(&mut self.cmp.key, &mut self.cmp.range_end);
        self
    }

    /// The raw `etcdserverpb::Compare`.
    pub fn into_request(self) -> PbCompare {
        self.cmp
    }
}

/// One operation inside a [`Txn`] branch.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A range read.
    Get(Get),
    /// A write.
    Put(Put),
    /// A range delete.
    Delete(Delete),
    /// A nested transaction.
    Txn(Txn),
}

impl Op {
    /// A read operation.
    pub fn get(get: Get) -> Self {
        Op::Get(get)
    }

    /// A write operation.
    pub fn put(put: Put) -> Self {
        Op::Put(put)
    }

    /// A delete operation.
    pub fn delete(delete: Delete) -> Self {
        Op::Delete(delete)
    }

    /// A nested transaction.
    pub fn txn(txn: Txn) -> Self {
        Op::Txn(txn)
    }

    /// The raw `RequestOp`.
    pub fn into_request(self) -> RequestOp {
        let request = match self {
            Op::Get(get) => request_op::Request::RequestRange(get.into_request()),
            Op::Put(put) => request_op::Request::RequestPut(put.into_request()),
            Op::Delete(delete) => request_op::Request::RequestDeleteRange(delete.into_request()),
            Op::Txn(txn) => request_op::Request::RequestTxn(txn.into_request()),
        };
        RequestOp {
            request: Some(request),
        }
    }
}

/// An atomic transaction (`KV.Txn`): if every [`Compare`] holds, run the
/// `and_then` ops, otherwise the `or_else` ops.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn {
    compare: Vec<Compare>,
    success: Vec<Op>,
    failure: Vec<Op>,
}

impl Txn {
    /// An empty transaction (no guards: the `and_then` branch runs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Add guards; all must hold for `and_then` to run. Repeated calls append.
    pub fn when(mut self, compares: Vec<Compare>) -> Self {
        self.compare.extend(compares);
        self
    }

    /// Add ops run when the guards hold. Repeated calls append.
    pub fn and_then(mut self, ops: Vec<Op>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Add ops run when a guard fails. Repeated calls append.
    pub fn or_else(mut self, ops: Vec<Op>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// The raw `TxnRequest`.
    pub fn into_request(self) -> TxnRequest {
        TxnRequest {
            compare: self
                .compare
                .into_iter()
                .map(Compare::into_request)
                .collect(),
            success: self.success.into_iter().map(Op::into_request).collect(),
            failure: self.failure.into_iter().map(Op::into_request).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compare::{CompareResult, CompareTarget, TargetUnion};

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"foo/"), b"foo0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"ab\xff\xff"), b"ac");
        assert_eq!(prefix_end(b"\x01\xff"), b"\x02");
        assert_eq!(prefix_end(b"a\xfe"), b"a\xff");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b"\xff\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn get_ranges() {
        let req = Get::key("foo").into_request();
        assert_eq!(req.key, b"foo");
        assert!(req.range_end.is_empty());

        let req = Get::key("foo/").prefix().into_request();
        assert_eq!(
            (req.key.as_slice(), req.range_end.as_slice()),
            (&b"foo/"[..], &b"foo0"[..])
        );

        let req = Get::key(vec![b'a', 0xff]).prefix().into_request();
        assert_eq!(req.range_end, b"b");

        let req = Get::key("").prefix().into_request();
        assert_eq!((req.key, req.range_end), (vec![0], vec![0]));

        let req = Get::key("m").from_key().into_request();
        assert_eq!((req.key, req.range_end), (b"m".to_vec(), vec![0]));

        let req = Get::key("ignored").all().into_request();
        assert_eq!((req.key, req.range_end), (vec![0], vec![0]));

        let req = Get::key("a").range_end("c").into_request();
        assert_eq!(req.range_end, b"c");
    }

    #[test]
    fn get_options() {
        let req = Get::key(&b"k"[..])
            .limit(10)
            .revision(7)
            .sort(SortTarget::Mod, SortOrder::Descend)
            .serializable()
            .keys_only()
            .count_only()
            .min_mod_revision(1)
            .max_mod_revision(2)
            .min_create_revision(3)
            .max_create_revision(4)
            .into_request();
        assert_eq!(req.limit, 10);
        assert_eq!(req.revision, 7);
        assert_eq!(req.sort_target, SortTarget::Mod as i32);
        assert_eq!(req.sort_order, SortOrder::Descend as i32);
        assert!(req.serializable && req.keys_only && req.count_only);
        assert_eq!(
            (
                req.min_mod_revision,
                req.max_mod_revision,
                req.min_create_revision,
                req.max_create_revision
            ),
            (1, 2, 3, 4)
        );
    }

    #[test]
    fn put_and_delete() {
        let req = Put::new(String::from("k"), b"v".to_vec())
            .lease(42)
            .prev_kv()
            .ignore_value()
            .ignore_lease()
            .into_request();
        assert_eq!(
            (req.key.as_slice(), req.value.as_slice()),
            (&b"k"[..], &b"v"[..])
        );
        assert_eq!(req.lease, 42);
        assert!(req.prev_kv && req.ignore_value && req.ignore_lease);

        let plain = Put::new("k", "v").into_request();
        assert!(!plain.prev_kv && !plain.ignore_value && !plain.ignore_lease);
        assert_eq!(plain.lease, 0);

        let req = Delete::key("dir/").prefix().prev_kv().into_request();
        assert_eq!(
            (req.key.as_slice(), req.range_end.as_slice()),
            (&b"dir/"[..], &b"dir0"[..])
        );
        assert!(req.prev_kv);
        let req = Delete::key("x").all().into_request();
        assert_eq!((req.key, req.range_end), (vec![0], vec![0]));
        let req = Delete::key("x").from_key().into_request();
        assert_eq!(req.range_end, vec![0]);
        let req = Delete::key("a").range_end("b").into_request();
        assert_eq!(req.range_end, b"b");
    }

    #[test]
    fn compare_targets() {
        let c = Compare::value("k", CompareOp::Equal, "v").into_request();
        assert_eq!(c.key, b"k");
        assert_eq!(c.result, CompareResult::Equal as i32);
        assert_eq!(c.target, CompareTarget::Value as i32);
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"v".to_vec())));

        let c = Compare::version("k", CompareOp::Greater, 3).into_request();
        assert_eq!(c.result, CompareResult::Greater as i32);
        assert_eq!(c.target, CompareTarget::Version as i32);
        assert_eq!(c.target_union, Some(TargetUnion::Version(3)));

        let c = Compare::create_revision("k", CompareOp::Less, 4).into_request();
        assert_eq!(c.result, CompareResult::Less as i32);
        assert_eq!(c.target, CompareTarget::Create as i32);
        assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(4)));

        let c = Compare::mod_revision("k", CompareOp::NotEqual, 5).into_request();
        assert_eq!(c.result, CompareResult::NotEqual as i32);
        assert_eq!(c.target, CompareTarget::Mod as i32);
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(5)));

        let c = Compare::lease("k", CompareOp::Equal, 6).into_request();
        assert_eq!(c.target, CompareTarget::Lease as i32);
        assert_eq!(c.target_union, Some(TargetUnion::Lease(6)));

        let c = Compare::version("p/", CompareOp::Equal, 0)
            .prefix()
            .into_request();
        assert_eq!(c.range_end, b"p0");
        let c = Compare::version("a", CompareOp::Equal, 0)
            .range_end("z")
            .into_request();
        assert_eq!(c.range_end, b"z");
    }

    #[test]
    fn nested_txn_shape() {
        let inner = Txn::new()
            .when(vec![Compare::value("b", CompareOp::Equal, "1")])
            .and_then(vec![Op::delete(Delete::key("b"))]);
        let txn = Txn::new()
            .when(vec![Compare::version("a", CompareOp::Equal, 0)])
            .when(vec![Compare::mod_revision("c", CompareOp::Less, 9)])
            .and_then(vec![Op::put(Put::new("a", "1")), Op::txn(inner)])
            .or_else(vec![Op::get(Get::key("a"))])
            .into_request();

        assert_eq!(txn.compare.len(), 2);
        assert_eq!(txn.compare[0].key, b"a");
        assert_eq!(txn.compare[1].key, b"c");
        assert_eq!(txn.success.len(), 2);
        assert_eq!(txn.failure.len(), 1);

        match &txn.success[0].request {
            Some(request_op::Request::RequestPut(put)) => assert_eq!(put.key, b"a"),
            other => panic!("expected put, got {other:?}"),
        }
        match &txn.success[1].request {
            Some(request_op::Request::RequestTxn(nested)) => {
                assert_eq!(nested.compare.len(), 1);
                assert!(nested.failure.is_empty());
                match &nested.success[0].request {
                    Some(request_op::Request::RequestDeleteRange(del)) => {
                        assert_eq!(del.key, b"b")
                    }
                    other => panic!("expected delete, got {other:?}"),
                }
            }
            other => panic!("expected nested txn, got {other:?}"),
        }
        match &txn.failure[0].request {
            Some(request_op::Request::RequestRange(range)) => assert_eq!(range.key, b"a"),
            other => panic!("expected range, got {other:?}"),
        }
    }

    #[test]
    fn empty_txn() {
        let txn = Txn::new().into_request();
        assert!(txn.compare.is_empty() && txn.success.is_empty() && txn.failure.is_empty());
    }
}
