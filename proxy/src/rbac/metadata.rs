//! Dynamic metadata, as `MetadataMatcher`s read it.

use std::sync::Arc;

/// A `google.protobuf.Value` inside dynamic metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    Null,
    Number(f64),
    String(Arc<str>),
    Bool(bool),
    List(Vec<MetadataValue>),
    /// A nested struct reached as the end of a path; no value matcher matches one.
    Struct,
}

/// Where metadata matchers look: the value under `filter` at the nested `path`.
pub trait DynamicMetadata: Sync {
    fn get(&self, filter: &str, path: &[Arc<str>]) -> Option<&MetadataValue>;
}

/// No filter wrote anything: every lookup finds no value, and matchers decide as Envoy's
/// do on a missing value (only `present_match: false`, or an inverted matcher, matches).
/// This is what a request principal (JWT claims) meets without `jwt_authn`.
pub struct NoMetadata;

impl DynamicMetadata for NoMetadata {
    fn get(&self, _filter: &str, _path: &[Arc<str>]) -> Option<&MetadataValue> {
        None
    }
}
