//! Protobuf wire bytes to JSON, as etcd 3.5's gateway writes a response
//! (golang/protobuf 1.5's `jsonpb.Marshaler{OrigName: true}`): fields in
//! declaration order under their .proto names, unset and zero fields left
//! out (a message field that is set is written, even empty: `{}`), 64-bit
//! integers as strings, enums by name, bytes as padded standard base64,
//! strings escaped as Go's `json.Marshal` escapes them.

use base64::Engine;
use prost::encoding::{decode_key, decode_varint, WireType};

use super::descriptors::{Descriptors, Field, Kind, MessageType};

/// Why a message could not be written (the bytes are prost's own encoding
/// of a known message, so neither happens in practice).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("malformed message: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("malformed message: {0}")]
    Wire(&'static str),
    #[error("no descriptor for {0}")]
    Unknown(String),
}

/// One value as it was on the wire.
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

/// Appends `s` as a JSON string, as Go's `json.Marshal` writes it (HTML
/// characters and U+2028/U+2029 escaped too).
pub fn quote(s: &str, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", ch as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Splits a message's bytes into (field number, value) in wire order;
/// packed repeated scalars are unpacked.
fn values<'a>(
    message: &MessageType,
    mut bytes: &'a [u8],
) -> Result<Vec<(u32, Raw<'a>)>, EncodeError> {
    let mut values = Vec::new();
    while !bytes.is_empty() {
        let (number, wire_type) = decode_key(&mut bytes)?;
        let raw = match wire_type {
            WireType::Varint => Raw::Varint(decode_varint(&mut bytes)?),
            WireType::ThirtyTwoBit => {
                let (v, rest) = split(bytes, 4)?;
                bytes = rest;
                Raw::Fixed32(u32::from_le_bytes(v.try_into().unwrap_or_default()))
            }
            WireType::SixtyFourBit => {
                let (v, rest) = split(bytes, 8)?;
                bytes = rest;
                Raw::Fixed64(u64::from_le_bytes(v.try_into().unwrap_or_default()))
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut bytes)?).unwrap_or(usize::MAX);
                let (v, rest) = split(bytes, len)?;
                bytes = rest;
                Raw::Bytes(v)
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(EncodeError::Wire("groups are not supported"));
            }
        };
        let field = message.fields.iter().find(|f| f.number == number);
        match (field, raw) {
            (Some(f), Raw::Bytes(mut packed)) if f.repeated && is_scalar(f.kind) => {
                while !packed.is_empty() {
                    let v = match f.kind {
                        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => {
                            let (v, rest) = split(packed, 4)?;
                            packed = rest;
                            Raw::Fixed32(u32::from_le_bytes(v.try_into().unwrap_or_default()))
                        }
                        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => {
                            let (v, rest) = split(packed, 8)?;
                            packed = rest;
                            Raw::Fixed64(u64::from_le_bytes(v.try_into().unwrap_or_default()))
                        }
                        _ => Raw::Varint(decode_varint(&mut packed)?),
                    };
                    values.push((number, v));
                }
            }
            _ => values.push((number, raw)),
        }
    }
    Ok(values)
}

fn split(bytes: &[u8], n: usize) -> Result<(&[u8], &[u8]), EncodeError> {
    if bytes.len() < n {
        return Err(EncodeError::Wire("buffer underflow"));
    }
    Ok(bytes.split_at(n))
}

fn is_scalar(kind: Kind) -> bool {
    !matches!(kind, Kind::String | Kind::Bytes | Kind::Message)
}

/// Whether proto3 counts a singular scalar as set (not its zero value).
fn is_set(raw: Raw<'_>) -> bool {
    match raw {
        Raw::Varint(v) | Raw::Fixed64(v) => v != 0,
        Raw::Fixed32(v) => v != 0,
        Raw::Bytes(b) => !b.is_empty(),
    }
}

/// Writes messages as JSON.
pub struct Encoder<'d> {
    pub descriptors: &'d Descriptors,
}

impl Encoder<'_> {
    /// Appends message `name`, encoded as `bytes`, as a JSON object.
    pub fn message(&self, name: &str, bytes: &[u8], out: &mut String) -> Result<(), EncodeError> {
        let message = self
            .descriptors
            .message(name)
            .ok_or_else(|| EncodeError::Unknown(name.to_string()))?;
        let values = values(message, bytes)?;
        out.push('{');
        let mut first = true;
        for field in &message.fields {
            let mine: Vec<Raw<'_>> = values
                .iter()
                .filter(|(n, _)| *n == field.number)
                .map(|(_, v)| *v)
                .collect();
            let Some(&last) = mine.last() else {
                continue;
            };
            // A oneof member or a message counts as set whenever it is on
            // the wire; any other singular field only when not zero.
            let present = field.repeated
                || field.oneof.is_some()
                || field.kind == Kind::Message
                || is_set(last);
            if !present {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            quote(&field.name, out);
            out.push(':');
            if field.repeated {
                out.push('[');
                for (i, v) in mine.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.value(field, *v, out)?;
                }
                out.push(']');
            } else {
                self.value(field, last, out)?;
            }
        }
        out.push('}');
        Ok(())
    }

    fn value(&self, field: &Field, raw: Raw<'_>, out: &mut String) -> Result<(), EncodeError> {
        let wrong = || EncodeError::Wire("unexpected wire type");
        let (int, bits) = match raw {
            Raw::Varint(v) | Raw::Fixed64(v) => (v, v),
            Raw::Fixed32(v) => (u64::from(v), u64::from(v)),
            Raw::Bytes(b) => {
                match field.kind {
                    Kind::String => quote(&String::from_utf8_lossy(b), out),
                    Kind::Bytes => {
                        out.push('"');
                        out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
                        out.push('"');
                    }
                    Kind::Message => self.message(&field.type_name, b, out)?,
                    _ => return Err(wrong()),
                }
                return Ok(());
            }
        };
        let zigzag = |v: u64| ((v >> 1) as i64) ^ -((v & 1) as i64);
        match field.kind {
            Kind::Bool => out.push_str(if int != 0 { "true" } else { "false" }),
            Kind::Int32 | Kind::Sfixed32 => out.push_str(&(int as i32).to_string()),
            Kind::Uint32 | Kind::Fixed32 => out.push_str(&(int as u32).to_string()),
            Kind::Sint32 => out.push_str(&(zigzag(int) as i32).to_string()),
            Kind::Int64 | Kind::Sfixed64 => out.push_str(&format!("\"{}\"", int as i64)),
            Kind::Uint64 | Kind::Fixed64 => out.push_str(&format!("\"{int}\"")),
            Kind::Sint64 => out.push_str(&format!("\"{}\"", zigzag(int))),
            Kind::Float | Kind::Double => {
                let f = if field.kind == Kind::Float {
                    f64::from(f32::from_bits(bits as u32))
                } else {
                    f64::from_bits(bits)
                };
                match f {
                    f if f.is_nan() => out.push_str("\"NaN\""),
                    f if f.is_infinite() && f > 0.0 => out.push_str("\"Infinity\""),
                    f if f.is_infinite() => out.push_str("\"-Infinity\""),
                    f => out.push_str(&f.to_string()),
                }
            }
            Kind::Enum => {
                let number = int as i32;
                let name = self
                    .descriptors
                    .enumeration(&field.type_name)
                    .and_then(|e| e.name(number));
                match name {
                    Some(name) => quote(name, out),
                    None => out.push_str(&number.to_string()),
                }
            }
            Kind::String | Kind::Bytes | Kind::Message => return Err(wrong()),
        }
        Ok(())
    }
}
