//! `envoy.filters.network.http_connection_manager` → [`model::HttpConnectionManager`].

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds,
    http_connection_manager::{
        CodecType, ForwardClientCertDetails, PathWithEscapedSlashesAction, RouteSpecifier,
        ServerHeaderTransformation, SetCurrentClientCertDetails, UpgradeConfig,
    },
};
use envoy_types::pb::envoy::extensions::request_id::uuid::v3::UuidRequestIdConfig;

use super::error::{Ctx, DecodeError, Problems};
use super::extension::Extension;
use super::http_filter::http_filters;
use super::http_options::{common, http1, http2};
use super::route::route_config;
use super::time::duration;
use crate::model;

/// Envoy's default `stream_idle_timeout`.
const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Envoy's default `max_request_headers_kb`.
const DEFAULT_MAX_REQUEST_HEADERS_KB: u32 = 60;
/// Envoy's `server` header value unless `server_name` says otherwise.
const DEFAULT_SERVER_NAME: &str = "envoy";

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn http_connection_manager(
    ctx: &Ctx,
    pb: &HttpConnectionManager,
) -> Result<model::HttpConnectionManager, DecodeError> {
    let HttpConnectionManager {
        codec_type,
        stat_prefix,
        http_filters: filters,
        add_user_agent,
        tracing,
        common_http_protocol_options,
        http1_safe_max_connection_duration,
        http_protocol_options,
        http2_protocol_options,
        http3_protocol_options,
        server_name,
        server_header_transformation,
        scheme_header_transformation,
        max_request_headers_kb,
        stream_idle_timeout,
        stream_flush_timeout,
        request_timeout,
        request_headers_timeout,
        drain_timeout,
        drain_timeout_jitter,
        delayed_close_timeout,
        access_log,
        access_log_flush_interval,
        flush_access_log_on_new_request,
        access_log_options,
        use_remote_address,
        xff_num_trusted_hops,
        original_ip_detection_extensions,
        early_header_mutation_extensions,
        internal_address_config,
        skip_xff_append,
        via,
        generate_request_id,
        preserve_external_request_id,
        always_set_request_id_in_response,
        forward_client_cert_details,
        set_current_client_cert_details,
        forward_client_cert_matcher,
        proxy_100_continue,
        represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
        upgrade_configs,
        normalize_path,
        merge_slashes,
        path_with_escaped_slashes_action,
        request_id_extension,
        local_reply_config,
        strip_matching_host_port,
        stream_error_on_invalid_http_message,
        path_normalization_options,
        strip_trailing_host_dot,
        proxy_status_config,
        typed_header_validation_config,
        append_x_forwarded_port,
        append_local_overload,
        add_proxy_protocol_connection_state,
        forward_proto_config,
        route_specifier,
        strip_port_mode,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check("add_user_agent", add_user_agent.is_some_and(|b| b.value))
            // Istio's tracing block asks for spans to a provider: not implemented yet.
            .check("tracing", tracing.is_some())
            .check(
                "http1_safe_max_connection_duration",
                *http1_safe_max_connection_duration,
            )
            .check("http3_protocol_options", http3_protocol_options.is_some())
            .check(
                "scheme_header_transformation",
                scheme_header_transformation.is_some(),
            )
            .check("stream_flush_timeout", stream_flush_timeout.is_some())
            .check("request_headers_timeout", request_headers_timeout.is_some())
            .check("drain_timeout", drain_timeout.is_some())
            .check("drain_timeout_jitter", drain_timeout_jitter.is_some())
            .check("delayed_close_timeout", delayed_close_timeout.is_some())
            // Access logs are written by nothing yet.
            .check("access_log", !access_log.is_empty())
            .check(
                "access_log_flush_interval",
                access_log_flush_interval.is_some(),
            )
            .check(
                "flush_access_log_on_new_request",
                *flush_access_log_on_new_request,
            )
            .check_msg("access_log_options", access_log_options)
            .check(
                "original_ip_detection_extensions",
                !original_ip_detection_extensions.is_empty(),
            )
            .check(
                "early_header_mutation_extensions",
                !early_header_mutation_extensions.is_empty(),
            )
            .check_msg("internal_address_config", internal_address_config)
            .check("skip_xff_append", *skip_xff_append)
            .check("via", !via.is_empty())
            .check(
                "always_set_request_id_in_response",
                *always_set_request_id_in_response,
            )
            .check(
                "forward_client_cert_matcher",
                forward_client_cert_matcher.is_some(),
            )
            .check("proxy_100_continue", *proxy_100_continue)
            .check(
                "represent_ipv4_remote_address_as_ipv4_mapped_ipv6",
                *represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
            )
            .check("local_reply_config", local_reply_config.is_some())
            .check("strip_matching_host_port", *strip_matching_host_port)
            .check(
                "stream_error_on_invalid_http_message",
                stream_error_on_invalid_http_message.is_some(),
            )
            .check(
                "path_normalization_options",
                path_normalization_options.is_some(),
            )
            .check("strip_trailing_host_dot", *strip_trailing_host_dot)
            .check("proxy_status_config", proxy_status_config.is_some())
            .check(
                "typed_header_validation_config",
                typed_header_validation_config.is_some(),
            )
            .check("append_x_forwarded_port", *append_x_forwarded_port)
            .check("append_local_overload", *append_local_overload)
            .check(
                "add_proxy_protocol_connection_state",
                add_proxy_protocol_connection_state.is_some_and(|b| b.value),
            )
            .check("forward_proto_config", forward_proto_config.is_some())
            .check("strip_port_mode", strip_port_mode.is_some())
            .finish(),
    );
    if stat_prefix.is_empty() {
        problems.push(ctx.invalid("stat_prefix", "must not be empty"));
    }
    let codec = match CodecType::try_from(*codec_type) {
        Ok(CodecType::Auto) => Some(model::CodecType::Auto),
        Ok(CodecType::Http1) => Some(model::CodecType::Http1),
        Ok(CodecType::Http2) => Some(model::CodecType::Http2),
        Ok(CodecType::Http3) => {
            problems.push(ctx.unsupported("codec_type HTTP3"));
            None
        }
        Err(_) => {
            problems.push(ctx.invalid("codec_type", format!("unknown codec {codec_type}")));
            None
        }
    };
    let routes = problems.take(routes_of(ctx, route_specifier.as_ref()));
    let filters = problems.take(http_filters(ctx, filters));
    let common = problems
        .take(
            common_http_protocol_options
                .as_ref()
                .map(|c| common(&ctx.at("common_http_protocol_options"), c))
                .transpose(),
        )
        .flatten()
        .unwrap_or_default();
    if common.max_requests_per_connection.is_some() {
        problems.push(
            ctx.unsupported(
                "common_http_protocol_options.max_requests_per_connection (downstream)",
            ),
        );
    }
    let http1 = problems
        .take(
            http_protocol_options
                .as_ref()
                .map(|o| http1(&ctx.at("http_protocol_options"), o))
                .transpose(),
        )
        .flatten()
        .unwrap_or_default();
    let http2 = problems
        .take(
            http2_protocol_options
                .as_ref()
                .map(|o| http2(&ctx.at("http2_protocol_options"), o))
                .transpose(),
        )
        .flatten()
        .unwrap_or_default();
    let stream_idle_timeout = problems
        .take(optional_timeout(
            ctx,
            "stream_idle_timeout",
            stream_idle_timeout.as_ref(),
            Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        ))
        .flatten();
    let request_timeout = problems
        .take(optional_timeout(
            ctx,
            "request_timeout",
            request_timeout.as_ref(),
            None,
        ))
        .flatten();
    let forward_client_cert = match ForwardClientCertDetails::try_from(*forward_client_cert_details)
    {
        Ok(ForwardClientCertDetails::Sanitize) => model::ForwardClientCert::Sanitize,
        Ok(ForwardClientCertDetails::ForwardOnly) => model::ForwardClientCert::ForwardOnly,
        Ok(ForwardClientCertDetails::AppendForward) => model::ForwardClientCert::AppendForward,
        Ok(ForwardClientCertDetails::SanitizeSet) => model::ForwardClientCert::SanitizeSet,
        Ok(ForwardClientCertDetails::AlwaysForwardOnly) => {
            model::ForwardClientCert::AlwaysForwardOnly
        }
        Err(_) => {
            problems.push(ctx.invalid(
                "forward_client_cert_details",
                format!("unknown value {forward_client_cert_details}"),
            ));
            model::ForwardClientCert::Sanitize
        }
    };
    let set_current_client_cert = problems
        .take(
            set_current_client_cert_details
                .as_ref()
                .map(|d| client_cert_details(&ctx.at("set_current_client_cert_details"), d))
                .transpose(),
        )
        .flatten()
        .unwrap_or_default();
    let escaped_slashes =
        match PathWithEscapedSlashesAction::try_from(*path_with_escaped_slashes_action) {
            // Envoy's implementation-specific default is to keep them.
            Ok(PathWithEscapedSlashesAction::ImplementationSpecificDefault)
            | Ok(PathWithEscapedSlashesAction::KeepUnchanged) => {
                model::EscapedSlashes::KeepUnchanged
            }
            Ok(PathWithEscapedSlashesAction::RejectRequest) => model::EscapedSlashes::RejectRequest,
            Ok(PathWithEscapedSlashesAction::UnescapeAndRedirect) => {
                model::EscapedSlashes::UnescapeAndRedirect
            }
            Ok(PathWithEscapedSlashesAction::UnescapeAndForward) => {
                model::EscapedSlashes::UnescapeAndForward
            }
            Err(_) => {
                problems.push(ctx.invalid(
                    "path_with_escaped_slashes_action",
                    format!("unknown value {path_with_escaped_slashes_action}"),
                ));
                model::EscapedSlashes::KeepUnchanged
            }
        };
    let server_header = match ServerHeaderTransformation::try_from(*server_header_transformation) {
        Ok(ServerHeaderTransformation::Overwrite) => model::ServerHeader::Overwrite,
        Ok(ServerHeaderTransformation::AppendIfAbsent) => model::ServerHeader::AppendIfAbsent,
        Ok(ServerHeaderTransformation::PassThrough) => model::ServerHeader::PassThrough,
        Err(_) => {
            problems.push(ctx.invalid(
                "server_header_transformation",
                format!("unknown value {server_header_transformation}"),
            ));
            model::ServerHeader::Overwrite
        }
    };
    let upgrades = problems.take_all(
        upgrade_configs
            .iter()
            .enumerate()
            .map(|(i, u)| hcm_upgrade(&ctx.at_index("upgrade_configs", i), u)),
    );
    if let Some(ext) = request_id_extension {
        problems.take(request_id(&ctx.at("request_id_extension"), ext));
    }
    let max_request_headers_kb = match max_request_headers_kb {
        None => DEFAULT_MAX_REQUEST_HEADERS_KB,
        Some(kb) if (1..=8192).contains(&kb.value) => kb.value,
        Some(kb) => {
            problems.push(ctx.invalid(
                "max_request_headers_kb",
                format!("{} is not in [1, 8192]", kb.value),
            ));
            DEFAULT_MAX_REQUEST_HEADERS_KB
        }
    };
    let hcm = (|| {
        let filters = filters?;
        Some(model::HttpConnectionManager {
            stat_prefix: Arc::from(stat_prefix.as_str()),
            routes: routes?,
            http_filters: filters.filters,
            codec: codec?,
            use_remote_address: use_remote_address.is_some_and(|b| b.value),
            xff_num_trusted_hops: *xff_num_trusted_hops,
            forward_client_cert,
            set_current_client_cert,
            stream_idle_timeout,
            request_timeout,
            idle_timeout: common
                .idle_timeout
                .unwrap_or(Some(Duration::from_secs(3600))),
            normalize_path: normalize_path.is_some_and(|b| b.value),
            merge_slashes: *merge_slashes,
            escaped_slashes,
            upgrades,
            generate_request_id: generate_request_id.is_none_or(|b| b.value),
            preserve_external_request_id: *preserve_external_request_id,
            server_header,
            server_name: Arc::from(match server_name.is_empty() {
                true => DEFAULT_SERVER_NAME,
                false => server_name.as_str(),
            }),
            http1,
            http2,
            max_request_headers_kb,
            suppress_envoy_headers: filters.suppress_envoy_headers,
            stats_disable_host_header_fallback: filters.stats_disable_host_header_fallback,
        })
    })();
    problems.finish(hcm)
}

/// A timeout whose absence means `default` and whose zero disables it.
fn optional_timeout(
    ctx: &Ctx,
    field: &str,
    value: Option<&envoy_types::pb::google::protobuf::Duration>,
    default: Option<Duration>,
) -> Result<Option<Duration>, DecodeError> {
    match value {
        None => Ok(default),
        Some(v) => Ok(Some(duration(ctx, field, v)?).filter(|d| !d.is_zero())),
    }
}

fn client_cert_details(
    ctx: &Ctx,
    pb: &SetCurrentClientCertDetails,
) -> Result<model::ClientCertDetails, DecodeError> {
    let SetCurrentClientCertDetails {
        subject,
        cert,
        chain,
        dns,
        uri,
        issuer,
        format,
    } = pb;
    ctx.unsupported_fields()
        .check("issuer", *issuer)
        .check("format", *format != 0)
        .finish()?;
    Ok(model::ClientCertDetails {
        subject: subject.is_some_and(|b| b.value),
        cert: *cert,
        chain: *chain,
        dns: *dns,
        uri: *uri,
    })
}

/// A connection manager's upgrade: a filter chain of its own is not implemented.
fn hcm_upgrade(ctx: &Ctx, pb: &UpgradeConfig) -> Result<model::UpgradeConfig, DecodeError> {
    let UpgradeConfig {
        upgrade_type,
        filters,
        enabled,
    } = pb;
    ctx.unsupported_fields()
        .check("filters", !filters.is_empty())
        .finish()?;
    if upgrade_type.is_empty() {
        return Err(ctx.invalid("upgrade_type", "must not be empty"));
    }
    Ok(model::UpgradeConfig {
        upgrade_type: Arc::from(upgrade_type.to_ascii_lowercase()),
        enabled: enabled.is_none_or(|e| e.value),
    })
}

/// Only the UUID request id (Envoy's default) is implemented; its two options concern trace
/// sampling, which vm-proxy does not do.
fn request_id(
    ctx: &Ctx,
    pb: &envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::RequestIdExtension,
) -> Result<(), DecodeError> {
    let ext = Extension::new(ctx, "", pb.typed_config.as_ref())?;
    if ext.is::<UuidRequestIdConfig>("") {
        let UuidRequestIdConfig {
            pack_trace_reason: _,
            use_request_id_for_trace_sampling: _,
        } = ext.config(ctx)?;
        Ok(())
    } else {
        Err(ctx.unsupported(format!("request id extension {ext}")))
    }
}

fn routes_of(
    ctx: &Ctx,
    specifier: Option<&RouteSpecifier>,
) -> Result<model::RouteSource, DecodeError> {
    match specifier {
        Some(RouteSpecifier::Rds(Rds {
            config_source,
            route_config_name: name,
        })) => {
            let ctx = ctx.at("rds");
            ads_source(&ctx.at("config_source"), config_source.as_ref())?;
            if name.is_empty() {
                return Err(ctx.invalid("route_config_name", "must not be empty"));
            }
            Ok(model::RouteSource::Rds(Arc::from(name.as_str())))
        }
        Some(RouteSpecifier::RouteConfig(rc)) => Ok(model::RouteSource::Inline(Arc::new(
            route_config(&ctx.at("route_config"), rc, true)?,
        ))),
        Some(RouteSpecifier::ScopedRoutes(_)) => Err(ctx.unsupported("scoped_routes")),
        None => Err(ctx.invalid("", "needs rds or route_config")),
    }
}

/// RDS is followed over ADS only, as EDS is.
#[allow(deprecated)] // the V2 API version is deprecated, and judged
fn ads_source(ctx: &Ctx, source: Option<&ConfigSource>) -> Result<(), DecodeError> {
    let Some(ConfigSource {
        authorities,
        // The first-response wait of the subscription: the ADS client's concern.
        initial_fetch_timeout: _,
        resource_api_version,
        config_source_specifier,
    }) = source
    else {
        return Err(ctx.invalid("", "is required"));
    };
    ctx.unsupported_fields()
        .check("authorities", !authorities.is_empty())
        .check(
            "resource_api_version V2",
            *resource_api_version == ApiVersion::V2 as i32,
        )
        .finish()?;
    match config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_)) => Ok(()),
        Some(_) => Err(ctx.unsupported("a config source other than ads")),
        None => Err(ctx.invalid("", "a config source is required")),
    }
}
