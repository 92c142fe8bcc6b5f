//! [`RangeReply`]: a Range's answer as it goes on the wire, its key-values
//! spliced in as stored.

use bytes::{Buf, BufMut};
use cairn_proto::etcdserverpb::{RangeResponse, ResponseHeader};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::mvcc::Records;

/// `etcdserverpb.RangeResponse`, field for field, with its key-values in
/// their stored form: encoding it writes the bytes encoding the
/// [`RangeResponse`] of the same key-values writes (a stored record is the
/// `mvccpb.KeyValue` encoded, and a message field is its encoding
/// prefixed by tag and length), without decoding each into a key and a
/// value buffer and copying them out again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RangeReply {
    /// Field 1. Apply fills the revision; the member the rest.
    pub header: Option<ResponseHeader>,
    /// Field 2, each an encoded `mvccpb.KeyValue`.
    pub kvs: Records,
    /// Field 3: more keys exist past the limit.
    pub more: bool,
    /// Field 4: keys in the range, ignoring the limit.
    pub count: i64,
}

impl From<RangeResponse> for RangeReply {
    fn from(r: RangeResponse) -> Self {
        Self {
            header: r.header,
            kvs: Records::encode(&r.kvs),
            more: r.more,
            count: r.count,
        }
    }
}

/// The field number of `kvs`.
const KVS: u32 = 2;

impl Message for RangeReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(header) = &self.header {
            encoding::message::encode(1, header, buf);
        }
        for kv in self.kvs.iter() {
            encoding::encode_key(KVS, WireType::LengthDelimited, buf);
            encoding::encode_varint(kv.len() as u64, buf);
            buf.put_slice(kv);
        }
        if self.more {
            encoding::bool::encode(3, &self.more, buf);
        }
        if self.count != 0 {
            encoding::int64::encode(4, &self.count, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => {
                let header = self.header.get_or_insert_with(ResponseHeader::default);
                encoding::message::merge(wire_type, header, buf, ctx)
            }
            KVS => {
                let mut kv = Vec::new();
                encoding::bytes::merge(wire_type, &mut kv, buf, ctx)?;
                self.kvs.push(&kv);
                Ok(())
            }
            3 => encoding::bool::merge(wire_type, &mut self.more, buf, ctx),
            4 => encoding::int64::merge(wire_type, &mut self.count, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let header = self
            .header
            .as_ref()
            .map_or(0, |h| encoding::message::encoded_len(1, h));
        let kvs: usize = self
            .kvs
            .iter()
            .map(|kv| {
                encoding::key_len(KVS) + encoding::encoded_len_varint(kv.len() as u64) + kv.len()
            })
            .sum();
        let more = if self.more {
            encoding::bool::encoded_len(3, &self.more)
        } else {
            0
        };
        let count = if self.count != 0 {
            encoding::int64::encoded_len(4, &self.count)
        } else {
            0
        };
        header + kvs + more + count
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::mvccpb::KeyValue;

    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            lease: 0,
        }
    }

    #[test]
    fn a_reply_is_a_range_response_on_the_wire_both_ways() {
        let header = ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 3,
            raft_term: 4,
        };
        // A value of 200 bytes: a length that takes two bytes to write.
        let long = "v".repeat(200);
        let cases = [
            RangeResponse::default(),
            RangeResponse {
                header: Some(header),
                kvs: vec![kv("a", "1"), kv("b", &long)],
                more: true,
                count: 7,
            },
            RangeResponse {
                header: Some(header),
                kvs: vec![],
                more: false,
                count: 1 << 40,
            },
        ];
        for response in cases {
            let wire = response.encode_to_vec();
            let reply = RangeReply::from(response.clone());
            assert_eq!(reply.encoded_len(), wire.len(), "{response:?}");
            assert_eq!(reply.encode_to_vec(), wire, "{response:?}");
            // And read back: the records as they were sent.
            let read = RangeReply::decode(wire.as_slice()).expect("decodes");
            assert_eq!(read, reply, "{response:?}");
            let records: Vec<&[u8]> = read.kvs.iter().collect();
            let sent: Vec<Vec<u8>> = response.kvs.iter().map(|kv| kv.encode_to_vec()).collect();
            assert_eq!(records, sent, "{response:?}");
        }
    }

    #[test]
    fn fields_it_does_not_know_are_skipped_when_read() {
        // Field 9, a varint: not part of RangeResponse.
        let mut wire = vec![9 << 3, 1];
        wire.extend(
            RangeResponse {
                count: 2,
                ..RangeResponse::default()
            }
            .encode_to_vec(),
        );
        let read = RangeReply::decode(wire.as_slice()).expect("decodes");
        assert_eq!((read.count, read.kvs.len()), (2, 0));
    }
}
