//! A cluster's `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` (in
//! `typed_extension_protocol_options`) → [`model::HttpUpstreamOptions`].

use std::time::Duration;

use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
        explicit_http_config::ProtocolConfig,
    },
};

use super::error::{Ctx, DecodeError};
use super::http_options::{common, http2};
use crate::model;

/// Envoy's upstream connection idle timeout.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The options when a cluster has none.
pub(crate) fn default_options() -> model::HttpUpstreamOptions {
    model::HttpUpstreamOptions {
        idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        ..Default::default()
    }
}

pub(crate) fn upstream_http_options(
    ctx: &Ctx,
    pb: &HttpProtocolOptions,
) -> Result<model::HttpUpstreamOptions, DecodeError> {
    let HttpProtocolOptions {
        common_http_protocol_options,
        upstream_http_protocol_options,
        http_filters,
        header_validation_config,
        outlier_detection,
        request_mirror_policies,
        hash_policy,
        retry_policy,
        upstream_protocol_options,
    } = pb;
    ctx.unsupported_fields()
        .check_msg(
            "upstream_http_protocol_options",
            upstream_http_protocol_options,
        )
        .check("http_filters", !http_filters.is_empty())
        .check(
            "header_validation_config",
            header_validation_config.is_some(),
        )
        .check("outlier_detection", outlier_detection.is_some())
        .check(
            "request_mirror_policies",
            !request_mirror_policies.is_empty(),
        )
        .check("hash_policy", !hash_policy.is_empty())
        .check("retry_policy", retry_policy.is_some())
        .finish()?;
    let common = common_http_protocol_options
        .as_ref()
        .map(|c| common(&ctx.at("common_http_protocol_options"), c))
        .transpose()?
        .unwrap_or_default();
    let mut options = default_options();
    options.idle_timeout = common.idle_timeout.unwrap_or(Some(DEFAULT_IDLE_TIMEOUT));
    options.max_requests_per_connection = common.max_requests_per_connection;
    match upstream_protocol_options {
        None => {}
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config,
        })) => {
            let ctx = ctx.at("explicit_http_config");
            match protocol_config {
                Some(ProtocolConfig::HttpProtocolOptions(h1)) => {
                    no_http1_options(&ctx, Some(h1))?;
                    options.protocol = model::UpstreamHttpProtocol::Http1;
                }
                Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                    options.http2 = http2(&ctx.at("http2_protocol_options"), h2)?;
                    options.protocol = model::UpstreamHttpProtocol::Http2;
                }
                Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                    return Err(ctx.unsupported("http3_protocol_options"));
                }
                None => return Err(ctx.invalid("", "needs a protocol")),
            }
        }
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
            http_protocol_options,
            http2_protocol_options,
            http3_protocol_options,
        })) => {
            let ctx = ctx.at("use_downstream_protocol_config");
            no_http1_options(&ctx, http_protocol_options.as_ref())?;
            ctx.unsupported_fields()
                .check("http3_protocol_options", http3_protocol_options.is_some())
                .finish()?;
            if let Some(h2) = http2_protocol_options {
                options.http2 = http2(&ctx.at("http2_protocol_options"), h2)?;
            }
            options.protocol = model::UpstreamHttpProtocol::UseDownstream;
        }
        Some(UpstreamProtocolOptions::AutoConfig(_)) => {
            return Err(ctx.unsupported("auto_config (ALPN-negotiated upstream protocol)"));
        }
    }
    Ok(options)
}

/// Upstream HTTP/1 options have no counterpart in the model: only all-defaults ones pass.
fn no_http1_options(
    ctx: &Ctx,
    pb: Option<&envoy_types::pb::envoy::config::core::v3::Http1ProtocolOptions>,
) -> Result<(), DecodeError> {
    ctx.unsupported_fields()
        .check(
            "http_protocol_options",
            pb.is_some_and(|o| *o != Default::default()),
        )
        .finish()
}
