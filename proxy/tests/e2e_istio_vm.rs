//! `vm-proxy run --istio-vm` as a process inside a namespace of its own, bootstrapped from
//! istioctl-shaped files against the test control plane: the node istiod would see on the
//! first request, and a pushed tcp_proxy listener carrying traffic. Needs root (namespaces).

mod e2e;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use e2e::*;
use serde_json::Value;
use test_support::ads_server::resources::{static_cluster, tcp_listener};
use test_support::clients::curl;
use test_support::{AdsServer, Netns, TcpServer, TestCa, TestCaOptions, TestPki, tcp_exchange};

fn fixture(name: &str) -> PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "../xds-client/testdata/istioctl",
        name,
    ]
    .iter()
    .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `vm-proxy run --istio-vm` with every file named (the fixtures, `cluster_env` and
/// `root_cert`), plus `extra`.
fn istio_vm_args(cluster_env: &Path, root_cert: &Path, extra: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = vec!["run".into(), "--istio-vm".into()];
    argv.push("--cluster-env".into());
    argv.push(cluster_env.display().to_string());
    for (flag, file) in [
        ("--sidecar-env", "no-sidecar.env"),
        ("--mesh-config", "mesh.yaml"),
        ("--token", "istio-token"),
    ] {
        argv.push(flag.into());
        argv.push(fixture(file).display().to_string());
    }
    argv.push("--root-cert".into());
    argv.push(root_cert.display().to_string());
    argv.extend_from_slice(extra);
    argv
}

/// The metadata value `key` of a node as JSON.
fn meta(node: &envoy_types::pb::envoy::config::core::v3::Node, key: &str) -> Value {
    let metadata = node.metadata.as_ref().expect("metadata");
    let value = metadata
        .fields
        .get(key)
        .unwrap_or_else(|| panic!("no {key}"));
    proto_value(value)
}

fn proto_value(v: &envoy_types::pb::google::protobuf::Value) -> Value {
    use envoy_types::pb::google::protobuf::value::Kind;
    match &v.kind {
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => serde_json::json!(n),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), proto_value(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(proto_value).collect()),
        Some(Kind::NullValue(_)) | None => Value::Null,
    }
}

#[test]
fn istio_vm_bootstrap_sends_pilot_agents_node_and_follows_pushed_listeners() {
    let ns = Netns::new("vmp-istiovm");
    let server = ns.in_ns(AdsServer::start).unwrap();
    let upstream = TcpServer::hello(&ns, "127.0.0.1:0".parse().unwrap(), b"mesh ", b"");
    let front: SocketAddr = "127.0.0.1:18080".parse().unwrap();
    server.set([static_cluster(
        "outbound|8080||up.shop.svc.cluster.local",
        &[upstream.addr()],
    )]);
    server.set([tcp_listener(
        "front",
        front,
        "outbound|8080||up.shop.svc.cluster.local",
    )]);

    // The fixture's cluster.env, with the CA where the test CA listens: the proxy binds
    // listeners only once it holds its workload certificate.
    let ca_runtime = tokio::runtime::Runtime::new().unwrap();
    let pki = Arc::new(TestPki::new("cluster.local"));
    let ca = {
        let (handle, pki) = (ca_runtime.handle().clone(), pki.clone());
        let options = TestCaOptions {
            cluster_id: "cluster-east".into(),
            ..TestCaOptions::default()
        };
        ns.in_ns(move || handle.block_on(TestCa::start_with(options, pki)))
            .unwrap()
    };
    let token = std::fs::read_to_string(fixture("istio-token")).unwrap();
    ca.add_token(token.trim(), "shop", "cart-sa");
    let dir = ConfigDir::new();
    let env: String = std::fs::read_to_string(fixture("cluster.env"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("CA_ADDR="))
        .map(|l| format!("{l}\n"))
        .collect();
    let cluster_env = dir.write(
        "cluster.env",
        &format!(
            "{env}CA_ADDR='{}'\nISTIOD_SAN='istiod.istio-system.svc'\n\
             PROV_CERT='{dir}'\nOUTPUT_CERTS='{dir}/out'\n",
            ca.addr(),
            dir = dir.path().display()
        ),
    );
    let root = dir.write("root-cert.pem", &pki.roots_pem());
    let argv = istio_vm_args(
        &cluster_env,
        &root,
        &["--xds-plaintext".into(), server.address().to_string()],
    );
    let mut proxy = ns
        .process(BIN)
        .args(&argv)
        .env("RUST_LOG", "info,xds_client=debug")
        .spawn();
    if let Err(e) = proxy.wait_for_tcp(front, WAIT) {
        panic!("pushed listener not bound: {e}\n{}", proxy.logs());
    }
    let reply = tcp_exchange(&ns, front, b"hello", WAIT).unwrap();
    assert_eq!(reply.received_str(), "mesh hello");

    let first = runtime().block_on(server.wait_for("the first request", WAIT, |_| true));
    assert!(first.delta, "Delta xDS, like pilot-agent");
    let node = first.node.as_ref().expect("node on the first request");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let short = hostname.trim().split('.').next().unwrap().to_string();
    assert_eq!(
        node.id,
        format!("sidecar~10.128.0.7~{short}.shop~shop.svc.cluster.local")
    );
    assert_eq!(node.cluster, "cart.shop");
    for (key, value) in [
        ("CLUSTER_ID", "cluster-east"),
        ("NAMESPACE", "shop"),
        ("NAME", short.as_str()),
        // Only loopback in the namespace: the workload IP alone.
        ("INSTANCE_IPS", "10.128.0.7"),
        ("ISTIO_VERSION", xds_client::istio::EMULATED_ISTIO_VERSION),
        ("MESH_ID", "mesh-1"),
        ("NETWORK", "vm-net"),
        ("SERVICE_ACCOUNT", "cart-sa"),
        ("AUTO_REGISTER_GROUP", "cart"),
        ("WORKLOAD_NAME", "cart"),
        ("DNS_CAPTURE", "true"),
    ] {
        assert_eq!(meta(node, key), Value::String(value.into()), "{key}");
    }
    assert_eq!(meta(node, "LABELS")["app"], "cart");
    assert_eq!(meta(node, "LABELS")["version"], "v1");
    let proxy_config = meta(node, "PROXY_CONFIG");
    assert_eq!(
        proxy_config["discoveryAddress"],
        "istiod-canary.istio-system.svc:15012"
    );
    assert_eq!(proxy_config["serviceCluster"], "cart.shop");
    assert_eq!(proxy_config["readinessProbe"]["httpGet"]["port"], 8080.0);
    let later = server.requests();
    assert!(
        later.iter().skip(1).all(|r| r.node.is_none()),
        "node on the first message only"
    );

    // The admin server shows the node, as `istioctl proxy-config bootstrap --file` reads it.
    let out = curl(&ns, &["http://127.0.0.1:15000/config_dump"], WAIT).unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let dump: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bootstrap = &dump["configs"][0]["bootstrap"];
    assert_eq!(bootstrap["node"]["id"], node.id.as_str());
    assert_eq!(bootstrap["node"]["metadata"]["CLUSTER_ID"], "cluster-east");
    assert_eq!(dump["configs"][2]["dynamic_listeners"][0]["name"], "front");

    stop_proxy(&mut proxy);
}

#[test]
fn istio_vm_names_a_bad_cluster_env() {
    let ns = Netns::new("vmp-istiobad");
    let dir = ConfigDir::new();
    let bad = dir.write(
        "cluster.env",
        "ISTIO_NAMESPACE='shop'\nISTIO_SVC_IP=$(hostname -i)\n",
    );
    let mut argv = vec![BIN.to_string()];
    argv.extend(istio_vm_args(
        &bad,
        &fixture("root-cert.pem"),
        &["--xds-plaintext".into(), "127.0.0.1:1".into()],
    ));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = ns.run_timeout(&argv, WAIT).unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2: variable expansion ($) is not supported",
            bad.display()
        )),
        "{}",
        describe(&out)
    );
}
