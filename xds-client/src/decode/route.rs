//! `envoy.config.route.v3.RouteConfiguration` (RDS, or inline in an HTTP connection manager)
//! → [`model::RouteConfig`]: virtual hosts, routes and their matches.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::{
    Decorator, Route, RouteConfiguration, RouteMatch, VirtualHost, route,
    route_match::PathSpecifier, virtual_host::TlsRequirementType,
};

use super::action::{direct_response, forward, redirect};
use super::error::{Ctx, DecodeError, Problems, Resource};
use super::headers::mutations;
use super::http_filter::{PerFilter, per_filter_configs};
use super::matcher::{header_matcher, query_matcher, regex};
use super::retry::retry_policy;
use crate::model;

/// Envoy's default `max_direct_response_body_size_bytes`.
const DEFAULT_MAX_DIRECT_RESPONSE_BODY: usize = 4096;

/// Decodes a route configuration from RDS (named in the error as a route configuration).
pub(crate) fn route_configuration(
    pb: &RouteConfiguration,
) -> Result<model::RouteConfig, DecodeError> {
    let resource = Resource::route(pb.name.as_str());
    let ctx = Ctx::new(&resource);
    if pb.name.is_empty() {
        return Err(ctx.invalid("name", "a route configuration from RDS needs a name"));
    }
    route_config(&ctx, pb, false)
}

/// Decodes a route configuration at `ctx` (inline ones sit inside a listener);
/// `validate_by_default` is Envoy's `validate_clusters` default for where it sits.
#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
pub(crate) fn route_config(
    ctx: &Ctx,
    pb: &RouteConfiguration,
    validate_by_default: bool,
) -> Result<model::RouteConfig, DecodeError> {
    let RouteConfiguration {
        name,
        virtual_hosts,
        vhds,
        internal_only_headers,
        response_headers_to_add,
        response_headers_to_remove,
        request_headers_to_add,
        request_headers_to_remove,
        most_specific_header_mutations_wins,
        validate_clusters,
        max_direct_response_body_size_bytes,
        cluster_specifier_plugins,
        request_mirror_policies,
        ignore_port_in_host_matching,
        vhost_header,
        ignore_path_parameters_in_path_matching,
        typed_per_filter_config,
        metadata: _, // inert data for filters; none of the supported ones reads it
        route_specifiers,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check("vhds", vhds.is_some())
            .check("internal_only_headers", !internal_only_headers.is_empty())
            .check(
                "most_specific_header_mutations_wins",
                *most_specific_header_mutations_wins,
            )
            .check(
                "cluster_specifier_plugins",
                !cluster_specifier_plugins.is_empty(),
            )
            .check(
                "request_mirror_policies",
                !request_mirror_policies.is_empty(),
            )
            .check("vhost_header", !vhost_header.is_empty())
            .check(
                "ignore_path_parameters_in_path_matching",
                *ignore_path_parameters_in_path_matching,
            )
            .check(
                "typed_per_filter_config",
                !typed_per_filter_config.is_empty(),
            )
            .check("route_specifiers", !route_specifiers.is_empty())
            .finish(),
    );
    let headers = problems.take(mutations(
        ctx,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
    ));
    let max_direct_response_body_size = max_direct_response_body_size_bytes
        .map_or(DEFAULT_MAX_DIRECT_RESPONSE_BODY, |v| v.value as usize);
    let hosts = problems.take_all(virtual_hosts.iter().enumerate().map(|(i, vh)| {
        virtual_host(
            &ctx.at_index("virtual_hosts", i),
            vh,
            max_direct_response_body_size,
        )
    }));
    check_domains(ctx, &hosts, &mut problems);
    let config = headers.map(|headers| model::RouteConfig {
        name: Arc::from(name.as_str()),
        virtual_hosts: hosts,
        ignore_port_in_host_matching: *ignore_port_in_host_matching,
        headers,
        max_direct_response_body_size,
        validate_clusters: validate_clusters.map_or(validate_by_default, |v| v.value),
    });
    problems.finish(config)
}

/// Envoy refuses a route configuration that lists one domain twice, in one virtual host or
/// in two.
fn check_domains(ctx: &Ctx, hosts: &[model::VirtualHost], problems: &mut Problems) {
    let mut seen: std::collections::HashMap<String, &str> = Default::default();
    for host in hosts {
        for domain in &host.domains {
            let key = match domain {
                model::DomainPattern::Exact(d) => d.to_string(),
                model::DomainPattern::Suffix(d) => format!("*{d}"),
                model::DomainPattern::Prefix(d) => format!("{d}*"),
                model::DomainPattern::Any => "*".to_string(),
            };
            if let Some(other) = seen.insert(key.clone(), &host.name) {
                problems.push(ctx.invalid(
                    "virtual_hosts",
                    match other == &*host.name {
                        true => format!("domain {key:?} is listed twice in virtual host {other:?}"),
                        false => format!(
                            "domain {key:?} is in both virtual host {other:?} and {:?}",
                            host.name
                        ),
                    },
                ));
            }
        }
    }
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn virtual_host(
    ctx: &Ctx,
    pb: &VirtualHost,
    max_body: usize,
) -> Result<model::VirtualHost, DecodeError> {
    let VirtualHost {
        name,
        domains,
        routes,
        matcher,
        require_tls,
        virtual_clusters,
        rate_limits,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        cors,
        typed_per_filter_config,
        include_request_attempt_count,
        include_attempt_count_in_response,
        retry_policy: retry,
        retry_policy_typed_config,
        hedge_policy,
        include_is_timeout_retry_header,
        per_request_buffer_limit_bytes,
        request_body_buffer_limit,
        request_mirror_policies,
        metadata: _, // inert data for filters; none of the supported ones reads it
        route_specifiers,
    } = pb;
    let mut problems = Problems::new(ctx);
    if name.is_empty() {
        problems.push(ctx.invalid("name", "a virtual host needs a name"));
    }
    problems.take(
        ctx.unsupported_fields()
            .check("matcher", matcher.is_some())
            .check(
                "require_tls",
                *require_tls != TlsRequirementType::None as i32,
            )
            .check("virtual_clusters", !virtual_clusters.is_empty())
            .check("rate_limits", !rate_limits.is_empty())
            .check(
                "include_attempt_count_in_response",
                *include_attempt_count_in_response,
            )
            .check(
                "retry_policy_typed_config",
                retry_policy_typed_config.is_some(),
            )
            .check("hedge_policy", hedge_policy.is_some())
            .check(
                "include_is_timeout_retry_header",
                *include_is_timeout_retry_header,
            )
            .check(
                "per_request_buffer_limit_bytes",
                per_request_buffer_limit_bytes.is_some(),
            )
            .check(
                "request_body_buffer_limit",
                request_body_buffer_limit.is_some(),
            )
            .check(
                "request_mirror_policies",
                !request_mirror_policies.is_empty(),
            )
            .check("route_specifiers", !route_specifiers.is_empty())
            .finish(),
    );
    if domains.is_empty() {
        problems.push(ctx.invalid("domains", "a virtual host needs at least one domain"));
    }
    let domains = problems.take_all(
        domains
            .iter()
            .enumerate()
            .map(|(i, d)| domain(&ctx.at_index("domains", i), d)),
    );
    let headers = problems.take(mutations(
        ctx,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
    ));
    let retry_policy = problems
        .take(
            retry
                .as_ref()
                .map(|r| retry_policy(&ctx.at("retry_policy"), r))
                .transpose(),
        )
        .flatten();
    // The deprecated in-route `cors` and the filter's per-virtual-host config say the same;
    // the typed one wins, as in Envoy.
    let per_filter = problems.take(per_filter_configs(ctx, typed_per_filter_config));
    let cors = match per_filter.as_ref().and_then(|p| p.cors.clone()) {
        Some(typed) => Some(typed),
        None => problems
            .take(
                cors.as_ref()
                    .map(|c| super::http_filter::route_cors(&ctx.at("cors"), c))
                    .transpose(),
            )
            .flatten(),
    };
    if per_filter.as_ref().is_some_and(|p| p.fault.is_some()) {
        problems.push(ctx.unsupported(
            "typed_per_filter_config: a fault policy on a virtual host (istiod puts them on routes)",
        ));
    }
    let routes = problems.take_all(
        routes
            .iter()
            .enumerate()
            .map(|(i, r)| route_of(&ctx.at_index("routes", i), r, max_body)),
    );
    let host = (|| {
        Some(model::VirtualHost {
            name: Arc::from(name.as_str()),
            domains,
            routes,
            retry_policy,
            include_request_attempt_count: *include_request_attempt_count,
            cors,
            headers: headers?,
        })
    })();
    problems.finish(host)
}

/// One `domains` entry: exact, `*suffix`, `prefix*` or `*`; Envoy allows one wildcard, at
/// either end.
fn domain(ctx: &Ctx, value: &str) -> Result<model::DomainPattern, DecodeError> {
    let lower = value.to_ascii_lowercase();
    if lower == "*" {
        return Ok(model::DomainPattern::Any);
    }
    let pattern = if let Some(suffix) = lower.strip_prefix('*') {
        model::DomainPattern::Suffix(Arc::from(suffix))
    } else if let Some(prefix) = lower.strip_suffix('*') {
        model::DomainPattern::Prefix(Arc::from(prefix))
    } else {
        model::DomainPattern::Exact(Arc::from(lower.as_str()))
    };
    let body = match &pattern {
        model::DomainPattern::Suffix(s) | model::DomainPattern::Prefix(s) => &**s,
        _ => lower.as_str(),
    };
    if body.is_empty() || body.contains('*') {
        return Err(ctx.invalid("", format!("{value:?}: one wildcard, at either end, only")));
    }
    Ok(pattern)
}

#[allow(deprecated)] // deprecated fields still arrive in configs and are judged like the rest
fn route_of(ctx: &Ctx, pb: &Route, max_body: usize) -> Result<model::Route, DecodeError> {
    let Route {
        name,
        r#match,
        metadata: _, // inert data for filters; none of the supported ones reads it
        decorator,
        typed_per_filter_config,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        tracing,
        per_request_buffer_limit_bytes,
        stat_prefix,
        request_body_buffer_limit,
        route_specifiers,
        action,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check("tracing", tracing.is_some())
            .check(
                "per_request_buffer_limit_bytes",
                per_request_buffer_limit_bytes.is_some(),
            )
            .check("stat_prefix", !stat_prefix.is_empty())
            .check(
                "request_body_buffer_limit",
                request_body_buffer_limit.is_some(),
            )
            .check("route_specifiers", !route_specifiers.is_empty())
            .finish(),
    );
    let matcher = match r#match {
        Some(m) => problems.take(route_match(&ctx.at("match"), m)),
        None => {
            problems.push(ctx.invalid("match", "is required"));
            None
        }
    };
    let action = match action {
        Some(route::Action::Route(a)) => problems.take(forward(&ctx.at("route"), a)),
        Some(route::Action::Redirect(r)) => problems.take(redirect(&ctx.at("redirect"), r)),
        Some(route::Action::DirectResponse(d)) => {
            problems.take(direct_response(&ctx.at("direct_response"), d, max_body))
        }
        Some(route::Action::FilterAction(_)) => {
            problems.push(ctx.unsupported("filter_action"));
            None
        }
        Some(route::Action::NonForwardingAction(_)) => {
            problems.push(ctx.unsupported("non_forwarding_action"));
            None
        }
        None => {
            problems.push(ctx.invalid("", "a route needs an action"));
            None
        }
    };
    let headers = problems.take(mutations(
        ctx,
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
    ));
    let PerFilter { fault, cors } = problems
        .take(per_filter_configs(ctx, typed_per_filter_config))
        .unwrap_or_default();
    let decorator = decorator.as_ref().and_then(|d| {
        let Decorator {
            operation,
            // Whether the span name goes upstream in `x-envoy-decorator-operation`: tracing
            // only, which vm-proxy does not do.
            propagate: _,
        } = d;
        (!operation.is_empty()).then(|| Arc::from(operation.as_str()))
    });
    let route = (|| {
        Some(model::Route {
            name: Arc::from(name.as_str()),
            matcher: matcher?,
            action: action?,
            headers: headers?,
            decorator,
            fault,
            cors,
        })
    })();
    problems.finish(route)
}

fn route_match(ctx: &Ctx, pb: &RouteMatch) -> Result<model::RouteMatch, DecodeError> {
    let RouteMatch {
        case_sensitive,
        runtime_fraction,
        headers,
        query_parameters,
        cookies,
        grpc,
        tls_context,
        dynamic_metadata,
        filter_state,
        path_specifier,
    } = pb;
    let mut problems = Problems::new(ctx);
    problems.take(
        ctx.unsupported_fields()
            .check("runtime_fraction", runtime_fraction.is_some())
            .check("cookies", !cookies.is_empty())
            .check_msg("tls_context", tls_context)
            .check("dynamic_metadata", !dynamic_metadata.is_empty())
            .check("filter_state", !filter_state.is_empty())
            .finish(),
    );
    let path = match path_specifier {
        Some(PathSpecifier::Prefix(p)) => Some(model::PathMatch::Prefix(Arc::from(p.as_str()))),
        Some(PathSpecifier::Path(p)) => Some(model::PathMatch::Exact(Arc::from(p.as_str()))),
        Some(PathSpecifier::SafeRegex(re)) => problems
            .take(regex(&ctx.at("safe_regex"), re))
            .map(model::PathMatch::Regex),
        Some(PathSpecifier::PathSeparatedPrefix(p)) => {
            if p.is_empty() || !p.starts_with('/') || p.len() > 1 && p.ends_with('/') {
                problems.push(ctx.invalid(
                    "path_separated_prefix",
                    format!("{p:?}: must start with / and not end with one"),
                ));
            } else if p.contains(['?', '#']) {
                problems.push(ctx.invalid("path_separated_prefix", "must not contain ? or #"));
            }
            Some(model::PathMatch::SeparatedPrefix(Arc::from(p.as_str())))
        }
        Some(PathSpecifier::ConnectMatcher(_)) => {
            problems.push(ctx.unsupported("connect_matcher"));
            None
        }
        Some(PathSpecifier::PathMatchPolicy(ext)) => {
            problems.push(ctx.unsupported(format!("path_match_policy {:?}", ext.name)));
            None
        }
        None => {
            problems.push(ctx.invalid("", "a route match needs a path specifier"));
            None
        }
    };
    let headers = problems.take_all(
        headers
            .iter()
            .enumerate()
            .map(|(i, h)| header_matcher(&ctx.at_index("headers", i), h)),
    );
    let query_parameters = problems.take_all(
        query_parameters
            .iter()
            .enumerate()
            .map(|(i, q)| query_matcher(&ctx.at_index("query_parameters", i), q)),
    );
    let matcher = path.map(|path| model::RouteMatch {
        path,
        case_sensitive: case_sensitive.is_none_or(|c| c.value),
        headers,
        query_parameters,
        grpc: grpc.is_some(),
    });
    problems.finish(matcher)
}

/// Keeps a duration the way Envoy reads a route timeout: zero disables it.
pub(crate) fn nonzero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}
