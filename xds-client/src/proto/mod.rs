//! Envoy's protobuf descriptors, and transcoding between Envoy's proto3-JSON form and the prost
//! types of `envoy-types`.
//!
//! JSON needs descriptors because every `Any` names its payload by type URL (`@type`). The
//! descriptor set is compiled by build.rs and decoded once, on first use.

mod enums;
mod json;

pub(crate) use json::{from_json_str, from_json_value, message_from_struct, to_json};

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, MessageDescriptor};

static DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(DESCRIPTOR_SET).map_err(|err| err.to_string());
    tracing::debug!(
        descriptors = env!("XDS_CLIENT_DESCRIPTOR_STATS"),
        ok = pool.is_ok(),
        "Envoy descriptor pool loaded"
    );
    pool
});

/// Failure to move a message between JSON, descriptors and prost types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("built-in protobuf descriptors are unusable: {0}")]
    Descriptors(String),
    #[error("message type {0} is unknown to vm-proxy's descriptors")]
    UnknownMessage(String),
    /// The JSON does not fit the message; `path` is where, in JSON path notation (`.` when the
    /// document itself is wrong).
    #[error("at {path}: {message}")]
    Json { path: String, message: String },
    /// A message that passed one side of the transcoding failed the other.
    #[error("transcoding {type_name}: {message}")]
    Transcode { type_name: String, message: String },
}

pub(crate) fn pool() -> Result<&'static DescriptorPool, ProtoError> {
    POOL.as_ref()
        .map_err(|err| ProtoError::Descriptors(err.clone()))
}

pub(crate) fn message_descriptor(full_name: &str) -> Result<MessageDescriptor, ProtoError> {
    pool()?
        .get_message_by_name(full_name)
        .ok_or_else(|| ProtoError::UnknownMessage(full_name.to_string()))
}

#[cfg(test)]
mod tests;
