//! Envoy parses its JSON with case-insensitive enum names (`lb_policy: round_robin`); the
//! proto3 JSON mapping is case-sensitive, so names are upper-cased first where that is what
//! makes them valid, as protobuf's `case_insensitive_enum_parsing` does.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::Value;

use crate::decode::type_name_of;

/// Rewrites, in place, enum values of `value` (a JSON form of `desc`) that are only valid once
/// upper-cased. Returns whether anything changed.
pub(super) fn uppercase_enums(value: &mut Value, desc: &MessageDescriptor) -> bool {
    let Value::Object(map) = value else {
        return false;
    };
    let desc = if desc.full_name() == "google.protobuf.Any" {
        let inner = map
            .get("@type")
            .and_then(Value::as_str)
            .and_then(|url| desc.parent_pool().get_message_by_name(type_name_of(url)));
        match inner {
            // Well-known payloads (`{"@type", "value"}`) hold no enums.
            Some(inner) if !inner.full_name().starts_with("google.protobuf.") => inner,
            _ => return false,
        }
    } else {
        desc.clone()
    };
    let mut changed = false;
    for (key, v) in map.iter_mut() {
        if let Some(field) = desc
            .get_field_by_json_name(key)
            .or_else(|| desc.get_field_by_name(key))
        {
            changed |= fix_field(v, &field);
        }
    }
    changed
}

fn fix_field(value: &mut Value, field: &FieldDescriptor) -> bool {
    let kind = field.kind();
    if field.is_map() {
        let Kind::Message(entry) = kind else {
            return false;
        };
        let value_kind = entry.map_entry_value_field().kind();
        match value {
            Value::Object(entries) => entries
                .values_mut()
                .fold(false, |changed, v| fix_single(v, &value_kind) | changed),
            _ => false,
        }
    } else if field.is_list() {
        match value {
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, v| fix_single(v, &kind) | changed),
            _ => false,
        }
    } else {
        fix_single(value, &kind)
    }
}

fn fix_single(value: &mut Value, kind: &Kind) -> bool {
    match (kind, value) {
        (Kind::Enum(e), Value::String(name)) if e.get_value_by_name(name).is_none() => {
            let upper = name.to_ascii_uppercase();
            let valid = e.get_value_by_name(&upper).is_some();
            if valid {
                *name = upper;
            }
            valid
        }
        (Kind::Message(m), value) if !m.full_name().starts_with("google.protobuf.") => {
            uppercase_enums(value, m)
        }
        (Kind::Message(m), value) if m.full_name() == "google.protobuf.Any" => {
            uppercase_enums(value, m)
        }
        _ => false,
    }
}
