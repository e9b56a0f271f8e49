//! Envoy resources (prost types of `envoy-types`) → vm-proxy's [`crate::model`].
//!
//! The same functions serve bootstrap files, xDS responses and config dumps. Each one takes
//! every field of its message into account: a field is carried into the model, documented as
//! having no effect on vm-proxy, or — when set — rejected as [`DecodeError::Unsupported`], so
//! that nothing vm-proxy does not implement is silently dropped.

mod action;
mod address;
mod cluster;
mod endpoint;
mod error;
mod extension;
mod filter_chain;
mod hcm;
mod headers;
mod http_filter;
mod http_options;
mod istio_proto;
mod limits;
mod listener;
mod matcher;
mod metadata_exchange;
mod outlier;
mod rbac;
mod retry;
mod route;
mod stats;
mod tcp_proxy;
mod time;
mod tls;
mod upstream_http;
mod wasm;
mod workload;

pub use workload::local_workload;

pub(crate) use address::ip_socket_address;
pub(crate) use cluster::cluster;
pub(crate) use endpoint::endpoints;
pub(crate) use error::Ctx;
pub use error::{DecodeError, Resource, ResourceKind};
pub(crate) use extension::type_name_of;
#[cfg(test)]
pub(crate) use hcm::http_connection_manager;
pub(crate) use listener::listener;
pub use rbac::{http_rbac_config, http_rbac_per_route_config, network_rbac_config};
pub(crate) use route::{route_config, route_configuration};

#[cfg(test)]
mod tests;
