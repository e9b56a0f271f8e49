//! The whole VM bootstrap from istioctl's files: node id, metadata, PROXY_CONFIG, addresses,
//! precedence of the environment layers, and errors that name the file or variable.

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::Scratch;
use crate::ads::Protocol;
use crate::istio::{Host, IstioError, VmBootstrap, VmEnv, VmPaths};

/// A VM directory holding copies of the istioctl fixtures, which tests may replace.
struct Vm {
    dir: Scratch,
    env: Vec<(String, String)>,
    host: Host,
}

impl Vm {
    fn new() -> Vm {
        let dir = Scratch::new("vm");
        for name in ["cluster.env", "mesh.yaml", "istio-token", "root-cert.pem"] {
            std::fs::copy(super::fixtures().join(name), dir.path(name)).unwrap();
        }
        Vm {
            dir,
            env: Vec::new(),
            host: host(&["10.128.0.7", "192.168.5.5", "fd00::7"]),
        }
    }

    fn paths(&self) -> VmPaths {
        VmPaths {
            sidecar_env: self.dir.path("sidecar.env"),
            cluster_env: self.dir.path("cluster.env"),
            mesh_config: self.dir.path("mesh.yaml"),
            token: self.dir.path("istio-token"),
            root_cert: Some(self.dir.path("root-cert.pem")),
        }
    }

    fn inherit(mut self, name: &str, value: &str) -> Vm {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Adds lines to cluster.env, as operators do by hand.
    fn append(self, lines: &str) -> Vm {
        let path = self.dir.path("cluster.env");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(lines);
        std::fs::write(&path, text).unwrap();
        self
    }

    fn cluster_env_without(self, name: &str) -> Vm {
        let path = self.dir.path("cluster.env");
        let text: String = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with(&format!("{name}=")))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, text).unwrap();
        self
    }

    fn load(&self) -> Result<VmBootstrap, IstioError> {
        self.load_paths(&self.paths())
    }

    fn load_paths(&self, paths: &VmPaths) -> Result<VmBootstrap, IstioError> {
        VmBootstrap::load_with(paths, VmEnv::from_vars(self.env.clone()), &self.host)
    }

    fn ok(&self) -> VmBootstrap {
        self.load().unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(&self) -> String {
        match self.load() {
            Ok(b) => panic!("loaded: {}", b.node.id()),
            Err(e) => e.to_string(),
        }
    }
}

fn host(ips: &[&str]) -> Host {
    Host {
        short_name: "vm-1".into(),
        addresses: ips.iter().map(|ip| ip.parse::<IpAddr>().unwrap()).collect(),
    }
}

fn metadata(b: &VmBootstrap) -> Value {
    let node = b.node.to_node();
    crate::proto::to_json(&node.metadata.unwrap()).unwrap()
}

#[test]
fn the_istioctl_files_make_the_node_pilot_agent_would_send() {
    let b = Vm::new().ok();
    let node = b.node.to_node();
    assert_eq!(
        node.id,
        "sidecar~10.128.0.7~vm-1.shop~shop.svc.cluster.local"
    );
    assert_eq!(node.cluster, "cart.shop");
    let labels = json!({
        "app": "cart",
        "service.istio.io/canonical-name": "cart",
        "service.istio.io/canonical-revision": "v1",
        "version": "v1",
    });
    let proxy_config = json!({
        "configPath": "./etc/istio/proxy",
        "serviceCluster": "cart.shop",
        "drainDuration": "45s",
        "terminationDrainDuration": "5s",
        "proxyAdminPort": 15000.0,
        "controlPlaneAuthPolicy": "MUTUAL_TLS",
        "discoveryAddress": "istiod-canary.istio-system.svc:15012",
        "statNameLength": 189.0,
        "statusPort": 15020.0,
        "meshId": "mesh-1",
        "proxyMetadata": {
            "CANONICAL_REVISION": "v1",
            "CANONICAL_SERVICE": "cart",
            "ISTIO_META_AUTO_REGISTER_GROUP": "cart",
            "ISTIO_META_CLUSTER_ID": "cluster-east",
            "ISTIO_META_DNS_CAPTURE": "true",
            "ISTIO_META_MESH_ID": "mesh-1",
            "ISTIO_META_NETWORK": "vm-net",
            "ISTIO_META_POD_PORTS": "[{\"name\":\"grpc\",\"containerPort\":9090},{\"name\":\"http\",\"containerPort\":8080}]",
            "ISTIO_META_WORKLOAD_NAME": "cart",
            "ISTIO_METAJSON_LABELS": "{\"app\":\"cart\",\"service.istio.io/canonical-name\":\"cart\",\"service.istio.io/canonical-revision\":\"v1\",\"version\":\"v1\"}",
            "POD_NAMESPACE": "shop",
            "SERVICE_ACCOUNT": "cart-sa",
            "TRUST_DOMAIN": "cluster.local",
        },
        "readinessProbe": {"httpGet": {"port": 8080.0}, "periodSeconds": 5.0},
        "tracing": {"zipkin": {"address": "zipkin.istio-system:9411"}},
    });
    let mut expected = json!({
        "ISTIO_VERSION": "1.31.0",
        "CLUSTER_ID": "cluster-east",
        "NAMESPACE": "shop",
        "NAME": "vm-1",
        "SERVICE_ACCOUNT": "cart-sa",
        "WORKLOAD_NAME": "cart",
        "MESH_ID": "mesh-1",
        "NETWORK": "vm-net",
        "AUTO_REGISTER_GROUP": "cart",
        "DNS_CAPTURE": "true",
        "POD_PORTS": "[{\"name\":\"grpc\",\"containerPort\":9090},{\"name\":\"http\",\"containerPort\":8080}]",
        "INSTANCE_IPS": "10.128.0.7,192.168.5.5,fd00::7",
        "ENVOY_STATUS_PORT": 15021.0,
        "ENVOY_PROMETHEUS_PORT": 15090.0,
        "LABELS": labels,
        "STATIC_LABELS": labels,
        // ISTIO_METAJSON_LABELS is also merged into the top level, as pilot-agent does.
        "app": "cart",
        "service.istio.io/canonical-name": "cart",
        "service.istio.io/canonical-revision": "v1",
        "version": "v1",
    });
    expected["PROXY_CONFIG"] = proxy_config;
    assert_eq!(metadata(&b), expected);
}

#[test]
fn addresses_paths_and_settings() {
    let vm = Vm::new();
    let b = vm.ok();
    assert_eq!(b.discovery_address, "istiod-canary.istio-system.svc:15012");
    assert_eq!(b.ca_address, "istiod-canary.istio-system.svc:15012");
    assert_eq!(b.admin, "127.0.0.1:15000".parse().unwrap());
    assert_eq!(b.protocol, Protocol::Delta);
    assert_eq!(b.drain_duration, std::time::Duration::from_secs(5));
    assert_eq!(b.concurrency, None);
    assert_eq!(b.token_path, vm.dir.path("istio-token"));
    assert_eq!(b.root_cert_path, vm.dir.path("root-cert.pem"));
    // What istio-start.sh hands pilot-agent and istio-iptables.
    for (name, value) in [
        ("INSTANCE_IP", "10.128.0.7"),
        ("POD_NAME", "vm-1"),
        ("POD_NAMESPACE", "shop"),
        ("CA_ADDR", "istiod-canary.istio-system.svc:15012"),
        ("ISTIO_INBOUND_PORTS", "8080,9090"),
        ("ISTIO_LOCAL_EXCLUDE_PORTS", "22,15090,15021,15020"),
        ("ISTIO_SERVICE_CIDR", "*"),
        ("PROV_CERT", "/etc/certs"),
    ] {
        assert_eq!(b.env.get(name), Some(value), "{name}");
    }
    let overlay: Value = serde_json::from_str(b.env.get("PROXY_CONFIG").unwrap()).unwrap();
    assert_eq!(
        overlay,
        json!({"serviceCluster": "cart.shop", "controlPlaneAuthPolicy": "MUTUAL_TLS"})
    );
}

#[test]
fn the_root_certificate_follows_prov_cert_unless_named() {
    let vm = Vm::new().append("PROV_CERT='/opt/istio/certs'\n");
    let mut paths = vm.paths();
    paths.root_cert = None;
    let b = vm.load_paths(&paths).unwrap();
    assert_eq!(
        b.root_cert_path,
        PathBuf::from("/opt/istio/certs/root-cert.pem")
    );
    let vm = Vm::new();
    let mut paths = vm.paths();
    paths.root_cert = None;
    let b = vm.load_paths(&paths).unwrap();
    assert_eq!(b.root_cert_path, PathBuf::from("/etc/certs/root-cert.pem"));
}

#[test]
fn files_override_the_inherited_environment_and_cluster_env_overrides_sidecar_env() {
    let vm = Vm::new()
        .inherit("ISTIO_NAMESPACE", "from-process")
        .inherit("ISTIO_META_FOO", "process")
        .inherit("ISTIO_META_ONLY_PROCESS", "p")
        .inherit("POD_NAME", "named-by-env");
    vm.dir.write(
        "sidecar.env",
        "# package defaults\nISTIO_META_FOO=sidecar\nISTIO_META_BAR=sidecar\nISTIO_NAMESPACE=from-sidecar\n",
    );
    let vm = vm.append("ISTIO_META_BAR='cluster'\n");
    let b = vm.ok();
    let m = metadata(&b);
    assert_eq!(m["NAMESPACE"], "shop", "cluster.env wins");
    assert_eq!(m["FOO"], "sidecar", "sidecar.env beats the process");
    assert_eq!(m["BAR"], "cluster");
    assert_eq!(m["ONLY_PROCESS"], "p");
    assert_eq!(
        m["NAME"], "named-by-env",
        "POD_NAME, when set, replaces hostname -s"
    );
    assert_eq!(
        b.node.id(),
        "sidecar~10.128.0.7~named-by-env.shop~shop.svc.cluster.local"
    );
}

#[test]
fn without_istio_svc_ip_the_first_host_address_is_the_instance_ip() {
    let mut vm = Vm::new().cluster_env_without("ISTIO_SVC_IP");
    vm.host = host(&["192.168.5.5", "10.128.0.7"]);
    let b = vm.ok();
    assert_eq!(
        b.node.id(),
        "sidecar~192.168.5.5~vm-1.shop~shop.svc.cluster.local"
    );
    assert_eq!(metadata(&b)["INSTANCE_IPS"], "192.168.5.5,10.128.0.7");
    vm.host = host(&[]);
    assert_eq!(
        vm.err(),
        "ISTIO_SVC_IP is not set and this machine has no address other than loopback or link-local"
    );
}

#[test]
fn a_custom_pilot_address_replaces_the_mesh_discovery_address() {
    let b = Vm::new().append("ISTIO_PILOT_PORT=15010\n").ok();
    assert_eq!(b.discovery_address, "istiod.istio-system.svc:15010");
    assert_eq!(
        b.ca_address, "istiod-canary.istio-system.svc:15012",
        "CA_ADDR stays"
    );

    let b = Vm::new()
        .cluster_env_without("CA_ADDR")
        .append("PILOT_ADDRESS='istiod.example.com:443'\n")
        .ok();
    assert_eq!(b.discovery_address, "istiod.example.com:443");
    assert_eq!(
        b.ca_address, "istiod.example.com:443",
        "CA_ADDR defaults to it"
    );

    let b = Vm::new().cluster_env_without("CA_ADDR").ok();
    assert_eq!(b.ca_address, "istiod.istio-system.svc:15012");
    assert_eq!(b.discovery_address, "istiod-canary.istio-system.svc:15012");
}

#[test]
fn an_inherited_proxy_config_is_the_overlay() {
    let b = Vm::new()
        .inherit("PROXY_CONFIG", "serviceCluster: custom.shop\nconcurrency: 3\nterminationDrainDuration: 20s\nproxyAdminPort: 15100\n")
        .ok();
    assert_eq!(b.node.to_node().cluster, "custom.shop");
    assert_eq!(b.concurrency, Some(3));
    assert_eq!(b.drain_duration, std::time::Duration::from_secs(20));
    assert_eq!(b.admin, "127.0.0.1:15100".parse().unwrap());
}

#[test]
fn proxy_metadata_in_the_mesh_file_is_passed_through_below_the_environment() {
    let vm = Vm::new();
    vm.dir.write(
        "mesh.yaml",
        "defaultConfig:\n  proxyMetadata:\n    ISTIO_META_DNS_AUTO_ALLOCATE: \"true\"\n    ISTIO_META_NETWORK: mesh-net\n    NOT_META: x\n",
    );
    let b = vm.ok();
    let m = metadata(&b);
    assert_eq!(m["DNS_AUTO_ALLOCATE"], "true");
    assert_eq!(
        m["NETWORK"], "vm-net",
        "cluster.env's ISTIO_META_NETWORK wins"
    );
    assert!(m.get("NOT_META").is_none());
    assert_eq!(
        b.discovery_address, "istiod.istio-system.svc:15012",
        "Istio's default"
    );
}

#[test]
fn service_cluster_falls_back_like_pilot_agent() {
    let b = Vm::new()
        .inherit("PROXY_CONFIG", "serviceCluster: istio-proxy\n")
        .ok();
    assert_eq!(
        b.node.to_node().cluster,
        "cart.shop",
        "app label . namespace"
    );
}

#[test]
fn empty_metadata_values_are_sent_as_pilot_agent_sends_them() {
    let b = Vm::new()
        .append("ISTIO_META_MESH_ID=''\nISTIO_META_ISTIO_VERSION='1.30.2'\n")
        .ok();
    let m = metadata(&b);
    assert_eq!(m["MESH_ID"], "");
    assert_eq!(m["ISTIO_VERSION"], "1.30.2", "an explicit version wins");
}

#[test]
fn delta_xds_can_be_turned_off() {
    let b = Vm::new().append("ISTIO_DELTA_XDS=false\n").ok();
    assert_eq!(b.protocol, Protocol::StateOfTheWorld);
    let vm = Vm::new().append("ISTIO_DELTA_XDS=maybe\n");
    let e = vm.err();
    let at = format!("{}:21", vm.dir.path("cluster.env").display());
    assert_eq!(
        e,
        format!("ISTIO_DELTA_XDS=\"maybe\" (set in {at}): not a boolean (true or false)")
    );
}

#[test]
fn bad_files_and_values_are_named() {
    let vm = Vm::new().append("ISTIO_SVC_IP='10.0.0.300'\n");
    let cluster_env = vm.dir.path("cluster.env").display().to_string();
    assert_eq!(
        vm.err(),
        format!("ISTIO_SVC_IP=\"10.0.0.300\" (set in {cluster_env}:21): invalid IP address syntax")
    );

    let vm = Vm::new().append("ISTIO_METAJSON_LABELS='{\"app\":'\n");
    let cluster_env = vm.dir.path("cluster.env").display().to_string();
    let e = vm.err();
    assert!(
        e.starts_with("ISTIO_METAJSON_LABELS=")
            && e.contains(&format!("(set in {cluster_env}:21): not JSON")),
        "{e}"
    );

    let vm = Vm::new().append("ISTIO_METAJSON_LABELS='{\"app\":1}'\n");
    assert!(
        vm.err().contains("labels must be a JSON object of strings"),
        "{}",
        vm.err()
    );

    let vm = Vm::new().append("\nBROKEN=$HOME\n");
    let cluster_env = vm.dir.path("cluster.env").display().to_string();
    assert_eq!(
        vm.err(),
        format!(
            "{cluster_env}:22: variable expansion ($) is not supported: single-quote the value"
        )
    );

    let vm = Vm::new();
    vm.dir.write("sidecar.env", "ok=1\nexport\nbad='\n");
    let e = vm.err();
    assert!(
        e.starts_with(&format!(
            "{}:3: unterminated",
            vm.dir.path("sidecar.env").display()
        )),
        "{e}"
    );

    let vm = Vm::new();
    vm.dir
        .write("mesh.yaml", "defaultConfig:\n  statusPort: [\n");
    let e = vm.err();
    assert!(
        e.starts_with(&format!(
            "{}: not a YAML document",
            vm.dir.path("mesh.yaml").display()
        )),
        "{e}"
    );

    let vm = Vm::new();
    let mut paths = vm.paths();
    paths.mesh_config = vm.dir.path("");
    let e = vm.load_paths(&paths).unwrap_err().to_string();
    assert!(e.starts_with("reading mesh config "), "{e}");

    let vm = Vm::new();
    let mut paths = vm.paths();
    paths.cluster_env = vm.dir.path("nowhere.env");
    let e = vm.load_paths(&paths).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: no such file", paths.cluster_env.display())),
        "{e}"
    );
}

#[test]
fn without_plaintext_xds_goes_over_tls_to_the_discovery_address() {
    let vm = Vm::new().ok();
    assert!(vm.xds_over_tls(None));
    assert!(!vm.xds_over_tls(Some("127.0.0.1:15010".parse().unwrap())));
    // The address is resolved for the bootstrap's xds-grpc cluster, as for plaintext.
    let e = vm.load_config(None).unwrap_err().to_string();
    assert!(
        e.starts_with("discoveryAddress istiod-canary.istio-system.svc:15012: cannot resolve: "),
        "{e}"
    );
    let vm = Vm::new()
        .inherit("PROXY_CONFIG", "discoveryAddress: localhost:15012\n")
        .ok();
    assert!(vm.xds_over_tls(None));
    let ads = vm.load_config(None).unwrap().ads.unwrap();
    assert!(ads.server.ip().is_loopback() && ads.server.port() == 15012);
}

#[test]
fn control_plane_auth_none_is_plaintext_to_the_discovery_address() {
    let plain = |address: &str| {
        Vm::new()
            .inherit(
                "PROXY_CONFIG",
                &format!("controlPlaneAuthPolicy: NONE\ndiscoveryAddress: {address}\n"),
            )
            .ok()
            .load_config(None)
    };
    let ads = plain("127.0.0.1:15010").unwrap().ads.unwrap();
    assert_eq!(ads.server, "127.0.0.1:15010".parse().unwrap());
    // Names go through the system resolver (and so /etc/hosts).
    let ads = plain("localhost:15010").unwrap().ads.unwrap();
    assert!(
        ads.server.ip().is_loopback() && ads.server.port() == 15010,
        "{}",
        ads.server
    );
    let e = plain("istiod-without-port").unwrap_err().to_string();
    assert!(
        e.starts_with("discoveryAddress istiod-without-port: cannot resolve: "),
        "{e}"
    );
}

#[test]
fn the_generated_bootstrap_runs_admin_and_follows_ads() {
    let b = Vm::new().ok();
    let loaded = b
        .load_config(Some("127.0.0.1:15010".parse().unwrap()))
        .unwrap();
    assert_eq!(
        loaded.snapshot.admin,
        Some("127.0.0.1:15000".parse().unwrap())
    );
    assert!(
        loaded.snapshot.listeners.is_empty(),
        "15021/15090 are not faked"
    );
    let names: Vec<&str> = loaded
        .snapshot
        .clusters
        .keys()
        .map(|k| k.as_ref())
        .collect();
    assert_eq!(names, ["xds-grpc"]);
    let ads = loaded.ads.expect("ADS");
    assert_eq!(ads.server, "127.0.0.1:15010".parse().unwrap());
    assert_eq!(ads.protocol, Protocol::Delta);
    assert!(ads.clusters && ads.listeners && ads.node_on_first_message_only);
    let config = ads.client_config();
    assert_eq!(config.server, "http://127.0.0.1:15010");
    assert_eq!(config.node, b.node.to_node());

    let dump = loaded.dump.to_json();
    let node = &dump["configs"][0]["bootstrap"]["node"];
    assert_eq!(
        node["id"],
        "sidecar~10.128.0.7~vm-1.shop~shop.svc.cluster.local"
    );
    assert_eq!(
        node["metadata"]["PROXY_CONFIG"]["discoveryAddress"],
        "istiod-canary.istio-system.svc:15012"
    );
    assert_eq!(node["metadata"]["LABELS"]["app"], "cart");

    let b = Vm::new().append("ISTIO_DELTA_XDS=0\n").ok();
    let ads = b
        .load_config(Some("127.0.0.1:15010".parse().unwrap()))
        .unwrap()
        .ads
        .unwrap();
    assert_eq!(ads.protocol, Protocol::StateOfTheWorld);
}
