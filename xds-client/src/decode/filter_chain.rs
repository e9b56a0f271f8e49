//! Filter chains, their match criteria and their network filters.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, filter, filter_chain_match::ConnectionSourceType,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use ipnet::IpNet;

use super::address::{cidr, port};
use super::error::{Ctx, DecodeError, Problems};
use super::extension::Extension;
use super::hcm::http_connection_manager;
use super::istio_proto::MetadataExchange;
use super::istio_proto::StatsPluginConfig;
use super::metadata_exchange::metadata_exchange;
use super::rbac::network_rbac;
use super::stats::stats;
use super::tcp_proxy::tcp_proxy;
use super::time::duration;
use super::tls::{downstream, transport_socket_of};
use crate::model;

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn filter_chain(ctx: &Ctx, pb: &FilterChain) -> Result<model::FilterChain, DecodeError> {
    let FilterChain {
        filter_chain_match,
        filters,
        use_proxy_proto,
        metadata: _, // inert data for filters; none of the supported ones reads it
        transport_socket,
        transport_socket_connect_timeout,
        name,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check_msg("use_proxy_proto", use_proxy_proto)
            .finish(),
    );
    let transport_socket = problems.take(transport_socket_of(
        &ctx.at("transport_socket"),
        transport_socket.as_ref(),
        downstream,
    ));
    let transport_socket_connect_timeout = problems
        .take(
            transport_socket_connect_timeout
                .as_ref()
                .map(|d| duration(ctx, "transport_socket_connect_timeout", d))
                .transpose(),
        )
        .flatten()
        .filter(|d| !d.is_zero());
    let filter_chain_match = problems
        .take(
            filter_chain_match
                .as_ref()
                .map(|m| chain_match(&ctx.at("filter_chain_match"), m))
                .transpose(),
        )
        .flatten()
        .unwrap_or_default();
    let filters = problems.take(network_filters(ctx, filters));
    let chain = (|| {
        Some(model::FilterChain {
            name: Arc::from(name.as_str()),
            filter_chain_match,
            filters: filters?,
            transport_socket: transport_socket?,
            transport_socket_connect_timeout,
        })
    })();
    problems.finish(chain)
}

fn chain_match(ctx: &Ctx, pb: &FilterChainMatch) -> Result<model::FilterChainMatch, DecodeError> {
    let FilterChainMatch {
        destination_port,
        prefix_ranges,
        address_suffix,
        suffix_len,
        direct_source_prefix_ranges,
        source_type,
        source_prefix_ranges,
        source_ports,
        server_names,
        transport_protocol,
        application_protocols,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check("address_suffix", !address_suffix.is_empty())
            .check("suffix_len", suffix_len.is_some())
            .check(
                "direct_source_prefix_ranges",
                !direct_source_prefix_ranges.is_empty(),
            )
            .finish(),
    );

    let destination_port = problems
        .take(
            destination_port
                .map(|p| port(ctx, "destination_port", p.value))
                .transpose(),
        )
        .flatten();
    let prefix_ranges = problems
        .take(cidrs(ctx, "prefix_ranges", prefix_ranges))
        .unwrap_or_default();
    let source_prefix_ranges = problems
        .take(cidrs(ctx, "source_prefix_ranges", source_prefix_ranges))
        .unwrap_or_default();
    let source_ports = problems.take_all(
        source_ports
            .iter()
            .enumerate()
            .map(|(i, p)| port(ctx, &format!("source_ports[{i}]"), *p)),
    );
    let source_type = match ConnectionSourceType::try_from(*source_type) {
        Ok(ConnectionSourceType::Any) => model::SourceType::Any,
        Ok(ConnectionSourceType::SameIpOrLoopback) => model::SourceType::SameIpOrLoopback,
        Ok(ConnectionSourceType::External) => model::SourceType::External,
        Err(_) => {
            problems.push(ctx.invalid("source_type", format!("unknown source type {source_type}")));
            model::SourceType::Any
        }
    };
    for (i, server_name) in server_names.iter().enumerate() {
        if !valid_server_name(server_name) {
            problems.push(ctx.invalid(
                &format!("server_names[{i}]"),
                format!("{server_name:?}: partial wildcards are not supported"),
            ));
        }
    }
    problems.finish(Some(model::FilterChainMatch {
        destination_port,
        prefix_ranges,
        server_names: arcs(server_names),
        transport_protocol: (!transport_protocol.is_empty())
            .then(|| Arc::from(transport_protocol.as_str())),
        application_protocols: arcs(application_protocols),
        source_type,
        source_prefix_ranges,
        source_ports,
    }))
}

/// Envoy takes exact names and `*.suffix` wildcards only.
fn valid_server_name(name: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(rest) => !rest.contains('*'),
        None => !name.contains('*'),
    }
}

fn cidrs(
    ctx: &Ctx,
    field: &str,
    ranges: &[envoy_types::pb::envoy::config::core::v3::CidrRange],
) -> Result<Vec<IpNet>, DecodeError> {
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| cidr(&ctx.at_index(field, i), r))
        .collect()
}

fn arcs(values: &[String]) -> Vec<Arc<str>> {
    values.iter().map(|v| Arc::from(v.as_str())).collect()
}

fn network_filters(
    ctx: &Ctx,
    filters: &[Filter],
) -> Result<Vec<model::NetworkFilter>, DecodeError> {
    let last = filters.len().saturating_sub(1);
    let mut problems = Problems::new(ctx);
    let decoded = problems.take_all(
        filters
            .iter()
            .enumerate()
            .map(|(i, f)| network_filter(&ctx.at_index("filters", i), f, i == last)),
    );
    problems.finish(Some(decoded))
}

fn network_filter(
    ctx: &Ctx,
    pb: &Filter,
    is_last: bool,
) -> Result<model::NetworkFilter, DecodeError> {
    let Filter { name, config_type } = pb;
    if name.is_empty() {
        return Err(ctx.invalid("name", "a network filter needs a name"));
    }
    let typed_config = match config_type {
        Some(filter::ConfigType::TypedConfig(any)) => Some(any),
        Some(filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(ctx.unsupported(format!("{name:?}: config_discovery (ECDS)")));
        }
        None => None,
    };
    let ext = Extension::new(ctx, name, typed_config)?;
    if ext.is::<TcpProxy>("envoy.filters.network.tcp_proxy") {
        terminal_last(ctx, &ext, is_last)?;
        let config: TcpProxy = ext.config(ctx)?;
        Ok(model::NetworkFilter::TcpProxy(tcp_proxy(
            &ctx.at("typed_config"),
            &config,
        )?))
    } else if ext.is::<Rbac>("envoy.filters.network.rbac") {
        let config: Rbac = ext.config(ctx)?;
        let rbac = network_rbac(&ctx.at("typed_config"), &config)?;
        Ok(model::NetworkFilter::Rbac(Arc::new(rbac)))
    } else if ext.is::<StatsPluginConfig>("istio.stats") {
        let config: StatsPluginConfig = ext.config(ctx)?;
        let stats = stats(&ctx.at("typed_config"), &config)?;
        Ok(model::NetworkFilter::IstioStats(Arc::new(stats)))
    } else if ext.is::<HttpConnectionManager>("envoy.filters.network.http_connection_manager") {
        terminal_last(ctx, &ext, is_last)?;
        let config: HttpConnectionManager = ext.config(ctx)?;
        let hcm = http_connection_manager(&ctx.at("typed_config"), &config)?;
        Ok(model::NetworkFilter::HttpConnectionManager(Arc::new(hcm)))
    } else if ext.is::<MetadataExchange>("istio.metadata_exchange") {
        Ok(model::NetworkFilter::MetadataExchange(metadata_exchange(
            ctx, &ext,
        )?))
    } else {
        // Network filters have no `is_optional` in Envoy: an unknown one always fails the listener.
        Err(ctx.unsupported(format!("network filter {ext}")))
    }
}

fn terminal_last(ctx: &Ctx, ext: &Extension, is_last: bool) -> Result<(), DecodeError> {
    match is_last {
        true => Ok(()),
        false => Err(ctx.invalid(
            "",
            format!("terminal filter {ext} must be the last filter in a network filter chain"),
        )),
    }
}

/// One point of Envoy's filter chain match space; `None` stands for "any".
type MatchPoint = (
    Option<u16>,
    Option<IpNet>,
    Option<Arc<str>>,
    Option<Arc<str>>,
    Option<Arc<str>>,
    u8,
    Option<IpNet>,
    Option<u16>,
);

/// Envoy rejects a listener where two filter chains would match exactly the same connections
/// for some combination of their criteria (lists are expanded into every combination).
pub(crate) fn check_overlaps(ctx: &Ctx, chains: &[model::FilterChain]) -> Result<(), DecodeError> {
    let mut seen: HashMap<MatchPoint, usize> = HashMap::new();
    for (index, chain) in chains.iter().enumerate() {
        let m = &chain.filter_chain_match;
        let source_type = match m.source_type {
            model::SourceType::Any => 0,
            model::SourceType::SameIpOrLoopback => 1,
            model::SourceType::External => 2,
        };
        for prefix in any_of(&m.prefix_ranges) {
            for server_name in any_of(&m.server_names) {
                for alpn in any_of(&m.application_protocols) {
                    for source_prefix in any_of(&m.source_prefix_ranges) {
                        for source_port in any_of(&m.source_ports) {
                            let point = (
                                m.destination_port,
                                prefix,
                                server_name.clone(),
                                m.transport_protocol.clone(),
                                alpn.clone(),
                                source_type,
                                source_prefix,
                                source_port,
                            );
                            if let Some(first) = seen.insert(point, index)
                                && first != index
                            {
                                return Err(ctx.invalid(
                                    &format!("filter_chains[{index}]"),
                                    format!(
                                        "filter chain {:?} has the same matching rules as filter chain {:?} (filter_chains[{first}])",
                                        chain.name, chains[first].name
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The values of a match list, or a single "any" for an empty list.
fn any_of<T: Clone>(values: &[T]) -> Vec<Option<T>> {
    if values.is_empty() {
        vec![None]
    } else {
        values.iter().cloned().map(Some).collect()
    }
}
