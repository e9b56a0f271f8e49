//! The embedded default bootstrap is consistent and runnable without privileges: checked on
//! the YAML itself, since decoding it is xds-client's job.

use std::collections::HashMap;

use serde_json::Value;
use vm_proxy::config::DEFAULT_BOOTSTRAP;

/// An `Address` (`{socket_address: ...}`).
fn socket(v: &Value) -> (String, u64) {
    socket_address(&v["socket_address"])
}

/// A `SocketAddress`.
fn socket_address(s: &Value) -> (String, u64) {
    (
        s["address"].as_str().expect("address").to_owned(),
        s["port_value"].as_u64().expect("port_value"),
    )
}

#[test]
fn default_bootstrap_is_loopback_unprivileged_and_consistent() {
    let b: Value = serde_saphyr::from_str(DEFAULT_BOOTSTRAP).expect("valid YAML");
    assert_eq!(socket(&b["admin"]["address"]), ("127.0.0.1".into(), 15000));

    let clusters: HashMap<&str, &Value> = b["static_resources"]["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .map(|c| (c["name"].as_str().expect("cluster name"), c))
        .collect();
    let mut listeners = HashMap::new();
    for l in b["static_resources"]["listeners"]
        .as_array()
        .expect("listeners")
    {
        let name = l["name"].as_str().expect("listener name");
        let (address, port) = socket(&l["address"]);
        assert_eq!(address, "127.0.0.1", "{name}");
        assert!(port >= 1024, "{name} needs no privilege");
        for chain in l["filter_chains"].as_array().expect("filter_chains") {
            for f in chain["filters"].as_array().expect("filters") {
                let cfg = &f["typed_config"];
                assert_eq!(
                    cfg["@type"],
                    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
                );
                let cluster = cfg["cluster"].as_str().expect("tcp_proxy cluster");
                assert!(clusters.contains_key(cluster), "{name} -> {cluster}");
            }
        }
        listeners.insert(name, (port, l));
    }
    assert_eq!(listeners["admin_loopback"].0, 15080);
    assert_eq!(listeners["outbound"].0, 15001);
    assert_eq!(listeners["outbound"].1["use_original_dst"], true);
    assert_eq!(listeners["inbound"].0, 15006);
    for name in ["outbound", "inbound"] {
        assert_eq!(
            listeners[name].1["listener_filters"][0]["typed_config"]["@type"],
            "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
            "{name}"
        );
    }

    let admin = clusters["admin"];
    assert_eq!(admin["type"], "STATIC");
    let endpoint = &admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"];
    assert_eq!(socket(&endpoint["address"]), ("127.0.0.1".into(), 15000));
    for name in ["PassthroughCluster", "InboundPassthroughCluster"] {
        assert_eq!(clusters[name]["type"], "ORIGINAL_DST", "{name}");
        assert_eq!(clusters[name]["lb_policy"], "CLUSTER_PROVIDED", "{name}");
    }
    assert_eq!(
        // BindConfig.source_address is a SocketAddress, not an Address.
        socket_address(
            &clusters["InboundPassthroughCluster"]["upstream_bind_config"]["source_address"]
        ),
        ("127.0.0.6".into(), 0)
    );
}
