//! Istio's `istio.stats` filter config (`stats.PluginConfig`), on TCP and HTTP chains alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::{Ctx, DecodeError, Problems};
use super::istio_proto::{StatsMetricConfig, StatsPluginConfig};
use super::time::duration_or;
use crate::model;

/// The standard metrics by the names `metrics[].name` uses for them.
const STANDARD_METRICS: &[&str] = &[
    "requests_total",
    "request_duration_milliseconds",
    "request_bytes",
    "response_bytes",
    "tcp_sent_bytes_total",
    "tcp_received_bytes_total",
    "tcp_connections_opened_total",
    "tcp_connections_closed_total",
];

pub(crate) fn stats(ctx: &Ctx, pb: &StatsPluginConfig) -> Result<model::StatsConfig, DecodeError> {
    let StatsPluginConfig {
        disable_host_header_fallback,
        tcp_reporting_duration,
        metrics,
        definitions,
        reporter,
        // How long Envoy keeps idle stat scopes before rebuilding them: memory management of
        // Envoy's stats store, which has no counterpart in ours (series live as long as the
        // process).
        rescoping_duration: _,
        scope_grace_period_duration: _,
    } = pb;
    // Custom metrics have CEL `value` expressions, which vm-proxy does not evaluate.
    ctx.unsupported_fields()
        .check("definitions (custom metrics)", !definitions.is_empty())
        .finish()?;
    let reporter = match reporter {
        0 => model::StatsReporter::Unspecified,
        1 => model::StatsReporter::ServerGateway,
        other => return Err(ctx.invalid("reporter", format!("unknown reporter {other}"))),
    };
    let tcp_reporting_interval = duration_or(
        ctx,
        "tcp_reporting_duration",
        tcp_reporting_duration.as_ref(),
        model::DEFAULT_TCP_REPORTING_INTERVAL,
    )?;
    if tcp_reporting_interval.is_zero() {
        return Err(ctx.invalid("tcp_reporting_duration", "must be positive"));
    }
    let mut problems = Problems::new(ctx);
    let overrides = problems.take_all(
        metrics
            .iter()
            .enumerate()
            .map(|(i, m)| metric_override(&ctx.at_index("metrics", i), m)),
    );
    problems.finish(Some(model::StatsConfig {
        reporter,
        disable_host_header_fallback: *disable_host_header_fallback,
        tcp_reporting_interval,
        overrides,
    }))
}

fn metric_override(
    ctx: &Ctx,
    pb: &StatsMetricConfig,
) -> Result<model::MetricOverride, DecodeError> {
    let StatsMetricConfig {
        dimensions,
        name,
        tags_to_remove,
        r#match,
        drop,
    } = pb;
    if !r#match.is_empty() {
        return Err(ctx.unsupported(format!(
            "match: CEL expression {match:?} (CEL is not evaluated)",
            r#match = r#match
        )));
    }
    let name = match name.as_str() {
        "" => None,
        known if STANDARD_METRICS.contains(&known) => Some(Arc::from(known)),
        other => {
            return Err(ctx.unsupported(format!(
                "name: custom metric {other:?} (only Istio's standard metrics exist)"
            )));
        }
    };
    let mut fixed = BTreeMap::new();
    // Sorted, so errors come out in a stable order.
    let mut keys: Vec<&String> = dimensions.keys().collect();
    keys.sort();
    for key in keys {
        let expression = &dimensions[key];
        let Some(value) = string_literal(expression) else {
            return Err(ctx.at("dimensions").unsupported(format!(
                "{key:?}: CEL expression {expression:?} (only string literals are evaluated)"
            )));
        };
        fixed.insert(Arc::from(key.as_str()), Arc::from(value));
    }
    Ok(model::MetricOverride {
        name,
        tags_to_remove: tags_to_remove
            .iter()
            .map(|t| Arc::from(t.as_str()))
            .collect(),
        dimensions: fixed,
        drop: *drop,
    })
}

/// A CEL string literal without escapes (`'v'` or `"v"`): the one kind of dimension value
/// that needs no CEL evaluation.
fn string_literal(expression: &str) -> Option<&str> {
    let e = expression.trim();
    let quote = e.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = e.strip_prefix(quote)?.strip_suffix(quote)?;
    match inner.contains(quote) || inner.contains('\\') || e.len() < 2 {
        true => None,
        false => Some(inner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_only() {
        assert_eq!(string_literal("'prod'"), Some("prod"));
        assert_eq!(string_literal("\"a b\""), Some("a b"));
        assert_eq!(string_literal("request.host"), None);
        assert_eq!(string_literal("'a' + 'b'"), None);
        assert_eq!(string_literal("'"), None);
    }
}
