//! Istio's real bootstrap and config dumps: the JSON step must take all of them; the model
//! step may refuse what vm-proxy does not implement, but only as "unsupported".

use std::time::Duration;

use envoy_types::pb::envoy::admin::v3::ConfigDump;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use serde_json::Value;

use super::shared_fixture;
use crate::bootstrap::{BootstrapError, load_file, parse};
use crate::decode::{self, Ctx, DecodeError, Resource, ResourceKind};
use crate::model::{
    ClusterSpecifier, DiscoveryType, DomainPattern, EndpointAddress, HttpFilter, LbPolicy,
    PathMatch, RouteAction,
};
use crate::proto;

const GOLDEN: &str = "pilot-agent-bootstrap-golden-default.json";
const DUMPS: [&str; 3] = [
    "sidecar-full-config_dump-geo-istio-1.18.2.json",
    "sidecar-lds-config_dump-httpbin-istio-2023-06.json",
    "sidecar-eds-config_dump-bookinfo-istio-2022-07.json",
];

fn read(name: &str) -> String {
    let path = shared_fixture(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"))
}

#[test]
fn golden_bootstrap_parses_whole() {
    let bootstrap = parse(&read(GOLDEN), GOLDEN).unwrap();
    assert_eq!(
        bootstrap.node.as_ref().unwrap().id,
        "sidecar~1.2.3.4~foo~bar"
    );
    let statics = bootstrap.static_resources.as_ref().unwrap();
    assert_eq!(statics.listeners.len(), 2);
    assert_eq!(statics.clusters.len(), 4);
    let ads = bootstrap
        .dynamic_resources
        .as_ref()
        .unwrap()
        .ads_config
        .as_ref()
        .unwrap();
    assert_eq!(ads.api_type().as_str_name(), "DELTA_GRPC");
}

#[test]
fn golden_bootstrap_is_refused_with_reasons() {
    let err = load_file(std::path::Path::new(&shared_fixture(GOLDEN))).unwrap_err();
    let BootstrapError::Resources { origin, errors } = &err else {
        panic!("expected resource errors, got {err:?}")
    };
    assert!(origin.ends_with(GOLDEN));
    for e in errors.iter().flat_map(DecodeError::problems) {
        assert!(
            matches!(e, DecodeError::Unsupported { .. }),
            "not an unsupported feature: {e}"
        );
    }
    let about = |resource: &Resource| -> Vec<String> {
        errors
            .iter()
            .filter(|e| e.resource() == resource)
            .map(ToString::to_string)
            .collect()
    };
    let bootstrap = about(&Resource::bootstrap()).join("\n");
    for part in [
        "stats_config",
        "layered_runtime",
        "bootstrap_extensions",
        "admin: access_log",
    ] {
        assert!(bootstrap.contains(part), "{part} missing from {bootstrap}");
    }
    // The Prometheus listener compresses; the readiness one (an HCM routing to `agent`)
    // decodes.
    let why = about(&Resource::listener("0.0.0.0_15090")).join("\n");
    assert!(
        why.contains("HTTP filter \"envoy.filters.http.compressor.gzip\""),
        "{why}"
    );
    assert!(about(&Resource::listener("0.0.0.0_15021")).is_empty());
    let sds = about(&Resource::cluster("sds-grpc")).join("\n");
    assert!(sds.contains("Unix socket"), "{sds}");
    // Every reason of one cluster, not only the first.
    let xds = about(&Resource::cluster("xds-grpc")).join("\n");
    assert!(
        xds.contains("upstream_connection_options") && xds.contains("Unix socket"),
        "{xds}"
    );
    assert_eq!(errors.len(), 5, "{err}");
}

#[test]
fn golden_bootstrap_static_clusters_on_ip_decode() {
    let bootstrap = parse(&read(GOLDEN), GOLDEN).unwrap();
    let clusters = &bootstrap.static_resources.as_ref().unwrap().clusters;
    for (name, port) in [("prometheus_stats", 15000), ("agent", 15020)] {
        let pb = clusters.iter().find(|c| c.name == name).unwrap();
        let c = decode::cluster(pb).unwrap();
        assert_eq!(c.discovery, DiscoveryType::Static);
        assert_eq!(c.lb_policy, LbPolicy::RoundRobin);
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.endpoints.len(), 1);
        assert_eq!(
            c.endpoints[0].address,
            EndpointAddress::Socket(([127, 0, 0, 1], port).into())
        );
    }
}

#[test]
fn config_dumps_parse_whole() {
    for name in DUMPS {
        let dump = proto::from_json_str::<ConfigDump>(&read(name))
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert!(!dump.configs.is_empty(), "{name}");
    }
}

/// Every JSON object in the document with the given `@type`, wherever it sits.
fn typed_objects<'a>(value: &'a Value, type_name: &str, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            if map.get("@type").and_then(Value::as_str)
                == Some(&format!("type.googleapis.com/{type_name}"))
            {
                out.push(value);
            }
            map.values().for_each(|v| typed_objects(v, type_name, out));
        }
        Value::Array(items) => items.iter().for_each(|v| typed_objects(v, type_name, out)),
        _ => {}
    }
}

/// Each resource of type `T` in the dumps, transcoded from JSON on its own.
fn resources<T: Message + Name + Default>() -> Vec<(String, T)> {
    let mut all = Vec::new();
    for name in DUMPS {
        let json: Value = serde_json::from_str(&read(name)).unwrap();
        let mut found = Vec::new();
        typed_objects(&json, &T::full_name(), &mut found);
        for (i, object) in found.into_iter().enumerate() {
            let any: Any = proto::from_json_value(object.clone())
                .unwrap_or_else(|err| panic!("{name}: {} #{i}: {err}", T::full_name()));
            let msg = T::decode(any.value.as_slice()).unwrap();
            all.push((format!("{name} #{i}"), msg));
        }
    }
    all
}

#[test]
fn every_dumped_listener_transcodes_and_decodes_or_is_unsupported() {
    let listeners = resources::<Listener>();
    assert_eq!(listeners.len(), 144 + 29, "listener objects in the dumps");
    let mut accepted = 0;
    let mut with_tcp_stats = 0;
    for (place, pb) in &listeners {
        match decode::listener(pb) {
            Ok(l) => {
                accepted += 1;
                assert!(!l.filter_chains.is_empty() || l.default_filter_chain.is_some());
                let tcp_stats = l
                    .filter_chains
                    .iter()
                    .flat_map(|c| &c.filters)
                    .any(|f| matches!(f, crate::model::NetworkFilter::IstioStats(_)));
                with_tcp_stats += usize::from(tcp_stats);
            }
            Err(err) => {
                assert_eq!(err.resource().kind, ResourceKind::Listener);
                for problem in err.problems() {
                    let DecodeError::Unsupported { what, .. } = problem else {
                        panic!("{place}: {problem}")
                    };
                    assert!(!what.is_empty(), "{place}");
                    // istiod's `istio.stats` (network and HTTP) always decodes.
                    assert!(!what.contains("istio.stats"), "{place}: {problem}");
                }
            }
        }
    }
    // The static 15090 / 15021 listeners of the two LDS dumps, and the TCP listeners whose
    // only extra filter is `istio.stats`; the rest carry access logs, tracing, metadata
    // exchange or authorization filters vm-proxy does not implement yet.
    assert_eq!(accepted, 15);
    assert!(with_tcp_stats > 0, "no accepted listener has istio.stats");
}

#[test]
fn every_dumped_cluster_transcodes_and_decodes_or_is_unsupported() {
    let clusters = resources::<Cluster>();
    assert_eq!(clusters.len(), 143);
    let mut accepted = Vec::new();
    for (place, pb) in &clusters {
        match decode::cluster(pb) {
            Ok(c) => accepted.push(c),
            Err(err) => {
                for problem in err.problems() {
                    assert!(
                        matches!(problem, DecodeError::Unsupported { .. }),
                        "{place}: {problem}"
                    );
                }
            }
        }
    }
    let names: Vec<&str> = accepted.iter().map(|c| &*c.name).collect();
    assert!(names.contains(&"BlackHoleCluster"), "{names:?}");
    let blackhole = accepted
        .iter()
        .find(|c| &*c.name == "BlackHoleCluster")
        .unwrap();
    assert_eq!(blackhole.connect_timeout, Duration::from_secs(10));
    assert!(blackhole.endpoints.is_empty());
}

#[test]
fn every_dumped_load_assignment_decodes() {
    let assignments = resources::<ClusterLoadAssignment>();
    assert_eq!(assignments.len(), 143 + 37);
    let mut endpoints = 0;
    for (place, pb) in &assignments {
        let resource = Resource {
            kind: ResourceKind::ClusterLoadAssignment,
            name: pb.cluster_name.clone(),
        };
        match decode::endpoints(&decode::Ctx::new(&resource), pb, false) {
            Ok(e) => endpoints += e.len(),
            Err(err @ DecodeError::Unsupported { .. }) => {
                assert!(err.to_string().contains("Unix socket"), "{place}: {err}");
            }
            Err(other) => panic!("{place}: {other}"),
        }
    }
    assert!(endpoints > 100, "{endpoints}");
}

#[test]
fn every_dumped_route_configuration_decodes() {
    let routes = resources::<RouteConfiguration>();
    // 2 static + 90 dynamic in the geo dump (inline ones have no @type).
    assert_eq!(routes.len(), 92, "route configuration objects in the dumps");
    for (place, pb) in &routes {
        // The static ones (inline in the bootstrap's listeners) have no name.
        let rc = match pb.name.is_empty() {
            true => decode::route_config(&Ctx::new(&Resource::listener("l")), pb, false),
            false => decode::route_configuration(pb),
        }
        .unwrap_or_else(|err| panic!("{place}: {err}"));
        assert!(!rc.virtual_hosts.is_empty(), "{place}");
        assert!(
            !rc.validate_clusters,
            "{place}: istiod turns validation off"
        );
    }
    // A default istiod route: retry policy, no timeout, attempt count.
    let (_, pb) = routes
        .iter()
        .find(|(_, r)| r.name == "jaeger.hr2.svc.cluster.local:14269")
        .unwrap();
    let rc = decode::route_configuration(pb).unwrap();
    assert!(rc.ignore_port_in_host_matching);
    assert_eq!(rc.max_direct_response_body_size, 1_048_576);
    let host = &rc.virtual_hosts[0];
    assert!(host.include_request_attempt_count);
    assert_eq!(host.domains, [DomainPattern::Any]);
    let route = &host.routes[0];
    assert_eq!(&*route.name, "default");
    assert_eq!(
        route.decorator.as_deref(),
        Some("jaeger.hr2.svc.cluster.local:14269/*")
    );
    assert!(matches!(&route.matcher.path, PathMatch::Prefix(p) if &**p == "/"));
    let RouteAction::Forward(forward) = &route.action else {
        panic!("{:?}", route.action)
    };
    assert!(
        matches!(&forward.cluster, ClusterSpecifier::Cluster(c) if &**c == "outbound|14269||jaeger.hr2.svc.cluster.local")
    );
    assert_eq!(forward.timeout, None);
    assert_eq!(forward.grpc_timeout_header_max, Some(Duration::ZERO));
    let retry = forward.retry_policy.as_ref().unwrap();
    assert_eq!(retry.num_retries, 2);
    assert!(retry.retry_on.connect_failure && retry.retry_on.refused_stream);
    assert!(retry.retry_on.grpc_unavailable && retry.retry_on.grpc_cancelled);
    assert!(retry.retry_on.retriable_status_codes && !retry.retry_on.server_error);
    assert_eq!(retry.retriable_status_codes, [503]);
    assert!(retry.avoid_previous_hosts);
    assert_eq!(retry.host_selection_max_attempts, 5);
}

/// Every connection manager istiod wrote decodes, but for what is deliberately refused: access
/// logs, tracing, and the authorization / Lua filters.
#[test]
fn every_dumped_http_connection_manager_decodes_but_for_deliberate_refusals() {
    let mut hcms = Vec::new();
    for name in DUMPS {
        let json: Value = serde_json::from_str(&read(name)).unwrap();
        let mut found = Vec::new();
        typed_objects(&json, &HttpConnectionManager::full_name(), &mut found);
        hcms.extend(found.into_iter().cloned().map(|v| (name, v)));
    }
    assert_eq!(hcms.len(), 109 + 20, "connection managers in the dumps");
    let resource = Resource::listener("l");
    let ctx = Ctx::new(&resource);
    let mut accepted = 0;
    let mut refused = std::collections::BTreeMap::<&str, usize>::new();
    for (i, (dump, mut json)) in hcms.into_iter().enumerate() {
        let any: Any = proto::from_json_value(json.clone()).unwrap();
        let pb = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        if !pb.access_log.is_empty() || pb.tracing.is_some() {
            let err = crate::decode::http_connection_manager(&ctx, &pb).unwrap_err();
            let why = err.to_string();
            assert!(
                why.contains("access_log") || why.contains("tracing"),
                "{why}"
            );
        }
        let object = json.as_object_mut().unwrap();
        object.remove("access_log");
        object.remove("tracing");
        let any: Any = proto::from_json_value(json).unwrap();
        let pb = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        match crate::decode::http_connection_manager(&ctx, &pb) {
            Ok(hcm) => {
                accepted += 1;
                assert!(matches!(hcm.http_filters.last(), Some(HttpFilter::Router)));
            }
            Err(err) => {
                let mut why = std::collections::BTreeSet::new();
                for problem in err.problems() {
                    let DecodeError::Unsupported { what, .. } = problem else {
                        panic!("{dump} #{i}: {problem}")
                    };
                    // HBONE (`connect_*`, CONNECT) is out of scope.
                    let filter = [
                        "envoy.filters.http.rbac",
                        "envoy.filters.http.ext_authz",
                        "envoy.filters.http.lua",
                        "connect_authority",
                        "allow_connect",
                        "connect_matcher",
                        "connect_config",
                        "connect_baggage",
                    ]
                    .into_iter()
                    .find(|f| what.contains(f))
                    .unwrap_or_else(|| panic!("{dump} #{i}: {what}"));
                    why.insert(if filter.contains("connect") {
                        "HBONE"
                    } else {
                        filter
                    });
                }
                for reason in why {
                    *refused.entry(reason).or_default() += 1;
                }
            }
        }
    }
    assert_eq!(accepted, 119);
    assert_eq!(
        refused.into_iter().collect::<Vec<_>>(),
        [
            ("HBONE", 1),
            ("envoy.filters.http.ext_authz", 5),
            ("envoy.filters.http.lua", 4),
            ("envoy.filters.http.rbac", 5),
        ]
    );
}
