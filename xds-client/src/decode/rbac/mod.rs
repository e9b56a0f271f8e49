//! The RBAC filters: `envoy.filters.network.rbac` and `envoy.filters.http.rbac`.

mod filter;
pub(crate) mod matcher;
mod metadata;
mod rules;

#[allow(unused_imports)] // `http_rbac` is for the HTTP filter decoder, merged separately
pub(crate) use filter::{http_rbac, network_rbac};
