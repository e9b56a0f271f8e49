//! Envoy resources for tests, written in Envoy's JSON as a control plane would send them.

use std::net::SocketAddr;

use envoy_types::pb::google::protobuf::Any;
use serde_json::{Value, json};

use super::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// `value` (with its `@type`) as an `Any`; panics on a bad fixture.
pub fn any(value: Value) -> Any {
    xds_client::json::any_from_json(value.clone())
        .unwrap_or_else(|e| panic!("test resource does not transcode: {e}: {value}"))
}

/// A listener on `address` whose one chain tcp-proxies to `cluster`.
pub fn tcp_listener(name: &str, address: SocketAddr, cluster: &str) -> Any {
    any(tcp_listener_json(name, address, cluster))
}

/// [`tcp_listener`] as JSON, to be altered before [`any`].
pub fn tcp_listener_json(name: &str, address: SocketAddr, cluster: &str) -> Value {
    json!({
        "@type": LISTENER,
        "name": name,
        "address": {"socket_address": {"address": address.ip().to_string(), "port_value": address.port()}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": name,
                "cluster": cluster,
            },
        }]}],
    })
}

fn lb_endpoints(endpoints: &[SocketAddr]) -> Value {
    Value::Array(
        endpoints
            .iter()
            .map(|a| {
                json!({"endpoint": {"address": {"socket_address": {
                    "address": a.ip().to_string(), "port_value": a.port()}}}})
            })
            .collect(),
    )
}

/// A STATIC cluster with `endpoints`.
pub fn static_cluster(name: &str, endpoints: &[SocketAddr]) -> Any {
    any(json!({
        "@type": CLUSTER,
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints(endpoints)}]},
    }))
}

/// An EDS cluster over ADS, asking for `service` (Istio's `outbound|port||host` style).
pub fn eds_cluster(name: &str, service: &str) -> Any {
    any(json!({
        "@type": CLUSTER,
        "name": name,
        "type": "EDS",
        "connect_timeout": "1s",
        "eds_cluster_config": {
            "service_name": service,
            "eds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
        },
    }))
}

/// The EDS load assignment `name` with `endpoints`.
pub fn assignment(name: &str, endpoints: &[SocketAddr]) -> Any {
    any(json!({
        "@type": ENDPOINT,
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": lb_endpoints(endpoints)}],
    }))
}

/// A listener on `address` whose one chain is an HTTP connection manager taking its routes
/// from RDS under `route`.
pub fn http_listener(name: &str, address: SocketAddr, route: &str) -> Any {
    any(json!({
        "@type": LISTENER,
        "name": name,
        "address": {"socket_address": {"address": address.ip().to_string(), "port_value": address.port()}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "rds": {"route_config_name": route, "config_source": {"ads": {}, "resource_api_version": "V3"}},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            },
        }]}],
    }))
}

/// The route configuration `name`: one virtual host for every domain sending `/` to
/// `cluster`.
pub fn route_config(name: &str, cluster: &str) -> Any {
    any(route_config_json(name, cluster))
}

/// [`route_config`] as JSON, to be altered before [`any`].
pub fn route_config_json(name: &str, cluster: &str) -> Value {
    json!({
        "@type": ROUTE,
        "name": name,
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}},
        ]}],
        "validate_clusters": false,
    })
}
