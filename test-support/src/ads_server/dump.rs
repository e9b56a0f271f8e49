//! Resources out of an Envoy `/config_dump`, as the control plane once sent them.

use envoy_types::pb::google::protobuf::Any;
use serde_json::Value;

/// The dynamic resources of a config dump, unchanged, as `Any`s: active clusters, listeners
/// (active, warming, and the failed configuration of an `error_state`: a listener istiod
/// really sent), RDS route configurations and EDS load assignments. Panics on a dump the descriptors cannot read.
pub fn config_dump_resources(json: &str) -> Vec<Any> {
    let dump: Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("config dump is not JSON: {e}"));
    let mut found: Vec<&Value> = Vec::new();
    for config in dump["configs"].as_array().into_iter().flatten() {
        let type_url = config["@type"].as_str().unwrap_or("");
        let list = |field: &str| config[field].as_array().into_iter().flatten();
        if type_url.ends_with(".ClustersConfigDump") {
            found.extend(list("dynamic_active_clusters").map(|c| &c["cluster"]));
        } else if type_url.ends_with(".ListenersConfigDump") {
            for listener in list("dynamic_listeners") {
                let state = ["active_state", "warming_state"]
                    .iter()
                    .map(|s| &listener[*s]["listener"])
                    .find(|l| l.is_object())
                    .or_else(|| {
                        Some(&listener["error_state"]["failed_configuration"])
                            .filter(|l| l.is_object())
                    });
                found.extend(state);
            }
        } else if type_url.ends_with(".RoutesConfigDump") {
            found.extend(list("dynamic_route_configs").map(|r| &r["route_config"]));
        } else if type_url.ends_with(".EndpointsConfigDump") {
            found.extend(list("dynamic_endpoint_configs").map(|e| &e["endpoint_config"]));
        }
    }
    found
        .into_iter()
        .map(|v| {
            xds_client::json::any_from_json(v.clone())
                .unwrap_or_else(|e| panic!("config dump resource does not transcode: {e}"))
        })
        .collect()
}
