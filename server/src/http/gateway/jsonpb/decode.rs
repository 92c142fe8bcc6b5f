//! JSON to protobuf wire bytes, as etcd 3.5's gateway reads a request
//! (golang/protobuf 1.5's `jsonpb.Unmarshaler` with unknown fields
//! allowed): fields by their .proto or lowerCamelCase name, 64-bit integers
//! as numbers or strings, enums by name or number, bytes as padded
//! standard base64, `null` for "not set"; unknown fields are ignored. Each
//! error is the text Go gives for the same input.

use std::collections::HashMap;

use prost::encoding::{encode_key, encode_varint, WireType};

use super::descriptors::{Descriptors, Field, Kind, MessageType};
use super::scan::{self, check_valid, skip_space};

/// prost refuses messages nested deeper than this; a request nested deeper
/// is refused here before recursing further.
pub const MAX_DEPTH: usize = 100;

/// Why a JSON value did not become a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is not what the message takes (Go's error text).
    #[error("{0}")]
    Invalid(String),
    /// Messages nested deeper than [`MAX_DEPTH`].
    #[error("message nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// No descriptor for a message or enum (a bug, not the client's fault).
    #[error("no descriptor for {0}")]
    Unknown(String),
}

fn invalid(message: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(message.into())
}

/// What Go calls the JSON value `raw` in a type error.
fn kind_of(raw: &[u8]) -> &'static str {
    match raw.first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "bool",
        Some(b'n') => "null",
        _ => "number",
    }
}

fn type_error(raw: &[u8], go_type: &str) -> DecodeError {
    invalid(format!(
        "json: cannot unmarshal {} into Go value of type {go_type}",
        kind_of(raw)
    ))
}

/// The members of a (valid) JSON object; a later duplicate key wins, as in
/// Go's map.
fn object(raw: &[u8]) -> HashMap<Vec<u8>, &[u8]> {
    let mut entries = HashMap::new();
    let mut i = skip_space(raw, 1);
    while raw.get(i) == Some(&b'"') {
        let Ok(key_end) = scan::value(raw, i, true) else {
            break;
        };
        let key = unquote(&raw[i..key_end]);
        // Past the colon.
        let start = skip_space(raw, skip_space(raw, key_end) + 1);
        let Ok(end) = scan::value(raw, start, true) else {
            break;
        };
        entries.insert(key, &raw[start..end]);
        i = skip_space(raw, end);
        if raw.get(i) == Some(&b',') {
            i = skip_space(raw, i + 1);
        }
    }
    entries
}

/// The elements of a (valid) JSON array.
fn array(raw: &[u8]) -> Vec<&[u8]> {
    let mut elements = Vec::new();
    let mut i = skip_space(raw, 1);
    while i < raw.len() && raw[i] != b']' {
        let Ok(end) = scan::value(raw, i, true) else {
            break;
        };
        elements.push(&raw[i..end]);
        i = skip_space(raw, end);
        if raw.get(i) == Some(&b',') {
            i = skip_space(raw, i + 1);
        }
    }
    elements
}

fn hex4(b: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(b.get(..4)?).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// The bytes of a (valid) JSON string literal, escapes resolved as Go
/// resolves them (a lone surrogate becomes U+FFFD).
pub fn unquote(raw: &[u8]) -> Vec<u8> {
    let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let c = inner[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = inner.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        let simple = match e {
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'u' => None,
            other => Some(other),
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        let mut code = inner.get(i..).and_then(hex4).unwrap_or(0xfffd);
        i += 4;
        if (0xd800..0xdc00).contains(&code) {
            let low = (inner.get(i..i + 2) == Some(b"\\u"))
                .then(|| inner.get(i + 2..).and_then(hex4))
                .flatten()
                .filter(|low| (0xdc00..0xe000).contains(low));
            match low {
                Some(low) => {
                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                    i += 6;
                }
                None => code = 0xfffd,
            }
        }
        let ch = char::from_u32(code).unwrap_or('\u{fffd}');
        let mut buf = [0; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    out
}

/// Go's `base64.StdEncoding.Decode` (padded, '\r' and '\n' skipped, no
/// strict check of the last bits), with its error positions.
pub fn base64_decode(src: &[u8]) -> Result<Vec<u8>, String> {
    let corrupt = |at: usize| format!("illegal base64 data at input byte {at}");
    let sextet = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let newline = |c: u8| c == b'\n' || c == b'\r';
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0;
    while si < src.len() {
        let mut quantum = [0u32; 4];
        let mut len = 4;
        let mut j = 0;
        let mut trailing = None;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                return Err(corrupt(si - j));
            }
            let c = src[si];
            si += 1;
            if let Some(v) = sextet(c) {
                quantum[j] = v;
                j += 1;
                continue;
            }
            if newline(c) {
                continue;
            }
            if c != b'=' || j < 2 {
                return Err(corrupt(si - 1));
            }
            if j == 2 {
                // A second '=' must follow.
                while si < src.len() && newline(src[si]) {
                    si += 1;
                }
                if si == src.len() {
                    return Err(corrupt(src.len()));
                }
                if src[si] != b'=' {
                    return Err(corrupt(si - 1));
                }
                si += 1;
            }
            while si < src.len() && newline(src[si]) {
                si += 1;
            }
            if si < src.len() {
                trailing = Some(corrupt(si));
            }
            len = j;
            break;
        }
        let value = quantum[0] << 18 | quantum[1] << 12 | quantum[2] << 6 | quantum[3];
        let bytes = [(value >> 16) as u8, (value >> 8) as u8, value as u8];
        out.extend_from_slice(&bytes[..len - 1]);
        if let Some(e) = trailing {
            return Err(e);
        }
        if len < 4 {
            break;
        }
    }
    Ok(out)
}

/// Go's `%q` of bytes (as the enum error quotes the raw input).
pub fn go_quote(b: &[u8]) -> String {
    let mut out = String::from("\"");
    for ch in String::from_utf8_lossy(b).chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Strips one pair of surrounding quotes (jsonpb's `trimQuote`, which lets
/// numbers come as strings).
fn trim_quote(raw: &[u8]) -> &[u8] {
    if raw.len() >= 2 && raw[0] == b'"' && raw[raw.len() - 1] == b'"' {
        &raw[1..raw.len() - 1]
    } else {
        raw
    }
}

/// Go's `json.Unmarshal` of `raw` into an integer of `go_type`, whose range
/// is `min..=max`. `null` leaves it 0.
fn integer(raw: &[u8], go_type: &str, min: i128, max: i128) -> Result<i128, DecodeError> {
    check_valid(raw).map_err(DecodeError::Invalid)?;
    let start = skip_space(raw, 0);
    let end = scan::value(raw, start, true).unwrap_or(raw.len());
    let literal = &raw[start..end];
    match literal.first() {
        Some(b'n') => Ok(0),
        Some(b'-' | b'0'..=b'9') => std::str::from_utf8(literal)
            .ok()
            .and_then(|s| s.parse::<i128>().ok())
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| {
                invalid(format!(
                    "json: cannot unmarshal number {} into Go value of type {go_type}",
                    String::from_utf8_lossy(literal)
                ))
            }),
        _ => Err(type_error(literal, go_type)),
    }
}

fn float(raw: &[u8], go_type: &str) -> Result<f64, DecodeError> {
    match raw {
        b"\"NaN\"" => return Ok(f64::NAN),
        b"\"Infinity\"" => return Ok(f64::INFINITY),
        b"\"-Infinity\"" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    let raw = trim_quote(raw);
    check_valid(raw).map_err(DecodeError::Invalid)?;
    let start = skip_space(raw, 0);
    let end = scan::value(raw, start, true).unwrap_or(raw.len());
    let literal = &raw[start..end];
    match literal.first() {
        Some(b'n') => Ok(0.0),
        Some(b'-' | b'0'..=b'9') => std::str::from_utf8(literal)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| {
                invalid(format!(
                    "json: cannot unmarshal number {} into Go value of type {go_type}",
                    String::from_utf8_lossy(literal)
                ))
            }),
        _ => Err(type_error(literal, go_type)),
    }
}

/// The transcoder's state: the descriptors and the output.
pub struct Decoder<'d> {
    pub descriptors: &'d Descriptors,
}

impl Decoder<'_> {
    /// The wire encoding of message `name` from the JSON value `raw`
    /// (syntactically valid: the caller scanned it).
    pub fn message(&self, name: &str, raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let message = self
            .descriptors
            .message(name)
            .ok_or_else(|| DecodeError::Unknown(name.to_string()))?;
        let mut out = Vec::new();
        self.fields(message, raw, 0, &mut out)?;
        Ok(out)
    }

    fn fields(
        &self,
        message: &MessageType,
        raw: &[u8],
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        match raw.first() {
            Some(b'n') => return Ok(()),
            Some(b'{') => {}
            _ => return Err(type_error(raw, "map[string]json.RawMessage")),
        }
        let mut entries = object(raw);
        for field in &message.fields {
            // The .proto name, then the JSON name (which wins), as jsonpb.
            let mut value = None;
            for name in [&field.name, &field.json_name] {
                if let Some(v) = entries.remove(name.as_bytes()) {
                    value = Some(v);
                }
            }
            let Some(value) = value.filter(|v| *v != b"null") else {
                continue;
            };
            if field.repeated {
                if value.first() != Some(&b'[') {
                    return Err(type_error(value, "[]json.RawMessage"));
                }
                for element in array(value) {
                    self.singular(field, element, depth, out)?;
                }
            } else {
                self.singular(field, value, depth, out)?;
            }
        }
        Ok(())
    }

    fn singular(
        &self,
        field: &Field,
        raw: &[u8],
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        let tag = field.number;
        let varint = |v: u64, out: &mut Vec<u8>| {
            encode_key(tag, WireType::Varint, out);
            encode_varint(v, out);
        };
        let delimited = |bytes: &[u8], out: &mut Vec<u8>| {
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(bytes.len() as u64, out);
            out.extend_from_slice(bytes);
        };
        const I32: (i128, i128) = (i32::MIN as i128, i32::MAX as i128);
        const I64: (i128, i128) = (i64::MIN as i128, i64::MAX as i128);
        const U32: (i128, i128) = (0, u32::MAX as i128);
        const U64: (i128, i128) = (0, u64::MAX as i128);
        let int =
            |go_type: &str, (min, max): (i128, i128)| integer(trim_quote(raw), go_type, min, max);
        match field.kind {
            Kind::Bool => match raw.first() {
                Some(b't') => varint(1, out),
                Some(b'f' | b'n') => varint(0, out),
                _ => return Err(type_error(raw, "bool")),
            },
            Kind::Int32 => varint(int("int32", I32)? as i64 as u64, out),
            Kind::Int64 => varint(int("int64", I64)? as i64 as u64, out),
            Kind::Uint32 => varint(int("uint32", U32)? as u64, out),
            Kind::Uint64 => varint(int("uint64", U64)? as u64, out),
            Kind::Sint32 => {
                let v = int("int32", I32)? as i64;
                varint(((v << 1) ^ (v >> 63)) as u64, out);
            }
            Kind::Sint64 => {
                let v = int("int64", I64)? as i64;
                varint(((v << 1) ^ (v >> 63)) as u64, out);
            }
            Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => {
                let bits = match field.kind {
                    Kind::Fixed32 => int("uint32", U32)? as u32,
                    Kind::Sfixed32 => int("int32", I32)? as i32 as u32,
                    _ => (float(raw, "float32")? as f32).to_bits(),
                };
                encode_key(tag, WireType::ThirtyTwoBit, out);
                out.extend_from_slice(&bits.to_le_bytes());
            }
            Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => {
                let bits = match field.kind {
                    Kind::Fixed64 => int("uint64", U64)? as u64,
                    Kind::Sfixed64 => int("int64", I64)? as i64 as u64,
                    _ => float(raw, "float64")?.to_bits(),
                };
                encode_key(tag, WireType::SixtyFourBit, out);
                out.extend_from_slice(&bits.to_le_bytes());
            }
            Kind::String => match raw.first() {
                Some(b'"') => {
                    let s = unquote(raw);
                    delimited(String::from_utf8_lossy(&s).as_bytes(), out);
                }
                Some(b'n') => delimited(b"", out),
                _ => return Err(type_error(raw, "string")),
            },
            Kind::Bytes => match raw.first() {
                Some(b'"') => {
                    let bytes = base64_decode(&unquote(raw)).map_err(DecodeError::Invalid)?;
                    delimited(&bytes, out);
                }
                Some(b'n') => delimited(b"", out),
                _ => return Err(type_error(raw, "[]uint8")),
            },
            Kind::Enum => {
                let number = if raw.len() >= 2 && raw[0] == b'"' && raw[raw.len() - 1] == b'"' {
                    let e = self
                        .descriptors
                        .enumeration(&field.type_name)
                        .ok_or_else(|| DecodeError::Unknown(field.type_name.clone()))?;
                    e.number(trim_quote(raw)).ok_or_else(|| {
                        invalid(format!(
                            "unknown value {} for enum {}",
                            go_quote(raw),
                            e.full_name
                        ))
                    })?
                } else {
                    integer(raw, "protoreflect.EnumNumber", I32.0, I32.1)? as i32
                };
                varint(number as i64 as u64, out);
            }
            Kind::Message => {
                let message = self
                    .descriptors
                    .message(&field.type_name)
                    .ok_or_else(|| DecodeError::Unknown(field.type_name.clone()))?;
                let mut inner = Vec::new();
                self.fields(message, raw, depth + 1, &mut inner)?;
                delimited(&inner, out);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_go() {
        assert_eq!(base64_decode(b"Zm9v"), Ok(b"foo".to_vec()));
        assert_eq!(base64_decode(b"YQ=="), Ok(b"a".to_vec()));
        assert_eq!(base64_decode(b"YWI="), Ok(b"ab".to_vec()));
        assert_eq!(base64_decode(b""), Ok(vec![]));
        assert_eq!(base64_decode(b"Zm9v\nYmFy\r\n"), Ok(b"foobar".to_vec()));
        let err = |n: usize| Err(format!("illegal base64 data at input byte {n}"));
        assert_eq!(base64_decode(b"Zm9"), err(0));
        assert_eq!(base64_decode(b"Zm9vYQ"), err(4));
        assert_eq!(base64_decode(b"Zm9v_-"), err(4));
        assert_eq!(base64_decode(b"!!!!"), err(0));
        assert_eq!(base64_decode(b"YQ="), err(3));
        assert_eq!(base64_decode(b"YQ==YQ=="), err(4));
        assert_eq!(base64_decode(b"Y==="), err(1));
    }

    #[test]
    fn unquote_as_go() {
        assert_eq!(unquote(br#""a\"b\\c\/\n""#), b"a\"b\\c/\n".to_vec());
        assert_eq!(
            unquote(br#""\u00e9\ud83d\ude00""#),
            "é😀".as_bytes().to_vec()
        );
        assert_eq!(unquote(br#""\ud83d""#), "\u{fffd}".as_bytes().to_vec());
    }

    #[test]
    fn integers_as_go() {
        let i64s = (i64::MIN as i128, i64::MAX as i128);
        let int = |raw: &str| integer(trim_quote(raw.as_bytes()), "int64", i64s.0, i64s.1);
        assert_eq!(int("5"), Ok(5));
        assert_eq!(int("\"-5\""), Ok(-5));
        assert_eq!(int("null"), Ok(0));
        let e = |m: &str| Err(invalid(m));
        assert_eq!(
            int("1.5"),
            e("json: cannot unmarshal number 1.5 into Go value of type int64")
        );
        assert_eq!(
            int("true"),
            e("json: cannot unmarshal bool into Go value of type int64")
        );
        assert_eq!(
            int("\"abc\""),
            e("invalid character 'a' looking for beginning of value")
        );
        assert_eq!(int("\"\""), e("unexpected end of JSON input"));
        assert_eq!(
            int("99999999999999999999"),
            e("json: cannot unmarshal number 99999999999999999999 into Go value of type int64")
        );
    }

    #[test]
    fn go_quote_escapes() {
        assert_eq!(go_quote(br#""BOGUS""#), r#""\"BOGUS\"""#);
    }
}
