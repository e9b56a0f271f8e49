//! `envoy.filters.network.tcp_proxy`.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier, tcp_proxy::WeightedCluster,
    tcp_proxy::weighted_cluster::ClusterWeight,
};

use super::error::{Ctx, DecodeError};
use super::time::timeout_or;
use crate::model;

/// Envoy's default `idle_timeout` for tcp_proxy.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn tcp_proxy(ctx: &Ctx, pb: &TcpProxy) -> Result<model::TcpProxy, DecodeError> {
    let TcpProxy {
        stat_prefix,
        on_demand,
        metadata_match,
        idle_timeout,
        downstream_idle_timeout,
        upstream_idle_timeout,
        access_log,
        max_connect_attempts,
        backoff_options,
        hash_policy,
        tunneling_config,
        max_downstream_connection_duration,
        max_downstream_connection_duration_jitter_percentage,
        access_log_flush_interval,
        flush_access_log_on_connected,
        access_log_options,
        proxy_protocol_tlvs,
        proxy_protocol_tlv_merge_policy,
        upstream_connect_mode,
        max_early_data_bytes,
        check_drain_close,
        cluster_specifier,
    } = pb;
    ctx.unsupported_fields()
        .check("on_demand", on_demand.is_some())
        .check_msg("metadata_match", metadata_match)
        .check("downstream_idle_timeout", downstream_idle_timeout.is_some())
        .check("upstream_idle_timeout", upstream_idle_timeout.is_some())
        .check("access_log", !access_log.is_empty())
        // One attempt is Envoy's default; more would need retries.
        .check(
            "max_connect_attempts",
            max_connect_attempts.is_some_and(|n| n.value > 1),
        )
        .check("backoff_options", backoff_options.is_some())
        .check("hash_policy", !hash_policy.is_empty())
        .check("tunneling_config", tunneling_config.is_some())
        .check(
            "max_downstream_connection_duration",
            max_downstream_connection_duration.is_some(),
        )
        .check(
            "max_downstream_connection_duration_jitter_percentage",
            max_downstream_connection_duration_jitter_percentage.is_some(),
        )
        .check(
            "access_log_flush_interval",
            access_log_flush_interval.is_some(),
        )
        .check(
            "flush_access_log_on_connected",
            *flush_access_log_on_connected,
        )
        .check_msg("access_log_options", access_log_options)
        .check("proxy_protocol_tlvs", !proxy_protocol_tlvs.is_empty())
        .check(
            "proxy_protocol_tlv_merge_policy",
            *proxy_protocol_tlv_merge_policy != 0,
        )
        .check("upstream_connect_mode", *upstream_connect_mode != 0)
        .check("max_early_data_bytes", max_early_data_bytes.is_some())
        .check_msg("check_drain_close", check_drain_close)
        .finish()?;

    if stat_prefix.is_empty() {
        return Err(ctx.invalid("stat_prefix", "must not be empty"));
    }
    if max_connect_attempts.is_some_and(|n| n.value == 0) {
        return Err(ctx.invalid("max_connect_attempts", "must be at least 1"));
    }
    let cluster = match cluster_specifier {
        Some(ClusterSpecifier::Cluster(name)) => {
            model::ClusterSpecifier::Cluster(Arc::from(name.as_str()))
        }
        Some(ClusterSpecifier::WeightedClusters(weighted)) => {
            weighted_clusters(&ctx.at("weighted_clusters"), weighted)?
        }
        None => {
            return Err(ctx.invalid("", "one of cluster or weighted_clusters is required"));
        }
    };
    Ok(model::TcpProxy {
        stat_prefix: Arc::from(stat_prefix.as_str()),
        cluster,
        idle_timeout: timeout_or(
            ctx,
            "idle_timeout",
            idle_timeout.as_ref(),
            DEFAULT_IDLE_TIMEOUT,
        )?,
    })
}

fn weighted_clusters(
    ctx: &Ctx,
    pb: &WeightedCluster,
) -> Result<model::ClusterSpecifier, DecodeError> {
    let WeightedCluster { clusters } = pb;
    if clusters.is_empty() {
        return Err(ctx.invalid("clusters", "needs at least one cluster"));
    }
    let clusters = clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ctx = ctx.at_index("clusters", i);
            let ClusterWeight {
                name,
                weight,
                metadata_match,
            } = c;
            ctx.unsupported_fields()
                .check_msg("metadata_match", metadata_match)
                .finish()?;
            if name.is_empty() {
                return Err(ctx.invalid("name", "must not be empty"));
            }
            if *weight == 0 {
                return Err(ctx.invalid("weight", "must be at least 1"));
            }
            Ok(model::WeightedCluster {
                name: Arc::from(name.as_str()),
                weight: *weight,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
    if total > u64::from(u32::MAX) {
        return Err(ctx.unsupported(format!("total weight {total} above {}", u32::MAX)));
    }
    Ok(model::ClusterSpecifier::Weighted(clusters))
}
