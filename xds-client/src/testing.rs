//! Helpers for unit tests: Envoy resources written as proto3 JSON, as in real configs.

use prost::{Message, Name};
use serde_json::Value;

use crate::decode::{DecodeError, Resource};

/// Parses `json` (Envoy's JSON form) into the prost message `T`, panicking on a bad fixture.
pub(crate) fn pb<T: Message + Name + Default>(json: Value) -> T {
    match crate::proto::from_json_value::<T>(json) {
        Ok(msg) => msg,
        Err(err) => panic!("test fixture is not a valid {}: {err}", T::full_name()),
    }
}

/// Asserts an Unsupported error about `resource` whose `what` contains every one of `parts`.
#[track_caller]
pub(crate) fn assert_unsupported(err: &DecodeError, resource: &Resource, parts: &[&str]) {
    match err {
        DecodeError::Unsupported { resource: r, what } => {
            assert_eq!(r, resource, "{err}");
            for part in parts {
                assert!(what.contains(part), "{part:?} not in {what:?}");
            }
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

/// Asserts an Invalid error about `resource` at `field` whose reason contains `reason`.
#[track_caller]
pub(crate) fn assert_invalid(err: &DecodeError, resource: &Resource, field: &str, reason: &str) {
    match err {
        DecodeError::Invalid {
            resource: r,
            field: f,
            reason: why,
        } => {
            assert_eq!(r, resource, "{err}");
            assert_eq!(f, field, "{err}");
            assert!(why.contains(reason), "{reason:?} not in {why:?}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}
