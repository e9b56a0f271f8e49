//! Route configurations (RDS, or inline in an HTTP connection manager): which virtual host and
//! route a request takes, and what happens to it there.
//!
//! Matchers are compiled when decoded (regexes included) so that a request's path through the
//! table does no parsing and no allocation.

use std::sync::Arc;
use std::time::Duration;

use super::ClusterSpecifier;

/// An Envoy `RouteConfiguration`.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: Arc<str>,
    /// In the order Envoy matches them: see [`VirtualHost::domains`].
    pub virtual_hosts: Vec<VirtualHost>,
    /// Match `Host` without its `:port` (istiod sets it on gateways; sidecars list both forms).
    pub ignore_port_in_host_matching: bool,
    pub headers: HeaderMutations,
    /// Largest body a `direct_response` may have (Envoy's default: 4 KiB).
    pub max_direct_response_body_size: usize,
    /// Refuse the configuration when a route names a cluster nobody defined (Envoy's
    /// default: true inline in a listener, false from RDS, where such a route answers 503).
    pub validate_clusters: bool,
}

impl RouteConfig {
    /// Every cluster its routes name directly, with the path of the field that names it.
    pub fn cluster_references(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        for (i, host) in self.virtual_hosts.iter().enumerate() {
            for (j, route) in host.routes.iter().enumerate() {
                let RouteAction::Forward(forward) = &route.action else {
                    continue;
                };
                let path = format!("virtual_hosts[{i}].routes[{j}].route");
                match &forward.cluster {
                    ClusterSpecifier::Cluster(name) if forward.cluster_header.is_none() => {
                        out.push((format!("{path}.cluster"), &**name));
                    }
                    ClusterSpecifier::Cluster(_) => {}
                    ClusterSpecifier::Weighted(weighted) => {
                        for (k, w) in weighted.iter().enumerate() {
                            out.push((
                                format!("{path}.weighted_clusters.clusters[{k}].name"),
                                &*w.name,
                            ));
                        }
                    }
                }
                for (k, mirror) in forward.mirrors.iter().enumerate() {
                    out.push((
                        format!("{path}.request_mirror_policies[{k}].cluster"),
                        &*mirror.cluster,
                    ));
                }
            }
        }
        out
    }
}

/// An Envoy `VirtualHost`.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub name: Arc<str>,
    /// Envoy picks the virtual host by the most specific domain across all hosts: exact, then
    /// the longest `*suffix`, then the longest `prefix*`, then `*`.
    pub domains: Vec<DomainPattern>,
    /// First match wins.
    pub routes: Vec<Route>,
    /// Used by routes that have none of their own.
    pub retry_policy: Option<RetryPolicy>,
    /// Send `x-envoy-attempt-count` upstream.
    pub include_request_attempt_count: bool,
    pub cors: Option<CorsPolicy>,
    pub headers: HeaderMutations,
}

/// One entry of `VirtualHost.domains`, lowercased when decoded (Host matching ignores case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(Arc<str>),
    /// `*.example.com`: the stored suffix is `.example.com`.
    Suffix(Arc<str>),
    /// `example.*`: the stored prefix is `example.`.
    Prefix(Arc<str>),
    /// `*`.
    Any,
}

/// An Envoy `Route`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Istio puts the VirtualService route name here; it reaches access logs and stats.
    pub name: Arc<str>,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    pub headers: HeaderMutations,
    /// The `decorator.operation` (tracing span name), kept for the config dump and logs.
    pub decorator: Option<Arc<str>>,
    /// Per-route overrides of HTTP filters (Istio: fault, CORS), already decoded.
    pub fault: Option<FaultPolicy>,
    pub cors: Option<CorsPolicy>,
}

/// An Envoy `RouteMatch`: every part must hold.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// `case_sensitive` (default true) applies to prefix, exact and separated-prefix paths.
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// Only gRPC requests (`content-type: application/grpc...`).
    pub grpc: bool,
}

/// How the path (without the query string) is compared.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(Arc<str>),
    Exact(Arc<str>),
    /// The whole path must match.
    Regex(Regex),
    /// `path_separated_prefix`: the prefix followed by end of path, `/`, `?` or `#`.
    SeparatedPrefix(Arc<str>),
}

/// A compiled RE2-style regular expression that must match the whole input, with its source
/// kept for the config dump.
#[derive(Debug, Clone)]
pub struct Regex {
    pub source: Arc<str>,
    /// Compiled as `^(?:source)$`.
    pub compiled: regex::Regex,
}

impl Regex {
    pub fn is_match(&self, value: &str) -> bool {
        self.compiled.is_match(value)
    }
}

/// An Envoy `HeaderMatcher`. Pseudo-headers (`:authority`, `:method`, `:path`, `:scheme`)
/// are matched like headers, as Envoy does.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    /// Lowercase.
    pub name: Arc<str>,
    pub rule: HeaderMatchRule,
    /// Negate the result of `rule`.
    pub invert: bool,
    /// With `invert`, a missing header does not match either (Envoy's
    /// `treat_missing_header_as_empty` is the other knob: see `rule`).
    pub treat_missing_as_empty: bool,
}

#[derive(Debug, Clone)]
pub enum HeaderMatchRule {
    /// `present_match`: the header is there (or, with `false`, absent).
    Present(bool),
    String(StringMatcher),
    /// Inclusive start, exclusive end, on the value parsed as an integer.
    Range {
        start: i64,
        end: i64,
    },
}

/// Envoy's `type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone)]
pub struct StringMatcher {
    pub pattern: StringPattern,
    /// Compare ASCII case-insensitively (not for regexes).
    pub ignore_case: bool,
}

#[derive(Debug, Clone)]
pub enum StringPattern {
    Exact(Arc<str>),
    Prefix(Arc<str>),
    Suffix(Arc<str>),
    Contains(Arc<str>),
    Regex(Regex),
}

impl StringMatcher {
    pub fn matches(&self, value: &str) -> bool {
        fn eq(a: &str, b: &str, ignore_case: bool) -> bool {
            if ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        }
        let ic = self.ignore_case;
        match &self.pattern {
            StringPattern::Exact(s) => eq(value, s, ic),
            StringPattern::Prefix(s) => value.get(..s.len()).is_some_and(|head| eq(head, s, ic)),
            StringPattern::Suffix(s) => value
                .len()
                .checked_sub(s.len())
                .and_then(|at| value.get(at..))
                .is_some_and(|tail| eq(tail, s, ic)),
            StringPattern::Contains(s) => {
                if ic {
                    value.to_ascii_lowercase().contains(&s.to_ascii_lowercase())
                } else {
                    value.contains(&**s)
                }
            }
            StringPattern::Regex(re) => re.is_match(value),
        }
    }
}

/// An Envoy `QueryParameterMatcher`.
#[derive(Debug, Clone)]
pub struct QueryParameterMatcher {
    pub name: Arc<str>,
    /// `None`: the parameter only has to be present.
    pub value: Option<StringMatcher>,
}

/// What a matched route does.
#[derive(Debug, Clone)]
pub enum RouteAction {
    Forward(Box<ForwardAction>),
    Redirect(Box<RedirectAction>),
    DirectResponse(DirectResponse),
}

/// Envoy's `route.v3.RouteAction`: send the request upstream.
#[derive(Debug, Clone)]
pub struct ForwardAction {
    pub cluster: ClusterSpecifier,
    /// The header Envoy reads the cluster name from (`cluster_header`), when that is the
    /// specifier; takes precedence over `cluster`.
    pub cluster_header: Option<Arc<str>>,
    pub rewrite: Option<PathRewrite>,
    pub host_rewrite: Option<HostRewrite>,
    /// Whole-request timeout; `None` disables it (istiod sends `0s`). Envoy's default is 15 s.
    pub timeout: Option<Duration>,
    /// Stream idle timeout for this route; `None` keeps the connection manager's.
    pub idle_timeout: Option<Duration>,
    pub retry_policy: Option<RetryPolicy>,
    pub mirrors: Vec<MirrorPolicy>,
    pub hash_policy: Vec<HashPolicy>,
    /// Upgrades (e.g. `websocket`) this route allows, overriding the connection manager's.
    pub upgrades: Vec<UpgradeConfig>,
    /// `max_stream_duration.grpc_timeout_header_max`: honour `grpc-timeout` up to this cap
    /// (`Some(ZERO)`: no cap).
    pub grpc_timeout_header_max: Option<Duration>,
}

#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Replace the matched prefix (only with a prefix or exact path match).
    Prefix(Arc<str>),
    /// Replace every match of `pattern` in the path with `substitution` (`\1` groups).
    Regex {
        pattern: Regex,
        substitution: Arc<str>,
    },
}

#[derive(Debug, Clone)]
pub enum HostRewrite {
    Literal(Arc<str>),
    /// The upstream host's name (`auto_host_rewrite`: DNS clusters).
    Auto,
    /// The value of this request header.
    Header(Arc<str>),
}

/// Envoy's `RetryPolicy`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    /// Envoy's default is 1.
    pub num_retries: u32,
    /// `None`: each try may use the rest of the route timeout.
    pub per_try_timeout: Option<Duration>,
    /// `retriable-status-codes` applies to these.
    pub retriable_status_codes: Vec<u16>,
    /// Avoid hosts already tried (`envoy.retry_host_predicates.previous_hosts`).
    pub avoid_previous_hosts: bool,
    /// `host_selection_retry_max_attempts`: how often to re-pick a host the predicate refused.
    pub host_selection_max_attempts: u32,
    /// Exponential back-off between tries: Envoy defaults to 25 ms base, 10 × base max.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// The conditions of Envoy's `x-envoy-retry-on` / `retry_on` list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `5xx`: any 5xx response, or no response (reset, connect failure, timeout of a try).
    pub server_error: bool,
    /// `gateway-error`: 502, 503, 504.
    pub gateway_error: bool,
    /// `reset`: the upstream reset or closed before a response.
    pub reset: bool,
    /// `reset-before-request`: the upstream reset or closed before the request was sent
    /// whole, so retrying cannot repeat a request the upstream acted on (istiod's default
    /// retry policy includes it).
    pub reset_before_request: bool,
    pub connect_failure: bool,
    /// `retriable-4xx`: 409.
    pub retriable_4xx: bool,
    /// `refused-stream`: an HTTP/2 REFUSED_STREAM.
    pub refused_stream: bool,
    pub retriable_status_codes: bool,
    /// gRPC `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`
    /// (from `grpc-status` in headers or trailers-only responses).
    pub grpc_cancelled: bool,
    pub grpc_deadline_exceeded: bool,
    pub grpc_internal: bool,
    pub grpc_resource_exhausted: bool,
    pub grpc_unavailable: bool,
}

/// Envoy's `RequestMirrorPolicy`: a fire-and-forget copy of the request.
#[derive(Debug, Clone)]
pub struct MirrorPolicy {
    pub cluster: Arc<str>,
    /// The share of requests mirrored, in millionths (Envoy's `runtime_fraction`; default all).
    pub fraction_per_million: u32,
}

/// Envoy's `RouteAction.HashPolicy` for ring-hash / maglev clusters.
#[derive(Debug, Clone)]
pub enum HashPolicy {
    Header {
        name: Arc<str>,
        terminal: bool,
    },
    Cookie {
        name: Arc<str>,
        ttl: Option<Duration>,
        path: Option<Arc<str>>,
        terminal: bool,
    },
    SourceIp {
        terminal: bool,
    },
    QueryParameter {
        name: Arc<str>,
        terminal: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// Lowercase upgrade token, e.g. `websocket`.
    pub upgrade_type: Arc<str>,
    pub enabled: bool,
}

/// Envoy's `RedirectAction`: answer 3xx with a `location` built from the request.
#[derive(Debug, Clone)]
pub struct RedirectAction {
    /// `https_redirect` or `scheme_redirect`.
    pub scheme: Option<Arc<str>>,
    pub host: Option<Arc<str>>,
    pub port: Option<u16>,
    pub path: Option<RedirectPath>,
    /// 301 (default), 302, 303, 307 or 308.
    pub status: u16,
    pub strip_query: bool,
}

#[derive(Debug, Clone)]
pub enum RedirectPath {
    Path(Arc<str>),
    Prefix(Arc<str>),
    Regex {
        pattern: Regex,
        substitution: Arc<str>,
    },
}

/// Envoy's `DirectResponseAction`.
#[derive(Debug, Clone)]
pub struct DirectResponse {
    pub status: u16,
    pub body: Option<bytes::Bytes>,
}

/// Header additions and removals at one level (route configuration, virtual host or route);
/// Envoy applies route, then virtual host, then route configuration.
#[derive(Debug, Clone, Default)]
pub struct HeaderMutations {
    pub request_add: Vec<HeaderValueOption>,
    /// Lowercase names.
    pub request_remove: Vec<Arc<str>>,
    pub response_add: Vec<HeaderValueOption>,
    pub response_remove: Vec<Arc<str>>,
}

impl HeaderMutations {
    pub fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }
}

/// One header to add, with a value that is literal (Envoy's `%...%` formatters are rejected
/// when decoded unless supported).
#[derive(Debug, Clone)]
pub struct HeaderValueOption {
    pub name: ::http::HeaderName,
    pub value: ::http::HeaderValue,
    pub action: HeaderAppendAction,
}

/// Envoy's `HeaderValueOption.HeaderAppendAction`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HeaderAppendAction {
    #[default]
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

/// Envoy's HTTP fault filter config (`envoy.filters.http.fault`), as istiod writes it from a
/// VirtualService `fault` (per route, in `typed_per_filter_config`).
#[derive(Debug, Clone, Default)]
pub struct FaultPolicy {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    /// Only requests whose headers all match are faulted.
    pub headers: Vec<HeaderMatcher>,
}

#[derive(Debug, Clone)]
pub struct FaultDelay {
    pub delay: Duration,
    pub per_million: u32,
}

#[derive(Debug, Clone)]
pub struct FaultAbort {
    pub kind: FaultAbortKind,
    pub per_million: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAbortKind {
    HttpStatus(u16),
    GrpcStatus(u32),
}

/// Envoy's `CorsPolicy` (Istio: VirtualService `corsPolicy`).
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    pub allow_origins: Vec<StringMatcher>,
    /// Comma-separated, as sent in the preflight response.
    pub allow_methods: Option<Arc<str>>,
    pub allow_headers: Option<Arc<str>>,
    pub expose_headers: Option<Arc<str>>,
    pub max_age: Option<Arc<str>>,
    pub allow_credentials: Option<bool>,
    /// Answer preflights from disallowed origins by forwarding them upstream (Envoy's
    /// `forward_not_matching_preflights`, default true).
    pub forward_not_matching_preflights: bool,
}
