//! Envoy and Istio configuration, decoded once at the edge into vm-proxy's own compact model.
//!
//! The data path only ever sees [`model`] types: prost messages stay inside this crate.
//! [`bootstrap`] loads Envoy bootstrap files; [`decode`] turns Envoy resources into the model
//! and is shared with xDS.

pub mod ads;
pub mod bootstrap;
pub mod decode;
pub mod istio;
pub mod json;
pub mod model;
pub mod node;
mod proto;
#[cfg(test)]
mod testing;

pub use decode::{DecodeError, Resource, ResourceKind};
