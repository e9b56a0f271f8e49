//! `core.v3` HTTP protocol options, shared by connection managers (downstream) and clusters'
//! `HttpProtocolOptions` (upstream).

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions,
    http_protocol_options::HeadersWithUnderscoresAction,
};

use super::error::{Ctx, DecodeError};
use super::time::duration;
use crate::model;

/// What `common_http_protocol_options` configures that vm-proxy implements.
#[derive(Debug, Default)]
pub(crate) struct Common {
    /// `None` when unset (each side has its own default); `Some(None)` for an explicit 0.
    pub idle_timeout: Option<Option<Duration>>,
    pub max_requests_per_connection: Option<u32>,
}

pub(crate) fn common(ctx: &Ctx, pb: &HttpProtocolOptions) -> Result<Common, DecodeError> {
    let HttpProtocolOptions {
        idle_timeout,
        max_connection_duration,
        max_connection_duration_jitter,
        max_headers_count,
        max_response_headers_kb,
        max_stream_duration,
        headers_with_underscores_action,
        max_requests_per_connection,
    } = pb;
    ctx.unsupported_fields()
        .check("max_connection_duration", max_connection_duration.is_some())
        .check(
            "max_connection_duration_jitter",
            max_connection_duration_jitter.is_some(),
        )
        .check("max_headers_count", max_headers_count.is_some())
        .check("max_response_headers_kb", max_response_headers_kb.is_some())
        .check("max_stream_duration", max_stream_duration.is_some())
        .check(
            "headers_with_underscores_action",
            *headers_with_underscores_action != HeadersWithUnderscoresAction::Allow as i32,
        )
        .finish()?;
    let idle_timeout = idle_timeout
        .as_ref()
        .map(|t| duration(ctx, "idle_timeout", t).map(|d| (!d.is_zero()).then_some(d)))
        .transpose()?;
    let max_requests_per_connection = match max_requests_per_connection {
        Some(n) if n.value > 0 => Some(n.value),
        _ => None,
    };
    Ok(Common {
        idle_timeout,
        max_requests_per_connection,
    })
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn http1(
    ctx: &Ctx,
    pb: &Http1ProtocolOptions,
) -> Result<model::Http1Options, DecodeError> {
    let Http1ProtocolOptions {
        allow_absolute_url,
        accept_http_10,
        default_host_for_http_10,
        header_key_format,
        enable_trailers,
        allow_chunked_length,
        override_stream_error_on_invalid_http_message,
        send_fully_qualified_url,
        use_balsa_parser: _, // picks one of Envoy's two HTTP/1 parsers; vm-proxy has its own
        allow_custom_methods,
        ignore_http_11_upgrade,
    } = pb;
    ctx.unsupported_fields()
        .check_msg("header_key_format", header_key_format)
        .check("enable_trailers", *enable_trailers)
        .check("allow_chunked_length", *allow_chunked_length)
        .check(
            "override_stream_error_on_invalid_http_message",
            override_stream_error_on_invalid_http_message.is_some(),
        )
        .check("send_fully_qualified_url", *send_fully_qualified_url)
        .check("allow_custom_methods", *allow_custom_methods)
        .check("ignore_http_11_upgrade", !ignore_http_11_upgrade.is_empty())
        .finish()?;
    Ok(model::Http1Options {
        accept_http_10: *accept_http_10,
        default_host_for_http_10: (!default_host_for_http_10.is_empty())
            .then(|| Arc::from(default_host_for_http_10.as_str())),
        // Envoy's default is true.
        allow_absolute_url: allow_absolute_url.is_none_or(|b| b.value),
    })
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn http2(
    ctx: &Ctx,
    pb: &Http2ProtocolOptions,
) -> Result<model::Http2Options, DecodeError> {
    let Http2ProtocolOptions {
        hpack_table_size,
        max_concurrent_streams,
        initial_stream_window_size,
        initial_connection_window_size,
        allow_connect,
        allow_metadata,
        max_outbound_frames,
        max_outbound_control_frames,
        max_consecutive_inbound_frames_with_empty_payload,
        max_inbound_priority_frames_per_stream,
        max_inbound_window_update_frames_per_data_frame_sent,
        stream_error_on_invalid_http_messaging,
        override_stream_error_on_invalid_http_message,
        custom_settings_parameters,
        connection_keepalive,
        use_oghttp2_codec: _, // picks one of Envoy's two HTTP/2 codecs; vm-proxy has its own
        max_metadata_size,
        enable_huffman_encoding,
        max_header_field_size_kb,
        disallow_obs_text,
        stream_reset_burst,
        stream_reset_rate,
    } = pb;
    ctx.unsupported_fields()
        .check("hpack_table_size", hpack_table_size.is_some())
        .check("allow_connect", *allow_connect)
        .check("allow_metadata", *allow_metadata)
        .check("max_outbound_frames", max_outbound_frames.is_some())
        .check(
            "max_outbound_control_frames",
            max_outbound_control_frames.is_some(),
        )
        .check(
            "max_consecutive_inbound_frames_with_empty_payload",
            max_consecutive_inbound_frames_with_empty_payload.is_some(),
        )
        .check(
            "max_inbound_priority_frames_per_stream",
            max_inbound_priority_frames_per_stream.is_some(),
        )
        .check(
            "max_inbound_window_update_frames_per_data_frame_sent",
            max_inbound_window_update_frames_per_data_frame_sent.is_some(),
        )
        .check(
            "stream_error_on_invalid_http_messaging",
            *stream_error_on_invalid_http_messaging,
        )
        .check(
            "override_stream_error_on_invalid_http_message",
            override_stream_error_on_invalid_http_message.is_some(),
        )
        .check(
            "custom_settings_parameters",
            !custom_settings_parameters.is_empty(),
        )
        .check("connection_keepalive", connection_keepalive.is_some())
        .check("max_metadata_size", max_metadata_size.is_some())
        .check("enable_huffman_encoding", enable_huffman_encoding.is_some())
        .check(
            "max_header_field_size_kb",
            max_header_field_size_kb.is_some(),
        )
        .check("disallow_obs_text", disallow_obs_text.is_some())
        .check("stream_reset_burst", stream_reset_burst.is_some())
        .check("stream_reset_rate", stream_reset_rate.is_some())
        .finish()?;
    let window = |field: &str, v: Option<u32>| -> Result<Option<u32>, DecodeError> {
        match v {
            Some(n) if !(65_535..=2_147_483_647).contains(&n) => {
                Err(ctx.invalid(field, format!("{n} is not in [65535, 2147483647]")))
            }
            other => Ok(other),
        }
    };
    Ok(model::Http2Options {
        max_concurrent_streams: max_concurrent_streams.map(|v| v.value),
        initial_stream_window_size: window(
            "initial_stream_window_size",
            initial_stream_window_size.map(|v| v.value),
        )?,
        initial_connection_window_size: window(
            "initial_connection_window_size",
            initial_connection_window_size.map(|v| v.value),
        )?,
    })
}
