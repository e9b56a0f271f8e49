//! A cluster's `circuit_breakers` and `common_lb_config` → [`model::CircuitBreakers`] and
//! [`model::CommonLb`].

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers,
    circuit_breakers::Thresholds,
    cluster::{CommonLbConfig, common_lb_config::LocalityConfigSpecifier},
};
use envoy_types::pb::envoy::config::core::v3::RoutingPriority;

use super::error::{Ctx, DecodeError};
use crate::model;

pub(crate) fn circuit_breakers(
    ctx: &Ctx,
    pb: Option<&CircuitBreakers>,
) -> Result<model::CircuitBreakers, DecodeError> {
    let Some(CircuitBreakers {
        thresholds,
        per_host_thresholds,
    }) = pb
    else {
        return Ok(model::CircuitBreakers::default());
    };
    ctx.unsupported_fields()
        .check("per_host_thresholds", !per_host_thresholds.is_empty())
        .finish()?;
    let mut out = model::CircuitBreakers::default();
    // Envoy uses the first entry of each priority and ignores later ones.
    let (mut default_seen, mut high_seen) = (false, false);
    for (i, t) in thresholds.iter().enumerate() {
        let ctx = ctx.at_index("thresholds", i);
        let decoded = thresholds_of(&ctx, t)?;
        match RoutingPriority::try_from(t.priority) {
            Ok(RoutingPriority::Default) if !default_seen => {
                default_seen = true;
                out.default = decoded;
            }
            Ok(RoutingPriority::High) if !high_seen => {
                high_seen = true;
                out.high = decoded;
            }
            Ok(_) => {}
            Err(_) => {
                return Err(ctx.invalid("priority", format!("unknown priority {}", t.priority)));
            }
        }
    }
    Ok(out)
}

fn thresholds_of(ctx: &Ctx, pb: &Thresholds) -> Result<model::Thresholds, DecodeError> {
    let Thresholds {
        priority: _, // sorted by the caller
        max_connections,
        max_pending_requests,
        max_requests,
        max_retries,
        retry_budget,
        track_remaining,
        max_connection_pools,
    } = pb;
    ctx.unsupported_fields()
        .check("retry_budget", retry_budget.is_some())
        .check("max_connection_pools", max_connection_pools.is_some())
        .finish()?;
    let d = model::Thresholds::default();
    Ok(model::Thresholds {
        max_connections: max_connections.map_or(d.max_connections, |v| v.value),
        max_pending_requests: max_pending_requests.map_or(d.max_pending_requests, |v| v.value),
        max_requests: max_requests.map_or(d.max_requests, |v| v.value),
        max_retries: max_retries.map_or(d.max_retries, |v| v.value),
        track_remaining: *track_remaining,
    })
}

pub(crate) fn common_lb(
    ctx: &Ctx,
    pb: Option<&CommonLbConfig>,
) -> Result<model::CommonLb, DecodeError> {
    let Some(CommonLbConfig {
        healthy_panic_threshold,
        // Envoy batches host-set changes within this window to save CPU; vm-proxy applies
        // each EDS update at once, which the window only delays.
        update_merge_window: _,
        // Only meaningful with active health checks, which clusters cannot have here
        // (health_checks is rejected): no host ever waits for a first check.
        ignore_new_hosts_until_first_hc: _,
        close_connections_on_host_set_change,
        consistent_hashing_lb_config,
        override_host_status,
        locality_config_specifier,
    }) = pb
    else {
        return Ok(model::CommonLb::default());
    };
    ctx.unsupported_fields()
        .check(
            "close_connections_on_host_set_change",
            *close_connections_on_host_set_change,
        )
        .check_msg("consistent_hashing_lb_config", consistent_hashing_lb_config)
        .check("override_host_status", override_host_status.is_some())
        .check(
            "zone_aware_lb_config",
            matches!(
                locality_config_specifier,
                Some(LocalityConfigSpecifier::ZoneAwareLbConfig(_))
            ),
        )
        .finish()?;
    let mut out = model::CommonLb {
        locality_weighted: matches!(
            locality_config_specifier,
            Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
        ),
        ..model::CommonLb::default()
    };
    if let Some(p) = healthy_panic_threshold {
        if !(0.0..=100.0).contains(&p.value) {
            return Err(ctx.invalid(
                "healthy_panic_threshold",
                format!("{} is not a percentage in [0, 100]", p.value),
            ));
        }
        out.healthy_panic_threshold = p.value;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::{
        LocalityWeightedLbConfig, ZoneAwareLbConfig,
    };
    use envoy_types::pb::envoy::r#type::v3::Percent;
    use envoy_types::pb::google::protobuf::UInt32Value;

    use super::*;
    use crate::decode::error::Resource;

    fn u32v(value: u32) -> Option<UInt32Value> {
        Some(UInt32Value { value })
    }

    #[test]
    fn istio_default_thresholds_are_carried_and_the_first_per_priority_wins() {
        let r = Resource::cluster("c");
        let ctx = Ctx::new(&r);
        let huge = Thresholds {
            max_connections: u32v(u32::MAX),
            max_pending_requests: u32v(u32::MAX),
            max_requests: u32v(u32::MAX),
            max_retries: u32v(u32::MAX),
            track_remaining: true,
            ..Default::default()
        };
        let later = Thresholds {
            max_connections: u32v(1),
            ..Default::default()
        };
        let high = Thresholds {
            priority: RoutingPriority::High as i32,
            max_requests: u32v(7),
            ..Default::default()
        };
        let cb = CircuitBreakers {
            thresholds: vec![huge, later, high],
            per_host_thresholds: vec![],
        };
        let out = circuit_breakers(&ctx, Some(&cb)).unwrap();
        assert_eq!(out.default.max_connections, u32::MAX);
        assert_eq!(out.default.max_retries, u32::MAX);
        assert!(out.default.track_remaining);
        assert_eq!(out.high.max_requests, 7);
        // Unset limits take Envoy's defaults.
        assert_eq!(out.high.max_connections, 1024);
        assert_eq!(out.high.max_retries, 3);
        assert_eq!(
            circuit_breakers(&ctx, None).unwrap(),
            model::CircuitBreakers::default()
        );
    }

    #[test]
    fn unsupported_breaker_parts_are_named() {
        let r = Resource::cluster("c");
        let ctx = Ctx::new(&r);
        let cb = CircuitBreakers {
            thresholds: vec![Thresholds {
                max_connection_pools: u32v(3),
                ..Default::default()
            }],
            per_host_thresholds: vec![Thresholds::default()],
        };
        let err = circuit_breakers(&ctx, Some(&cb)).unwrap_err().to_string();
        assert!(err.contains("per_host_thresholds"), "{err}");
        let cb = CircuitBreakers {
            thresholds: cb.thresholds,
            per_host_thresholds: vec![],
        };
        let err = circuit_breakers(&ctx, Some(&cb)).unwrap_err().to_string();
        assert!(err.contains("thresholds[0]: max_connection_pools"), "{err}");
    }

    #[test]
    fn common_lb_config_panic_threshold_and_locality_weighting() {
        let r = Resource::cluster("c");
        let ctx = Ctx::new(&r);
        assert_eq!(common_lb(&ctx, None).unwrap(), model::CommonLb::default());
        let istio = CommonLbConfig {
            locality_config_specifier: Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(
                LocalityWeightedLbConfig {},
            )),
            ..Default::default()
        };
        let out = common_lb(&ctx, Some(&istio)).unwrap();
        assert!(out.locality_weighted);
        assert_eq!(out.healthy_panic_threshold, 50.0);
        let off = CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 0.0 }),
            ..Default::default()
        };
        assert_eq!(
            common_lb(&ctx, Some(&off)).unwrap().healthy_panic_threshold,
            0.0
        );
        let bad = CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 120.0 }),
            ..Default::default()
        };
        assert!(common_lb(&ctx, Some(&bad)).is_err());
        let zone = CommonLbConfig {
            locality_config_specifier: Some(LocalityConfigSpecifier::ZoneAwareLbConfig(
                ZoneAwareLbConfig::default(),
            )),
            ..Default::default()
        };
        let err = common_lb(&ctx, Some(&zone)).unwrap_err().to_string();
        assert!(err.contains("not supported: zone_aware_lb_config"), "{err}");
    }
}
