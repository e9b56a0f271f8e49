//! `envoy.config.cluster.v3.Cluster` → [`model::Cluster`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{
        ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbConfig, LbPolicy,
        TransportSocketMatch,
    },
};
use envoy_types::pb::envoy::config::core::v3::{
    ApiVersion, BindConfig, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::google::protobuf::value::Kind;
use prost::Name;

use super::address::ip_socket;
use super::endpoint::endpoints;
use super::error::{Ctx, DecodeError, Problems, Resource};
use super::extension::type_name_of;
use super::limits::{circuit_breakers as breakers, common_lb};
use super::time::duration_or;
use super::tls::{transport_socket_of, upstream};
use super::upstream_http::{default_options, upstream_http_options};
use crate::model;

/// Envoy's default `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Envoy's default `dns_refresh_rate`.
const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);

/// Decodes one cluster. Every field is either carried into the model, known to have no effect
/// on vm-proxy (said next to it), or rejected as [`DecodeError::Unsupported`].
#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn cluster(pb: &Cluster) -> Result<model::Cluster, DecodeError> {
    let Cluster {
        transport_socket_matches,
        transport_socket_matcher,
        name,
        alt_stat_name: _, // names statistics only
        stats_matcher,
        eds_cluster_config,
        connect_timeout,
        per_connection_buffer_limit_bytes: _, // Envoy's buffer watermark; vm-proxy copies with its own fixed buffers
        per_connection_buffer_high_watermark_timeout,
        lb_policy,
        load_assignment,
        health_checks,
        circuit_breakers,
        // The deprecated forms of `typed_extension_protocol_options`' HttpProtocolOptions.
        max_requests_per_connection,
        upstream_http_protocol_options,
        common_http_protocol_options,
        http_protocol_options,
        http2_protocol_options,
        protocol_selection,
        typed_extension_protocol_options,
        dns_refresh_rate,
        dns_jitter,
        dns_failure_refresh_rate,
        respect_dns_ttl,
        dns_lookup_family,
        dns_resolvers,
        use_tcp_for_dns_lookups,
        dns_resolution_config,
        typed_dns_resolver_config,
        wait_for_warm_on_init,
        outlier_detection,
        cleanup_interval: _, // ages out ORIGINAL_DST hosts; vm-proxy keeps no such host set
        upstream_bind_config,
        lb_subset_config,
        common_lb_config,
        transport_socket,
        metadata: _, // inert data for filters; none of the supported ones reads it
        upstream_connection_options,
        close_connections_on_host_health_failure,
        ignore_health_on_host_removal,
        filters,
        load_balancing_policy,
        lrs_server,
        lrs_report_endpoint_metrics,
        track_timeout_budgets,
        upstream_config,
        track_cluster_stats,
        preconnect_policy,
        connection_pool_per_downstream_connection,
        queuing_policies,
        cluster_discovery_type,
        lb_config,
    } = pb;

    let resource = Resource::cluster(name);
    let ctx = Ctx::new(&resource);
    if name.is_empty() {
        return Err(ctx.invalid("name", "a cluster needs a name"));
    }

    let other_protocol_options = typed_extension_protocol_options.iter().any(|(key, any)| {
        let http = HttpProtocolOptions::full_name();
        *key != http || type_name_of(&any.type_url) != http
    });
    let mut problems = Problems::new(&ctx);
    problems.take(
        ctx.unsupported_fields()
            .check(
                "transport_socket_matcher",
                transport_socket_matcher.is_some(),
            )
            .check_msg("stats_matcher", stats_matcher)
            .check(
                "per_connection_buffer_high_watermark_timeout",
                per_connection_buffer_high_watermark_timeout.is_some(),
            )
            .check("health_checks", !health_checks.is_empty())
            .check(
                "typed_extension_protocol_options (other than HttpProtocolOptions)",
                other_protocol_options,
            )
            .check_msg(
                "upstream_http_protocol_options",
                upstream_http_protocol_options,
            )
            .check_msg("common_http_protocol_options", common_http_protocol_options)
            .check_msg("http_protocol_options", http_protocol_options)
            .check_msg("http2_protocol_options", http2_protocol_options)
            .check("protocol_selection", *protocol_selection != 0)
            .check("dns_jitter", dns_jitter.is_some())
            .check(
                "dns_failure_refresh_rate",
                dns_failure_refresh_rate.is_some(),
            )
            .check("dns_resolvers", !dns_resolvers.is_empty())
            .check("use_tcp_for_dns_lookups", *use_tcp_for_dns_lookups)
            .check_msg("dns_resolution_config", dns_resolution_config)
            .check(
                "typed_dns_resolver_config",
                typed_dns_resolver_config.is_some(),
            )
            .check("wait_for_warm_on_init", wait_for_warm_on_init.is_some())
            .check("lb_subset_config", lb_subset_config.is_some())
            .check_msg("upstream_connection_options", upstream_connection_options)
            .check(
                "close_connections_on_host_health_failure",
                *close_connections_on_host_health_failure,
            )
            .check(
                "ignore_health_on_host_removal",
                *ignore_health_on_host_removal,
            )
            .check("load_balancing_policy", load_balancing_policy.is_some())
            .check("lrs_server", lrs_server.is_some())
            .check(
                "lrs_report_endpoint_metrics",
                !lrs_report_endpoint_metrics.is_empty(),
            )
            .check("track_timeout_budgets", *track_timeout_budgets)
            .check("upstream_config", upstream_config.is_some())
            .check_msg("track_cluster_stats", track_cluster_stats)
            .check("preconnect_policy", preconnect_policy.is_some())
            .check(
                "connection_pool_per_downstream_connection",
                *connection_pool_per_downstream_connection,
            )
            .check("queuing_policies", queuing_policies.is_some())
            .check("lb_config", lb_config_set(lb_config.as_ref()))
            .finish(),
    );
    let transport_socket = problems.take(transport_socket_of(
        &ctx.at("transport_socket"),
        transport_socket.as_ref(),
        upstream,
    ));
    let transport_socket_matches = problems.take(
        transport_socket_matches
            .iter()
            .enumerate()
            .map(|(i, m)| socket_match(&ctx.at_index("transport_socket_matches", i), m))
            .collect::<Result<Vec<_>, _>>(),
    );

    let circuit_breakers = problems.take(breakers(
        &ctx.at("circuit_breakers"),
        circuit_breakers.as_ref(),
    ));
    let metadata_exchange = problems.take(super::metadata_exchange::cluster_filters(&ctx, filters));
    let outlier_detection = problems.take(super::outlier::outlier_detection(
        &ctx.at("outlier_detection"),
        outlier_detection.as_ref(),
    ));
    let common_lb = problems.take(common_lb(
        &ctx.at("common_lb_config"),
        common_lb_config.as_ref(),
    ));

    let http = problems
        .take(http_options(&ctx, typed_extension_protocol_options))
        .map(|mut http| {
            // The deprecated field says the same as the typed option, which wins.
            if http.max_requests_per_connection.is_none() {
                http.max_requests_per_connection = max_requests_per_connection
                    .map(|n| n.value)
                    .filter(|n| *n > 0);
            }
            http
        });
    let discovery = problems.take(discovery_of(&ctx, cluster_discovery_type.as_ref()));
    let lb_policy = discovery.and_then(|d| problems.take(lb_policy_of(&ctx, *lb_policy, d)));

    let connect_timeout = problems.take(
        duration_or(
            &ctx,
            "connect_timeout",
            connect_timeout.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
        )
        .and_then(|t| match t.is_zero() {
            true => Err(ctx.invalid("connect_timeout", "must be above 0")),
            false => Ok(t),
        }),
    );
    let dns_refresh_rate = problems.take(
        duration_or(
            &ctx,
            "dns_refresh_rate",
            dns_refresh_rate.as_ref(),
            DEFAULT_DNS_REFRESH_RATE,
        )
        .and_then(|rate| match rate <= Duration::from_millis(1) {
            true => Err(ctx.invalid("dns_refresh_rate", "must be above 1ms")),
            false => Ok(rate),
        }),
    );
    let dns_lookup_family = problems.take(lookup_family(&ctx, *dns_lookup_family));

    let upstream_bind_address = problems
        .take(
            upstream_bind_config
                .as_ref()
                .map(|b| bind_config(&ctx.at("upstream_bind_config"), b))
                .transpose(),
        )
        .flatten()
        .flatten();

    let eds_service_name = discovery.and_then(|discovery| match discovery {
        model::DiscoveryType::Eds => problems
            .take(eds_service(
                &ctx.at("eds_cluster_config"),
                name,
                eds_cluster_config.as_ref(),
            ))
            .map(Some),
        _ => Some(None),
    });
    let endpoints = discovery.and_then(|discovery| {
        problems.take(load_assignment_endpoints(
            &ctx,
            discovery,
            load_assignment.as_ref(),
        ))
    });

    let cluster = (|| {
        Some(model::Cluster {
            name: Arc::from(name.as_str()),
            discovery: discovery?,
            connect_timeout: connect_timeout?,
            lb_policy: lb_policy?,
            upstream_bind_address,
            endpoints: endpoints?,
            eds_service_name: eds_service_name?,
            dns_lookup_family: dns_lookup_family?,
            dns_refresh_rate: dns_refresh_rate?,
            respect_dns_ttl: *respect_dns_ttl,
            transport_socket: transport_socket?,
            transport_socket_matches: transport_socket_matches?,
            circuit_breakers: circuit_breakers?,
            common_lb: common_lb?,
            outlier_detection: outlier_detection?,
            metadata_exchange: metadata_exchange?,
            http: http?,
        })
    })();
    problems.finish(cluster)
}

/// The HttpProtocolOptions entry of `typed_extension_protocol_options`, if any (any other
/// entry is rejected with the other fields).
fn http_options(
    ctx: &Ctx,
    options: &std::collections::HashMap<String, envoy_types::pb::google::protobuf::Any>,
) -> Result<model::HttpUpstreamOptions, DecodeError> {
    use prost::Message;
    let name = HttpProtocolOptions::full_name();
    let Some(any) = options.get(&name) else {
        return Ok(default_options());
    };
    if type_name_of(&any.type_url) != name {
        return Ok(default_options());
    }
    let ctx = ctx.at(&format!("typed_extension_protocol_options[{name:?}]"));
    let pb = HttpProtocolOptions::decode(any.value.as_slice())
        .map_err(|err| ctx.invalid("", format!("cannot decode {name}: {err}")))?;
    upstream_http_options(&ctx, &pb)
}

fn discovery_of(
    ctx: &Ctx,
    pb: Option<&ClusterDiscoveryType>,
) -> Result<model::DiscoveryType, DecodeError> {
    let discovery = match pb {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
            .map_err(|_| ctx.invalid("type", format!("unknown discovery type {t}")))?,
        Some(ClusterDiscoveryType::ClusterType(custom)) => {
            return Err(ctx.unsupported(format!("cluster_type {:?}", custom.name)));
        }
    };
    Ok(match discovery {
        DiscoveryType::Static => model::DiscoveryType::Static,
        DiscoveryType::StrictDns => model::DiscoveryType::StrictDns,
        DiscoveryType::LogicalDns => model::DiscoveryType::LogicalDns,
        DiscoveryType::Eds => model::DiscoveryType::Eds,
        DiscoveryType::OriginalDst => model::DiscoveryType::OriginalDst,
    })
}

fn lookup_family(ctx: &Ctx, family: i32) -> Result<model::DnsLookupFamily, DecodeError> {
    match DnsLookupFamily::try_from(family) {
        Ok(DnsLookupFamily::Auto) => Ok(model::DnsLookupFamily::Auto),
        Ok(DnsLookupFamily::V4Only) => Ok(model::DnsLookupFamily::V4Only),
        Ok(DnsLookupFamily::V6Only) => Ok(model::DnsLookupFamily::V6Only),
        Ok(DnsLookupFamily::V4Preferred) => Ok(model::DnsLookupFamily::V4Preferred),
        Ok(DnsLookupFamily::All) => Ok(model::DnsLookupFamily::All),
        Err(_) => Err(ctx.invalid(
            "dns_lookup_family",
            format!("unknown lookup family {family}"),
        )),
    }
}

/// The endpoints of an inline `load_assignment`, judged against the cluster's discovery type.
fn load_assignment_endpoints(
    ctx: &Ctx,
    discovery: model::DiscoveryType,
    load_assignment: Option<&ClusterLoadAssignment>,
) -> Result<Vec<model::Endpoint>, DecodeError> {
    match (discovery, load_assignment) {
        (_, None) => Ok(Vec::new()),
        (model::DiscoveryType::OriginalDst, Some(_)) => Err(ctx.invalid(
            "load_assignment",
            "ORIGINAL_DST clusters must have no load assignment configured",
        )),
        (model::DiscoveryType::Eds, Some(_)) => {
            Err(ctx.unsupported("load_assignment on an EDS cluster"))
        }
        (model::DiscoveryType::LogicalDns, Some(la))
            if la.endpoints.len() != 1 || la.endpoints[0].lb_endpoints.len() != 1 =>
        {
            Err(ctx.invalid(
                "load_assignment",
                "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint",
            ))
        }
        (discovery, Some(la)) => {
            let dns_names = matches!(
                discovery,
                model::DiscoveryType::StrictDns | model::DiscoveryType::LogicalDns
            );
            endpoints(&ctx.at("load_assignment"), la, dns_names)
        }
    }
}

fn socket_match(
    ctx: &Ctx,
    pb: &TransportSocketMatch,
) -> Result<model::TransportSocketMatch, DecodeError> {
    let TransportSocketMatch {
        name,
        r#match,
        transport_socket,
    } = pb;
    if name.is_empty() {
        return Err(ctx.invalid("name", "a transport socket match needs a name"));
    }
    let mut criteria = BTreeMap::new();
    for (key, value) in r#match.iter().flat_map(|m| &m.fields) {
        match &value.kind {
            Some(Kind::StringValue(v)) => {
                criteria.insert(Arc::from(key.as_str()), Arc::from(v.as_str()));
            }
            _ => {
                return Err(ctx.unsupported(format!(
                    "match.{key}: a criterion other than a string value"
                )));
            }
        }
    }
    Ok(model::TransportSocketMatch {
        name: Arc::from(name.as_str()),
        criteria,
        transport_socket: transport_socket_of(
            &ctx.at("transport_socket"),
            transport_socket.as_ref(),
            upstream,
        )?,
    })
}

/// Whether an `lb_config` carries any setting (an all-defaults one configures nothing).
fn lb_config_set(config: Option<&LbConfig>) -> bool {
    match config {
        None => false,
        Some(LbConfig::RingHashLbConfig(c)) => *c != Default::default(),
        Some(LbConfig::MaglevLbConfig(c)) => *c != Default::default(),
        Some(LbConfig::OriginalDstLbConfig(c)) => *c != Default::default(),
        Some(LbConfig::LeastRequestLbConfig(c)) => *c != Default::default(),
        Some(LbConfig::RoundRobinLbConfig(c)) => *c != Default::default(),
    }
}

fn lb_policy_of(
    ctx: &Ctx,
    policy: i32,
    discovery: model::DiscoveryType,
) -> Result<model::LbPolicy, DecodeError> {
    let policy = LbPolicy::try_from(policy)
        .map_err(|_| ctx.invalid("lb_policy", format!("unknown LB policy {policy}")))?;
    let original_dst = discovery == model::DiscoveryType::OriginalDst;
    if original_dst != (policy == LbPolicy::ClusterProvided) {
        return Err(ctx.invalid(
            "lb_policy",
            format!(
                "LB policy {} is not valid for cluster type {}: 'CLUSTER_PROVIDED' goes with, \
                 and only with, cluster type 'ORIGINAL_DST'",
                policy.as_str_name(),
                discovery_name(discovery)
            ),
        ));
    }
    Ok(match policy {
        LbPolicy::RoundRobin => model::LbPolicy::RoundRobin,
        LbPolicy::LeastRequest => model::LbPolicy::LeastRequest,
        LbPolicy::RingHash => model::LbPolicy::RingHash,
        LbPolicy::Random => model::LbPolicy::Random,
        LbPolicy::Maglev => model::LbPolicy::Maglev,
        LbPolicy::ClusterProvided => model::LbPolicy::ClusterProvided,
        LbPolicy::LoadBalancingPolicyConfig => {
            return Err(ctx.unsupported("lb_policy LOAD_BALANCING_POLICY_CONFIG"));
        }
    })
}

fn discovery_name(discovery: model::DiscoveryType) -> &'static str {
    match discovery {
        model::DiscoveryType::Static => "STATIC",
        model::DiscoveryType::StrictDns => "STRICT_DNS",
        model::DiscoveryType::LogicalDns => "LOGICAL_DNS",
        model::DiscoveryType::Eds => "EDS",
        model::DiscoveryType::OriginalDst => "ORIGINAL_DST",
    }
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn bind_config(ctx: &Ctx, pb: &BindConfig) -> Result<Option<std::net::SocketAddr>, DecodeError> {
    let BindConfig {
        source_address,
        freebind,
        socket_options,
        extra_source_addresses,
        additional_source_addresses,
        local_address_selector,
        validate_network_namespaces,
    } = pb;
    ctx.unsupported_fields()
        .check_msg("freebind", freebind)
        .check("socket_options", !socket_options.is_empty())
        .check("extra_source_addresses", !extra_source_addresses.is_empty())
        .check(
            "additional_source_addresses",
            !additional_source_addresses.is_empty(),
        )
        .check("local_address_selector", local_address_selector.is_some())
        .check("validate_network_namespaces", *validate_network_namespaces)
        .finish()?;
    source_address
        .as_ref()
        .map(|s| ip_socket(ctx, "source_address", s))
        .transpose()
}

/// The EDS service name, once the config source is one vm-proxy can follow (ADS).
#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn eds_service(
    ctx: &Ctx,
    cluster_name: &str,
    pb: Option<&EdsClusterConfig>,
) -> Result<Arc<str>, DecodeError> {
    let Some(EdsClusterConfig {
        eds_config,
        service_name,
    }) = pb
    else {
        return Err(ctx.invalid("", "an EDS cluster needs eds_cluster_config"));
    };
    let Some(ConfigSource {
        authorities,
        // The first-response wait of the xDS subscription: the ADS client's concern, not the
        // cluster's.
        initial_fetch_timeout: _,
        resource_api_version,
        config_source_specifier,
    }) = eds_config
    else {
        return Err(ctx.invalid("eds_config", "an EDS cluster needs eds_config"));
    };
    let ctx_source = ctx.at("eds_config");
    ctx_source
        .unsupported_fields()
        .check("authorities", !authorities.is_empty())
        .check(
            "resource_api_version V2",
            *resource_api_version == ApiVersion::V2 as i32,
        )
        .finish()?;
    match config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) => {}
        Some(_) => {
            return Err(ctx_source.unsupported("a config source other than ads"));
        }
        None => return Err(ctx_source.invalid("", "a config source is required")),
    }
    let service = if service_name.is_empty() {
        cluster_name
    } else {
        service_name
    };
    Ok(Arc::from(service))
}
