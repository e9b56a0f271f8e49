use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use serde_json::{Value, json};

use crate::decode::{DecodeError, Resource, cluster};
use crate::model::{self, DiscoveryType, DnsLookupFamily, EndpointAddress, HealthStatus, LbPolicy};
use crate::testing::{assert_invalid, assert_unsupported, pb};

fn decode(json: Value) -> Result<model::Cluster, DecodeError> {
    cluster(&pb::<Cluster>(json))
}

fn res() -> Resource {
    Resource::cluster("c")
}

fn socket_endpoint(address: &str, port: u32) -> Value {
    json!({"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}})
}

fn with_endpoints(kind: &str, lb_endpoints: Value) -> Value {
    json!({"name": "c", "type": kind, "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": lb_endpoints}]}})
}

fn sock(s: &str) -> EndpointAddress {
    EndpointAddress::Socket(s.parse().unwrap())
}

#[test]
fn static_cluster_with_envoy_defaults() {
    let c = decode(with_endpoints(
        "STATIC",
        json!([
            socket_endpoint("10.0.0.1", 80),
            {"endpoint": {"address": {"socket_address": {"address": "::1", "port_value": 8080}}},
             "load_balancing_weight": 5, "health_status": "UNHEALTHY"},
        ]),
    ))
    .unwrap();
    assert_eq!(&*c.name, "c");
    assert_eq!(c.discovery, DiscoveryType::Static);
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(c.upstream_bind_address, None);
    assert_eq!(c.eds_service_name, None);
    assert_eq!(c.dns_lookup_family, DnsLookupFamily::Auto);
    assert_eq!(c.dns_refresh_rate, Duration::from_secs(5));
    assert!(!c.respect_dns_ttl);
    assert_eq!(c.endpoints.len(), 2);
    assert_eq!(c.endpoints[0].address, sock("10.0.0.1:80"));
    assert_eq!(c.endpoints[0].load_balancing_weight, 1);
    assert_eq!(c.endpoints[0].health_status, HealthStatus::Unknown);
    assert_eq!(c.endpoints[1].address, sock("[::1]:8080"));
    assert_eq!(c.endpoints[1].load_balancing_weight, 5);
    assert_eq!(c.endpoints[1].health_status, HealthStatus::Unhealthy);
}

#[test]
fn type_defaults_to_static_and_no_load_assignment_means_no_endpoints() {
    let c = decode(json!({"name": "c", "connect_timeout": "0.250s"})).unwrap();
    assert_eq!(c.discovery, DiscoveryType::Static);
    assert_eq!(c.connect_timeout, Duration::from_millis(250));
    assert!(c.endpoints.is_empty());
}

#[test]
fn lb_policies() {
    for (name, policy) in [
        ("ROUND_ROBIN", LbPolicy::RoundRobin),
        ("LEAST_REQUEST", LbPolicy::LeastRequest),
        ("RANDOM", LbPolicy::Random),
        ("RING_HASH", LbPolicy::RingHash),
        ("MAGLEV", LbPolicy::Maglev),
    ] {
        let c = decode(json!({"name": "c", "lb_policy": name})).unwrap();
        assert_eq!(c.lb_policy, policy, "{name}");
    }
    let err =
        decode(json!({"name": "c", "lb_policy": "LOAD_BALANCING_POLICY_CONFIG"})).unwrap_err();
    assert_unsupported(&err, &res(), &["LOAD_BALANCING_POLICY_CONFIG"]);
}

#[test]
fn original_dst_cluster() {
    let c = decode(json!({
        "name": "c", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "10s",
        "upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}},
        "cleanup_interval": "60s",
    }))
    .unwrap();
    assert_eq!(c.discovery, DiscoveryType::OriginalDst);
    assert_eq!(c.lb_policy, LbPolicy::ClusterProvided);
    assert_eq!(c.connect_timeout, Duration::from_secs(10));
    assert_eq!(
        c.upstream_bind_address,
        Some("127.0.0.6:0".parse::<SocketAddr>().unwrap())
    );
    assert!(c.endpoints.is_empty());
}

#[test]
fn original_dst_rules_from_envoy() {
    let err = decode(json!({"name": "c", "type": "ORIGINAL_DST", "lb_policy": "ROUND_ROBIN"}))
        .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "lb_policy",
        "ROUND_ROBIN is not valid for cluster type ORIGINAL_DST",
    );
    let err = decode(json!({"name": "c", "type": "STATIC", "lb_policy": "CLUSTER_PROVIDED"}))
        .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "lb_policy",
        "CLUSTER_PROVIDED is not valid for cluster type STATIC",
    );

    let mut json = with_endpoints("ORIGINAL_DST", json!([socket_endpoint("10.0.0.1", 80)]));
    json["lb_policy"] = json!("CLUSTER_PROVIDED");
    let err = decode(json).unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "load_assignment",
        "must have no load assignment",
    );

    let err = decode(
        json!({"name": "c", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
        "original_dst_lb_config": {"use_http_header": true}}),
    )
    .unwrap_err();
    assert_unsupported(&err, &res(), &["lb_config"]);
}

#[test]
fn strict_dns_cluster_keeps_names_and_dns_settings() {
    let mut json = with_endpoints(
        "STRICT_DNS",
        json!([
            socket_endpoint("db.example.com", 5432),
            socket_endpoint("10.0.0.9", 5432),
        ]),
    );
    json["dns_lookup_family"] = json!("V4_ONLY");
    json["dns_refresh_rate"] = json!("30s");
    json["respect_dns_ttl"] = json!(true);
    let c = decode(json).unwrap();
    assert_eq!(c.discovery, DiscoveryType::StrictDns);
    assert_eq!(
        c.endpoints[0].address,
        EndpointAddress::Dns {
            host: "db.example.com".into(),
            port: 5432
        }
    );
    assert_eq!(c.endpoints[1].address, sock("10.0.0.9:5432"));
    assert_eq!(c.dns_lookup_family, DnsLookupFamily::V4Only);
    assert_eq!(c.dns_refresh_rate, Duration::from_secs(30));
    assert!(c.respect_dns_ttl);

    let mut json = with_endpoints("STRICT_DNS", json!([]));
    json["dns_refresh_rate"] = json!("0.001s");
    assert_invalid(
        &decode(json).unwrap_err(),
        &res(),
        "dns_refresh_rate",
        "above 1ms",
    );
}

#[test]
fn logical_dns_needs_exactly_one_endpoint() {
    let c = decode(with_endpoints(
        "LOGICAL_DNS",
        json!([socket_endpoint("api.example.com", 443)]),
    ))
    .unwrap();
    assert_eq!(c.discovery, DiscoveryType::LogicalDns);
    assert_eq!(c.endpoints.len(), 1);

    let err = decode(with_endpoints(
        "LOGICAL_DNS",
        json!([
            socket_endpoint("a.example.com", 443),
            socket_endpoint("b.example.com", 443)
        ]),
    ))
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "load_assignment",
        "single locality_lb_endpoint and a single lb_endpoint",
    );
}

#[test]
fn static_endpoints_must_be_ip_addresses() {
    let err = decode(with_endpoints(
        "STATIC",
        json!([socket_endpoint("db.example.com", 5432)]),
    ))
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
        "only DNS clusters resolve names",
    );
}

#[test]
fn eds_cluster() {
    let c = decode(json!({"name": "c", "type": "EDS", "lb_policy": "LEAST_REQUEST",
        "eds_cluster_config": {"eds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}}}))
    .unwrap();
    assert_eq!(c.discovery, DiscoveryType::Eds);
    assert_eq!(c.eds_service_name.as_deref(), Some("c"));

    let c = decode(json!({"name": "c", "type": "EDS",
        "eds_cluster_config": {"service_name": "svc", "eds_config": {"ads": {}}}}))
    .unwrap();
    assert_eq!(c.eds_service_name.as_deref(), Some("svc"));
}

#[test]
fn eds_cluster_errors() {
    let err = decode(json!({"name": "c", "type": "EDS"})).unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "eds_cluster_config",
        "needs eds_cluster_config",
    );
    let err = decode(json!({"name": "c", "type": "EDS", "eds_cluster_config": {}})).unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "eds_cluster_config.eds_config",
        "needs eds_config",
    );
    let err = decode(json!({"name": "c", "type": "EDS", "eds_cluster_config": {"eds_config": {
        "api_config_source": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]}}}}))
    .unwrap_err();
    assert_unsupported(
        &err,
        &res(),
        &["eds_cluster_config.eds_config", "other than ads"],
    );

    let mut json = with_endpoints("EDS", json!([]));
    json["eds_cluster_config"] = json!({"eds_config": {"ads": {}}});
    assert_unsupported(
        &decode(json).unwrap_err(),
        &res(),
        &["load_assignment on an EDS cluster"],
    );
}

#[test]
fn cluster_value_errors() {
    let err = decode(json!({"name": "c", "connect_timeout": "0s"})).unwrap_err();
    assert_invalid(&err, &res(), "connect_timeout", "above 0");
    let err = decode(json!({"connect_timeout": "1s"})).unwrap_err();
    assert_invalid(&err, &Resource::cluster(""), "name", "needs a name");
    let err = decode(json!({"name": "c", "load_assignment": {"endpoints": []}})).unwrap_err();
    assert_invalid(&err, &res(), "load_assignment.cluster_name", "empty");

    let mut json = with_endpoints(
        "STATIC",
        json!([{"endpoint": {"address": {"socket_address": {
        "address": "10.0.0.1", "port_value": 80}}}, "load_balancing_weight": 0}]),
    );
    assert_invalid(
        &decode(json.clone()).unwrap_err(),
        &res(),
        "load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight",
        "at least 1",
    );
    json["load_assignment"]["endpoints"][0]["lb_endpoints"] = json!([{}]);
    assert_invalid(
        &decode(json).unwrap_err(),
        &res(),
        "load_assignment.endpoints[0].lb_endpoints[0].endpoint",
        "endpoint is required",
    );
}

#[test]
fn endpoint_features_not_implemented() {
    let mut json = with_endpoints("STATIC", json!([socket_endpoint("10.0.0.1", 80)]));
    json["load_assignment"]["endpoints"][0]["priority"] = json!(1);
    assert_unsupported(
        &decode(json).unwrap_err(),
        &res(),
        &["load_assignment.endpoints[0]", "priority"],
    );

    let json = with_endpoints(
        "STATIC",
        json!([{"endpoint": {"address": {"pipe": {"path": "/tmp/XDS"}}}}]),
    );
    assert_unsupported(
        &decode(json).unwrap_err(),
        &res(),
        &["Unix socket", "/tmp/XDS"],
    );

    let json = with_endpoints("STATIC", json!([{"endpoint_name": "e1"}]));
    assert_unsupported(&decode(json).unwrap_err(), &res(), &["endpoint_name"]);
}

#[test]
fn cluster_features_not_implemented_are_all_named() {
    let err = decode(json!({
        "name": "c",
        "health_checks": [{"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1,
            "tcp_health_check": {}}],
        "lb_subset_config": {"fallback_policy": "ANY_ENDPOINT"},
        "close_connections_on_host_health_failure": true,
        "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
    }))
    .unwrap_err();
    assert_unsupported(
        &err,
        &res(),
        &[
            "health_checks",
            "lb_subset_config",
            "close_connections_on_host_health_failure",
            "upstream_connection_options",
        ],
    );

    let err = decode(json!({"name": "c", "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", "sni": "x"}}}))
    .unwrap_err();
    assert_unsupported(
        &err,
        &res(),
        &["transport_socket.typed_config", "without a certificate"],
    );

    let err = decode(json!({"name": "c", "cluster_type": {"name": "envoy.clusters.aggregate"}}))
        .unwrap_err();
    assert_unsupported(&err, &res(), &["cluster_type", "envoy.clusters.aggregate"]);

    let err = decode(json!({"name": "c", "upstream_bind_config": {
        "source_address": {"address": "127.0.0.6", "port_value": 0}, "freebind": true}}))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["upstream_bind_config", "freebind"]);

    let http = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let err = decode(
        json!({"name": "c", "typed_extension_protocol_options": {"other": {"@type": http}}}),
    )
    .unwrap_err();
    assert_unsupported(&err, &res(), &["typed_extension_protocol_options"]);
}

#[test]
fn http_pool_options_and_empty_messages_configure_nothing() {
    let http = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let c = decode(json!({
        "name": "c",
        "alt_stat_name": "c;",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": http, "explicit_http_config": {"http2_protocol_options": {}}}},
        "common_lb_config": {},
        "least_request_lb_config": {},
        "metadata": {"filter_metadata": {"istio": {"services": []}}},
        "transport_socket": {"name": "envoy.transport_sockets.raw_buffer"},
    }));
    assert!(c.is_ok(), "{c:?}");
}

#[test]
fn istio_outbound_breakers_and_locality_weighting_are_carried() {
    // As istiod writes an outbound cluster: default thresholds at their maximum with
    // track_remaining, locality-weighted balancing, locality weights in the assignment.
    let c = decode(json!({
        "name": "c",
        "type": "STATIC",
        "lb_policy": "LEAST_REQUEST",
        "circuit_breakers": {"thresholds": [{"max_connections": 4294967295u32,
            "max_pending_requests": 4294967295u32, "max_requests": 4294967295u32,
            "max_retries": 4294967295u32, "track_remaining": true}]},
        "common_lb_config": {"locality_weighted_lb_config": {}},
        "load_assignment": {"cluster_name": "c",
            "policy": {"overprovisioning_factor": 200},
            "endpoints": [
                {"locality": {"region": "r", "zone": "a"}, "load_balancing_weight": 2,
                 "lb_endpoints": [socket_endpoint("10.0.0.1", 80)]},
                {"lb_endpoints": [socket_endpoint("10.0.0.2", 80), socket_endpoint("10.0.0.3", 80)]},
            ]},
    }))
    .unwrap();
    assert_eq!(c.lb_policy, LbPolicy::LeastRequest);
    let t = c.circuit_breakers.default;
    assert_eq!(
        (
            t.max_connections,
            t.max_pending_requests,
            t.max_requests,
            t.max_retries
        ),
        (u32::MAX, u32::MAX, u32::MAX, u32::MAX)
    );
    assert!(t.track_remaining);
    assert_eq!(c.circuit_breakers.high, model::Thresholds::default());
    assert!(c.common_lb.locality_weighted);
    assert_eq!(c.common_lb.healthy_panic_threshold, 50.0);
    let localities: Vec<_> = c.endpoints.iter().map(|e| e.locality).collect();
    let at = |index, weight| model::EndpointLocality {
        index,
        weight,
        overprovisioning: 200,
    };
    assert_eq!(localities, [at(0, Some(2)), at(1, None), at(1, None)]);
}
