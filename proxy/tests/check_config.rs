//! `vm-proxy check-config`, run as the real binary on istiod's and pilot-agent's own files,
//! on vm-proxy's L4 bootstrap and on broken input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/istio-xds/"
);
const LABELS: [&str; 6] = [
    "bootstrap",
    "listeners",
    "clusters",
    "route configurations",
    "endpoints",
    "secrets",
];

/// One report line per type: counts and, per rejected resource, its name and reasons.
#[derive(Debug, Default)]
struct Section {
    accepted: usize,
    rejected: Vec<(String, String)>,
}

impl Section {
    fn reasons(&self, name: &str) -> &str {
        self.rejected
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.as_str())
            .unwrap_or_else(|| panic!("{name} is not rejected: {:?}", self.rejected))
    }

    fn is_rejected(&self, name: &str) -> bool {
        self.rejected.iter().any(|(n, _)| n == name)
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check_config(file: &Path) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-proxy"))
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Parses the report, checking its shape: every type once, in order, counts that match the
/// lines below them.
fn report(run: &Run) -> BTreeMap<String, Section> {
    let mut sections: BTreeMap<String, Section> = BTreeMap::new();
    let mut order = Vec::new();
    let mut current: Option<(String, usize)> = None;
    for line in run.stdout.lines() {
        if let Some(entry) = line.strip_prefix("  ") {
            let (name, reasons) = entry.split_once(": ").unwrap();
            let (label, _) = current.as_ref().unwrap();
            let section = sections.get_mut(label).unwrap();
            section
                .rejected
                .push((name.to_string(), reasons.to_string()));
            continue;
        }
        if let Some((label, rejected)) = current.take() {
            assert_eq!(sections[&label].rejected.len(), rejected, "{label}");
        }
        let (label, counts) = line.split_once(": ").unwrap();
        let (accepted, rejected) = counts.split_once(" accepted, ").unwrap();
        let rejected: usize = rejected.strip_suffix(" rejected").unwrap().parse().unwrap();
        sections.insert(
            label.to_string(),
            Section {
                accepted: accepted.parse().unwrap(),
                rejected: Vec::new(),
            },
        );
        order.push(label.to_string());
        current = Some((label.to_string(), rejected));
    }
    if let Some((label, rejected)) = current {
        assert_eq!(sections[&label].rejected.len(), rejected, "{label}");
    }
    assert_eq!(order, LABELS, "{}", run.stdout);
    sections
}

fn counts(sections: &BTreeMap<String, Section>) -> Vec<(usize, usize)> {
    LABELS
        .iter()
        .map(|l| (sections[*l].accepted, sections[*l].rejected.len()))
        .collect()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(FIXTURES).join(name)
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

#[test]
fn pilot_agent_golden_bootstrap() {
    let run = check_config(&fixture("pilot-agent-bootstrap-golden-default.json"));
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let r = report(&run);
    assert_eq!(
        counts(&r),
        [(0, 1), (1, 1), (2, 2), (0, 0), (0, 0), (0, 0)],
        "{}",
        run.stdout
    );
    let bootstrap = r["bootstrap"].reasons("bootstrap");
    for part in [
        "stats_config",
        "layered_runtime",
        "bootstrap_extensions",
        "admin: access_log",
    ] {
        assert!(bootstrap.contains(part), "{part}: {bootstrap}");
    }
    // The readiness listener (an HTTP connection manager routing to `agent`) decodes; the
    // Prometheus one compresses its responses.
    assert!(!r["listeners"].is_rejected("0.0.0.0_15021"));
    let why = r["listeners"].reasons("0.0.0.0_15090");
    assert!(
        why.contains("HTTP filter \"envoy.filters.http.compressor.gzip\""),
        "{why}"
    );
    // Every reason of a cluster, not only the first one found.
    let xds = r["clusters"].reasons("xds-grpc");
    for part in ["upstream_connection_options", "Unix socket"] {
        assert!(xds.contains(part), "{part}: {xds}");
    }
    assert!(r["clusters"].reasons("sds-grpc").contains("Unix socket"));
    assert!(!r["clusters"].is_rejected("prometheus_stats") && !r["clusters"].is_rejected("agent"));
}

#[test]
fn istio_full_sidecar_config_dump() {
    let name = "sidecar-full-config_dump-geo-istio-1.18.2.json";
    let run = check_config(&fixture(name));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let r = report(&run);
    // SOURCES.md: 2 static + 140 active listeners + virtualInbound (failed); 5 + 138
    // clusters; 2 + 90 route configurations; 5 + 138 load assignments; 2 secrets.
    assert_eq!(
        counts(&r),
        [(0, 1), (2, 141), (141, 2), (92, 0), (141, 2), (0, 2)],
        "{}",
        run.stdout
    );

    // What Envoy itself refused is refused here too, and shown as refused by Envoy.
    let dump = json(name);
    let mut envoy_rejected = Vec::new();
    for config in dump["configs"].as_array().unwrap() {
        for l in config["dynamic_listeners"].as_array().into_iter().flatten() {
            if let Some(failed) = l["error_state"]["failed_configuration"]["name"].as_str() {
                envoy_rejected.push(failed.to_string());
            }
        }
    }
    assert!(envoy_rejected.contains(&"virtualInbound".to_string()));
    for listener in &envoy_rejected {
        let why = r["listeners"].reasons(listener);
        assert!(
            why.contains("(Envoy rejected it too: Proto constraint validation failed"),
            "{why}"
        );
    }
    // ... with every distinct reason vm-proxy has, each once.
    let inbound = r["listeners"].reasons("virtualInbound");
    for part in [
        "not supported: access_log",
        // Connection managers decode; what they ask for beyond that is named.
        "typed_config: tracing, access_log (4 places)",
        "HTTP filter \"envoy.filters.http.lua\"",
    ] {
        assert_eq!(inbound.matches(part).count(), 1, "{part}: {inbound}");
    }
    // istiod's `istio.stats` (TCP and HTTP) decodes.
    assert!(!inbound.contains("istio.stats"), "{inbound}");
    assert_eq!(
        r["listeners"]
            .rejected
            .iter()
            .filter(|(n, _)| n == "virtualInbound")
            .count(),
        1,
        "the failed update Envoy lists twice is one listener"
    );

    // Every cluster istiod sent decodes (auto-mTLS transport_socket_matches, circuit
    // breakers, load balancing, Istio's upstream metadata exchange); only the bootstrap's
    // two Unix-socket clusters are left.
    let clusters = &r["clusters"];
    let rejected: Vec<&str> = clusters.rejected.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        rejected,
        ["sds-grpc", "xds-grpc"],
        "{:?}",
        clusters.rejected
    );
    // Every route configuration istiod sent decodes (a route to a cluster CDS lacks is not
    // checked: istiod sets validate_clusters false).
    assert!(r["route configurations"].rejected.is_empty());
    for secret in ["default", "ROOTCA"] {
        assert!(r["secrets"].reasons(secret).contains("not implemented"));
    }
    assert!(r["endpoints"].reasons("xds-grpc").contains("Unix socket"));
}

#[test]
fn istio_listener_dump() {
    let name = "sidecar-lds-config_dump-httpbin-istio-2023-06.json";
    let run = check_config(&fixture(name));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let r = report(&run);
    assert_eq!(
        counts(&r),
        // The TCP listeners whose only Istio filter is `istio.stats` now decode.
        [(0, 0), (13, 16), (0, 0), (0, 0), (0, 0), (0, 0)],
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("istio.stats"), "{}", run.stdout);
    let inbound = r["listeners"].reasons("virtualInbound");
    assert!(
        inbound.contains("envoy.filters.network.rbac") || inbound.contains("istio_authn"),
        "{inbound}"
    );
    // Istio's DownstreamTlsContext decodes whole, its cipher_suites included.
    assert!(!inbound.contains("tls_params"), "{inbound}");
    assert!(
        r["listeners"]
            .reasons("main_internal")
            .contains("internal_listener")
    );
}

#[test]
fn istio_endpoint_dump() {
    let run = check_config(&fixture(
        "sidecar-eds-config_dump-bookinfo-istio-2022-07.json",
    ));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let r = report(&run);
    assert_eq!(
        counts(&r),
        [(0, 0), (0, 0), (0, 0), (0, 0), (35, 2), (0, 0)],
        "{}",
        run.stdout
    );
    // Only the bootstrap's Unix-socket clusters; every EDS assignment istiod sent is taken.
    let names: Vec<&str> = r["endpoints"]
        .rejected
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, ["sds-grpc", "xds-grpc"]);
}

#[test]
fn l4_bootstrap_is_accepted_whole() {
    let file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xds-client/testdata/l4-bootstrap.yaml");
    let run = check_config(&file);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let r = report(&run);
    assert_eq!(
        counts(&r),
        [(1, 0), (3, 0), (5, 0), (0, 0), (0, 0), (0, 0)],
        "{}",
        run.stdout
    );
}

/// A file in a directory of its own, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(test: &str, name: &str, content: &str) -> TempFile {
        let dir =
            std::env::temp_dir().join(format!("vm-proxy-check-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn unreadable_input_exits_2_naming_the_file_and_the_field() {
    let bad_field = TempFile::new(
        "field",
        "dump.json",
        r#"{"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "static_listeners": [{"listener": {
              "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
              "name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": "x"}}}}]}]}"#,
    );
    let run = check_config(&bad_field.0);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let path = bad_field.0.display().to_string();
    assert!(run.stderr.contains(&path), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("configs[0].static_listeners[0].listener.address.socket_address.port_value"),
        "{}",
        run.stderr
    );

    let bad_bootstrap = TempFile::new(
        "bootstrap",
        "bootstrap.yaml",
        "static_resources:\n  clusters:\n  - name: c\n    connect_timeout: 5\n",
    );
    let run = check_config(&bad_bootstrap.0);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains(&bad_bootstrap.0.display().to_string()),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("static_resources.clusters[0].connect_timeout"),
        "{}",
        run.stderr
    );

    let truncated = TempFile::new("truncated", "dump.json", "{\"configs\": [\n  {\"@type\": ");
    let run = check_config(&truncated.0);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains(&truncated.0.display().to_string()),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);

    let missing = truncated.0.with_file_name("missing.json");
    let run = check_config(&missing);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains(&missing.display().to_string()),
        "{}",
        run.stderr
    );
}
