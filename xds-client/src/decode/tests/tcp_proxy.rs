use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use serde_json::{Value, json};

use crate::decode::error::Ctx;
use crate::decode::tcp_proxy::tcp_proxy;
use crate::decode::{DecodeError, Resource};
use crate::model::{self, ClusterSpecifier};
use crate::testing::{assert_invalid, assert_unsupported, pb};

fn res() -> Resource {
    Resource::listener("l")
}

fn decode(json: Value) -> Result<model::TcpProxy, DecodeError> {
    let resource = res();
    tcp_proxy(&Ctx::new(&resource), &pb::<TcpProxy>(json))
}

#[test]
fn idle_timeout_defaults_to_an_hour_and_zero_disables_it() {
    let t = decode(json!({"stat_prefix": "s", "cluster": "c"})).unwrap();
    assert_eq!(&*t.stat_prefix, "s");
    assert!(matches!(&t.cluster, ClusterSpecifier::Cluster(c) if &**c == "c"));
    assert_eq!(t.idle_timeout, Some(Duration::from_secs(3600)));

    let t = decode(json!({"stat_prefix": "s", "cluster": "c", "idle_timeout": "0s"})).unwrap();
    assert_eq!(t.idle_timeout, None);

    let t = decode(json!({"stat_prefix": "s", "cluster": "c", "idle_timeout": "90.5s"})).unwrap();
    assert_eq!(t.idle_timeout, Some(Duration::from_millis(90_500)));

    let err =
        decode(json!({"stat_prefix": "s", "cluster": "c", "idle_timeout": "-1s"})).unwrap_err();
    assert_invalid(&err, &res(), "idle_timeout", "non-negative");
}

#[test]
fn weighted_clusters() {
    let t = decode(
        json!({"stat_prefix": "s", "weighted_clusters": {"clusters": [
        {"name": "a", "weight": 1}, {"name": "b", "weight": 3}]}}),
    )
    .unwrap();
    let ClusterSpecifier::Weighted(w) = &t.cluster else {
        panic!("not weighted: {:?}", t.cluster)
    };
    assert_eq!(
        w.iter().map(|w| (&*w.name, w.weight)).collect::<Vec<_>>(),
        [("a", 1), ("b", 3)]
    );
}

#[test]
fn weighted_cluster_errors() {
    let err = decode(
        json!({"stat_prefix": "s", "weighted_clusters": {"clusters": [
        {"name": "a", "weight": 0}, {"name": "b", "weight": 0}]}}),
    )
    .unwrap_err();
    assert_invalid(
        &err,
        &res(),
        "weighted_clusters.clusters[0].weight",
        "at least 1",
    );

    let err =
        decode(json!({"stat_prefix": "s", "weighted_clusters": {"clusters": []}})).unwrap_err();
    assert_invalid(&err, &res(), "weighted_clusters.clusters", "at least one");

    let err =
        decode(json!({"stat_prefix": "s", "weighted_clusters": {"clusters": [{"weight": 2}]}}))
            .unwrap_err();
    assert_invalid(&err, &res(), "weighted_clusters.clusters[0].name", "empty");

    let err = decode(
        json!({"stat_prefix": "s", "weighted_clusters": {"clusters": [
        {"name": "a", "weight": 4_000_000_000u32}, {"name": "b", "weight": 4_000_000_000u32}]}}),
    )
    .unwrap_err();
    assert_unsupported(
        &err,
        &res(),
        &["weighted_clusters", "total weight 8000000000"],
    );

    let err = decode(json!({"stat_prefix": "s", "weighted_clusters": {"clusters": [
        {"name": "a", "weight": 1, "metadata_match": {"filter_metadata": {"envoy.lb": {"v": "1"}}}}]}}))
    .unwrap_err();
    assert_unsupported(&err, &res(), &["clusters[0]", "metadata_match"]);
}

#[test]
fn required_fields() {
    let err = decode(json!({"stat_prefix": "s"})).unwrap_err();
    assert_invalid(&err, &res(), ".", "one of cluster or weighted_clusters");
    let err = decode(json!({"cluster": "c"})).unwrap_err();
    assert_invalid(&err, &res(), "stat_prefix", "empty");
}

#[test]
fn connect_attempts() {
    assert!(decode(json!({"stat_prefix": "s", "cluster": "c", "max_connect_attempts": 1})).is_ok());
    let err =
        decode(json!({"stat_prefix": "s", "cluster": "c", "max_connect_attempts": 3})).unwrap_err();
    assert_unsupported(&err, &res(), &["max_connect_attempts"]);
    let err =
        decode(json!({"stat_prefix": "s", "cluster": "c", "max_connect_attempts": 0})).unwrap_err();
    assert_invalid(&err, &res(), "max_connect_attempts", "at least 1");
}

#[test]
fn options_not_implemented_are_all_named() {
    let err = decode(json!({
        "stat_prefix": "s", "cluster": "c",
        "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": "/dev/stdout"}}],
        "hash_policy": [{"source_ip": {}}],
        "max_downstream_connection_duration": "60s",
        "tunneling_config": {"hostname": "h:443"},
    }))
    .unwrap_err();
    assert_unsupported(
        &err,
        &res(),
        &[
            "access_log",
            "hash_policy",
            "max_downstream_connection_duration",
            "tunneling_config",
        ],
    );
}
