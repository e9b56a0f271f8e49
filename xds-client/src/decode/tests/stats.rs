//! `istio.stats` as istiod sends it: a typed `stats.PluginConfig` or a TypedStruct, on TCP
//! chains and in the HTTP filter list.

use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use serde_json::{Value, json};

use crate::decode::{Resource, listener};
use crate::model::{self, NetworkFilter, StatsReporter, TrafficDirection};
use crate::testing::{assert_invalid, assert_unsupported, pb};

const STATS: &str = "type.googleapis.com/stats.PluginConfig";

fn with_stats(config: Value) -> Result<model::Listener, crate::DecodeError> {
    listener(&pb::<Listener>(json!({
        "name": "l",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "traffic_direction": "INBOUND",
        "filter_chains": [{"filters": [
            {"name": "istio.stats", "typed_config": config},
            {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "tcp", "cluster": "c"}},
        ]}],
    })))
}

fn stats_of(l: &model::Listener) -> &model::StatsConfig {
    match &l.filter_chains[0].filters[0] {
        NetworkFilter::IstioStats(c) => c,
        other => panic!("{other:?}"),
    }
}

fn res() -> Resource {
    Resource::listener("l")
}

#[test]
fn istiod_tcp_form_decodes_with_defaults() {
    let l = with_stats(json!({"@type": STATS})).unwrap();
    assert_eq!(l.traffic_direction, TrafficDirection::Inbound);
    assert_eq!(*stats_of(&l), model::StatsConfig::default());
    assert_eq!(stats_of(&l).tcp_reporting_interval, Duration::from_secs(5));
}

#[test]
fn every_field_decodes() {
    let l = with_stats(json!({"@type": STATS,
    "disable_host_header_fallback": true,
    "tcp_reporting_duration": "2s",
    "reporter": "SERVER_GATEWAY",
    "rescoping_duration": "60s",
    "metrics": [
        {"name": "tcp_sent_bytes_total", "tags_to_remove": ["source_app"],
         "dimensions": {"mesh": "'prod'"}},
        {"name": "requests_total", "drop": true},
        {"tags_to_remove": ["destination_version"]},
    ]}))
    .unwrap();
    let c = stats_of(&l);
    assert!(c.disable_host_header_fallback);
    assert_eq!(c.reporter, StatsReporter::ServerGateway);
    assert_eq!(c.tcp_reporting_interval, Duration::from_secs(2));
    assert!(c.drops("requests_total"));
    assert!(!c.drops("tcp_sent_bytes_total"));
    let sent = c.shaping("tcp_sent_bytes_total");
    assert_eq!(
        sent.removed.iter().map(|r| &**r).collect::<Vec<_>>(),
        ["source_app", "destination_version"]
    );
    assert_eq!(sent.fixed.get("mesh").map(|v| &**v), Some("prod"));
    let closed = c.shaping("tcp_connections_closed_total");
    assert_eq!(
        closed.removed.iter().map(|r| &**r).collect::<Vec<_>>(),
        ["destination_version"]
    );
    assert!(closed.fixed.is_empty());
}

#[test]
fn typed_struct_form_decodes() {
    let l = with_stats(
        json!({"@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type_url": STATS, "value": {"disable_host_header_fallback": true,
        "metrics": [{"name": "tcp_received_bytes_total", "tags_to_remove": ["reporter"]}]}}),
    )
    .unwrap();
    let c = stats_of(&l);
    assert!(c.disable_host_header_fallback);
    assert_eq!(c.overrides.len(), 1);
}

#[test]
fn cel_and_custom_metrics_are_refused_by_name() {
    for (config, part) in [
        (
            json!({"@type": STATS, "metrics": [{"name": "requests_total",
                "dimensions": {"path": "request.url_path"}}]}),
            "CEL expression \"request.url_path\"",
        ),
        (
            json!({"@type": STATS, "metrics": [{"match": "response.code >= 500"}]}),
            "match: CEL expression",
        ),
        (
            json!({"@type": STATS, "metrics": [{"name": "my_metric"}]}),
            "custom metric \"my_metric\"",
        ),
        (
            json!({"@type": STATS, "definitions": [{"name": "my_metric", "value": "1"}]}),
            "definitions",
        ),
    ] {
        let err = with_stats(config).unwrap_err();
        assert_unsupported(&err, &res(), &["filters[0]", part]);
    }
    let err = with_stats(json!({"@type": STATS, "tcp_reporting_duration": "0s"})).unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "filter_chains[0].filters[0].typed_config.tcp_reporting_duration",
        "must be positive",
    );
}
