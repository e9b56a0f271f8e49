//! `vm-proxy run --istio-vm` against real istiod config generation (the test server of
//! `test_support::IstiodServer`), in a VM namespace with istiod on a mesh peer, over Delta
//! and SotW. Each scenario is Istio YAML under `istio-scenarios/` plus an `.expect.json`
//! naming what istiod sends and what vm-proxy currently NACKs (the known gap), so adding one
//! is a YAML file and a few lines here. Checks go through istiod's own account (`syncz`, its
//! per-proxy config dump), our `/config_dump`, and istioctl. Needs root (namespaces) and Go.

mod e2e;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::Value;
use test_support::clients::curl;
use test_support::{IstiodServer, Node, Process, Topology, VmAndMesh, istioctl};

/// istiod may take a moment to answer a new proxy's first requests.
const SYNC_WAIT: Duration = Duration::from_secs(30);
/// The VM's bearer token, which istiod's CA takes for `cart-sa` in `shop`.
const VM_TOKEN: &str = "vm-cart-token";
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

fn fixture(name: &str) -> PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "../xds-client/testdata/istioctl",
        name,
    ]
    .iter()
    .collect()
}

fn scenario_file(name: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "tests/istio-scenarios", name]
        .iter()
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One scenario: `<name>.yaml` (what istiod starts with) and `<name>.expect.json`.
struct Scenario {
    config: String,
    expect: Value,
}

impl Scenario {
    fn load(name: &str) -> Scenario {
        let expect = read(&scenario_file(&format!("{name}.expect.json")));
        Scenario {
            config: read(&scenario_file(&format!("{name}.yaml"))),
            expect: serde_json::from_str(&expect).unwrap_or_else(|e| panic!("{name}: {e}")),
        }
    }

    fn str(&self, key: &str) -> &str {
        self.expect[key]
            .as_str()
            .unwrap_or_else(|| panic!("expect.json: no string {key}"))
    }

    fn sent(&self, kind: &str) -> BTreeSet<String> {
        names(&self.expect["sent"][kind])
    }

    /// The known gap: rejected resource → words its reason names.
    fn nacked(&self, kind: &str) -> BTreeMap<String, Vec<String>> {
        let map = self.expect["nacked"][kind]
            .as_object()
            .unwrap_or_else(|| panic!("expect.json: no nacked.{kind}"));
        map.iter()
            .map(|(k, v)| (k.clone(), names(v).into_iter().collect()))
            .collect()
    }
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_string()
        })
        .collect()
}

/// A VM joined to real istiod: istiod on the mesh node, vm-proxy on the VM node.
struct Mesh {
    // Field order is drop order: the proxy, then istiod, then the namespaces.
    proxy: Process,
    istiod: IstiodServer,
    _files: ConfigDir,
    nodes: VmAndMesh,
    started: Instant,
}

impl Mesh {
    fn start(scenario: &Scenario, delta: bool) -> Mesh {
        let started = Instant::now();
        let nodes = Topology::vm_and_mesh();
        // The VM's certificate comes from istiod's own CA, on the mesh namespace's address
        // like istiod's 15012; xDS stays plaintext (istiod's 15010).
        let istiod = IstiodServer::builder()
            .config(scenario.config.clone())
            .listen(nodes.mesh.addr(0))
            .secure_listen(SocketAddr::new(nodes.mesh.addr(0).ip(), 0))
            .token(VM_TOKEN, "spiffe://cluster.local/ns/shop/sa/cart-sa")
            .netns(&nodes.mesh)
            .start();
        eprintln!("istiod up after {:?}", started.elapsed());
        // The WorkloadEntry of the VM comes from the scenario, as in Istio's docs for manual
        // registration: auto-registration needs an identity istiod verified, which plaintext
        // xDS has none of.
        let files = ConfigDir::new();
        for name in ["cluster.env", "mesh.yaml"] {
            let mut text: String = read(&fixture(name))
                .lines()
                .filter(|l| !l.contains("AUTO_REGISTER_GROUP") && !l.starts_with("CA_ADDR="))
                .map(|l| format!("{l}\n"))
                .collect();
            if name == "cluster.env" {
                let ca = istiod.secure_addr.expect("istiod's CA address");
                text.push_str(&format!(
                    "CA_ADDR='{ca}'\nISTIOD_SAN='istiod.istio-system.svc'\n\
                     PROV_CERT='{dir}'\nOUTPUT_CERTS='{dir}/out'\n",
                    dir = files.path().display()
                ));
            }
            files.write(name, &text);
        }
        files.write("istio-token", VM_TOKEN);
        let root = istiod.root_cert().expect("istiod's root certificate");
        let mut argv: Vec<String> = vec!["run".into(), "--istio-vm".into()];
        let own = |f: &str| files.path().join(f).display().to_string();
        let shared = |f: &str| fixture(f).display().to_string();
        for (flag, file) in [
            ("--cluster-env", own("cluster.env")),
            ("--mesh-config", own("mesh.yaml")),
            ("--sidecar-env", shared("no-sidecar.env")),
            ("--token", own("istio-token")),
            ("--root-cert", root.display().to_string()),
            ("--xds-plaintext", istiod.xds_addr.to_string()),
        ] {
            argv.push(flag.into());
            argv.push(file);
        }
        let proxy = nodes
            .vm
            .process(BIN)
            .args(&argv)
            .env("POD_NAME", scenario.str("pod_name"))
            .env("ISTIO_DELTA_XDS", if delta { "true" } else { "false" })
            .env("RUST_LOG", "info,xds_client=debug")
            .spawn();
        Mesh {
            proxy,
            istiod,
            _files: files,
            nodes,
            started,
        }
    }

    fn vm(&self) -> &Node {
        &self.nodes.vm
    }

    /// istiod's `syncz` entry for `node`, once it has had an answer (ACK or NACK) for the
    /// latest CDS and LDS it sent.
    fn synced(&mut self, node: &str) -> Value {
        self.syncz_until(node, "CDS and LDS answered", |e| {
            [CDS, LDS].iter().all(|t| answered(&e["resources"][*t]))
        })
    }

    /// istiod's `syncz` entry for `node` once `done` holds for it.
    fn syncz_until(&mut self, node: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + SYNC_WAIT;
        loop {
            let syncz = self.istiod.debug("syncz").unwrap();
            let all: Value = serde_json::from_str(&syncz).unwrap();
            let entry = all
                .as_array()
                .and_then(|a| a.iter().find(|e| e["proxy"] == node))
                .cloned();
            if let Some(e) = entry
                && done(&e)
            {
                eprintln!("{node}: {what} {:?} after start", self.started.elapsed());
                return e;
            }
            if let Ok(Some(status)) = self.proxy.try_status() {
                panic!("vm-proxy exited ({status}):\n{}", self.proxy.logs());
            }
            assert!(
                Instant::now() < deadline,
                "{node}: not {what} within {SYNC_WAIT:?}; syncz: {syncz}\n{}",
                self.proxy.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Our `/config_dump`, raw.
    fn config_dump(&self) -> Vec<u8> {
        let out = curl(self.vm(), &["http://127.0.0.1:15000/config_dump"], WAIT).unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        out.stdout
    }

    /// What istiod generated for `node` (its debug config dump, Envoy's JSON in camelCase).
    fn istiod_dump(&self, node: &str) -> Value {
        let text = self
            .istiod
            .debug(&format!("config_dump?proxyID={node}"))
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// True when the proxy has answered the latest push of this type: ACKed its nonce or NACKed.
fn answered(status: &Value) -> bool {
    let sent = status["sent"].as_str().unwrap_or_default();
    !sent.is_empty() && (status["acked"] == sent || status["lastError"].as_str().is_some())
}

/// Splits a NACK's error detail (`cluster "a": reason; reason; cluster "b": ...`) into the
/// reasons per resource.
fn reasons_by_resource(detail: &str, kind: &str) -> BTreeMap<String, String> {
    let prefix = format!("{kind} \"");
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for part in detail.split("; ") {
        if let Some(rest) = part.strip_prefix(&prefix)
            && let Some((name, reason)) = rest.split_once("\": ")
        {
            current = Some(name.to_string());
            out.insert(name.to_string(), reason.to_string());
        } else if let Some(name) = &current {
            let reason = out.entry(name.clone()).or_default();
            reason.push_str("; ");
            reason.push_str(part);
        } else {
            panic!("NACK detail does not start with a {kind}: {detail}");
        }
    }
    out
}

/// Names in one list of a config dump section, each at `path` in its entry, e.g.
/// `dynamic_active_clusters[].cluster.name`.
fn dump_names(dump: &Value, section: &str, list: &str, path: &[&str]) -> BTreeSet<String> {
    let configs = dump["configs"].as_array().expect("configs");
    let section = configs
        .iter()
        .find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(section)))
        .unwrap_or_else(|| panic!("no {section} in {dump}"));
    let entries = section[list].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            let name = path.iter().fold(e, |v, key| &v[*key]);
            name.as_str()
                .unwrap_or_else(|| panic!("no {path:?} in {e}"))
                .to_string()
        })
        .collect()
}

/// The rows `istioctl proxy-config listener` prints for our dump: one per filter chain
/// (the default chain included) of every dynamic listener.
fn chain_rows(dump: &Value) -> usize {
    let configs = dump["configs"].as_array().expect("configs");
    configs
        .iter()
        .filter(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("ListenersConfigDump"))
        })
        .flat_map(|c| {
            c["dynamic_listeners"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|l| {
            let l = &l["active_state"]["listener"];
            l["filter_chains"].as_array().map_or(0, Vec::len)
                + usize::from(l.get("default_filter_chain").is_some())
        })
        .sum()
}

/// istiod's account of one type for our node matches the scenario's known gap: exactly the
/// expected resources are rejected, each for (at least) the expected reasons, every reason
/// says what is not supported (or names a cluster we rejected), and everything else sent is
/// what our config dump holds. Returns the rejected names.
fn check_type(
    scenario: &Scenario,
    status: &Value,
    kind: &str,
    plural: &str,
    ours: &BTreeSet<String>,
    rejected_clusters: &BTreeSet<String>,
) -> BTreeSet<String> {
    let sent = scenario.sent(plural);
    let gap = scenario.nacked(plural);
    let detail = status["lastError"].as_str().unwrap_or_default();
    let rejected = if detail.is_empty() {
        BTreeMap::new()
    } else {
        reasons_by_resource(detail, kind)
    };
    eprintln!("{plural} NACKed by vm-proxy ({}):", rejected.len());
    for (name, reason) in &rejected {
        eprintln!("  {name}: {reason}");
    }
    assert_eq!(
        rejected.keys().collect::<BTreeSet<_>>(),
        gap.keys().collect::<BTreeSet<_>>(),
        "{plural} NACKed vs the known gap in expect.json"
    );
    for (name, words) in &gap {
        let reason = &rejected[name];
        for w in words {
            assert!(reason.contains(w.as_str()), "{name}: {w:?} not in {reason}");
        }
        // Every reason is a gap of ours, or the knock-on of one: a reference to a cluster
        // we rejected ourselves.
        for each in reason.split("; ") {
            let knock_on = rejected_clusters
                .iter()
                .any(|c| each.ends_with(&format!("unknown cluster \"{c}\"")));
            assert!(each.contains("not supported") || knock_on, "{name}: {each}");
        }
    }
    let accepted: BTreeSet<String> = sent
        .iter()
        .filter(|n| !gap.contains_key(*n))
        .cloned()
        .collect();
    assert_eq!(ours, &accepted, "{plural} in our /config_dump");
    rejected.into_keys().collect()
}

/// The leading columns istioctl prints for cluster `name` (SERVICE FQDN, PORT, SUBSET,
/// DIRECTION): Istio's `direction|port|subset|fqdn` names are split, with an empty FQDN
/// (inbound clusters) left out as whitespace; other names stand alone.
fn istioctl_cluster_row(name: &str) -> Vec<&str> {
    match name.split('|').collect::<Vec<_>>()[..] {
        [direction, port, subset, fqdn] => {
            let subset = if subset.is_empty() { "-" } else { subset };
            let mut row: Vec<&str> = [fqdn].into_iter().filter(|f| !f.is_empty()).collect();
            row.extend([port, subset, direction]);
            row
        }
        _ => vec![name, "-", "-", "-"],
    }
}

fn run_scenario(name: &str, delta: bool) {
    let scenario = Scenario::load(name);
    let node = scenario.str("node").to_string();
    let mut mesh = Mesh::start(&scenario, delta);
    let status = mesh.synced(&node);

    // What istiod sent: its own dump for our node.
    let generated = mesh.istiod_dump(&node);
    let clusters = dump_names(
        &generated,
        "ClustersConfigDump",
        "dynamicActiveClusters",
        &["cluster", "name"],
    );
    let listeners = dump_names(
        &generated,
        "ListenersConfigDump",
        "dynamicListeners",
        &["name"],
    );
    eprintln!("istiod sent clusters {clusters:?}, listeners {listeners:?}");
    assert!(clusters.contains(scenario.str("outbound_cluster")));
    assert_eq!(clusters, scenario.sent("clusters"));
    assert_eq!(listeners, scenario.sent("listeners"));

    // What we accepted and rejected.
    let raw = mesh.config_dump();
    let ours: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        ours["configs"][0]["bootstrap"]["node"]["metadata"]["NAME"],
        scenario.str("pod_name")
    );
    let our_clusters = dump_names(
        &ours,
        "ClustersConfigDump",
        "dynamic_active_clusters",
        &["cluster", "name"],
    );
    let our_listeners = dump_names(&ours, "ListenersConfigDump", "dynamic_listeners", &["name"]);
    let cds = &status["resources"][CDS];
    let rejected = check_type(
        &scenario,
        cds,
        "cluster",
        "clusters",
        &our_clusters,
        &BTreeSet::new(),
    );
    let lds = &status["resources"][LDS];
    check_type(
        &scenario,
        lds,
        "listener",
        "listeners",
        &our_listeners,
        &rejected,
    );

    // istioctl reads our dump like Envoy's.
    let files = ConfigDir::new();
    let dump_file = files.write("config_dump.json", &String::from_utf8_lossy(&raw));
    let dump_arg = dump_file.display().to_string();
    let out = istioctl(&["proxy-config", "cluster", "-f", &dump_arg]).unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("istioctl proxy-config cluster -f:\n{table}");
    for c in &our_clusters {
        let row = istioctl_cluster_row(c);
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().take(row.len()).eq(row.iter().copied())),
            "{c} (as {row:?}) not in\n{table}"
        );
    }
    let out = istioctl(&["proxy-config", "listener", "-f", &dump_arg]).unwrap();
    if our_listeners.is_empty() {
        // What istioctl says of an Envoy without listeners, too.
        assert!(!out.status.success(), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no listeners found"), "{}", describe(&out));
    } else {
        assert!(out.status.success(), "{}", describe(&out));
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("istioctl proxy-config listener -f:\n{table}");
        assert_eq!(
            table
                .lines()
                .skip(1)
                .filter(|l| !l.trim().is_empty())
                .count(),
            chain_rows(&ours),
            "one row per filter chain of the listeners we hold:\n{table}"
        );
    }

    // istioctl proxy-status, from the VM as a user would run it against istiod.
    let xds: SocketAddr = mesh.istiod.xds_addr;
    let out = mesh
        .vm()
        .in_ns(move || {
            let addr = xds.to_string();
            istioctl(&[
                "proxy-status",
                "--xds-address",
                &addr,
                "--plaintext",
                "--revision",
                "default",
            ])
            .unwrap()
        })
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("istioctl proxy-status:\n{table}");
    let row: Vec<&str> = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&node.as_str()))
        .unwrap_or_else(|| panic!("{node} not in\n{table}"));
    // NAME CLUSTER [ISTIOD, empty here] VERSION SUBSCRIBED TYPES
    let expected = scenario.str("proxy_status");
    assert_eq!(row[1..].join(" "), expected, "{table}");

    if let Some(push) = scenario.expect["push"].as_str() {
        check_push(&mut mesh, &scenario, &node, push, &our_clusters);
    }

    eprintln!(
        "scenario {name} (delta: {delta}) done in {:?}",
        mesh.started.elapsed()
    );
    stop_proxy(&mut mesh.proxy);
}

/// Pushes: a service added and removed through istiod's config store (`push`) reach the
/// proxy, and each is answered, with reasons naming exactly what is in the push.
fn check_push(
    mesh: &mut Mesh,
    scenario: &Scenario,
    node: &str,
    push: &str,
    our_clusters: &BTreeSet<String>,
) {
    let push = read(&scenario_file(push));
    let pushed = scenario.str("pushed_cluster");
    let cds_error = |e: &Value| {
        let detail = e["resources"][CDS]["lastError"]
            .as_str()
            .unwrap_or_default();
        if detail.is_empty() {
            BTreeMap::new()
        } else {
            reasons_by_resource(detail, "cluster")
        }
    };
    let applied = mesh.istiod.apply(&push).unwrap();
    eprintln!("applied: {}", applied.trim_end());
    // The pushed service's cluster is accepted (it is of the kinds the scenario already
    // holds) and appears in our dump; its removal takes it out again.
    let has_pushed = |mesh: &Mesh| {
        let ours: Value = serde_json::from_slice(&mesh.config_dump()).unwrap();
        dump_names(
            &ours,
            "ClustersConfigDump",
            "dynamic_active_clusters",
            &["cluster", "name"],
        )
        .contains(pushed)
    };
    wait_for(mesh, "the pushed cluster in our /config_dump", |m| {
        has_pushed(m)
    });
    let after = mesh.syncz_until(node, "ACKed the push", |e| {
        !cds_error(e).contains_key(pushed)
    });
    eprintln!(
        "answer to the push: {}",
        after["resources"][CDS]["lastError"]
    );
    let deleted = mesh.istiod.delete(&push).unwrap();
    eprintln!("deleted: {}", deleted.trim_end());
    wait_for(
        mesh,
        "the removed cluster gone from our /config_dump",
        |m| !has_pushed(m),
    );
    let after = mesh.syncz_until(node, "answered the removal", |e| {
        !cds_error(e).contains_key(pushed)
    });
    eprintln!(
        "answer to the removal: {}",
        after["resources"][CDS]["lastError"]
    );
    let known = scenario.nacked("clusters");
    for name in cds_error(&after).keys() {
        assert!(known.contains_key(name), "{name} NACKed after the removal");
    }
    let ours: Value = serde_json::from_slice(&mesh.config_dump()).unwrap();
    assert_eq!(
        dump_names(
            &ours,
            "ClustersConfigDump",
            "dynamic_active_clusters",
            &["cluster", "name"]
        ),
        *our_clusters,
        "what we accepted survives the pushes"
    );
}

/// Polls `done` on the mesh every 100 ms, at most [`SYNC_WAIT`].
fn wait_for(mesh: &Mesh, what: &str, done: impl Fn(&Mesh) -> bool) {
    let deadline = Instant::now() + SYNC_WAIT;
    while !done(mesh) {
        assert!(
            Instant::now() < deadline,
            "not {what} within {SYNC_WAIT:?}\n{}",
            mesh.proxy.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn real_istiod_tcp_static_over_delta() {
    run_scenario("vm-tcp-static", true);
}

#[test]
fn real_istiod_tcp_static_over_sotw() {
    run_scenario("vm-tcp-static", false);
}

#[test]
fn real_istiod_http_over_delta() {
    run_scenario("vm-http", true);
}

#[test]
fn real_istiod_http_over_sotw() {
    run_scenario("vm-http", false);
}
