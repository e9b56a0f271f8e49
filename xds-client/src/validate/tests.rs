//! Config dumps and bootstraps written for one rule each; istiod's real files are checked
//! through the binary in `proxy/tests/check_config.rs`.

use serde_json::{Value, json};

use super::{CheckError, Kind, Report, Source, check_str};

const LISTENERS: &str = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump";
const CLUSTERS: &str = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

fn listener(name: &str, port: u32, cluster: &str) -> Value {
    json!({
        "@type": LISTENER,
        "name": name,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": TCP_PROXY, "stat_prefix": "s", "cluster": cluster}}]}],
    })
}

fn check(dump: Value) -> Report {
    let report = check_str(&dump.to_string(), "dump.json").unwrap();
    assert_eq!(report.source, Source::ConfigDump);
    report
}

fn counts(report: &Report, kind: Kind) -> (usize, usize) {
    let section = report.section(kind).unwrap();
    (section.accepted, section.rejected.len())
}

#[test]
fn listeners_are_checked_against_the_clusters_the_dump_shows() {
    let report = check(json!({"configs": [
        {"@type": CLUSTERS, "static_clusters": [
            {"cluster": {"@type": CLUSTER, "name": "c"}}]},
        {"@type": LISTENERS, "dynamic_listeners": [
            {"name": "good", "active_state": {"listener": listener("good", 1001, "c")}},
            {"name": "warm", "warming_state": {"listener": listener("warm", 1002, "c")}},
            {"name": "orphan", "active_state": {"listener": listener("orphan", 1003, "gone")}},
            // Draining listeners are leaving: not part of the configuration.
            {"name": "old", "draining_state": {"listener": listener("old", 1004, "gone")}},
        ]},
    ]}));
    assert_eq!(counts(&report, Kind::Listener), (2, 1));
    assert_eq!(counts(&report, Kind::Cluster), (1, 0));
    let orphan = &report.section(Kind::Listener).unwrap().rejected[0];
    assert_eq!(orphan.name, "orphan");
    assert_eq!(
        orphan.reasons,
        ["filter_chains[0].filters[0].typed_config.cluster: unknown cluster \"gone\""]
    );
    assert!(!report.all_accepted());
}

#[test]
fn without_clusters_in_the_dump_cluster_names_are_not_judged() {
    let report = check(
        json!({"configs": [{"@type": LISTENERS, "dynamic_listeners": [
        {"name": "l", "active_state": {"listener": listener("l", 1001, "elsewhere")}}]}]}),
    );
    assert!(report.all_accepted(), "{report}");
    assert_eq!(
        report.to_string(),
        "bootstrap: 0 accepted, 0 rejected\nlisteners: 1 accepted, 0 rejected\n\
         clusters: 0 accepted, 0 rejected\nroute configurations: 0 accepted, 0 rejected\n\
         endpoints: 0 accepted, 0 rejected\nsecrets: 0 accepted, 0 rejected\n"
    );
}

#[test]
fn a_failed_update_is_judged_once_and_marked_as_refused_by_envoy() {
    let mut bad = listener("l", 1001, "c");
    bad["filter_chains"][0]["use_proxy_proto"] = json!(true);
    let failure = json!({"failed_configuration": bad,
                         "details": "Envoy's reason\nsecond line"});
    let report = check(
        json!({"configs": [{"@type": LISTENERS, "dynamic_listeners": [
            {"name": "l", "error_state": failure},
            {"error_state": failure},
        ]}]}),
    );
    let rejected = &report.section(Kind::Listener).unwrap().rejected;
    assert_eq!(rejected.len(), 1, "{report}");
    assert_eq!(rejected[0].name, "l");
    assert_eq!(
        rejected[0].envoy_rejected.as_deref(),
        Some("Envoy's reason")
    );
    assert!(
        report.to_string().contains(
            "  l: not supported: filter_chains[0]: use_proxy_proto (Envoy rejected it too: Envoy's reason)\n"
        ),
        "{report}"
    );
}

#[test]
fn reasons_differing_only_in_indices_are_one_line() {
    let mut l = listener("l", 1001, "c");
    let chain = json!({"filter_chain_match": {"destination_port": 1},
        "filters": [{"name": "envoy.filters.network.echo"}]});
    let mut second = chain.clone();
    second["filter_chain_match"]["destination_port"] = json!(2);
    l["filter_chains"] = json!([chain, second]);
    l["access_log"] = json!([{"name": "envoy.access_loggers.stdout"}]);
    let report = check(
        json!({"configs": [{"@type": LISTENERS, "static_listeners": [
        {"listener": l}]}]}),
    );
    let rejected = &report.section(Kind::Listener).unwrap().rejected[0];
    assert_eq!(
        rejected.reasons,
        [
            "not supported: access_log",
            "not supported: filter_chains[*].filters[*]: network filter \"envoy.filters.network.echo\" (2 places)",
        ]
    );
}

#[test]
fn unknown_sections_and_wrong_types_are_rejected_not_skipped() {
    let report = check(json!({"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.EcdsConfigDump"},
        {"@type": CLUSTERS, "static_clusters": [{"cluster": listener("l", 1, "c")}]},
    ]}));
    assert_eq!(counts(&report, Kind::Other), (0, 1));
    let cluster = &report.section(Kind::Cluster).unwrap().rejected[0];
    assert!(
        cluster.reasons[0]
            .starts_with("type type.googleapis.com/envoy.config.listener.v3.Listener where")
    );
}

#[test]
fn a_bootstrap_is_judged_as_run_loads_it() {
    let yaml = r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1001}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: s
          cluster: missing
  clusters:
  - name: eds
    type: EDS
    eds_cluster_config: {eds_config: {ads: {}}}
  secrets:
  - name: default
"#;
    let report = check_str(yaml, "bootstrap.yaml").unwrap();
    assert_eq!(report.source, Source::Bootstrap);
    assert_eq!(counts(&report, Kind::Listener), (0, 1));
    assert_eq!(counts(&report, Kind::Cluster), (0, 1));
    assert_eq!(counts(&report, Kind::Secret), (0, 1));
    let text = report.to_string();
    assert!(
        text.contains(
            "  l: filter_chains[0].filters[0].typed_config.cluster: unknown cluster \"missing\"\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("  eds: not supported: EDS: endpoint discovery needs an xDS connection"),
        "{text}"
    );
    assert!(
        text.contains("  bootstrap: not supported: static_resources: secrets (SDS)"),
        "{text}"
    );
}

#[test]
fn a_dump_that_does_not_fit_names_the_json_path() {
    let err = check_str(
        &json!({"configs": [{"@type": CLUSTERS, "static_clusters": [
            {"cluster": {"@type": CLUSTER, "name": "c", "connect_timeout": 5}}]}]})
        .to_string(),
        "dump.json",
    )
    .unwrap_err();
    let CheckError::DumpField { origin, path, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(origin, "dump.json");
    assert_eq!(
        path,
        "configs[0].static_clusters[0].cluster.connect_timeout"
    );
}
