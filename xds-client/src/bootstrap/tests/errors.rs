use std::path::{Path, PathBuf};

use crate::bootstrap::{BootstrapError, load_file, load_str};
use crate::decode::{DecodeError, Resource};

const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

fn listener(name: &str, port: u16, cluster: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": TCP_PROXY, "stat_prefix": "s", "cluster": cluster}}]}],
    })
}

fn cluster(name: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "type": "STATIC", "connect_timeout": "1s"})
}

fn resource_errors(json: serde_json::Value) -> Vec<DecodeError> {
    match load_str(&json.to_string(), "test.json") {
        Err(BootstrapError::Resources { origin, errors }) => {
            assert_eq!(origin, "test.json");
            errors
        }
        other => panic!("expected resource errors, got {other:?}"),
    }
}

#[test]
fn duplicate_names_and_addresses() {
    let errors = resource_errors(serde_json::json!({"static_resources": {
        "listeners": [listener("a", 1001, "c"), listener("a", 1002, "c"), listener("b", 1001, "c")],
        "clusters": [cluster("c"), cluster("c")],
    }}));
    assert_eq!(
        errors,
        [
            DecodeError::DuplicateName {
                resource: Resource::cluster("c")
            },
            DecodeError::DuplicateName {
                resource: Resource::listener("a")
            },
            DecodeError::DuplicateAddress {
                resource: Resource::listener("b"),
                address: "127.0.0.1:1001".into(),
                other: "a".into(),
            },
        ]
    );
}

#[test]
fn tcp_proxy_to_a_cluster_not_defined() {
    let mut weighted = listener("w", 1002, "unused");
    weighted["filter_chains"][0]["filters"][0]["typed_config"] = serde_json::json!({
        "@type": TCP_PROXY, "stat_prefix": "s",
        "weighted_clusters": {"clusters": [{"name": "c", "weight": 1}, {"name": "gone", "weight": 1}]}});
    let errors = resource_errors(serde_json::json!({"static_resources": {
        "listeners": [listener("l", 1001, "missing"), weighted],
        "clusters": [cluster("c")],
    }}));
    assert_eq!(
        errors,
        [
            DecodeError::UnknownCluster {
                resource: Resource::listener("l"),
                field: "filter_chains[0].filters[0].typed_config.cluster".into(),
                cluster: "missing".into(),
            },
            DecodeError::UnknownCluster {
                resource: Resource::listener("w"),
                field:
                    "filter_chains[0].filters[0].typed_config.weighted_clusters.clusters[1].name"
                        .into(),
                cluster: "gone".into(),
            },
        ]
    );
    let message = BootstrapError::Resources {
        origin: "test.json".into(),
        errors,
    }
    .to_string();
    assert!(
        message.starts_with("test.json: listener \"l\": filter_chains[0]"),
        "{message}"
    );
}

#[test]
fn a_cluster_that_fails_does_not_also_fail_its_listeners() {
    let mut bad = cluster("c");
    bad["connect_timeout"] = serde_json::json!("0s");
    let errors = resource_errors(serde_json::json!({"static_resources": {
        "listeners": [listener("l", 1001, "c")], "clusters": [bad]}}));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        matches!(&errors[0], DecodeError::Invalid { resource, .. } if *resource == Resource::cluster("c"))
    );
}

#[test]
fn every_failing_resource_is_reported() {
    let mut hcm = listener("http", 1002, "c");
    hcm["filter_chains"][0]["filters"][0] = serde_json::json!({
        "name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "h",
            "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": "nope"}}]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}});
    let errors = resource_errors(serde_json::json!({
        "stats_config": {"use_all_default_tags": false},
        "static_resources": {
            "listeners": [listener("ok", 1001, "c"), hcm],
            "clusters": [cluster("c"), {"name": "eds", "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}}}],
            "secrets": [{"name": "s"}],
        },
    }));
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 4, "{text:#?}");
    assert!(
        text[0].starts_with("bootstrap: not supported: stats_config"),
        "{}",
        text[0]
    );
    assert!(text[1].contains("static_resources: secrets"), "{}", text[1]);
    assert!(
        text[2].starts_with("cluster \"eds\": not supported: EDS"),
        "{}",
        text[2]
    );
    assert!(
        // An inline route table is checked like a tcp_proxy target (validate_clusters).
        text[3].contains("listener \"http\"")
            && text[3].contains("route_config.virtual_hosts[0].routes[0].route.cluster")
            && text[3].contains("unknown cluster \"nope\""),
        "{}",
        text[3]
    );
}

#[test]
fn admin_address() {
    let ok = load_str(
        r#"{"admin": {"address": {"socket_address": {"address": "::1", "port_value": 9901}}}}"#,
        "a.json",
    )
    .unwrap();
    assert_eq!(ok.snapshot.admin, Some("[::1]:9901".parse().unwrap()));
    assert!(ok.snapshot.listeners.is_empty() && ok.snapshot.clusters.is_empty());

    let errors = resource_errors(serde_json::json!({"admin": {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}},
        "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": "/dev/null"}}],
    }}));
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].to_string(),
        "bootstrap: not supported: admin: access_log"
    );
}

#[test]
fn json_field_errors_name_the_origin_and_the_path() {
    let err = load_str(
        r#"{"static_resources": {"clusters": [{"name": "c", "connect_timeout": "soon"}]}}"#,
        "/etc/vm-proxy/envoy.json",
    )
    .unwrap_err();
    let BootstrapError::Field {
        origin,
        path,
        message,
    } = &err
    else {
        panic!("expected a field error, got {err:?}")
    };
    assert_eq!(origin, "/etc/vm-proxy/envoy.json");
    assert_eq!(path, "static_resources.clusters[0].connect_timeout");
    assert!(
        message.contains("duration") && message.contains("line 1"),
        "{message}"
    );
    assert!(
        err.to_string().starts_with(
            "/etc/vm-proxy/envoy.json: at static_resources.clusters[0].connect_timeout:"
        )
    );

    let err = load_str("static_resources:\n  listeners:\n  - nmae: x\n", "b.yaml").unwrap_err();
    let BootstrapError::Field { path, message, .. } = &err else {
        panic!("expected a field error, got {err:?}")
    };
    assert_eq!(path, "static_resources.listeners[0]");
    assert!(message.contains("nmae"), "{message}");

    let err = load_str(r#"{"static_resources": {"listeners": [{"filter_chains": [{"filters": [{"name": "f",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"}}]}]}]}}"#,
        "c.json").unwrap_err();
    assert!(err.to_string().contains("RedisProxy"), "{err}");
    assert!(
        err.to_string()
            .contains("static_resources.listeners[0].filter_chains[0].filters[0].typed_config"),
        "{err}"
    );
}

#[test]
fn format_errors() {
    let err = load_str("admin: [unclosed", "bad.yaml").unwrap_err();
    assert!(
        matches!(&err, BootstrapError::Yaml { origin, .. } if origin == "bad.yaml"),
        "{err:?}"
    );

    let err = load_str("{\"admin\": ", "bad").unwrap_err();
    assert!(
        matches!(&err, BootstrapError::Field { origin, .. } if origin == "bad"),
        "{err:?}"
    );

    let err = load_str("", "envoy.pb").unwrap_err();
    assert_eq!(
        err.to_string(),
        "envoy.pb: binary form of protobuf is not supported, only JSON and YAML"
    );
}

/// A file under the system temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("xds-client-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn file_errors_name_the_file() {
    let missing = Path::new("/nonexistent/vm-proxy/bootstrap.yaml");
    let err = load_file(missing).unwrap_err();
    assert!(
        matches!(&err, BootstrapError::Read { path, .. } if path == missing),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("reading /nonexistent/vm-proxy/bootstrap.yaml: "),
        "{err}"
    );

    let file = TempFile::new(
        "bad.yaml",
        "static_resources:\n  clusters:\n  - name: c\n    type: NOT_A_TYPE\n",
    );
    let err = load_file(&file.0).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "{}: at static_resources.clusters[0].type:",
            file.0.display()
        )),
        "{text}"
    );
    assert!(text.contains("NOT_A_TYPE"), "{text}");
}

#[test]
fn rds_without_ads_is_refused() {
    let mut hcm = listener("http", 1003, "c");
    hcm["filter_chains"][0]["filters"][0] = serde_json::json!({
        "name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "h",
            "rds": {"route_config_name": "r", "config_source": {"ads": {}}},
            "http_filters": [{"name": "envoy.filters.http.router"}]}});
    let errors = resource_errors(serde_json::json!({
        "static_resources": {"listeners": [hcm], "clusters": [cluster("c")]},
    }));
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(
        text.contains("listener \"http\"") && text.contains("no dynamic_resources.ads_config"),
        "{text}"
    );
}
