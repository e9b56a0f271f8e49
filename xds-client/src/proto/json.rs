//! proto3 JSON ↔ prost, through `prost-reflect` dynamic messages.

use envoy_types::pb::google::protobuf::Struct;
use prost::{Message, Name};
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde::Deserializer;

use super::enums::uppercase_enums;
use super::{ProtoError, message_descriptor};

/// Parses Envoy JSON text into `T`. Unknown fields are errors, as in Envoy's static config.
pub(crate) fn from_json_str<T: Message + Name + Default>(text: &str) -> Result<T, ProtoError> {
    let desc = message_descriptor(&T::full_name())?;
    let mut de = serde_json::Deserializer::from_str(text);
    let strict = deserialize_tracked(desc.clone(), &mut de).and_then(|dynamic| {
        de.end().map_err(|err| ProtoError::Json {
            path: ".".to_string(),
            message: err.to_string(),
        })?;
        Ok(dynamic)
    });
    match strict {
        Ok(dynamic) => transcode(&dynamic),
        // Parsed straight from the text first, so that errors carry line and column; only a
        // document that fails is re-read with Envoy's lenient enum names.
        Err(err) => {
            let Ok(mut value) = serde_json::from_str::<serde_json::Value>(text) else {
                return Err(err);
            };
            if !uppercase_enums(&mut value, &desc) {
                return Err(err);
            }
            deserialize_tracked(desc, value).map_or(Err(err), |dynamic| transcode(&dynamic))
        }
    }
}

/// Parses an already-parsed JSON document (from YAML, or a `Struct`) into `T`.
pub(crate) fn from_json_value<T: Message + Name + Default>(
    mut value: serde_json::Value,
) -> Result<T, ProtoError> {
    let desc = message_descriptor(&T::full_name())?;
    uppercase_enums(&mut value, &desc);
    transcode(&deserialize_tracked(desc, value)?)
}

/// Turns the `Struct` of a `TypedStruct` into the message it stands for, the way Envoy does:
/// through its JSON form.
pub(crate) fn message_from_struct<T: Message + Name + Default>(
    value: &Struct,
) -> Result<T, ProtoError> {
    let json = to_json(value)?;
    from_json_value(json)
}

/// Renders `msg` as Envoy renders proto3 JSON in its admin output: proto field names,
/// default values left out, 64-bit integers as strings, `Any` with `@type`.
pub(crate) fn to_json<T: Message + Name>(msg: &T) -> Result<serde_json::Value, ProtoError> {
    let type_name = T::full_name();
    let desc = message_descriptor(&type_name)?;
    let dynamic = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).map_err(|err| {
        ProtoError::Transcode {
            type_name: type_name.clone(),
            message: err.to_string(),
        }
    })?;
    let options = SerializeOptions::new().use_proto_field_name(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|err| ProtoError::Transcode {
            type_name,
            message: err.to_string(),
        })
}

fn deserialize_tracked<'de, D>(
    desc: MessageDescriptor,
    deserializer: D,
) -> Result<DynamicMessage, ProtoError>
where
    D: Deserializer<'de>,
    D::Error: std::fmt::Display,
{
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(deserializer, &mut track);
    DynamicMessage::deserialize_with_options(desc, tracked, &DeserializeOptions::new()).map_err(
        |err| ProtoError::Json {
            path: track.path().to_string(),
            message: err.to_string(),
        },
    )
}

fn transcode<T: Message + Name + Default>(dynamic: &DynamicMessage) -> Result<T, ProtoError> {
    T::decode(dynamic.encode_to_vec().as_slice()).map_err(|err| ProtoError::Transcode {
        type_name: T::full_name(),
        message: err.to_string(),
    })
}
