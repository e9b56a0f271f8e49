use envoy_types::pb::envoy::config::listener::v3::Listener;
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::decode::{Resource, listener};
use crate::model::{self, ClusterSpecifier, NetworkFilter, SourceType};
use crate::testing::{assert_invalid, assert_unsupported, pb};

const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

fn tcp_filter(cluster: &str) -> Value {
    json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": TCP_PROXY, "stat_prefix": "tcp", "cluster": cluster}})
}

fn with_chains(chains: Value) -> Result<model::Listener, crate::DecodeError> {
    listener(&pb::<Listener>(json!({
        "name": "l",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "filter_chains": chains,
    })))
}

fn with_match(m: Value) -> Result<model::Listener, crate::DecodeError> {
    with_chains(json!([{"filter_chain_match": m, "filters": [tcp_filter("c")]}]))
}

fn res() -> Resource {
    Resource::listener("l")
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn full_filter_chain_match() {
    let l = with_chains(json!([{
        "name": "inbound",
        "filter_chain_match": {
            "destination_port": 8080,
            "prefix_ranges": [
                {"address_prefix": "10.1.2.3", "prefix_len": 16},
                {"address_prefix": "fd00::1", "prefix_len": 64},
                {"address_prefix": "192.168.0.1"},
            ],
            "server_names": ["example.com", "*.example.org"],
            "transport_protocol": "tls",
            "application_protocols": ["istio-peer-exchange", "istio"],
            "source_type": "SAME_IP_OR_LOOPBACK",
            "source_prefix_ranges": [{"address_prefix": "127.0.0.1", "prefix_len": 32}],
            "source_ports": [1000, 2000],
        },
        "filters": [tcp_filter("c")],
    }]))
    .unwrap();
    let chain = &l.filter_chains[0];
    assert_eq!(&*chain.name, "inbound");
    let m = &chain.filter_chain_match;
    assert_eq!(m.destination_port, Some(8080));
    // Host bits cleared; a missing prefix_len is 0, as in Envoy.
    assert_eq!(
        m.prefix_ranges,
        vec![net("10.1.0.0/16"), net("fd00::/64"), net("0.0.0.0/0")]
    );
    assert_eq!(
        m.server_names.iter().map(|s| &**s).collect::<Vec<_>>(),
        ["example.com", "*.example.org"]
    );
    assert_eq!(m.transport_protocol.as_deref(), Some("tls"));
    assert_eq!(
        m.application_protocols
            .iter()
            .map(|s| &**s)
            .collect::<Vec<_>>(),
        ["istio-peer-exchange", "istio"]
    );
    assert_eq!(m.source_type, SourceType::SameIpOrLoopback);
    assert_eq!(m.source_prefix_ranges, vec![net("127.0.0.1/32")]);
    assert_eq!(m.source_ports, vec![1000, 2000]);

    let l = with_match(json!({"source_type": "EXTERNAL"})).unwrap();
    assert_eq!(
        l.filter_chains[0].filter_chain_match.source_type,
        SourceType::External
    );
}

#[test]
fn match_values_out_of_range() {
    let err = with_match(json!({"destination_port": 0})).unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "filter_chains[0].filter_chain_match.destination_port",
        "outside 1..=65535",
    );
    let err = with_match(json!({"destination_port": 65536})).unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "filter_chains[0].filter_chain_match.destination_port",
        "outside 1..=65535",
    );
    let err = with_match(json!({"source_ports": [80, 0]})).unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "filter_chains[0].filter_chain_match.source_ports[1]",
        "outside",
    );
    let err =
        with_match(json!({"prefix_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 33}]}))
            .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "filter_chains[0].filter_chain_match.prefix_ranges[0].prefix_len",
        "too long",
    );
    let err =
        with_match(json!({"source_prefix_ranges": [{"address_prefix": "ten", "prefix_len": 8}]}))
            .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "filter_chains[0].filter_chain_match.source_prefix_ranges[0].address_prefix",
        "not an IP address",
    );
    let err = with_match(json!({"server_names": ["*.ok.com", "bad*.com"]})).unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "filter_chains[0].filter_chain_match.server_names[1]",
        "partial wildcards",
    );
}

#[test]
fn match_criteria_not_implemented() {
    let err = with_match(
        json!({"direct_source_prefix_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}]}),
    )
    .unwrap_err();
    assert_unsupported(
        &err,
        &res(),
        &[
            "filter_chains[0].filter_chain_match",
            "direct_source_prefix_ranges",
        ],
    );
}

#[test]
fn overlapping_chains_are_rejected_like_envoy() {
    let err = with_chains(json!([
        {"name": "a", "filter_chain_match": {"destination_port": 80, "server_names": ["x", "y"]}, "filters": [tcp_filter("c")]},
        {"name": "b", "filter_chain_match": {"destination_port": 80, "server_names": ["y"]}, "filters": [tcp_filter("c")]},
    ]))
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "filter_chains[1]",
        "\"b\" has the same matching rules as filter chain \"a\"",
    );

    let err = with_chains(json!([
        {"name": "a", "filters": [tcp_filter("c")]},
        {"name": "b", "filter_chain_match": {}, "filters": [tcp_filter("c")]},
    ]))
    .unwrap_err();
    assert_invalid(&err, &res(), "filter_chains[1]", "same matching rules");

    // Different values of one criterion, or a more specific prefix, are distinct chains.
    let l = with_chains(json!([
        {"name": "a", "filter_chain_match": {"destination_port": 80}, "filters": [tcp_filter("c")]},
        {"name": "b", "filter_chain_match": {"destination_port": 81}, "filters": [tcp_filter("c")]},
        {"name": "c", "filter_chain_match": {"prefix_ranges": [{"address_prefix": "0.0.0.0", "prefix_len": 0}]}, "filters": [tcp_filter("c")]},
        {"name": "d", "filters": [tcp_filter("c")]},
    ]))
    .unwrap();
    assert_eq!(l.filter_chains.len(), 4);
}

#[test]
fn transport_sockets() {
    let l = with_chains(json!([{"filters": [tcp_filter("c")], "transport_socket": {
        "name": "envoy.transport_sockets.raw_buffer", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}}]));
    assert!(l.is_ok(), "{l:?}");

    let err = with_chains(json!([{"filters": [tcp_filter("c")], "transport_socket": {
        "name": "envoy.transport_sockets.alts"}}]))
    .unwrap_err();
    assert_unsupported(
        &err,
        &res(),
        &[
            "filter_chains[0].transport_socket",
            "envoy.transport_sockets.alts",
        ],
    );
}

#[test]
fn network_filters_other_than_tcp_proxy_and_hcm_are_unsupported() {
    let err =
        with_chains(json!([{"filters": [{"name": "envoy.filters.network.echo"}]}])).unwrap_err();
    assert_unsupported(
        &err,
        &res(),
        &["filter_chains[0].filters[0]", "envoy.filters.network.echo"],
    );

    let err = with_chains(json!([{"filters": [{"name": "f", "config_discovery": {
        "config_source": {"ads": {}}, "type_urls": [TCP_PROXY]}}]}]))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["config_discovery"]);
}

#[test]
fn tcp_proxy_must_be_the_last_filter() {
    let err = with_chains(json!([{"filters": [tcp_filter("a"), tcp_filter("b")]}])).unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "filter_chains[0].filters[0]",
        "must be the last filter",
    );

    let err = with_chains(json!([{"filters": [{"name": ""}]}])).unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "filter_chains[0].filters[0].name",
        "needs a name",
    );
}

#[test]
fn a_chain_without_filters_is_kept_empty() {
    // Envoy accepts it and closes such connections at once.
    let l = with_chains(json!([{"name": "empty"}])).unwrap();
    assert!(l.filter_chains[0].filters.is_empty());
}

#[test]
fn tcp_proxy_in_a_typed_struct() {
    let l = with_chains(
        json!([{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
        "type_url": TCP_PROXY,
        "value": {"stat_prefix": "s", "cluster": "ts", "idle_timeout": "10s"}}}]}]),
    )
    .unwrap();
    let NetworkFilter::TcpProxy(tcp) = &l.filter_chains[0].filters[0] else {
        panic!("expected tcp_proxy");
    };
    assert!(matches!(&tcp.cluster, ClusterSpecifier::Cluster(c) if &**c == "ts"));
    assert_eq!(tcp.idle_timeout, Some(std::time::Duration::from_secs(10)));

    let err = with_chains(
        json!([{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type_url": TCP_PROXY,
        "value": {"stat_prefix": "s", "clusterz": "ts"}}}]}]),
    )
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "filter_chains[0].filters[0].typed_config",
        "clusterz",
    );
}
