//! `envoy.config.route.v3.RetryPolicy` → [`model::RetryPolicy`].

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::{
    RetryPolicy,
    retry_policy::{RetryBackOff, RetryHostPredicate, retry_host_predicate::ConfigType},
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;

use super::error::{Ctx, DecodeError, Problems};
use super::extension::Extension;
use super::time::duration;
use crate::model;

/// Envoy's retry back-off base interval.
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

pub(crate) fn retry_policy(ctx: &Ctx, pb: &RetryPolicy) -> Result<model::RetryPolicy, DecodeError> {
    let RetryPolicy {
        retry_on,
        num_retries,
        per_try_timeout,
        per_try_idle_timeout,
        retry_priority,
        retry_host_predicate,
        retry_options_predicates,
        host_selection_retry_max_attempts,
        retriable_status_codes,
        retry_back_off,
        rate_limited_retry_back_off,
        retriable_headers,
        retriable_request_headers,
        refresh_cluster_on_retry,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check("per_try_idle_timeout", per_try_idle_timeout.is_some())
            .check("retry_priority", retry_priority.is_some())
            .check(
                "retry_options_predicates",
                !retry_options_predicates.is_empty(),
            )
            .check(
                "rate_limited_retry_back_off",
                rate_limited_retry_back_off.is_some(),
            )
            .check("retriable_headers", !retriable_headers.is_empty())
            .check("refresh_cluster_on_retry", *refresh_cluster_on_retry)
            .check(
                "retriable_request_headers",
                !retriable_request_headers.is_empty(),
            )
            .finish(),
    );
    let retry_on = problems.take(parse_retry_on(&ctx.at("retry_on"), retry_on));
    let per_try_timeout = problems
        .take(
            per_try_timeout
                .as_ref()
                .map(|t| duration(ctx, "per_try_timeout", t))
                .transpose(),
        )
        .flatten()
        .filter(|t| !t.is_zero());
    let mut avoid_previous_hosts = false;
    for (i, predicate) in retry_host_predicate.iter().enumerate() {
        match problems.take(host_predicate(
            &ctx.at_index("retry_host_predicate", i),
            predicate,
        )) {
            Some(()) => avoid_previous_hosts = true,
            None => continue,
        }
    }
    let codes = problems.take_all(retriable_status_codes.iter().enumerate().map(|(i, c)| {
        u16::try_from(*c)
            .ok()
            .filter(|c| (100..600).contains(c))
            .ok_or_else(|| {
                ctx.invalid(
                    &format!("retriable_status_codes[{i}]"),
                    format!("{c} is not an HTTP status"),
                )
            })
    }));
    let (backoff_base, backoff_max) = problems
        .take(backoff(ctx, retry_back_off.as_ref()))
        .unwrap_or((DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_BASE * 10));
    let host_selection_max_attempts = u32::try_from(*host_selection_retry_max_attempts).unwrap_or(
        if *host_selection_retry_max_attempts < 0 {
            0
        } else {
            u32::MAX
        },
    );
    let policy = retry_on.map(|retry_on| model::RetryPolicy {
        retry_on,
        num_retries: num_retries.map_or(1, |n| n.value),
        per_try_timeout,
        retriable_status_codes: codes,
        avoid_previous_hosts,
        host_selection_max_attempts,
        backoff_base,
        backoff_max,
    });
    problems.finish(policy)
}

/// Only `previous_hosts`, the predicate istiod sets, is implemented.
fn host_predicate(ctx: &Ctx, pb: &RetryHostPredicate) -> Result<(), DecodeError> {
    let RetryHostPredicate { name, config_type } = pb;
    let typed = config_type.as_ref().map(|ConfigType::TypedConfig(any)| any);
    let ext = Extension::new(ctx, name, typed)?;
    if ext.is::<PreviousHostsPredicate>("envoy.retry_host_predicates.previous_hosts") {
        let PreviousHostsPredicate {} = ext.config(ctx)?;
        Ok(())
    } else {
        Err(ctx.unsupported(format!("retry host predicate {ext}")))
    }
}

fn backoff(ctx: &Ctx, pb: Option<&RetryBackOff>) -> Result<(Duration, Duration), DecodeError> {
    let Some(RetryBackOff {
        base_interval,
        max_interval,
    }) = pb
    else {
        return Ok((DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_BASE * 10));
    };
    let ctx = ctx.at("retry_back_off");
    let Some(base) = base_interval else {
        return Err(ctx.invalid("base_interval", "is required"));
    };
    let base = duration(&ctx, "base_interval", base)?;
    if base < Duration::from_millis(1) {
        return Err(ctx.invalid("base_interval", "must be at least 1ms"));
    }
    let max = match max_interval {
        Some(m) => duration(&ctx, "max_interval", m)?,
        None => base * 10,
    };
    if max < base {
        return Err(ctx.invalid("max_interval", "must not be below base_interval"));
    }
    Ok((base, max))
}

/// Envoy's `retry_on` list: comma-separated, blanks around entries ignored.
fn parse_retry_on(ctx: &Ctx, value: &str) -> Result<model::RetryOn, DecodeError> {
    let mut on = model::RetryOn::default();
    for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let flag = match token {
            "5xx" => &mut on.server_error,
            "gateway-error" => &mut on.gateway_error,
            "reset" => &mut on.reset,
            "reset-before-request" => &mut on.reset_before_request,
            "connect-failure" => &mut on.connect_failure,
            "retriable-4xx" => &mut on.retriable_4xx,
            "refused-stream" => &mut on.refused_stream,
            "retriable-status-codes" => &mut on.retriable_status_codes,
            "cancelled" => &mut on.grpc_cancelled,
            "deadline-exceeded" => &mut on.grpc_deadline_exceeded,
            "internal" => &mut on.grpc_internal,
            "resource-exhausted" => &mut on.grpc_resource_exhausted,
            "unavailable" => &mut on.grpc_unavailable,
            "envoy-ratelimited" | "retriable-headers" | "http3-post-connect-failure" => {
                return Err(ctx.unsupported(format!("retry condition {token:?}")));
            }
            other => return Err(ctx.invalid("", format!("unknown retry condition {other:?}"))),
        };
        *flag = true;
    }
    Ok(on)
}
