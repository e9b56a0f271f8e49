//! The HTTP filters of a connection manager, and their per-route configs
//! (`typed_per_filter_config`: fault and CORS).

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{
    CorsPolicy as RouteCorsPolicy, FilterConfig, cors_policy::EnabledSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    FaultDelay, fault_delay::FaultDelaySecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort::ErrorType,
};
use envoy_types::pb::envoy::extensions::filters::http::grpc_stats::v3::{
    FilterConfig as GrpcStatsConfig, filter_config::PerMethodStatSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::google::protobuf::{Any, Struct, value::Kind};
use prost::{Message, Name};

use super::error::{Ctx, DecodeError, Problems};
use super::extension::{Extension, type_name_of};
use super::headers::{per_million, runtime_per_million};
use super::istio_proto::{AlpnFilterConfig, MetadataExchange, StatsPluginConfig};
use super::matcher::{header_matcher, string_matcher};
use super::stats::stats;
use super::time::duration;
use super::wasm::{NullVmPlugin, null_vm_plugin};
use crate::model;

/// Istio ≥ 1.20's HTTP metadata exchange config, which arrives only as a TypedStruct.
const PEER_METADATA: &str = "io.istio.http.peer_metadata.Config";

/// What the filter list decides beyond the filters themselves.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    pub filters: Vec<model::HttpFilter>,
    /// The router's `suppress_envoy_headers`.
    pub suppress_envoy_headers: bool,
    /// `istio.stats`'s `disable_host_header_fallback`.
    pub stats_disable_host_header_fallback: bool,
}

pub(crate) fn http_filters(ctx: &Ctx, filters: &[HttpFilter]) -> Result<Filters, DecodeError> {
    let mut problems = Problems::new(ctx);
    let mut out = Filters::default();
    if filters.is_empty() {
        problems.push(ctx.invalid("http_filters", "needs the router as its last filter"));
    }
    let last = filters.len().saturating_sub(1);
    for (i, filter) in filters.iter().enumerate() {
        let ctx = ctx.at_index("http_filters", i);
        let Some(decoded) = problems.take(http_filter(&ctx, filter, &mut out)) else {
            continue;
        };
        let is_router = matches!(decoded, model::HttpFilter::Router);
        if is_router != (i == last) {
            problems.push(ctx.invalid(
                "",
                match is_router {
                    true => "the router is terminal and must be the last HTTP filter",
                    false => "the last HTTP filter must be the router (envoy.filters.http.router)",
                },
            ));
        }
        out.filters.push(decoded);
    }
    problems.finish(Some(out))
}

fn http_filter(
    ctx: &Ctx,
    pb: &HttpFilter,
    out: &mut Filters,
) -> Result<model::HttpFilter, DecodeError> {
    let HttpFilter {
        name,
        // Lets Envoy skip a filter whose extension it lacks; every filter vm-proxy does not
        // implement is rejected either way, so a config never runs without one it asked for.
        is_optional: _,
        disabled,
        config_type,
    } = pb;
    if name.is_empty() {
        return Err(ctx.invalid("name", "an HTTP filter needs a name"));
    }
    if *disabled {
        return Err(ctx.unsupported(format!("{name:?}: disabled (enabled per route)")));
    }
    let typed = match config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => Some(any),
        Some(http_filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(ctx.unsupported(format!("{name:?}: config_discovery (ECDS)")));
        }
        None => None,
    };
    let ext = Extension::new(ctx, name, typed)?;
    let cfg = ctx.at("typed_config");
    if ext.is::<Router>("envoy.filters.http.router") {
        out.suppress_envoy_headers = router(&cfg, &ext.config(ctx)?)?;
        Ok(model::HttpFilter::Router)
    } else if ext.is::<HttpFault>("envoy.filters.http.fault") {
        Ok(model::HttpFilter::Fault(fault(&cfg, &ext.config(ctx)?)?))
    } else if ext.is::<Cors>("envoy.filters.http.cors") {
        let Cors {} = ext.config(ctx)?;
        Ok(model::HttpFilter::Cors)
    } else if ext.is::<GrpcStatsConfig>("envoy.filters.http.grpc_stats") {
        grpc_stats(&cfg, &ext.config(ctx)?)?;
        Ok(model::HttpFilter::GrpcStats)
    } else if ext.is::<AlpnFilterConfig>("istio.alpn") {
        Ok(model::HttpFilter::IstioAlpn(alpn(&cfg, &ext.config(ctx)?)?))
    } else if ext.is::<StatsPluginConfig>("istio.stats") {
        let config = stats(&cfg, &ext.config(ctx)?)?;
        out.stats_disable_host_header_fallback = config.disable_host_header_fallback;
        Ok(model::HttpFilter::IstioStats(Arc::new(config)))
    } else if let Some(value) = ext.typed_struct(PEER_METADATA) {
        peer_metadata(&cfg.at("value"), value)?;
        Ok(model::HttpFilter::PeerMetadata)
    } else if ext.is::<Wasm>("envoy.filters.http.wasm") {
        let wasm: Wasm = ext.config(ctx)?;
        match null_vm_plugin(&cfg, &wasm)? {
            NullVmPlugin::MetadataExchange(configuration) => {
                wasm_metadata_exchange(&cfg.at("config.configuration"), configuration)?;
                Ok(model::HttpFilter::PeerMetadata)
            }
            NullVmPlugin::Stats(configuration) => {
                let config = wasm_stats(&cfg.at("config.configuration"), configuration)?;
                out.stats_disable_host_header_fallback = config.disable_host_header_fallback;
                Ok(model::HttpFilter::IstioStats(Arc::new(config)))
            }
        }
    } else {
        Err(ctx.unsupported(format!("HTTP filter {ext}")))
    }
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
/// The router; returns `suppress_envoy_headers`.
fn router(ctx: &Ctx, pb: &Router) -> Result<bool, DecodeError> {
    let Router {
        dynamic_stats: _,    // per-cluster timing statistics only
        start_child_span: _, // tracing only, which vm-proxy does not do
        upstream_log,
        upstream_log_options,
        suppress_envoy_headers,
        strict_check_headers,
        respect_expected_rq_timeout,
        suppress_grpc_request_failure_code_stats: _, // statistics only
        upstream_http_filters,
        reject_connect_request_early_data,
    } = pb;
    ctx.unsupported_fields()
        .check("upstream_log", !upstream_log.is_empty())
        .check_msg("upstream_log_options", upstream_log_options)
        .check("strict_check_headers", !strict_check_headers.is_empty())
        .check("respect_expected_rq_timeout", *respect_expected_rq_timeout)
        .check("upstream_http_filters", !upstream_http_filters.is_empty())
        .check(
            "reject_connect_request_early_data",
            reject_connect_request_early_data.is_some_and(|b| b.value),
        )
        .finish()?;
    Ok(*suppress_envoy_headers)
}

/// The fault filter's config, at the listener or per route.
pub(crate) fn fault(ctx: &Ctx, pb: &HttpFault) -> Result<model::FaultPolicy, DecodeError> {
    let HttpFault {
        delay,
        abort,
        upstream_cluster,
        headers,
        downstream_nodes,
        max_active_faults,
        response_rate_limit,
        // Runtime keys name overrides of the values here; without a runtime the values apply.
        delay_percent_runtime: _,
        abort_percent_runtime: _,
        delay_duration_runtime: _,
        abort_http_status_runtime: _,
        max_active_faults_runtime: _,
        response_rate_limit_percent_runtime: _,
        abort_grpc_status_runtime: _,
        disable_downstream_cluster_stats: _, // statistics only
        filter_metadata: _, // dynamic metadata for access logs, which vm-proxy does not write
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check("upstream_cluster", !upstream_cluster.is_empty())
            .check("downstream_nodes", !downstream_nodes.is_empty())
            .check("max_active_faults", max_active_faults.is_some())
            .check("response_rate_limit", response_rate_limit.is_some())
            .finish(),
    );
    let delay = problems
        .take(
            delay
                .as_ref()
                .map(|d| fault_delay(&ctx.at("delay"), d))
                .transpose(),
        )
        .flatten();
    let abort = problems
        .take(
            abort
                .as_ref()
                .map(|a| fault_abort(&ctx.at("abort"), a))
                .transpose(),
        )
        .flatten();
    let headers = problems.take_all(
        headers
            .iter()
            .enumerate()
            .map(|(i, h)| header_matcher(&ctx.at_index("headers", i), h)),
    );
    problems.finish(Some(model::FaultPolicy {
        delay,
        abort,
        headers,
    }))
}

fn fault_delay(ctx: &Ctx, pb: &FaultDelay) -> Result<model::FaultDelay, DecodeError> {
    let FaultDelay {
        percentage,
        fault_delay_secifier,
    } = pb;
    let per_million = percentage
        .as_ref()
        .map_or(Ok(0), |p| per_million(&ctx.at("percentage"), p))?;
    match fault_delay_secifier {
        Some(FaultDelaySecifier::FixedDelay(d)) => Ok(model::FaultDelay {
            delay: duration(ctx, "fixed_delay", d)?,
            per_million,
        }),
        Some(FaultDelaySecifier::HeaderDelay(_)) => Err(ctx.unsupported("header_delay")),
        None => Err(ctx.invalid("", "a fault delay needs fixed_delay or header_delay")),
    }
}

fn fault_abort(ctx: &Ctx, pb: &FaultAbort) -> Result<model::FaultAbort, DecodeError> {
    let FaultAbort {
        percentage,
        response_body,
        error_type,
    } = pb;
    ctx.unsupported_fields()
        .check("response_body", !response_body.is_empty())
        .finish()?;
    let per_million = percentage
        .as_ref()
        .map_or(Ok(0), |p| per_million(&ctx.at("percentage"), p))?;
    let kind = match error_type {
        Some(ErrorType::HttpStatus(status)) => model::FaultAbortKind::HttpStatus(
            u16::try_from(*status)
                .ok()
                .filter(|s| (200..600).contains(s))
                .ok_or_else(|| {
                    ctx.invalid("http_status", format!("{status} is not in [200, 600)"))
                })?,
        ),
        Some(ErrorType::GrpcStatus(status)) => model::FaultAbortKind::GrpcStatus(*status),
        Some(ErrorType::HeaderAbort(_)) => return Err(ctx.unsupported("header_abort")),
        None => return Err(ctx.invalid("", "a fault abort needs an error type")),
    };
    Ok(model::FaultAbort { kind, per_million })
}

/// The CORS filter's per-route / per-virtual-host policy.
pub(crate) fn cors(ctx: &Ctx, pb: &CorsPolicy) -> Result<model::CorsPolicy, DecodeError> {
    let CorsPolicy {
        allow_origin_string_match,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
        filter_enabled,
        shadow_enabled,
        allow_private_network_access,
        forward_not_matching_preflights,
    } = pb;
    if let Some(enabled) = filter_enabled
        && runtime_per_million(&ctx.at("filter_enabled"), enabled)? != 1_000_000
    {
        return Err(ctx.unsupported("filter_enabled below 100%"));
    }
    cors_common(
        ctx,
        CorsParts {
            origins: allow_origin_string_match,
            methods: allow_methods,
            headers: allow_headers,
            expose: expose_headers,
            max_age,
            credentials: allow_credentials.map(|b| b.value),
            shadow: shadow_enabled.is_some(),
            private_network: allow_private_network_access.is_some_and(|b| b.value),
            forward: forward_not_matching_preflights.is_none_or(|b| b.value),
        },
    )
}

/// The deprecated `cors` field of a virtual host, the same policy in the route API.
#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn route_cors(
    ctx: &Ctx,
    pb: &RouteCorsPolicy,
) -> Result<model::CorsPolicy, DecodeError> {
    let RouteCorsPolicy {
        allow_origin_string_match,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
        shadow_enabled,
        allow_private_network_access,
        forward_not_matching_preflights,
        enabled_specifier,
    } = pb;
    if let Some(EnabledSpecifier::FilterEnabled(enabled)) = enabled_specifier
        && runtime_per_million(&ctx.at("filter_enabled"), enabled)? != 1_000_000
    {
        return Err(ctx.unsupported("filter_enabled below 100%"));
    }
    cors_common(
        ctx,
        CorsParts {
            origins: allow_origin_string_match,
            methods: allow_methods,
            headers: allow_headers,
            expose: expose_headers,
            max_age,
            credentials: allow_credentials.map(|b| b.value),
            shadow: shadow_enabled.is_some(),
            private_network: allow_private_network_access.is_some_and(|b| b.value),
            forward: forward_not_matching_preflights.is_none_or(|b| b.value),
        },
    )
}

struct CorsParts<'a> {
    origins: &'a [envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher],
    methods: &'a str,
    headers: &'a str,
    expose: &'a str,
    max_age: &'a str,
    credentials: Option<bool>,
    shadow: bool,
    private_network: bool,
    forward: bool,
}

fn cors_common(ctx: &Ctx, p: CorsParts) -> Result<model::CorsPolicy, DecodeError> {
    ctx.unsupported_fields()
        .check("shadow_enabled", p.shadow)
        .check("allow_private_network_access", p.private_network)
        .finish()?;
    let mut problems = Problems::new(ctx);
    let allow_origins = problems.take_all(
        p.origins
            .iter()
            .enumerate()
            .map(|(i, m)| string_matcher(&ctx.at_index("allow_origin_string_match", i), m)),
    );
    let text = |s: &str| (!s.is_empty()).then(|| Arc::from(s));
    problems.finish(Some(model::CorsPolicy {
        allow_origins,
        allow_methods: text(p.methods),
        allow_headers: text(p.headers),
        expose_headers: text(p.expose),
        max_age: text(p.max_age),
        allow_credentials: p.credentials,
        forward_not_matching_preflights: p.forward,
    }))
}

fn grpc_stats(ctx: &Ctx, pb: &GrpcStatsConfig) -> Result<(), DecodeError> {
    let GrpcStatsConfig {
        // The message counts go to filter state for `istio.stats` to read: part of what the
        // model's GrpcStats filter stands for.
        emit_filter_state: _,
        enable_upstream_stats,
        replace_dots_in_grpc_service_name: _, // only shapes names of per-method stats
        per_method_stat_specifier,
    } = pb;
    let per_method = match per_method_stat_specifier {
        None => false,
        Some(PerMethodStatSpecifier::StatsForAllMethods(all)) => all.value,
        Some(PerMethodStatSpecifier::IndividualMethodStatsAllowlist(list)) => {
            !list.services.is_empty()
        }
    };
    ctx.unsupported_fields()
        .check("enable_upstream_stats", *enable_upstream_stats)
        .check("per-method statistics", per_method)
        .finish()
}

fn alpn(ctx: &Ctx, pb: &AlpnFilterConfig) -> Result<Vec<model::AlpnOverride>, DecodeError> {
    pb.alpn_override
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let protocol = match o.upstream_protocol {
                0 => model::UpstreamProtocol::Http10,
                1 => model::UpstreamProtocol::Http11,
                2 => model::UpstreamProtocol::Http2,
                other => {
                    return Err(ctx.invalid(
                        &format!("alpn_override[{i}].upstream_protocol"),
                        format!("unknown protocol {other}"),
                    ));
                }
            };
            Ok(model::AlpnOverride {
                protocol,
                alpn: o
                    .alpn_override
                    .iter()
                    .map(|a| Arc::from(a.as_str()))
                    .collect(),
            })
        })
        .collect()
}

/// `io.istio.http.peer_metadata.Config`: only exchange through the `x-envoy-peer-metadata`
/// headers (and workload discovery, which finds nothing without ambient's workload API, as
/// in a sidecar whose istiod serves none) is implemented.
fn peer_metadata(ctx: &Ctx, value: &Struct) -> Result<(), DecodeError> {
    for (key, field) in &value.fields {
        let ctx = ctx.at(key);
        match key.as_str() {
            "downstream_discovery" | "upstream_discovery" => {
                for (i, method) in list(&ctx, field)?.iter().enumerate() {
                    one_of(
                        &ctx.at(&format!("[{i}]")),
                        method,
                        &["istio_headers", "workload_discovery"],
                    )?;
                }
            }
            "downstream_propagation" | "upstream_propagation" => {
                for (i, method) in list(&ctx, field)?.iter().enumerate() {
                    one_of(&ctx.at(&format!("[{i}]")), method, &["istio_headers"])?;
                }
            }
            "shared_with_upstream" if is_false(field) => {}
            "additional_labels" if list(&ctx, field)?.is_empty() => {}
            other => return Err(ctx.unsupported(format!("peer_metadata field {other:?}"))),
        }
    }
    Ok(())
}

fn list<'v>(
    ctx: &Ctx,
    value: &'v envoy_types::pb::google::protobuf::Value,
) -> Result<&'v [envoy_types::pb::google::protobuf::Value], DecodeError> {
    match &value.kind {
        Some(Kind::ListValue(l)) => Ok(&l.values),
        _ => Err(ctx.invalid("", "must be a list")),
    }
}

fn is_false(value: &envoy_types::pb::google::protobuf::Value) -> bool {
    matches!(
        value.kind,
        Some(Kind::BoolValue(false)) | Some(Kind::NullValue(_))
    )
}

/// A discovery or propagation method: an object with one key out of `allowed`, whose own
/// value configures nothing.
fn one_of(
    ctx: &Ctx,
    value: &envoy_types::pb::google::protobuf::Value,
    allowed: &[&str],
) -> Result<(), DecodeError> {
    let Some(Kind::StructValue(method)) = &value.kind else {
        return Err(ctx.invalid("", "must be an object"));
    };
    for (key, inner) in &method.fields {
        if !allowed.contains(&key.as_str()) {
            return Err(ctx.unsupported(format!("method {key:?}")));
        }
        let empty = match &inner.kind {
            Some(Kind::StructValue(s)) => s.fields.is_empty(),
            Some(Kind::NullValue(_)) | None => true,
            _ => false,
        };
        if !empty {
            return Err(ctx.unsupported(format!("{key:?} with options")));
        }
    }
    Ok(())
}

/// The `configuration` of the pre-1.20 null-VM metadata exchange: empty, or an all-defaults
/// `MetadataExchange`.
fn wasm_metadata_exchange(ctx: &Ctx, configuration: Option<&Any>) -> Result<(), DecodeError> {
    let Some(any) = configuration else {
        return Ok(());
    };
    let type_name = type_name_of(&any.type_url);
    if type_name == MetadataExchange::full_name() {
        let MetadataExchange {
            protocol,
            enable_discovery,
            additional_labels,
        } = MetadataExchange::decode(any.value.as_slice())
            .map_err(|err| ctx.invalid("", format!("cannot decode {type_name}: {err}")))?;
        ctx.unsupported_fields()
            .check("protocol", !protocol.is_empty())
            .check("enable_discovery", enable_discovery)
            .check("additional_labels", !additional_labels.is_empty())
            .finish()
    } else if let Some(json) = string_value(ctx, any)? {
        match json_object(ctx, &json)?.is_empty() {
            true => Ok(()),
            false => Err(ctx.unsupported(format!("metadata exchange configuration {json:?}"))),
        }
    } else {
        Err(ctx.unsupported(format!("configuration of type {type_name}")))
    }
}

/// The `configuration` of a null-VM `istio.stats`: `stats.PluginConfig` or its JSON in a
/// `google.protobuf.StringValue`.
fn wasm_stats(ctx: &Ctx, configuration: Option<&Any>) -> Result<model::StatsConfig, DecodeError> {
    let Some(any) = configuration else {
        return Ok(model::StatsConfig::default());
    };
    let type_name = type_name_of(&any.type_url);
    if type_name == StatsPluginConfig::full_name() {
        let pb = StatsPluginConfig::decode(any.value.as_slice())
            .map_err(|err| ctx.invalid("", format!("cannot decode {type_name}: {err}")))?;
        return stats(ctx, &pb);
    }
    let Some(json) = string_value(ctx, any)? else {
        return Err(ctx.unsupported(format!("configuration of type {type_name}")));
    };
    let object = serde_json::Value::Object(json_object(ctx, &json)?);
    let Some(Kind::StructValue(value)) = crate::node::from_json(&object).kind else {
        return Err(ctx.invalid("", "must be a JSON object"));
    };
    let pb: StatsPluginConfig = crate::proto::message_from_struct(&value)
        .map_err(|err| ctx.invalid("", format!("stats configuration: {err}")))?;
    stats(ctx, &pb)
}

fn string_value(ctx: &Ctx, any: &Any) -> Result<Option<String>, DecodeError> {
    use envoy_types::pb::google::protobuf::StringValue;
    if type_name_of(&any.type_url) != StringValue::full_name() {
        return Ok(None);
    }
    StringValue::decode(any.value.as_slice())
        .map(|s| Some(s.value))
        .map_err(|err| ctx.invalid("", format!("cannot decode StringValue: {err}")))
}

fn json_object(
    ctx: &Ctx,
    text: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, DecodeError> {
    if text.trim().is_empty() {
        return Ok(Default::default());
    }
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(ctx.invalid("", "must be a JSON object")),
    }
}

/// The per-route configs istiod writes: the fault and CORS filters'.
#[derive(Debug, Default)]
pub(crate) struct PerFilter {
    pub fault: Option<model::FaultPolicy>,
    pub cors: Option<model::CorsPolicy>,
}

pub(crate) fn per_filter_configs(
    ctx: &Ctx,
    configs: &HashMap<String, Any>,
) -> Result<PerFilter, DecodeError> {
    let mut problems = Problems::new(ctx);
    let mut out = PerFilter::default();
    // Sorted, so that errors come out in a stable order.
    let mut names: Vec<&String> = configs.keys().collect();
    names.sort();
    for name in names {
        let ctx = ctx.at(&format!("typed_per_filter_config[{name:?}]"));
        let any = &configs[name];
        problems.take(per_filter(&ctx, name, any, &mut out));
    }
    problems.finish(Some(out))
}

fn per_filter(ctx: &Ctx, name: &str, any: &Any, out: &mut PerFilter) -> Result<(), DecodeError> {
    let mut any = any;
    let unwrapped;
    if type_name_of(&any.type_url) == FilterConfig::full_name() {
        let FilterConfig {
            config,
            // Only matters for a filter Envoy lacks: an unknown one is rejected regardless.
            is_optional: _,
            disabled,
        } = FilterConfig::decode(any.value.as_slice())
            .map_err(|err| ctx.invalid("", format!("cannot decode FilterConfig: {err}")))?;
        if disabled {
            return Err(ctx.unsupported(format!("{name:?}: disabled per route")));
        }
        unwrapped = config.ok_or_else(|| ctx.invalid("config", "is required"))?;
        any = &unwrapped;
    }
    let type_name = type_name_of(&any.type_url);
    let bad =
        |err: prost::DecodeError| ctx.invalid("", format!("cannot decode {type_name}: {err}"));
    if type_name == HttpFault::full_name() {
        out.fault = Some(fault(
            ctx,
            &HttpFault::decode(any.value.as_slice()).map_err(bad)?,
        )?);
        Ok(())
    } else if type_name == CorsPolicy::full_name() {
        out.cors = Some(cors(
            ctx,
            &CorsPolicy::decode(any.value.as_slice()).map_err(bad)?,
        )?);
        Ok(())
    } else {
        Err(ctx.unsupported(format!("per-route config of {name:?} ({type_name})")))
    }
}
