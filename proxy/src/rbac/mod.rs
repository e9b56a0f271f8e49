//! Istio `AuthorizationPolicy` enforcement: Envoy's RBAC engine over vm-proxy's model.
//!
//! Pure evaluation: a connection's (and optionally a request's) attributes go in, allow or
//! deny with the deciding policy's name comes out. Nothing is allocated on the way except
//! when a request repeats a header a matcher reads (Envoy joins the values with `,`).
//!
//! The network filter runs in [`crate::connection`]; the HTTP data path calls
//! [`check_http`] once per request.

mod attributes;
mod engine;
mod headers;
mod metadata;
mod network;

pub use attributes::{Connection, Request};
pub use engine::{Decision, Verdict, check_http, check_network, evaluate};
pub use metadata::{DynamicMetadata, MetadataValue, NoMetadata};
pub(crate) use network::allows as network_allows;

#[cfg(test)]
mod tests;
