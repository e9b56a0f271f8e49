//! The RBAC filters: `envoy.filters.network.rbac` and `envoy.filters.http.rbac`.

mod filter;
mod metadata;
mod rules;

use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{Rbac as HttpRbac, RbacPerRoute};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::google::protobuf::Any;

pub(crate) use filter::{http_rbac, http_rbac_per_route, network_rbac};

use super::error::{Ctx, DecodeError, Resource};
use super::extension::Extension;
use crate::model;

/// One `envoy.filters.network.rbac` config on its own, outside a listener (istiod's unit-test
/// goldens are single filters). Errors are reported against `resource`.
pub fn network_rbac_config(
    resource: &Resource,
    typed_config: &Any,
) -> Result<model::NetworkRbac, DecodeError> {
    let ctx = Ctx::new(resource);
    let ext = Extension::new(&ctx, "envoy.filters.network.rbac", Some(typed_config))?;
    if !ext.is::<NetworkRbac>("envoy.filters.network.rbac") {
        return Err(ctx.invalid(
            "typed_config",
            format!("{ext} is not a network RBAC config"),
        ));
    }
    network_rbac(&ctx.at("typed_config"), &ext.config(&ctx)?)
}

/// One `envoy.filters.http.rbac` config on its own, outside a connection manager.
pub fn http_rbac_config(
    resource: &Resource,
    typed_config: &Any,
) -> Result<model::HttpRbac, DecodeError> {
    let ctx = Ctx::new(resource);
    let ext = Extension::new(&ctx, "envoy.filters.http.rbac", Some(typed_config))?;
    if !ext.is::<HttpRbac>("envoy.filters.http.rbac") {
        return Err(ctx.invalid("typed_config", format!("{ext} is not an HTTP RBAC config")));
    }
    http_rbac(&ctx.at("typed_config"), &ext.config(&ctx)?)
}

/// One `RBACPerRoute` on its own; `None`: RBAC is disabled on that route.
pub fn http_rbac_per_route_config(
    resource: &Resource,
    typed_config: &Any,
) -> Result<Option<model::HttpRbac>, DecodeError> {
    let ctx = Ctx::new(resource);
    let ext = Extension::new(&ctx, "envoy.filters.http.rbac", Some(typed_config))?;
    if !ext.is::<RbacPerRoute>("envoy.filters.http.rbac") {
        return Err(ctx.invalid("typed_config", format!("{ext} is not an RBACPerRoute")));
    }
    http_rbac_per_route(&ctx.at("typed_config"), &ext.config(&ctx)?)
}
