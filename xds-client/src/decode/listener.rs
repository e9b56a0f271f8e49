//! `envoy.config.listener.v3.Listener` → [`model::Listener`].

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Address, address};
use envoy_types::pb::envoy::config::listener::v3::{
    Listener, ListenerFilter, ListenerFilterChainMatchPredicate, listener_filter,
    listener_filter_chain_match_predicate::{MatchSet, Rule},
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;

use super::address::ip_socket_address;
use super::error::{Ctx, DecodeError, Problems, Resource};
use super::extension::Extension;
use super::filter_chain::{check_overlaps, filter_chain};
use super::time::timeout_or;
use crate::model;

/// Envoy's default `listener_filters_timeout`.
const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

/// Decodes one listener. Every field is either carried into the model, known to have no
/// effect on vm-proxy (said next to it), or rejected as [`DecodeError::Unsupported`].
#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn listener(pb: &Listener) -> Result<model::Listener, DecodeError> {
    let Listener {
        name,
        address,
        additional_addresses,
        stat_prefix: _, // names statistics only
        stats_matcher,
        filter_chains,
        fcds_config,
        filter_chain_matcher,
        use_original_dst,
        default_filter_chain,
        per_connection_buffer_limit_bytes: _, // Envoy's buffer watermark; vm-proxy copies with its own fixed buffers
        per_connection_buffer_high_watermark_timeout,
        metadata: _, // inert data for filters; none of the supported ones reads it
        deprecated_v1,
        drain_type: _, // vm-proxy has no hot restart nor drain_listeners endpoint to tell the types apart
        listener_filters,
        listener_filters_timeout,
        continue_on_listener_filters_timeout,
        transparent,
        freebind,
        socket_options,
        tcp_fast_open_queue_length,
        traffic_direction,
        udp_listener_config,
        api_listener,
        connection_balance_config: _, // spreads accepts over Envoy worker threads; vm-proxy has one accept loop
        reuse_port: _,                // same: SO_REUSEPORT sockets per worker
        enable_reuse_port: _,
        access_log,
        tcp_backlog_size: _,                           // listen(2) backlog tuning
        max_connections_to_accept_per_socket_event: _, // accept batching of Envoy's event loop
        bind_to_port,
        enable_mptcp,
        ignore_global_conn_limit: _, // an exemption from a limit vm-proxy does not impose
        bypass_overload_manager: _,  // same, for the overload manager
        tcp_keepalive,
        listener_specifier,
    } = pb;

    let name = if name.is_empty() {
        unnamed_listener_name(address.as_ref())
    } else {
        name.clone()
    };
    let resource = Resource::listener(&name);
    let ctx = Ctx::new(&resource);

    let mut problems = Problems::new(&ctx);
    problems.take(
        ctx.unsupported_fields()
            .check("additional_addresses", !additional_addresses.is_empty())
            .check_msg("stats_matcher", stats_matcher)
            .check("fcds_config", fcds_config.is_some())
            .check("filter_chain_matcher", filter_chain_matcher.is_some())
            .check_msg(
                "per_connection_buffer_high_watermark_timeout",
                per_connection_buffer_high_watermark_timeout,
            )
            .check_msg("deprecated_v1", deprecated_v1)
            .check_msg("freebind", freebind)
            .check("socket_options", !socket_options.is_empty())
            .check_msg("tcp_fast_open_queue_length", tcp_fast_open_queue_length)
            .check("udp_listener_config", udp_listener_config.is_some())
            .check("api_listener", api_listener.is_some())
            .check("access_log", !access_log.is_empty())
            .check("enable_mptcp", *enable_mptcp)
            .check("tcp_keepalive", tcp_keepalive.is_some())
            .check("internal_listener", listener_specifier.is_some())
            .finish(),
    );

    // An internal listener (rejected above) has no socket address; asking for one would only
    // repeat that rejection in other words.
    let address = match listener_specifier {
        Some(_) => None,
        None => problems.take(ip_socket_address(&ctx, "address", address.as_ref())),
    };

    let (listener_filters, listener_filters_disabled) = problems
        .take_all(
            listener_filters
                .iter()
                .enumerate()
                .map(|(i, f)| listener_filter(&ctx.at_index("listener_filters", i), f)),
        )
        .into_iter()
        .unzip();

    if filter_chains.is_empty() && default_filter_chain.is_none() {
        problems.push(ctx.invalid("filter_chains", "no filter chains specified"));
    }
    let chain_count = filter_chains.len();
    let filter_chains = problems.take_all(
        filter_chains
            .iter()
            .enumerate()
            .map(|(i, fc)| filter_chain(&ctx.at_index("filter_chains", i), fc)),
    );
    // Overlaps are judged by chain index, which only means something when every chain decoded.
    if filter_chains.len() == chain_count {
        problems.take(check_overlaps(&ctx, &filter_chains));
    }
    let default_filter_chain = problems
        .take(
            default_filter_chain
                .as_ref()
                .map(|fc| filter_chain(&ctx.at("default_filter_chain"), fc))
                .transpose(),
        )
        .flatten();
    let listener_filters_timeout = problems
        .take(timeout_or(
            &ctx,
            "listener_filters_timeout",
            listener_filters_timeout.as_ref(),
            DEFAULT_LISTENER_FILTERS_TIMEOUT,
        ))
        .flatten();

    problems.finish(address.map(|address| model::Listener {
        name: Arc::from(name.as_str()),
        address,
        bind_to_port: bind_to_port.is_none_or(|b| b.value),
        use_original_dst: use_original_dst.is_some_and(|b| b.value),
        transparent: transparent.is_some_and(|b| b.value),
        listener_filters,
        listener_filters_disabled,
        listener_filters_timeout,
        continue_on_listener_filters_timeout: *continue_on_listener_filters_timeout,
        filter_chains,
        default_filter_chain,
        traffic_direction: match traffic_direction {
            1 => model::TrafficDirection::Inbound,
            2 => model::TrafficDirection::Outbound,
            _ => model::TrafficDirection::Unspecified,
        },
    }))
}

/// Envoy gives an unnamed static listener a random UUID; a name from its address, in Istio's
/// `<ip>_<port>` style, is as unique and can be read in logs.
fn unnamed_listener_name(address: Option<&Address>) -> String {
    match address.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(socket)) => match socket.port_specifier {
            Some(
                envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                    port,
                ),
            ) => format!("{}_{port}", socket.address),
            _ => socket.address.clone(),
        },
        _ => String::new(),
    }
}

/// One listener filter with the condition that skips it.
fn listener_filter(
    ctx: &Ctx,
    pb: &ListenerFilter,
) -> Result<(model::ListenerFilter, Option<model::FilterPredicate>), DecodeError> {
    let disabled = pb
        .filter_disabled
        .as_ref()
        .map(|p| predicate(&ctx.at("filter_disabled"), p))
        .transpose()?;
    Ok((filter_kind(ctx, pb)?, disabled))
}

fn predicate(
    ctx: &Ctx,
    pb: &ListenerFilterChainMatchPredicate,
) -> Result<model::FilterPredicate, DecodeError> {
    let rules = |field: &str, set: &MatchSet| {
        if set.rules.len() < 2 {
            return Err(ctx.invalid(field, "a match set needs at least 2 rules"));
        }
        set.rules
            .iter()
            .enumerate()
            .map(|(i, r)| predicate(&ctx.at(field).at_index("rules", i), r))
            .collect::<Result<Vec<_>, _>>()
    };
    match &pb.rule {
        Some(Rule::OrMatch(set)) => Ok(model::FilterPredicate::Or(rules("or_match", set)?)),
        Some(Rule::AndMatch(set)) => Ok(model::FilterPredicate::And(rules("and_match", set)?)),
        Some(Rule::NotMatch(inner)) => Ok(model::FilterPredicate::Not(Box::new(predicate(
            &ctx.at("not_match"),
            inner,
        )?))),
        Some(Rule::AnyMatch(true)) => Ok(model::FilterPredicate::Any),
        Some(Rule::AnyMatch(false)) => Err(ctx.invalid("any_match", "must be true")),
        Some(Rule::DestinationPortRange(range)) => {
            if range.start >= range.end {
                return Err(ctx.invalid(
                    "destination_port_range",
                    format!("empty range [{}, {})", range.start, range.end),
                ));
            }
            Ok(model::FilterPredicate::DestinationPortRange {
                start: range.start,
                end: range.end,
            })
        }
        None => Err(ctx.invalid("rule", "a predicate needs a rule")),
    }
}

fn filter_kind(ctx: &Ctx, pb: &ListenerFilter) -> Result<model::ListenerFilter, DecodeError> {
    let ListenerFilter {
        name,
        filter_disabled: _, // decoded by the caller
        config_type,
    } = pb;
    if name.is_empty() {
        return Err(ctx.invalid("name", "a listener filter needs a name"));
    }
    let typed_config = match config_type {
        Some(listener_filter::ConfigType::TypedConfig(any)) => Some(any),
        Some(listener_filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(ctx.unsupported(format!("{name:?}: config_discovery (ECDS)")));
        }
        None => None,
    };
    let ext = Extension::new(ctx, name, typed_config)?;

    if ext.is::<OriginalDst>("envoy.filters.listener.original_dst") {
        let OriginalDst {} = ext.config(ctx)?;
        Ok(model::ListenerFilter::OriginalDst)
    } else if ext.is::<TlsInspector>("envoy.filters.listener.tls_inspector") {
        let TlsInspector {
            enable_ja3_fingerprinting,
            enable_ja4_fingerprinting,
            initial_read_buffer_size: _, // first peek size; the ClientHello read is the same
            close_connection_on_client_hello_parsing_errors,
            max_client_hello_size,
        } = ext.config(ctx)?;
        let ctx = ctx.at("typed_config");
        ctx.unsupported_fields()
            .check_msg("enable_ja3_fingerprinting", &enable_ja3_fingerprinting)
            .check_msg("enable_ja4_fingerprinting", &enable_ja4_fingerprinting)
            .check(
                "close_connection_on_client_hello_parsing_errors",
                close_connection_on_client_hello_parsing_errors,
            )
            .check("max_client_hello_size", max_client_hello_size.is_some())
            .finish()?;
        Ok(model::ListenerFilter::TlsInspector)
    } else if ext.is::<HttpInspector>("envoy.filters.listener.http_inspector") {
        let HttpInspector {} = ext.config(ctx)?;
        Ok(model::ListenerFilter::HttpInspector)
    } else {
        // Listener filters have no `is_optional` in Envoy: an unknown one always fails the listener.
        Err(ctx.unsupported(format!("listener filter {ext}")))
    }
}
