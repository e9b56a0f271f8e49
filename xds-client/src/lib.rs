//! Envoy and Istio configuration, decoded once at the edge into vm-proxy's own compact model.
//!
//! The data path only ever sees [`model`] types: prost messages stay inside this crate.

pub mod model;
