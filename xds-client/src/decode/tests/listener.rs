use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use serde_json::{Value, json};

use crate::decode::{Resource, listener};
use crate::model::{self, ListenerFilter};
use crate::testing::{assert_invalid, assert_unsupported, pb};

const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

fn tcp_chain(cluster: &str) -> Value {
    json!({"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": TCP_PROXY, "stat_prefix": "tcp", "cluster": cluster}}]})
}

fn base(extra: Value) -> Value {
    let mut l = json!({
        "name": "l",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
        "filter_chains": [tcp_chain("c")],
    });
    if let (Some(l), Some(extra)) = (l.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            l.insert(k.clone(), v.clone());
        }
    }
    l
}

fn decode(json: Value) -> Result<model::Listener, crate::DecodeError> {
    listener(&pb::<Listener>(json))
}

fn res() -> Resource {
    Resource::listener("l")
}

#[test]
fn minimal_listener_takes_envoy_defaults() {
    let l = decode(base(json!({}))).unwrap();
    assert_eq!(&*l.name, "l");
    assert_eq!(l.address, "0.0.0.0:15001".parse::<SocketAddr>().unwrap());
    assert!(l.bind_to_port);
    assert!(!l.use_original_dst);
    assert!(!l.transparent);
    assert!(l.listener_filters.is_empty());
    assert_eq!(l.listener_filters_timeout, Some(Duration::from_secs(15)));
    assert!(!l.continue_on_listener_filters_timeout);
    assert_eq!(l.filter_chains.len(), 1);
    assert!(l.default_filter_chain.is_none());
    let chain = &l.filter_chains[0];
    assert_eq!(&*chain.name, "");
    let m = &chain.filter_chain_match;
    assert!(
        m.destination_port.is_none() && m.prefix_ranges.is_empty() && m.server_names.is_empty()
    );
    assert_eq!(m.source_type, model::SourceType::Any);
}

#[test]
fn listener_flags_and_filter_timeout() {
    let l = decode(base(json!({
        "bind_to_port": false,
        "use_original_dst": true,
        "transparent": true,
        "listener_filters_timeout": "0s",
        "continue_on_listener_filters_timeout": true,
    })))
    .unwrap();
    assert!(!l.bind_to_port && l.use_original_dst && l.transparent);
    assert_eq!(l.listener_filters_timeout, None);
    assert!(l.continue_on_listener_filters_timeout);

    let l = decode(base(json!({"listener_filters_timeout": "2.5s"}))).unwrap();
    assert_eq!(
        l.listener_filters_timeout,
        Some(Duration::from_millis(2500))
    );
}

#[test]
fn ipv6_address() {
    let l = decode(base(
        json!({"address": {"socket_address": {"address": "::1", "port_value": 80}}}),
    ))
    .unwrap();
    assert_eq!(l.address, "[::1]:80".parse::<SocketAddr>().unwrap());
}

#[test]
fn unnamed_listener_is_named_after_its_address() {
    let mut json = base(json!({}));
    json.as_object_mut().unwrap().remove("name");
    let l = decode(json).unwrap();
    assert_eq!(&*l.name, "0.0.0.0_15001");
}

#[test]
fn address_errors() {
    let mut json = base(json!({}));
    json.as_object_mut().unwrap().remove("address");
    assert_invalid(
        &decode(json).unwrap_err(),
        &res(),
        "address",
        "address is required",
    );

    let err = decode(base(
        json!({"address": {"socket_address": {"address": "0.0.0.0", "port_value": 70000}}}),
    ))
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "address.socket_address.port_value",
        "above 65535",
    );

    let err = decode(base(
        json!({"address": {"socket_address": {"address": "0.0.0.0"}}}),
    ))
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "address.socket_address.port_value",
        "port is required",
    );

    let err = decode(base(
        json!({"address": {"socket_address": {"address": "localhost", "port_value": 1}}}),
    ))
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "address.socket_address.address",
        "not an IP address",
    );

    let err = decode(base(
        json!({"address": {"socket_address": {"address": "0.0.0.0", "named_port": "http"}}}),
    ))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["address.socket_address", "named_port"]);

    let err = decode(base(json!({"address": {"socket_address": {"protocol": "UDP", "address": "0.0.0.0", "port_value": 53}}}))).unwrap_err();
    assert_unsupported(&err, &res(), &["protocol UDP"]);

    let err = decode(base(json!({"address": {"pipe": {"path": "/tmp/s"}}}))).unwrap_err();
    assert_unsupported(&err, &res(), &["address", "Unix socket", "/tmp/s"]);
}

#[test]
fn listener_filters_by_type_url_by_name_and_in_typed_struct() {
    let l = decode(base(json!({"listener_filters": [
        {"name": "envoy.filters.listener.original_dst", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}},
        {"name": "anything", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
            "initial_read_buffer_size": 512}},
        {"name": "envoy.filters.listener.http_inspector"},
        {"name": "x", "typed_config": {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
            "value": {"initial_read_buffer_size": 1024}}},
    ]})))
    .unwrap();
    assert_eq!(
        l.listener_filters,
        vec![
            ListenerFilter::OriginalDst,
            ListenerFilter::TlsInspector,
            ListenerFilter::HttpInspector,
            ListenerFilter::TlsInspector
        ]
    );
}

#[test]
fn unknown_listener_filter_is_rejected_by_name_and_type() {
    let err = decode(base(json!({"listener_filters": [
        {"name": "envoy.filters.listener.original_dst"},
        {"name": "envoy.filters.listener.proxy_protocol", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"}},
    ]})))
    .unwrap_err();
    assert_unsupported(
        &err,
        &res(),
        &[
            "listener_filters[1]",
            "envoy.filters.listener.proxy_protocol",
            "ProxyProtocol",
        ],
    );

    // Without a config, only the name identifies it.
    let err = decode(base(
        json!({"listener_filters": [{"name": "envoy.filters.listener.original_src"}]}),
    ))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["envoy.filters.listener.original_src"]);
}

#[test]
fn listener_filter_options_not_implemented_are_rejected() {
    let err = decode(base(json!({"listener_filters": [{"name": "t", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        "enable_ja3_fingerprinting": true}}]})))
    .unwrap_err();
    assert_unsupported(
        &err,
        &res(),
        &[
            "listener_filters[0].typed_config",
            "enable_ja3_fingerprinting",
        ],
    );

    let err = decode(base(
        json!({"listener_filters": [{"name": "envoy.filters.listener.http_inspector",
        "filter_disabled": {"destination_port_range": {"start": 81, "end": 80}}}]}),
    ))
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "listener_filters[0].filter_disabled.destination_port_range",
        "empty range",
    );

    let err = decode(base(json!({"listener_filters": [{"name": ""}]}))).unwrap_err();
    assert_invalid(&err, &res(), "listener_filters[0].name", "needs a name");
}

#[test]
fn listener_fields_not_implemented_are_all_named() {
    let err = decode(base(json!({
        "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": "/dev/null"}}],
        "socket_options": [{"level": 1, "name": 2, "int_value": 3}],
        "freebind": true,
        "additional_addresses": [{"address": {"socket_address": {"address": "::", "port_value": 15001}}}],
    })))
    .unwrap_err();
    assert_unsupported(
        &err,
        &res(),
        &[
            "access_log",
            "socket_options",
            "freebind",
            "additional_addresses",
        ],
    );
}

#[test]
fn fields_without_effect_are_accepted() {
    let l = decode(base(json!({
        "stat_prefix": "s",
        "traffic_direction": "OUTBOUND",
        "per_connection_buffer_limit_bytes": 32768,
        "ignore_global_conn_limit": true,
        "bypass_overload_manager": true,
        "max_connections_to_accept_per_socket_event": 10,
        "connection_balance_config": {"exact_balance": {}},
        "freebind": false,
        "metadata": {"filter_metadata": {"x": {"y": "z"}}},
    })));
    assert!(l.is_ok(), "{l:?}");
}

#[test]
fn a_listener_needs_a_filter_chain() {
    let mut json = base(json!({}));
    json.as_object_mut().unwrap().remove("filter_chains");
    assert_invalid(
        &decode(json.clone()).unwrap_err(),
        &res(),
        "filter_chains",
        "no filter chains",
    );

    json.as_object_mut()
        .unwrap()
        .insert("default_filter_chain".into(), tcp_chain("d"));
    let l = decode(json).unwrap();
    assert!(l.filter_chains.is_empty());
    let default = l.default_filter_chain.unwrap();
    let model::NetworkFilter::TcpProxy(tcp) = &default.filters[0] else {
        panic!("expected tcp_proxy");
    };
    assert!(matches!(&tcp.cluster, model::ClusterSpecifier::Cluster(c) if &**c == "d"));
}

#[test]
fn filter_disabled_predicates_as_istio_writes_them() {
    use crate::model::FilterPredicate as P;
    // virtualInbound: the HTTP inspector is skipped on ports istiod knows are not HTTP, the
    // TLS inspector on none.
    let l = decode(base(json!({"listener_filters": [
        {"name": "envoy.filters.listener.tls_inspector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}},
        {"name": "envoy.filters.listener.http_inspector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"},
         "filter_disabled": {"or_match": {"rules": [
            {"destination_port_range": {"start": 5432, "end": 5433}},
            {"and_match": {"rules": [{"any_match": true},
                {"not_match": {"destination_port_range": {"start": 1, "end": 9000}}}]}}]}}},
    ]})))
    .unwrap();
    assert_eq!(l.filter_disabled(0), None);
    let p = l.filter_disabled(1).unwrap();
    assert_eq!(
        *p,
        P::Or(vec![
            P::DestinationPortRange {
                start: 5432,
                end: 5433
            },
            P::And(vec![
                P::Any,
                P::Not(Box::new(P::DestinationPortRange {
                    start: 1,
                    end: 9000
                }))
            ]),
        ])
    );
    assert!(p.matches(5432));
    assert!(!p.matches(5433));
    assert!(!p.matches(8080));
    assert!(p.matches(9000));

    for (bad, field) in [
        (json!({"any_match": false}), "filter_disabled.any_match"),
        (json!({}), "filter_disabled.rule"),
        (
            json!({"or_match": {"rules": [{"any_match": true}]}}),
            "filter_disabled.or_match",
        ),
    ] {
        let err = decode(base(json!({"listener_filters": [
            {"name": "envoy.filters.listener.tls_inspector", "filter_disabled": bad}]})))
        .unwrap_err();
        assert_invalid(&err, &res(), &format!("listener_filters[0].{field}"), "");
    }
}
