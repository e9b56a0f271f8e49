//! Route configurations: matching, actions, retries, per-route filter configs.

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use serde_json::{Value, json};

use crate::decode::{DecodeError, Resource, route_configuration};
use crate::model::{
    ClusterSpecifier, DomainPattern, FaultAbortKind, HeaderMatchRule, HostRewrite, PathMatch,
    PathRewrite, RedirectPath, RouteAction, RouteConfig,
};
use crate::testing::{assert_invalid, assert_unsupported, pb};

const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
const CORS: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";

fn res() -> Resource {
    Resource::route("r")
}

fn decode(json: Value) -> Result<RouteConfig, DecodeError> {
    let mut json = json;
    json["name"] = json!("r");
    route_configuration(&pb::<RouteConfiguration>(json))
}

/// One virtual host for `*` with the given routes.
fn with_routes(routes: Value) -> Result<RouteConfig, DecodeError> {
    decode(json!({"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": routes}]}))
}

fn one_route(route: Value) -> Result<crate::model::Route, DecodeError> {
    with_routes(json!([route])).map(|mut rc| rc.virtual_hosts.remove(0).routes.remove(0))
}

fn forward(route: Value) -> Box<crate::model::ForwardAction> {
    match one_route(route).unwrap().action {
        RouteAction::Forward(f) => f,
        other => panic!("not forwarded: {other:?}"),
    }
}

#[test]
fn domains_are_lowercased_and_classified() {
    let rc = decode(json!({"virtual_hosts": [
        {"name": "a", "domains": ["Reviews.default.svc.cluster.local", "*.example.com", "api.*"]},
        {"name": "b", "domains": ["*"]},
    ]}))
    .unwrap();
    assert_eq!(
        rc.virtual_hosts[0].domains,
        [
            DomainPattern::Exact("reviews.default.svc.cluster.local".into()),
            DomainPattern::Suffix(".example.com".into()),
            DomainPattern::Prefix("api.".into()),
        ]
    );
    assert_eq!(rc.virtual_hosts[1].domains, [DomainPattern::Any]);
    // RDS: unknown clusters are not checked (a 503 at run time), unless asked for.
    assert!(!rc.validate_clusters);
    assert_eq!(rc.max_direct_response_body_size, 4096);

    let err = decode(json!({"virtual_hosts": [
        {"name": "a", "domains": ["x"]}, {"name": "b", "domains": ["X"]}]}))
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "virtual_hosts",
        "in both virtual host \"a\" and \"b\"",
    );
    let err = decode(json!({"virtual_hosts": [{"name": "a", "domains": ["a*b*"]}]})).unwrap_err();
    assert_invalid(&err, &res(), "virtual_hosts[0].domains[0]", "one wildcard");
}

#[test]
fn matches_compile_regexes_once_for_whole_input() {
    let route = one_route(json!({
        "match": {"safe_regex": {"regex": "/api/v[0-9]+"}, "case_sensitive": false,
                  "headers": [
                      {"name": "X-User", "string_match": {"prefix": "jason", "ignore_case": true}},
                      {"name": "x-canary", "present_match": true, "invert_match": true},
                      {"name": "x-n", "range_match": {"start": 1, "end": 10}},
                      {"name": "x-re", "safe_regex_match": {"regex": "a.c"}},
                  ],
                  "query_parameters": [{"name": "debug"}, {"name": "v", "string_match": {"exact": "2"}}],
                  "grpc": {}},
        "route": {"cluster": "c"},
    }))
    .unwrap();
    let m = &route.matcher;
    let PathMatch::Regex(re) = &m.path else {
        panic!("{:?}", m.path)
    };
    assert!(re.is_match("/api/v12"));
    assert!(!re.is_match("/api/v12/x"), "the whole path must match");
    assert!(!m.case_sensitive && m.grpc);
    assert_eq!(&*m.headers[0].name, "x-user");
    let HeaderMatchRule::String(s) = &m.headers[0].rule else {
        panic!()
    };
    assert!(s.matches("JASONx") && !s.matches("bob"));
    assert!(matches!(m.headers[1].rule, HeaderMatchRule::Present(true)) && m.headers[1].invert);
    assert!(matches!(
        m.headers[2].rule,
        HeaderMatchRule::Range { start: 1, end: 10 }
    ));
    let HeaderMatchRule::String(re) = &m.headers[3].rule else {
        panic!()
    };
    assert!(re.matches("abc") && !re.matches("xabc"));
    assert!(m.query_parameters[0].value.is_none());
    assert!(m.query_parameters[1].value.as_ref().unwrap().matches("2"));

    let err =
        one_route(json!({"match": {"safe_regex": {"regex": "("}}, "route": {"cluster": "c"}}))
            .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "virtual_hosts[0].routes[0].match.safe_regex.regex",
        "\"(\"",
    );
    let err = one_route(json!({"match": {"prefix": "/", "runtime_fraction": {
        "default_value": {"numerator": 5}, "runtime_key": "k"}}, "route": {"cluster": "c"}}))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["routes[0].match", "runtime_fraction"]);
}

#[test]
fn forward_actions() {
    let f = forward(json!({"match": {"prefix": "/"}, "route": {"cluster": "c"}}));
    assert!(matches!(&f.cluster, ClusterSpecifier::Cluster(c) if &**c == "c"));
    assert_eq!(f.timeout, Some(Duration::from_secs(15)), "Envoy's default");
    assert!(f.retry_policy.is_none() && f.grpc_timeout_header_max.is_none());

    let f = forward(json!({"match": {"prefix": "/a"}, "route": {
        "weighted_clusters": {"clusters": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}]},
        "prefix_rewrite": "/b", "host_rewrite_literal": "new.host", "timeout": "2.5s",
        "idle_timeout": "0s",
        "request_mirror_policies": [{"cluster": "shadow", "runtime_fraction": {
            "default_value": {"numerator": 50, "denominator": "HUNDRED"}}}],
        "hash_policy": [{"header": {"header_name": "X-User"}, "terminal": true}, {"connection_properties": {"source_ip": true}}],
        "upgrade_configs": [{"upgrade_type": "WebSocket", "enabled": false}],
        "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "3s"},
    }}));
    let ClusterSpecifier::Weighted(w) = &f.cluster else {
        panic!()
    };
    assert_eq!(w.iter().map(|c| c.weight).collect::<Vec<_>>(), [90, 10]);
    assert!(matches!(&f.rewrite, Some(PathRewrite::Prefix(p)) if &**p == "/b"));
    assert!(matches!(&f.host_rewrite, Some(HostRewrite::Literal(h)) if &**h == "new.host"));
    assert_eq!(f.timeout, Some(Duration::from_millis(2500)));
    assert_eq!(f.idle_timeout, Some(Duration::ZERO));
    assert_eq!(f.mirrors[0].fraction_per_million, 500_000);
    assert_eq!(f.hash_policy.len(), 2);
    assert_eq!(&*f.upgrades[0].upgrade_type, "websocket");
    assert!(!f.upgrades[0].enabled);
    assert_eq!(f.grpc_timeout_header_max, Some(Duration::from_secs(3)));

    let f = forward(json!({"match": {"prefix": "/"}, "route": {
        "cluster_header": "X-Cluster", "regex_rewrite": {"pattern": {"regex": "^/v1/(.*)"}, "substitution": "/\\1"}}}));
    assert_eq!(f.cluster_header.as_deref(), Some("x-cluster"));
    let Some(PathRewrite::Regex {
        pattern,
        substitution,
    }) = &f.rewrite
    else {
        panic!()
    };
    assert!(pattern.compiled.is_match("/v1/x") && &**substitution == "/\\1");

    let err = one_route(
        json!({"match": {"prefix": "/"}, "route": {"weighted_clusters": {
        "clusters": [{"name": "a", "weight": 1}], "total_weight": 5}}}),
    )
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "virtual_hosts[0].routes[0].route.weighted_clusters.total_weight",
        "add up to 1",
    );
    let err = one_route(json!({"match": {"prefix": "/"}, "route": {"cluster": "c",
        "hedge_policy": {"initial_requests": 2}, "append_x_forwarded_host": true}}))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["append_x_forwarded_host", "hedge_policy"]);
}

#[test]
fn retry_policies() {
    let f = forward(
        json!({"match": {"prefix": "/"}, "route": {"cluster": "c", "retry_policy": {
        "retry_on": "5xx, gateway-error,reset,retriable-4xx,deadline-exceeded,internal,resource-exhausted",
        "per_try_timeout": "1s", "retry_back_off": {"base_interval": "0.1s"}}}}),
    );
    let r = f.retry_policy.unwrap();
    assert!(r.retry_on.server_error && r.retry_on.gateway_error && r.retry_on.reset);
    assert!(r.retry_on.retriable_4xx && r.retry_on.grpc_deadline_exceeded);
    assert!(r.retry_on.grpc_internal && r.retry_on.grpc_resource_exhausted);
    assert!(!r.retry_on.connect_failure && !r.avoid_previous_hosts);
    assert_eq!(r.num_retries, 1, "Envoy's default");
    assert_eq!(r.per_try_timeout, Some(Duration::from_secs(1)));
    assert_eq!(
        (r.backoff_base, r.backoff_max),
        (Duration::from_millis(100), Duration::from_secs(1))
    );

    let err = one_route(json!({"match": {"prefix": "/"}, "route": {"cluster": "c",
        "retry_policy": {"retry_on": "5xx,bogus"}}}))
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "virtual_hosts[0].routes[0].route.retry_policy.retry_on",
        "\"bogus\"",
    );
    let err = one_route(json!({"match": {"prefix": "/"}, "route": {"cluster": "c",
        "retry_policy": {"retry_on": "retriable-headers"}}}))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["retry_on", "retriable-headers"]);
    let err = one_route(json!({"match": {"prefix": "/"}, "route": {"cluster": "c",
        "retry_policy": {"retry_host_predicate": [{"name": "envoy.retry_host_predicates.omit_canary_hosts"}]}}}))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["retry host predicate", "omit_canary_hosts"]);
}

#[test]
fn redirects_and_direct_responses() {
    let route = one_route(json!({"match": {"path": "/old"}, "redirect": {
        "https_redirect": true, "host_redirect": "new", "port_redirect": 8443,
        "prefix_rewrite": "/new", "response_code": "TEMPORARY_REDIRECT", "strip_query": true}}))
    .unwrap();
    let RouteAction::Redirect(r) = route.action else {
        panic!()
    };
    assert_eq!(
        (r.scheme.as_deref(), r.host.as_deref(), r.port),
        (Some("https"), Some("new"), Some(8443))
    );
    assert!(matches!(&r.path, Some(RedirectPath::Prefix(p)) if &**p == "/new"));
    assert_eq!(r.status, 307);
    assert!(r.strip_query);

    let route = one_route(json!({"match": {"prefix": "/"}, "direct_response": {
        "status": 418, "body": {"inline_string": "teapot"}}}))
    .unwrap();
    let RouteAction::DirectResponse(d) = route.action else {
        panic!()
    };
    assert_eq!((d.status, d.body.as_deref()), (418, Some(&b"teapot"[..])));

    let err = decode(
        json!({"max_direct_response_body_size_bytes": 3, "virtual_hosts": [{"name": "v",
        "domains": ["*"], "routes": [{"match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": "four"}}}]}]}),
    )
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "virtual_hosts[0].routes[0].direct_response.body",
        "above",
    );
    let err = one_route(json!({"match": {"prefix": "/"}, "direct_response": {"status": 99}}))
        .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "virtual_hosts[0].routes[0].direct_response.status",
        "99",
    );
}

#[test]
fn header_mutations_take_literal_values_only() {
    let rc = decode(json!({
        "request_headers_to_add": [{"header": {"key": "x-a", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        "response_headers_to_remove": ["X-Internal"],
        "virtual_hosts": [{"name": "v", "domains": ["*"],
            "request_headers_to_add": [{"header": {"key": "x-empty", "value": ""}}]}],
    }))
    .unwrap();
    assert_eq!(rc.headers.request_add[0].name.as_str(), "x-a");
    assert_eq!(&*rc.headers.response_remove[0], "x-internal");
    assert!(
        rc.virtual_hosts[0].headers.is_empty(),
        "an empty value is skipped, as in Envoy"
    );

    let err = decode(json!({"request_headers_to_add": [{"header": {"key": "x-id", "value": "%DOWNSTREAM_REMOTE_ADDRESS%"}}],
        "virtual_hosts": []}))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["request_headers_to_add[0]", "%-formatters"]);
    let err =
        decode(json!({"request_headers_to_remove": [":path"], "virtual_hosts": []})).unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "request_headers_to_remove[0]",
        "pseudo-headers",
    );
}

#[test]
fn per_route_fault_and_cors() {
    let route = one_route(json!({"match": {"prefix": "/"}, "route": {"cluster": "c"},
        "typed_per_filter_config": {
            "envoy.filters.http.fault": {"@type": FAULT,
                "delay": {"fixed_delay": "5s", "percentage": {"numerator": 10, "denominator": "HUNDRED"}},
                "abort": {"http_status": 503, "percentage": {"numerator": 1, "denominator": "TEN_THOUSAND"}},
                "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]},
            "envoy.filters.http.cors": {"@type": CORS,
                "allow_origin_string_match": [{"exact": "https://a.example"}],
                "allow_methods": "GET,POST", "max_age": "60", "allow_credentials": true},
        }}))
    .unwrap();
    let fault = route.fault.unwrap();
    let delay = fault.delay.unwrap();
    assert_eq!(
        (delay.delay, delay.per_million),
        (Duration::from_secs(5), 100_000)
    );
    let abort = fault.abort.unwrap();
    assert_eq!(
        (abort.kind, abort.per_million),
        (FaultAbortKind::HttpStatus(503), 100)
    );
    assert_eq!(&*fault.headers[0].name, "end-user");
    let cors = route.cors.unwrap();
    assert!(cors.allow_origins[0].matches("https://a.example"));
    assert_eq!(cors.allow_methods.as_deref(), Some("GET,POST"));
    assert_eq!(cors.allow_credentials, Some(true));
    assert!(cors.forward_not_matching_preflights, "Envoy's default");

    let err = one_route(json!({"match": {"prefix": "/"}, "route": {"cluster": "c"},
        "typed_per_filter_config": {"envoy.filters.http.fault": {"@type": FAULT,
            "abort": {"header_abort": {}}, "max_active_faults": 3}}}))
    .unwrap_err();
    let reasons = err.reasons().join("; ");
    assert!(
        reasons.contains("max_active_faults") && reasons.contains("header_abort"),
        "{reasons}"
    );
}
