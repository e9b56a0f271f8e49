//! Header additions and removals (`*_headers_to_add` / `*_headers_to_remove`) and the
//! fractional percentages routes use.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};

use super::error::{Ctx, DecodeError, Problems};
use crate::model;

/// The four lists of one level (route configuration, virtual host, route).
pub(crate) fn mutations(
    ctx: &Ctx,
    request_add: &[HeaderValueOption],
    request_remove: &[String],
    response_add: &[HeaderValueOption],
    response_remove: &[String],
) -> Result<model::HeaderMutations, DecodeError> {
    let mut problems = Problems::new(ctx);
    let request_add = adds(ctx, &mut problems, "request_headers_to_add", request_add);
    let response_add = adds(ctx, &mut problems, "response_headers_to_add", response_add);
    let request_remove = removes(
        ctx,
        &mut problems,
        "request_headers_to_remove",
        request_remove,
    );
    let response_remove = removes(
        ctx,
        &mut problems,
        "response_headers_to_remove",
        response_remove,
    );
    problems.finish(Some(model::HeaderMutations {
        request_add,
        request_remove,
        response_add,
        response_remove,
    }))
}

fn adds(
    ctx: &Ctx,
    problems: &mut Problems,
    field: &str,
    options: &[HeaderValueOption],
) -> Vec<model::HeaderValueOption> {
    let results = options
        .iter()
        .enumerate()
        .map(|(i, o)| add(&ctx.at_index(field, i), o));
    problems.take_all(results).into_iter().flatten().collect()
}

/// One header to add; `None` for an empty value Envoy would skip (no `keep_empty_value`).
#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn add(ctx: &Ctx, pb: &HeaderValueOption) -> Result<Option<model::HeaderValueOption>, DecodeError> {
    let HeaderValueOption {
        header,
        append,
        append_action,
        keep_empty_value,
    } = pb;
    let Some(HeaderValue {
        key,
        value,
        raw_value,
    }) = header
    else {
        return Err(ctx.invalid("header", "is required"));
    };
    let value: &[u8] = match (value.is_empty(), raw_value.is_empty()) {
        (_, true) => value.as_bytes(),
        (true, false) => raw_value,
        (false, false) => {
            return Err(ctx.invalid("header", "only one of value and raw_value may be set"));
        }
    };
    // Envoy expands `%COMMAND%` formatters in values (`%%` is a literal `%`); only literal
    // values are implemented.
    if value.contains(&b'%') {
        return Err(ctx.unsupported(format!(
            "header {key:?}: a value with %-formatters ({:?})",
            String::from_utf8_lossy(value)
        )));
    }
    let name = ::http::HeaderName::from_bytes(key.as_bytes())
        .map_err(|_| ctx.invalid("header.key", format!("{key:?} is not a valid header name")))?;
    if name.as_str().starts_with(':') || name == ::http::header::HOST {
        return Err(ctx.invalid(
            "header.key",
            format!("{key:?}: pseudo-headers and host cannot be modified"),
        ));
    }
    let header_value = ::http::HeaderValue::from_bytes(value)
        .map_err(|_| ctx.invalid("header.value", format!("not a valid value for {key:?}")))?;
    let action = match append {
        // The deprecated `append` wins when set, as in Envoy.
        Some(append) if append.value => model::HeaderAppendAction::AppendIfExistsOrAdd,
        Some(_) => model::HeaderAppendAction::OverwriteIfExistsOrAdd,
        None => match HeaderAppendAction::try_from(*append_action) {
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) => {
                model::HeaderAppendAction::AppendIfExistsOrAdd
            }
            Ok(HeaderAppendAction::AddIfAbsent) => model::HeaderAppendAction::AddIfAbsent,
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => {
                model::HeaderAppendAction::OverwriteIfExistsOrAdd
            }
            Ok(HeaderAppendAction::OverwriteIfExists) => {
                model::HeaderAppendAction::OverwriteIfExists
            }
            Err(_) => {
                return Err(ctx.invalid(
                    "append_action",
                    format!("unknown append action {append_action}"),
                ));
            }
        },
    };
    if value.is_empty() && !keep_empty_value {
        return Ok(None);
    }
    Ok(Some(model::HeaderValueOption {
        name,
        value: header_value,
        action,
    }))
}

fn removes(ctx: &Ctx, problems: &mut Problems, field: &str, names: &[String]) -> Vec<Arc<str>> {
    let results = names.iter().enumerate().map(|(i, name)| {
        let lower = name.to_ascii_lowercase();
        if lower.is_empty() || lower.starts_with(':') || lower == "host" {
            return Err(ctx.invalid(
                &format!("{field}[{i}]"),
                format!("{name:?}: pseudo-headers and host cannot be removed"),
            ));
        }
        Ok(Arc::from(lower))
    });
    problems.take_all(results)
}

/// A fraction in millionths.
pub(crate) fn per_million(ctx: &Ctx, pb: &FractionalPercent) -> Result<u32, DecodeError> {
    let FractionalPercent {
        numerator,
        denominator,
    } = pb;
    let scale: u64 = match DenominatorType::try_from(*denominator) {
        Ok(DenominatorType::Hundred) => 10_000,
        Ok(DenominatorType::TenThousand) => 100,
        Ok(DenominatorType::Million) => 1,
        Err(_) => {
            return Err(ctx.invalid("denominator", format!("unknown denominator {denominator}")));
        }
    };
    // Envoy caps a numerator above its denominator at 100%.
    Ok((u64::from(*numerator) * scale).min(1_000_000) as u32)
}

/// A `RuntimeFractionalPercent`: vm-proxy has no runtime, so the key only names a value
/// nobody can set and the default applies, as in an Envoy without runtime overrides.
pub(crate) fn runtime_per_million(
    ctx: &Ctx,
    pb: &RuntimeFractionalPercent,
) -> Result<u32, DecodeError> {
    let RuntimeFractionalPercent {
        default_value,
        runtime_key: _,
    } = pb;
    match default_value {
        Some(fraction) => per_million(&ctx.at("default_value"), fraction),
        None => Err(ctx.invalid("default_value", "is required")),
    }
}
