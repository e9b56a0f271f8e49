//! What a route does: `RouteAction` (forward upstream), `RedirectAction` and
//! `DirectResponseAction`.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, RouteAction, WeightedCluster,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    route_action::{
        ClusterNotFoundResponseCode, ClusterSpecifier, HashPolicy, HostRewriteSpecifier,
        InternalRedirectAction, MaxStreamDuration, RequestMirrorPolicy, UpgradeConfig,
        hash_policy::PolicySpecifier,
    },
    weighted_cluster::ClusterWeight,
};

use super::error::{Ctx, DecodeError, Problems};
use super::headers::runtime_per_million;
use super::matcher::substitution;
use super::retry::retry_policy;
use super::route::nonzero;
use super::time::duration;
use crate::model;

/// Envoy's route timeout when none is given.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn forward(ctx: &Ctx, pb: &RouteAction) -> Result<model::RouteAction, DecodeError> {
    let RouteAction {
        cluster_not_found_response_code,
        metadata_match,
        prefix_rewrite,
        regex_rewrite,
        path_rewrite_policy,
        path_rewrite,
        append_x_forwarded_host,
        timeout,
        idle_timeout,
        flush_timeout,
        early_data_policy,
        retry_policy: retry,
        retry_policy_typed_config,
        request_mirror_policies,
        priority,
        rate_limits,
        include_vh_rate_limits,
        hash_policy,
        cors,
        max_grpc_timeout,
        grpc_timeout_offset,
        upgrade_configs,
        internal_redirect_policy,
        internal_redirect_action,
        max_internal_redirects,
        hedge_policy,
        max_stream_duration,
        cluster_specifier,
        host_rewrite_specifier,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            // 503 is the default and what vm-proxy answers for a cluster it does not have.
            .check(
                "cluster_not_found_response_code",
                *cluster_not_found_response_code
                    != ClusterNotFoundResponseCode::ServiceUnavailable as i32,
            )
            .check_msg("metadata_match", metadata_match)
            .check("path_rewrite_policy", path_rewrite_policy.is_some())
            .check("path_rewrite", !path_rewrite.is_empty())
            .check("append_x_forwarded_host", *append_x_forwarded_host)
            .check("flush_timeout", flush_timeout.is_some())
            .check("early_data_policy", early_data_policy.is_some())
            .check(
                "retry_policy_typed_config",
                retry_policy_typed_config.is_some(),
            )
            // Only the default priority has hosts in a sidecar's clusters.
            .check("priority", *priority != 0)
            .check("rate_limits", !rate_limits.is_empty())
            .check("include_vh_rate_limits", include_vh_rate_limits.is_some())
            .check("cors (on the route action)", cors.is_some())
            .check("grpc_timeout_offset", grpc_timeout_offset.is_some())
            .check(
                "internal_redirect_policy",
                internal_redirect_policy.is_some(),
            )
            .check(
                "internal_redirect_action",
                *internal_redirect_action
                    != InternalRedirectAction::PassThroughInternalRedirect as i32,
            )
            .check("max_internal_redirects", max_internal_redirects.is_some())
            .check("hedge_policy", hedge_policy.is_some())
            .finish(),
    );
    let (cluster, cluster_header) = match cluster_specifier {
        Some(ClusterSpecifier::Cluster(name)) if !name.is_empty() => (
            Some(model::ClusterSpecifier::Cluster(Arc::from(name.as_str()))),
            None,
        ),
        Some(ClusterSpecifier::ClusterHeader(header)) if !header.is_empty() => (
            Some(model::ClusterSpecifier::Cluster(Arc::from(""))),
            Some(Arc::from(header.to_ascii_lowercase())),
        ),
        Some(ClusterSpecifier::WeightedClusters(w)) => (
            problems.take(weighted(&ctx.at("weighted_clusters"), w)),
            None,
        ),
        Some(ClusterSpecifier::ClusterSpecifierPlugin(name)) => {
            problems.push(ctx.unsupported(format!("cluster_specifier_plugin {name:?}")));
            (None, None)
        }
        Some(ClusterSpecifier::InlineClusterSpecifierPlugin(_)) => {
            problems.push(ctx.unsupported("inline_cluster_specifier_plugin"));
            (None, None)
        }
        Some(_) | None => {
            problems.push(ctx.invalid("", "a route action needs a cluster"));
            (None, None)
        }
    };
    let rewrite = match (prefix_rewrite.is_empty(), regex_rewrite) {
        (true, None) => None,
        (false, None) => Some(model::PathRewrite::Prefix(Arc::from(
            prefix_rewrite.as_str(),
        ))),
        (true, Some(r)) => problems
            .take(substitution(&ctx.at("regex_rewrite"), r))
            .map(|(pattern, substitution)| model::PathRewrite::Regex {
                pattern,
                substitution,
            }),
        (false, Some(_)) => {
            problems.push(ctx.invalid("", "prefix_rewrite and regex_rewrite cannot both be set"));
            None
        }
    };
    let host_rewrite = match host_rewrite_specifier {
        None => None,
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => {
            Some(model::HostRewrite::Literal(Arc::from(h.as_str())))
        }
        Some(HostRewriteSpecifier::AutoHostRewrite(b)) => {
            b.value.then_some(model::HostRewrite::Auto)
        }
        Some(HostRewriteSpecifier::HostRewriteHeader(h)) => Some(model::HostRewrite::Header(
            Arc::from(h.to_ascii_lowercase()),
        )),
        Some(HostRewriteSpecifier::HostRewritePathRegex(_)) => {
            problems.push(ctx.unsupported("host_rewrite_path_regex"));
            None
        }
        Some(HostRewriteSpecifier::HostRewrite(_)) => {
            problems.push(ctx.unsupported("host_rewrite (substitution formatter)"));
            None
        }
    };
    let timeout = problems
        .take(
            timeout
                .as_ref()
                .map_or(Ok(DEFAULT_ROUTE_TIMEOUT), |t| duration(ctx, "timeout", t)),
        )
        .and_then(nonzero);
    let idle_timeout = problems
        .take(
            idle_timeout
                .as_ref()
                .map(|t| duration(ctx, "idle_timeout", t))
                .transpose(),
        )
        .flatten();
    let retry_policy = problems
        .take(
            retry
                .as_ref()
                .map(|r| retry_policy(&ctx.at("retry_policy"), r))
                .transpose(),
        )
        .flatten();
    let mirrors = problems.take_all(
        request_mirror_policies
            .iter()
            .enumerate()
            .map(|(i, m)| mirror(&ctx.at_index("request_mirror_policies", i), m)),
    );
    let hash_policy = problems.take_all(
        hash_policy
            .iter()
            .enumerate()
            .map(|(i, h)| hash(&ctx.at_index("hash_policy", i), h)),
    );
    let upgrades = problems.take_all(
        upgrade_configs
            .iter()
            .enumerate()
            .map(|(i, u)| upgrade(&ctx.at_index("upgrade_configs", i), u)),
    );
    let grpc_max = problems.take(grpc_timeout_max(
        ctx,
        max_grpc_timeout.as_ref(),
        max_stream_duration.as_ref(),
    ));
    let action = (|| {
        Some(model::RouteAction::Forward(Box::new(
            model::ForwardAction {
                cluster: cluster?,
                cluster_header,
                rewrite,
                host_rewrite,
                timeout,
                idle_timeout,
                retry_policy,
                mirrors,
                hash_policy,
                upgrades,
                grpc_timeout_header_max: grpc_max?,
            },
        )))
    })();
    problems.finish(action)
}

/// The cap on `grpc-timeout`, from `max_stream_duration` or the deprecated
/// `max_grpc_timeout` (istiod 1.18 writes `0s`: honour the header without cap).
fn grpc_timeout_max(
    ctx: &Ctx,
    deprecated: Option<&envoy_types::pb::google::protobuf::Duration>,
    msd: Option<&MaxStreamDuration>,
) -> Result<Option<Duration>, DecodeError> {
    let mut cap = deprecated
        .map(|d| duration(ctx, "max_grpc_timeout", d))
        .transpose()?;
    if let Some(MaxStreamDuration {
        max_stream_duration,
        grpc_timeout_header_max,
        grpc_timeout_header_offset,
    }) = msd
    {
        let ctx = ctx.at("max_stream_duration");
        ctx.unsupported_fields()
            .check(
                "max_stream_duration",
                max_stream_duration.is_some_and(|d| d.seconds != 0 || d.nanos != 0),
            )
            .check(
                "grpc_timeout_header_offset",
                grpc_timeout_header_offset.is_some(),
            )
            .finish()?;
        if let Some(max) = grpc_timeout_header_max {
            cap = Some(duration(&ctx, "grpc_timeout_header_max", max)?);
        }
    }
    Ok(cap)
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn weighted(ctx: &Ctx, pb: &WeightedCluster) -> Result<model::ClusterSpecifier, DecodeError> {
    let WeightedCluster {
        clusters,
        total_weight,
        // Names runtime keys; without a runtime the configured weights apply.
        runtime_key_prefix: _,
        random_value_specifier,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check("random_value_specifier", random_value_specifier.is_some())
            .finish(),
    );
    if clusters.is_empty() {
        problems.push(ctx.invalid("clusters", "needs at least one cluster"));
    }
    let clusters = problems.take_all(
        clusters
            .iter()
            .enumerate()
            .map(|(i, c)| cluster_weight(&ctx.at_index("clusters", i), c)),
    );
    let sum: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
    if let Some(total) = total_weight
        && u64::from(total.value) != sum
    {
        problems.push(ctx.invalid(
            "total_weight",
            format!("is {} but the weights add up to {sum}", total.value),
        ));
    }
    if sum == 0 && !clusters.is_empty() {
        problems.push(ctx.invalid("clusters", "the weights add up to 0"));
    }
    if sum > u64::from(u32::MAX) {
        problems.push(ctx.invalid("clusters", format!("total weight {sum} is too large")));
    }
    problems.finish(Some(model::ClusterSpecifier::Weighted(clusters)))
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn cluster_weight(ctx: &Ctx, pb: &ClusterWeight) -> Result<model::WeightedCluster, DecodeError> {
    let ClusterWeight {
        name,
        cluster_header,
        weight,
        metadata_match,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        typed_per_filter_config,
        host_rewrite_specifier,
    } = pb;
    ctx.unsupported_fields()
        .check("cluster_header", !cluster_header.is_empty())
        .check_msg("metadata_match", metadata_match)
        .check("request_headers_to_add", !request_headers_to_add.is_empty())
        .check(
            "request_headers_to_remove",
            !request_headers_to_remove.is_empty(),
        )
        .check(
            "response_headers_to_add",
            !response_headers_to_add.is_empty(),
        )
        .check(
            "response_headers_to_remove",
            !response_headers_to_remove.is_empty(),
        )
        .check(
            "typed_per_filter_config",
            !typed_per_filter_config.is_empty(),
        )
        .check("host_rewrite_specifier", host_rewrite_specifier.is_some())
        .finish()?;
    if name.is_empty() {
        return Err(ctx.invalid("name", "must not be empty"));
    }
    Ok(model::WeightedCluster {
        name: Arc::from(name.as_str()),
        weight: weight.map_or(0, |w| w.value),
    })
}

fn mirror(ctx: &Ctx, pb: &RequestMirrorPolicy) -> Result<model::MirrorPolicy, DecodeError> {
    let RequestMirrorPolicy {
        cluster,
        cluster_header,
        runtime_fraction,
        trace_sampled: _, // tracing only, which vm-proxy does not do
        disable_shadow_host_suffix_append,
        request_headers_mutations,
        host_rewrite_literal,
    } = pb;
    ctx.unsupported_fields()
        .check("cluster_header", !cluster_header.is_empty())
        // The `-shadow` suffix on the mirrored request's host is Envoy's default, kept.
        .check(
            "disable_shadow_host_suffix_append",
            *disable_shadow_host_suffix_append,
        )
        .check(
            "request_headers_mutations",
            !request_headers_mutations.is_empty(),
        )
        .check("host_rewrite_literal", !host_rewrite_literal.is_empty())
        .finish()?;
    if cluster.is_empty() {
        return Err(ctx.invalid("cluster", "must not be empty"));
    }
    let fraction_per_million = match runtime_fraction {
        Some(f) => runtime_per_million(&ctx.at("runtime_fraction"), f)?,
        None => 1_000_000,
    };
    Ok(model::MirrorPolicy {
        cluster: Arc::from(cluster.as_str()),
        fraction_per_million,
    })
}

fn hash(ctx: &Ctx, pb: &HashPolicy) -> Result<model::HashPolicy, DecodeError> {
    let HashPolicy {
        terminal,
        policy_specifier,
    } = pb;
    let terminal = *terminal;
    match policy_specifier {
        Some(PolicySpecifier::Header(h)) => {
            if h.regex_rewrite.is_some() {
                return Err(ctx.unsupported("header.regex_rewrite"));
            }
            Ok(model::HashPolicy::Header {
                name: Arc::from(h.header_name.to_ascii_lowercase()),
                terminal,
            })
        }
        Some(PolicySpecifier::Cookie(c)) => {
            if !c.attributes.is_empty() {
                return Err(ctx.unsupported("cookie.attributes"));
            }
            let ttl = c
                .ttl
                .as_ref()
                .map(|t| duration(&ctx.at("cookie"), "ttl", t))
                .transpose()?;
            Ok(model::HashPolicy::Cookie {
                name: Arc::from(c.name.as_str()),
                ttl,
                path: (!c.path.is_empty()).then(|| Arc::from(c.path.as_str())),
                terminal,
            })
        }
        Some(PolicySpecifier::ConnectionProperties(p)) => match p.source_ip {
            true => Ok(model::HashPolicy::SourceIp { terminal }),
            false => Err(ctx.invalid("connection_properties", "source_ip must be true")),
        },
        Some(PolicySpecifier::QueryParameter(q)) => Ok(model::HashPolicy::QueryParameter {
            name: Arc::from(q.name.as_str()),
            terminal,
        }),
        Some(PolicySpecifier::FilterState(_)) => Err(ctx.unsupported("filter_state")),
        None => Err(ctx.invalid("", "a hash policy needs a policy specifier")),
    }
}

pub(crate) fn upgrade(ctx: &Ctx, pb: &UpgradeConfig) -> Result<model::UpgradeConfig, DecodeError> {
    let UpgradeConfig {
        upgrade_type,
        enabled,
        connect_config,
    } = pb;
    ctx.unsupported_fields()
        .check("connect_config", connect_config.is_some())
        .finish()?;
    if upgrade_type.is_empty() {
        return Err(ctx.invalid("upgrade_type", "must not be empty"));
    }
    Ok(model::UpgradeConfig {
        upgrade_type: Arc::from(upgrade_type.to_ascii_lowercase()),
        enabled: enabled.is_none_or(|e| e.value),
    })
}

pub(crate) fn redirect(ctx: &Ctx, pb: &RedirectAction) -> Result<model::RouteAction, DecodeError> {
    let RedirectAction {
        host_redirect,
        port_redirect,
        response_code,
        strip_query,
        scheme_rewrite_specifier,
        path_rewrite_specifier,
    } = pb;
    let status = match RedirectResponseCode::try_from(*response_code) {
        Ok(RedirectResponseCode::MovedPermanently) => 301,
        Ok(RedirectResponseCode::Found) => 302,
        Ok(RedirectResponseCode::SeeOther) => 303,
        Ok(RedirectResponseCode::TemporaryRedirect) => 307,
        Ok(RedirectResponseCode::PermanentRedirect) => 308,
        Err(_) => {
            return Err(ctx.invalid(
                "response_code",
                format!("unknown redirect code {response_code}"),
            ));
        }
    };
    let port = match *port_redirect {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| ctx.invalid("port_redirect", format!("{p} is not a port")))?,
        ),
    };
    let scheme = match scheme_rewrite_specifier {
        None | Some(SchemeRewriteSpecifier::HttpsRedirect(false)) => None,
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some(Arc::from("https")),
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(Arc::from(s.to_ascii_lowercase())),
    };
    let path = match path_rewrite_specifier {
        None => None,
        Some(PathRewriteSpecifier::PathRedirect(p)) => {
            Some(model::RedirectPath::Path(Arc::from(p.as_str())))
        }
        Some(PathRewriteSpecifier::PrefixRewrite(p)) => {
            Some(model::RedirectPath::Prefix(Arc::from(p.as_str())))
        }
        Some(PathRewriteSpecifier::PathRewrite(_)) => {
            return Err(ctx.unsupported("path_rewrite (substitution formatter)"));
        }
        Some(PathRewriteSpecifier::RegexRewrite(r)) => {
            let (pattern, substitution) = substitution(&ctx.at("regex_rewrite"), r)?;
            Some(model::RedirectPath::Regex {
                pattern,
                substitution,
            })
        }
    };
    Ok(model::RouteAction::Redirect(Box::new(
        model::RedirectAction {
            scheme,
            host: (!host_redirect.is_empty()).then(|| Arc::from(host_redirect.as_str())),
            port,
            path,
            status,
            strip_query: *strip_query,
        },
    )))
}

pub(crate) fn direct_response(
    ctx: &Ctx,
    pb: &DirectResponseAction,
    max_body: usize,
) -> Result<model::RouteAction, DecodeError> {
    let DirectResponseAction {
        status,
        body,
        body_format,
    } = pb;
    ctx.unsupported_fields()
        .check("body_format", body_format.is_some())
        .finish()?;
    let status = u16::try_from(*status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .ok_or_else(|| ctx.invalid("status", format!("{status} is not in [200, 600)")))?;
    let body = body
        .as_ref()
        .map(|b| data_source(&ctx.at("body"), b))
        .transpose()?;
    if let Some(body) = &body
        && body.len() > max_body
    {
        return Err(ctx.invalid(
            "body",
            format!(
                "{} bytes is above max_direct_response_body_size_bytes ({max_body})",
                body.len()
            ),
        ));
    }
    Ok(model::RouteAction::DirectResponse(model::DirectResponse {
        status,
        body,
    }))
}

fn data_source(ctx: &Ctx, pb: &DataSource) -> Result<bytes::Bytes, DecodeError> {
    let DataSource {
        watched_directory,
        specifier,
    } = pb;
    ctx.unsupported_fields()
        .check("watched_directory", watched_directory.is_some())
        .finish()?;
    match specifier {
        Some(Specifier::InlineBytes(b)) => Ok(bytes::Bytes::from(b.clone())),
        Some(Specifier::InlineString(s)) => Ok(bytes::Bytes::from(s.clone())),
        Some(Specifier::Filename(_)) => Err(ctx.unsupported("filename (a body read from a file)")),
        Some(Specifier::EnvironmentVariable(_)) => Err(ctx.unsupported("environment_variable")),
        None => Ok(bytes::Bytes::new()),
    }
}
