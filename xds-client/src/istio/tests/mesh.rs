//! mesh.yaml and the PROXY_CONFIG overlay.

use std::time::Duration;

use serde_json::json;

use crate::istio::mesh::{AuthPolicy, ProxyConfig, parse_duration};

fn fixture() -> String {
    std::fs::read_to_string(super::fixtures().join("mesh.yaml")).unwrap()
}

#[test]
fn the_istioctl_mesh_file_over_istio_defaults() {
    let config = ProxyConfig::load(&fixture(), "/etc/istio/config/mesh", None).unwrap();
    let s = config.settings();
    assert_eq!(s.discovery_address, "istiod-canary.istio-system.svc:15012");
    assert_eq!(s.control_plane_auth_policy, AuthPolicy::MutualTls);
    assert_eq!(s.termination_drain_duration, Duration::from_secs(5));
    assert_eq!(s.proxy_admin_port, 15000);
    assert_eq!(config.to_json()["statusPort"], 15020);
    assert_eq!(s.concurrency, None);
    assert_eq!(s.service_cluster, "istio-proxy");
    assert_eq!(s.proxy_metadata["ISTIO_META_NETWORK"], "vm-net");
    assert_eq!(s.proxy_metadata.len(), 13);
    let j = config.to_json();
    assert_eq!(j["meshId"], "mesh-1");
    assert_eq!(
        j["readinessProbe"],
        json!({"httpGet": {"port": 8080}, "periodSeconds": 5})
    );
    assert_eq!(
        j["tracing"]["zipkin"]["address"],
        "zipkin.istio-system:9411"
    );
    assert_eq!(j["drainDuration"], "45s");
    assert_eq!(j["configPath"], "./etc/istio/proxy");
    assert_eq!(j["statNameLength"], 189);
    assert!(j.get("binaryPath").is_none(), "there is no Envoy binary");
}

#[test]
fn proxy_config_overlays_fields_and_merges_proxy_metadata() {
    let overlay = "serviceCluster: cart.shop\ncontrolPlaneAuthPolicy: NONE\n\
        discoveryAddress: pilot.example:15010\nterminationDrainDuration: 2.5s\nconcurrency: 2\n\
        proxyMetadata:\n  ISTIO_META_NETWORK: other-net\n  EXTRA: x\n";
    let config = ProxyConfig::load(&fixture(), "mesh", Some(overlay)).unwrap();
    let s = config.settings();
    assert_eq!(s.service_cluster, "cart.shop");
    assert_eq!(s.control_plane_auth_policy, AuthPolicy::None);
    assert_eq!(s.discovery_address, "pilot.example:15010");
    assert_eq!(s.termination_drain_duration, Duration::from_millis(2500));
    assert_eq!(s.concurrency, Some(2));
    assert_eq!(s.proxy_metadata["ISTIO_META_NETWORK"], "other-net");
    assert_eq!(s.proxy_metadata["EXTRA"], "x");
    assert_eq!(
        s.proxy_metadata["ISTIO_META_CLUSTER_ID"], "cluster-east",
        "kept from the mesh file"
    );
    assert_eq!(
        config.to_json()["meshId"],
        "mesh-1",
        "untouched fields stay"
    );
}

#[test]
fn an_empty_mesh_file_is_istios_defaults() {
    for text in ["", "\n", "# nothing\n", "defaultConfig:\n"] {
        let config = ProxyConfig::load(text, "mesh", None).unwrap();
        assert_eq!(
            config.settings().discovery_address,
            "istiod.istio-system.svc:15012",
            "{text:?}"
        );
    }
}

#[test]
fn bad_mesh_files_and_overlays_are_named() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        (
            "defaultConfig: [\n",
            None,
            "/etc/istio/config/mesh: not a YAML document",
        ),
        (
            "- a\n",
            None,
            "/etc/istio/config/mesh: must be a YAML mapping",
        ),
        (
            "defaultConfig: 3\n",
            None,
            "/etc/istio/config/mesh: defaultConfig must be a mapping",
        ),
        (
            "defaultConfig:\n  terminationDrainDuration: soon\n",
            None,
            "/etc/istio/config/mesh defaultConfig: at terminationDrainDuration: \"soon\" is not a duration",
        ),
        (
            "defaultConfig:\n  controlPlaneAuthPolicy: SOMETIMES\n",
            None,
            "at controlPlaneAuthPolicy: unknown variant `SOMETIMES`",
        ),
        (
            "defaultConfig:\n  proxyAdminPort: 70000\n",
            None,
            "at proxyAdminPort:",
        ),
        (
            "",
            Some("serviceCluster: [\n"),
            "PROXY_CONFIG: not a YAML document",
        ),
        (
            "",
            Some("proxyAdminPort: many\n"),
            "/etc/istio/config/mesh defaultConfig or PROXY_CONFIG: at proxyAdminPort:",
        ),
    ];
    for (mesh, overlay, part) in cases {
        let e = ProxyConfig::load(mesh, "/etc/istio/config/mesh", *overlay)
            .unwrap_err()
            .to_string();
        assert!(e.contains(part), "{mesh:?} {overlay:?}: {e}");
    }
}

#[test]
fn durations_are_protojson_seconds() {
    assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
    assert_eq!(parse_duration("0.25s"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    for bad in ["5", "s", "1m", "-1s", "1e3s", ""] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}
