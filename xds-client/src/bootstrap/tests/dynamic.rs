//! `dynamic_resources`: the ADS server, protocol and subscriptions a bootstrap asks for.

use serde_json::{Value, json};

use crate::ads::Protocol;
use crate::bootstrap::{BootstrapError, load_str};

fn bootstrap(api_type: &str, cluster_type: &str) -> Value {
    json!({
        "node": {"id": "sidecar~10.0.0.1~vm.ns~ns.svc.cluster.local", "cluster": "vm.ns"},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
            "cds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [{
            "name": "xds-grpc",
            "type": cluster_type,
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}
            ]}]},
        }]},
    })
}

fn error_text(json: &Value) -> String {
    match load_str(&json.to_string(), "ads.json") {
        Err(err @ BootstrapError::Resources { .. }) => err.to_string(),
        other => panic!("expected resource errors, got {other:?}"),
    }
}

#[test]
fn ads_server_protocol_node_and_subscriptions() {
    let loaded = load_str(&bootstrap("DELTA_GRPC", "STATIC").to_string(), "ads.json").unwrap();
    let ads = loaded.ads.unwrap();
    assert_eq!(ads.protocol, Protocol::Delta);
    assert_eq!(ads.server, "127.0.0.1:15010".parse().unwrap());
    assert_eq!(ads.cluster, "xds-grpc");
    assert_eq!(ads.node.id, "sidecar~10.0.0.1~vm.ns~ns.svc.cluster.local");
    assert!(ads.clusters && ads.listeners && ads.node_on_first_message_only);
    assert!(
        loaded.snapshot.clusters.contains_key("xds-grpc"),
        "static resources stay"
    );
    let config = ads.client_config();
    assert_eq!(config.server, "http://127.0.0.1:15010");

    let sotw = load_str(&bootstrap("GRPC", "STATIC").to_string(), "ads.json").unwrap();
    assert_eq!(sotw.ads.unwrap().protocol, Protocol::StateOfTheWorld);

    let mut no_lds = bootstrap("GRPC", "STATIC");
    no_lds["dynamic_resources"]
        .as_object_mut()
        .unwrap()
        .remove("lds_config");
    let ads = load_str(&no_lds.to_string(), "ads.json")
        .unwrap()
        .ads
        .unwrap();
    assert!(ads.clusters && !ads.listeners);
}

#[test]
fn ads_configs_vm_proxy_cannot_follow_are_refused_by_name() {
    let text = error_text(&bootstrap("REST", "STATIC"));
    assert!(
        text.contains("not supported: dynamic_resources.ads_config: api_type REST"),
        "{text}"
    );

    let mut other = bootstrap("GRPC", "STATIC");
    other["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] =
        json!("nowhere");
    let text = error_text(&other);
    assert!(text.contains("unknown cluster \"nowhere\""), "{text}");

    let mut two = bootstrap("GRPC", "STATIC");
    let service = two["dynamic_resources"]["ads_config"]["grpc_services"][0].clone();
    two["dynamic_resources"]["ads_config"]["grpc_services"] = json!([service.clone(), service]);
    let text = error_text(&two);
    assert!(text.contains("exactly one gRPC service, found 2"), "{text}");

    let mut path = bootstrap("GRPC", "STATIC");
    path["dynamic_resources"]["lds_config"] = json!({"path_config_source": {"path": "/x"}});
    let text = error_text(&path);
    assert!(
        text.contains("dynamic_resources.lds_config: a config source other than ads"),
        "{text}"
    );

    let mut without = bootstrap("GRPC", "STATIC");
    without["dynamic_resources"]
        .as_object_mut()
        .unwrap()
        .remove("ads_config");
    let text = error_text(&without);
    assert!(text.contains("there is no ads_config"), "{text}");
}
