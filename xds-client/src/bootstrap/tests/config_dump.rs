use envoy_types::pb::envoy::admin::v3::ConfigDump as PbConfigDump;
use serde_json::Value;

use super::L4_YAML;
use crate::bootstrap::load_str;
use crate::proto;

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";

#[test]
fn static_bootstrap_dump_has_envoys_shape() {
    let loaded = load_str(L4_YAML, "l4.yaml").unwrap();
    let dump = loaded.dump.to_json();
    let configs = dump["configs"].as_array().unwrap();
    let types: Vec<&str> = configs
        .iter()
        .map(|c| c["@type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "BootstrapConfigDump",
            "ClustersConfigDump",
            "ListenersConfigDump",
            "ScopedRoutesConfigDump",
            "RoutesConfigDump",
            "SecretsConfigDump"
        ]
        .map(|t| format!("{ADMIN}{t}"))
    );

    // The bootstrap comes back exactly as written (canonical proto3 JSON, snake_case).
    let input: Value = serde_saphyr::from_str(L4_YAML).unwrap();
    assert_eq!(configs[0]["bootstrap"], input);

    let stamp = configs[0]["last_updated"].as_str().unwrap();
    assert_eq!(stamp.len(), "2025-02-17T14:49:39.103Z".len(), "{stamp}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
        "{stamp}"
    );

    let clusters = configs[1]["static_clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 5);
    for (dumped, written) in clusters
        .iter()
        .zip(input["static_resources"]["clusters"].as_array().unwrap())
    {
        assert_eq!(dumped["last_updated"], stamp);
        let mut expected = written.clone();
        expected["@type"] = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
        assert_eq!(dumped["cluster"], expected);
    }
    assert!(
        configs[1].get("version_info").is_none(),
        "static only: no CDS version"
    );

    let listeners = configs[2]["static_listeners"].as_array().unwrap();
    let names: Vec<&str> = listeners
        .iter()
        .map(|l| l["listener"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["virtualOutbound", "virtualInbound", "10.0.0.5_5432"]
    );
    for (dumped, written) in listeners
        .iter()
        .zip(input["static_resources"]["listeners"].as_array().unwrap())
    {
        assert_eq!(dumped["last_updated"], stamp);
        let mut expected = written.clone();
        expected["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener".into();
        assert_eq!(dumped["listener"], expected);
    }
    for empty in &configs[3..] {
        assert_eq!(empty.as_object().unwrap().len(), 1, "only @type: {empty}");
    }
}

#[test]
fn dump_round_trips_through_envoys_config_dump_message() {
    let loaded = load_str(L4_YAML, "l4.yaml").unwrap();
    let first = loaded.dump.to_json();
    let parsed: PbConfigDump = proto::from_json_value(first.clone()).unwrap();
    assert_eq!(parsed.configs.len(), 6);
    assert_eq!(proto::to_json(&parsed).unwrap(), first);
}

#[test]
fn real_envoy_dump_renders_back_identically() {
    // Envoy's own rendering of the same messages must be what ours produces.
    let text = std::fs::read_to_string(super::shared_fixture(
        "sidecar-eds-config_dump-bookinfo-istio-2022-07.json",
    ))
    .unwrap();
    let original: Value = serde_json::from_str(&text).unwrap();
    let parsed: PbConfigDump = proto::from_json_str(&text).unwrap();
    assert_eq!(proto::to_json(&parsed).unwrap(), original);
}
