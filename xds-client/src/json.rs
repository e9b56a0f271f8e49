//! Envoy's proto3 JSON form, for code outside this crate that must produce wire messages
//! from it (the test control plane serves config dumps this way).

use envoy_types::pb::google::protobuf::Any;

pub use crate::proto::ProtoError;

/// An `Any` written as Envoy writes it in JSON (`{"@type": "type.googleapis.com/…", …}`),
/// transcoded with vm-proxy's descriptors, which know every type URL of Istio's configs.
pub fn any_from_json(value: serde_json::Value) -> Result<Any, ProtoError> {
    crate::proto::from_json_value::<Any>(value)
}
