//! `ClusterLoadAssignment` (a cluster's inline `load_assignment`, and later EDS) → endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
    cluster_load_assignment::Policy, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::google::protobuf::value::Kind;

use super::address::endpoint_address;
use super::error::{Ctx, DecodeError, Problems};
use crate::model;

/// The endpoints of a load assignment, in order. `dns_names` allows host names instead of IPs
/// (STRICT_DNS / LOGICAL_DNS clusters).
pub(crate) fn endpoints(
    ctx: &Ctx,
    pb: &ClusterLoadAssignment,
    dns_names: bool,
) -> Result<Vec<model::Endpoint>, DecodeError> {
    let ClusterLoadAssignment {
        cluster_name,
        endpoints,
        named_endpoints,
        policy,
    } = pb;
    let mut problems = Problems::new(ctx);
    if cluster_name.is_empty() {
        problems.push(ctx.invalid("cluster_name", "must not be empty"));
    }
    problems.take(
        ctx.unsupported_fields()
            .check("named_endpoints", !named_endpoints.is_empty())
            .finish(),
    );
    let overprovisioning = policy
        .as_ref()
        .and_then(|p| p.overprovisioning_factor)
        .map_or(model::DEFAULT_OVERPROVISIONING, |f| f.value);
    if let Some(policy) = policy {
        problems.take(check_policy(&ctx.at("policy"), policy));
    }
    let mut out = Vec::new();
    for (i, locality) in endpoints.iter().enumerate() {
        let ctx = ctx.at_index("endpoints", i);
        let LocalityLbEndpoints {
            locality: _, // only zone-aware routing reads the name, and it is rejected
            metadata: _, // inert data for filters; none of the supported ones reads it
            lb_endpoints,
            load_balancing_weight,
            priority,
            proximity: _, // not implemented by Envoy either
            lb_config,
        } = locality;
        problems.take(
            ctx.unsupported_fields()
                .check("priority (other than 0)", *priority != 0)
                .check("lb_config", lb_config.is_some())
                .finish(),
        );
        if load_balancing_weight.is_some_and(|w| w.value == 0) {
            problems.push(ctx.invalid("load_balancing_weight", "must be at least 1"));
        }
        let locality = model::EndpointLocality {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            weight: load_balancing_weight.map(|w| w.value),
            overprovisioning,
        };
        out.extend(
            problems
                .take_all(
                    lb_endpoints
                        .iter()
                        .enumerate()
                        .map(|(j, e)| endpoint(&ctx.at_index("lb_endpoints", j), e, dns_names)),
                )
                .into_iter()
                .map(|e| model::Endpoint { locality, ..e }),
        );
    }
    problems.finish(Some(out))
}

fn check_policy(ctx: &Ctx, pb: &Policy) -> Result<(), DecodeError> {
    let Policy {
        drop_overloads,
        overprovisioning_factor, // carried by the caller into each endpoint's locality
        endpoint_stale_after,
        weighted_priority_health,
    } = pb;
    ctx.unsupported_fields()
        .check("drop_overloads", !drop_overloads.is_empty())
        .check("endpoint_stale_after", endpoint_stale_after.is_some())
        .check("weighted_priority_health", *weighted_priority_health)
        .finish()?;
    if overprovisioning_factor.is_some_and(|f| f.value == 0) {
        return Err(ctx.invalid("overprovisioning_factor", "must be above 0"));
    }
    Ok(())
}

fn endpoint(ctx: &Ctx, pb: &LbEndpoint, dns_names: bool) -> Result<model::Endpoint, DecodeError> {
    let LbEndpoint {
        health_status,
        metadata,
        load_balancing_weight,
        host_identifier,
    } = pb;
    let endpoint = match host_identifier {
        Some(HostIdentifier::Endpoint(endpoint)) => endpoint,
        Some(HostIdentifier::EndpointName(name)) => {
            return Err(ctx.unsupported(format!("endpoint_name {name:?}")));
        }
        None => return Err(ctx.invalid("endpoint", "an endpoint is required")),
    };
    let ep_ctx = ctx.at("endpoint");
    let Endpoint {
        address,
        health_check_config: _, // used by active health checks only, which are rejected
        hostname: _,            // used by HTTP host rewriting only
        additional_addresses,
        observability_name: _, // a stats/log label
    } = endpoint;
    ep_ctx
        .unsupported_fields()
        .check("additional_addresses", !additional_addresses.is_empty())
        .finish()?;
    let address = endpoint_address(&ep_ctx, "address", address.as_ref(), dns_names)?;
    let load_balancing_weight = match load_balancing_weight {
        None => 1,
        Some(w) if w.value == 0 => {
            return Err(ctx.invalid("load_balancing_weight", "must be at least 1"));
        }
        Some(w) => w.value,
    };
    let health_status = match HealthStatus::try_from(*health_status) {
        Ok(HealthStatus::Unknown) => model::HealthStatus::Unknown,
        Ok(HealthStatus::Healthy) => model::HealthStatus::Healthy,
        Ok(HealthStatus::Unhealthy) => model::HealthStatus::Unhealthy,
        Ok(HealthStatus::Draining) => model::HealthStatus::Draining,
        Ok(HealthStatus::Timeout) => model::HealthStatus::Timeout,
        Ok(HealthStatus::Degraded) => model::HealthStatus::Degraded,
        Err(_) => {
            return Err(ctx.invalid(
                "health_status",
                format!("unknown health status {health_status}"),
            ));
        }
    };
    Ok(model::Endpoint {
        address,
        load_balancing_weight,
        health_status,
        transport_socket_metadata: transport_socket_metadata(metadata.as_ref()),
        locality: model::EndpointLocality::default(),
    })
}

/// Filter metadata that picks an endpoint's transport socket
/// (`transport_socket_matches`).
const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";

/// The string entries of the endpoint's `envoy.transport_socket_match` metadata. Other
/// metadata is read by nothing vm-proxy implements (subsets are rejected); non-string
/// entries can never equal a match criterion, which are strings only.
fn transport_socket_metadata(metadata: Option<&Metadata>) -> BTreeMap<Arc<str>, Arc<str>> {
    metadata
        .and_then(|m| m.filter_metadata.get(TRANSPORT_SOCKET_MATCH))
        .into_iter()
        .flat_map(|s| &s.fields)
        .filter_map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(v)) => Some((Arc::from(k.as_str()), Arc::from(v.as_str()))),
            _ => None,
        })
        .collect()
}
