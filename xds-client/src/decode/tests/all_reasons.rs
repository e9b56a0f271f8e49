//! A rejected resource names every distinct problem it has, not only the first one found.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use serde_json::json;

use crate::decode::{Ctx, DecodeError, Resource, cluster, endpoints, listener};
use crate::testing::{assert_invalid, assert_unsupported, pb};

const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const DOWNSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const FILE_LOG: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";

#[test]
fn an_istio_like_listener_lists_every_reason() {
    let pb = pb::<Listener>(json!({
        "name": "l",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "access_log": [{"name": "envoy.access_loggers.file",
                        "typed_config": {"@type": FILE_LOG, "path": "/dev/stdout"}}],
        "filter_chains": [
            {"transport_socket": {"name": "envoy.transport_sockets.tls",
                                  "typed_config": {"@type": DOWNSTREAM_TLS}},
             "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                 "@type": TCP_PROXY, "stat_prefix": "s", "cluster": "c"}}]},
            {"filter_chain_match": {"destination_port": 80},
             "filters": [{"name": "envoy.filters.network.http_connection_manager",
                          "typed_config": {"@type": HCM, "stat_prefix": "h", "tracing": {},
                              "rds": {"route_config_name": "r", "config_source": {"ads": {}}},
                              "http_filters": [{"name": "envoy.filters.http.router"}]}}]},
        ],
    }));
    let err = listener(&pb).unwrap_err();
    let res = Resource::listener("l");
    assert_eq!(err.resource(), &res);
    let problems = err.problems();
    assert_eq!(problems.len(), 3, "{err}");
    assert_unsupported(&problems[0], &res, &["access_log"]);
    assert_unsupported(
        &problems[1],
        &res,
        // TLS transport sockets decode; this one names no certificate.
        &[
            "filter_chains[0].transport_socket",
            "TLS without a certificate",
        ],
    );
    assert_unsupported(
        &problems[2],
        &res,
        &["filter_chains[1].filters[0].typed_config", "tracing"],
    );
    // The message (a NACK's error_detail) names the resource once, then every reason.
    let message = err.to_string();
    assert!(
        message.starts_with("listener \"l\": not supported: access_log; "),
        "{message}"
    );
    assert_eq!(message.matches("listener \"l\"").count(), 1, "{message}");
    assert_eq!(err.reasons().len(), 3);
}

#[test]
fn a_cluster_lists_unsupported_fields_tls_and_invalid_values_together() {
    let pb = pb::<Cluster>(json!({
        "name": "c",
        "type": "STATIC",
        "connect_timeout": "0s",
        "circuit_breakers": {"per_host_thresholds": [{"max_connections": 10}]},
        "transport_socket": {"name": "envoy.transport_sockets.tls",
                             "typed_config": {"@type": UPSTREAM_TLS}},
    }));
    let err = cluster(&pb).unwrap_err();
    let res = Resource::cluster("c");
    let problems = err.problems();
    assert_eq!(problems.len(), 3, "{err}");
    assert_unsupported(&problems[0], &res, &["transport_socket", "tls"]);
    assert_unsupported(
        &problems[1],
        &res,
        &["circuit_breakers", "per_host_thresholds"],
    );
    assert_invalid(&problems[2], &res, "connect_timeout", "above 0");
}

#[test]
fn a_load_assignment_lists_every_bad_endpoint() {
    let pb = pb::<ClusterLoadAssignment>(json!({
        "cluster_name": "outbound|80||a",
        "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "a.example", "port_value": 80}}}},
            {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 80}}}},
            {"endpoint": {"address": {"pipe": {"path": "/tmp/s"}}}},
        ]}],
    }));
    let res = Resource::assignment("outbound|80||a");
    let err = endpoints(&Ctx::new(&res), &pb, false).unwrap_err();
    let problems = err.problems();
    assert_eq!(problems.len(), 2, "{err}");
    assert_invalid(
        &problems[0],
        &res,
        "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
        "not an IP address",
    );
    assert_unsupported(&problems[1], &res, &["lb_endpoints[2]", "Unix socket"]);
}

#[test]
fn combining_flattens_and_drops_repeats() {
    let res = Resource::listener("l");
    let a = Ctx::new(&res).unsupported("a");
    let b = Ctx::new(&res).invalid("f", "bad");
    assert_eq!(DecodeError::combine(&res, Vec::new()), None);
    assert_eq!(
        DecodeError::combine(&res, vec![a.clone(), a.clone()]),
        Some(a.clone())
    );
    let both = DecodeError::combine(&res, vec![a.clone(), b.clone()]).unwrap();
    let again = DecodeError::combine(&res, vec![both.clone(), a.clone(), b.clone()]).unwrap();
    assert_eq!(again, both);
    assert_eq!(again.problems(), [a, b]);
    assert_eq!(again.reasons(), ["not supported: a", "f: bad"]);
}
