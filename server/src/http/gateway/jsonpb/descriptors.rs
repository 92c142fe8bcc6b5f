//! The messages' descriptors (protoc's, built into cairn-proto), indexed
//! by full name: what the transcoder needs of each field.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

/// A field's protobuf type, as the JSON mapping sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Double,
    Float,
    Int64,
    Uint64,
    Int32,
    Fixed64,
    Fixed32,
    Bool,
    String,
    Bytes,
    Uint32,
    Enum,
    Sfixed32,
    Sfixed64,
    Sint32,
    Sint64,
    Message,
}

/// One field.
#[derive(Debug, Clone)]
pub struct Field {
    /// The name in the .proto file (etcd's gateway writes these).
    pub name: String,
    /// protoc's lowerCamelCase name (accepted on input, as Go's jsonpb).
    pub json_name: String,
    pub number: u32,
    pub kind: Kind,
    pub repeated: bool,
    /// Which oneof the field belongs to, if any.
    pub oneof: Option<i32>,
    /// The full name of the message or enum type, without the leading dot.
    pub type_name: String,
}

/// One message: its fields in declaration order (the order of the output).
#[derive(Debug, Clone)]
pub struct MessageType {
    pub fields: Vec<Field>,
}

/// One enum: its values' names and numbers.
#[derive(Debug, Clone)]
pub struct EnumType {
    pub full_name: String,
    pub values: Vec<(String, i32)>,
}

impl EnumType {
    pub fn number(&self, name: &[u8]) -> Option<i32> {
        self.values
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, v)| *v)
    }

    pub fn name(&self, number: i32) -> Option<&str> {
        self.values
            .iter()
            .find(|(_, v)| *v == number)
            .map(|(n, _)| n.as_str())
    }
}

/// Every message and enum of the API.
#[derive(Debug, Default)]
pub struct Descriptors {
    messages: HashMap<String, MessageType>,
    enums: HashMap<String, EnumType>,
}

/// The descriptors failed to load (cannot happen with the set built into
/// cairn-proto; answered as an internal error rather than a panic).
#[derive(Debug, thiserror::Error)]
#[error("the API descriptors do not decode: {0}")]
pub struct Unreadable(#[from] prost::DecodeError);

/// The descriptors, read once.
pub fn get() -> Result<&'static Descriptors, &'static Unreadable> {
    static DESCRIPTORS: OnceLock<Result<Descriptors, Unreadable>> = OnceLock::new();
    DESCRIPTORS
        .get_or_init(|| Descriptors::load(cairn_proto::FILE_DESCRIPTOR_SET))
        .as_ref()
}

impl Descriptors {
    fn load(bytes: &[u8]) -> Result<Self, Unreadable> {
        let set = FileDescriptorSet::decode(bytes)?;
        let mut this = Self::default();
        for file in &set.file {
            let package = file.package();
            for message in &file.message_type {
                this.add_message(package, message);
            }
            for e in &file.enum_type {
                this.add_enum(package, e);
            }
        }
        Ok(this)
    }

    fn add_message(&mut self, scope: &str, message: &DescriptorProto) {
        let full_name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            self.add_message(&full_name, nested);
        }
        for e in &message.enum_type {
            self.add_enum(&full_name, e);
        }
        let fields = message
            .field
            .iter()
            .map(|f| Field {
                name: f.name().to_string(),
                json_name: f.json_name().to_string(),
                number: u32::try_from(f.number()).unwrap_or_default(),
                kind: kind(f.r#type()),
                repeated: f.label() == Label::Repeated,
                oneof: f.oneof_index,
                type_name: f.type_name().trim_start_matches('.').to_string(),
            })
            .collect();
        self.messages.insert(full_name, MessageType { fields });
    }

    fn add_enum(&mut self, scope: &str, e: &EnumDescriptorProto) {
        let full_name = format!("{scope}.{}", e.name());
        let values = e
            .value
            .iter()
            .map(|v| (v.name().to_string(), v.number()))
            .collect();
        self.enums
            .insert(full_name.clone(), EnumType { full_name, values });
    }

    pub fn message(&self, full_name: &str) -> Option<&MessageType> {
        self.messages.get(full_name)
    }

    pub fn enumeration(&self, full_name: &str) -> Option<&EnumType> {
        self.enums.get(full_name)
    }
}

fn kind(t: Type) -> Kind {
    match t {
        Type::Double => Kind::Double,
        Type::Float => Kind::Float,
        Type::Int64 => Kind::Int64,
        Type::Uint64 => Kind::Uint64,
        Type::Int32 => Kind::Int32,
        Type::Fixed64 => Kind::Fixed64,
        Type::Fixed32 => Kind::Fixed32,
        Type::Bool => Kind::Bool,
        Type::String => Kind::String,
        Type::Bytes => Kind::Bytes,
        Type::Uint32 => Kind::Uint32,
        Type::Enum => Kind::Enum,
        Type::Sfixed32 => Kind::Sfixed32,
        Type::Sfixed64 => Kind::Sfixed64,
        Type::Sint32 => Kind::Sint32,
        Type::Sint64 => Kind::Sint64,
        // Groups do not occur in proto3; read as messages.
        Type::Message | Type::Group => Kind::Message,
    }
}
