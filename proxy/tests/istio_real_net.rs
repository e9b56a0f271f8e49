//! The networking suite with real istiod: the VM under `vm-proxy capture` rules, vm-proxy
//! as its proxy (uid 1337) with its certificate from istiod's CA and its config from
//! istiod's own generators, and traffic from the VM's app to services in the mesh. Istio
//! YAML in, connection outcomes out. Needs root (namespaces, capture rules) and Go.

mod e2e;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::*;
use test_support::{
    IstiodServer, Process, TcpServer, Topology, VmAndMesh, service_ip, tcp_exchange,
};

const VM_TOKEN: &str = "vm-cart-token";
const DB_PORT: u16 = 5432;
/// A port in the mesh that no ServiceEntry names: outbound traffic to it is what
/// `outboundTrafficPolicy` decides on.
const UNKNOWN_PORT: u16 = 7777;
const CONVERGE: Duration = Duration::from_secs(30);

/// The VM (cart in shop, as `istioctl x workload entry configure` registers it) and a
/// plain TCP service `db` at a VIP whose one endpoint, a WorkloadEntry, is the mesh node.
fn config(mesh: &VmAndMesh) -> (String, String) {
    let vm = format!(
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: cart-vm, namespace: shop, labels: {{app: cart}}}}
spec:
  address: {vm}
  labels: {{app: cart, version: v1}}
  serviceAccount: cart-sa
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: shop}}
spec:
  hosts: [db.shop.svc.cluster.local]
  addresses: [{vip}]
  location: MESH_INTERNAL
  ports: [{{number: {DB_PORT}, name: tcp-db, protocol: TCP}}]
  resolution: STATIC
  workloadSelector:
    labels: {{app: db}}
",
        vm = mesh.vm.ipv4(),
        vip = service_ip(10),
    );
    let db = format!(
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: db-1, namespace: shop}}
spec:
  address: {}
  labels: {{app: db}}
",
        mesh.mesh.ipv4()
    );
    (vm, db)
}

struct Vm {
    // Field order is drop order: the proxy, then istiod, then the files and namespaces.
    proxy: Process,
    istiod: IstiodServer,
    _files: ConfigDir,
    nodes: VmAndMesh,
}

impl Vm {
    /// istiod with `yaml` and `mesh_config`, the VM's capture rules, and vm-proxy bound on
    /// the listeners istiod sent.
    fn start(nodes: VmAndMesh, yaml: &[&str], mesh_config: Option<&str>) -> Vm {
        let mut builder = IstiodServer::builder()
            .listen(nodes.mesh.addr(0))
            .secure_listen(SocketAddr::new(nodes.mesh.addr(0).ip(), 0))
            .token(VM_TOKEN, "spiffe://cluster.local/ns/shop/sa/cart-sa")
            .netns(&nodes.mesh);
        if let Some(m) = mesh_config {
            builder = builder.mesh(m);
        }
        for y in yaml {
            builder = builder.config(*y);
        }
        let istiod = builder.start();
        let files = ConfigDir::new();
        let ca = istiod.secure_addr.expect("istiod's CA address");
        let cluster_env = files.write(
            "cluster.env",
            &format!(
                "ISTIO_NAMESPACE='shop'\nPOD_NAMESPACE='shop'\nSERVICE_ACCOUNT='cart-sa'\n\
                 ISTIO_SVC_IP='{vm}'\nISTIO_META_CLUSTER_ID='Kubernetes'\n\
                 ISTIO_METAJSON_LABELS='{{\"app\":\"cart\",\"version\":\"v1\"}}'\n\
                 CA_ADDR='{ca}'\nISTIOD_SAN='istiod.istio-system.svc'\n\
                 PROV_CERT='{dir}'\nOUTPUT_CERTS=''\n",
                vm = nodes.vm.ipv4(),
                dir = files.path().display()
            ),
        );
        let mesh = files.write(
            "mesh.yaml",
            "defaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n",
        );
        let token = files.write("istio-token", VM_TOKEN);
        let root = istiod.root_cert().expect("istiod's root certificate");
        capture_ok(&nodes.vm, &vm_flags(), Backend::Iptables);
        let mut proxy = nodes
            .vm
            .process(BIN)
            .args(["run", "--istio-vm", "--cluster-env"])
            .arg(&cluster_env)
            .arg("--mesh-config")
            .arg(&mesh)
            .arg("--token")
            .arg(&token)
            .arg("--root-cert")
            .arg(root)
            .arg("--xds-plaintext")
            .arg(istiod.xds_addr.to_string())
            .env("POD_NAME", "cart-vm")
            .user(PROXY_UID, PROXY_UID)
            .env("RUST_LOG", "info,xds_client=debug")
            .spawn();
        // Outbound only: these scenarios send from the VM.
        let outbound: SocketAddr = ([127, 0, 0, 1], OUTBOUND_PORT).into();
        if let Err(e) = proxy.wait_for_tcp(outbound, CONVERGE) {
            panic!(
                "istiod's virtualOutbound listener not bound: {e}\n{}\n--- istiod ---\n{}",
                proxy.logs(),
                istiod.logs()
            );
        }
        Vm {
            proxy,
            istiod,
            _files: files,
            nodes,
        }
    }

    /// What the VM's app gets back for `hello` from `addr`: empty when the proxy closed
    /// the accepted connection without an upstream (the client may see that as a reset).
    fn exchange(&self, addr: SocketAddr) -> String {
        match tcp_exchange(&self.nodes.vm, addr, b"hello", WAIT) {
            Ok(x) => x.received_str(),
            Err(test_support::Error::Exchange { .. }) => String::new(),
            Err(e) => format!("error: {e}"),
        }
    }

    /// Polls until the app's exchange with `addr` gives `want`.
    fn converges(&self, what: &str, addr: SocketAddr, want: &str) {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let got = self.exchange(addr);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: got {got:?}, want {want:?} within {CONVERGE:?}\n{}",
                self.proxy.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn workload_entry_endpoints_come_and_go_and_unknown_traffic_passes_through() {
    let nodes = Topology::vm_and_mesh();
    let (vm_yaml, db_yaml) = config(&nodes);
    let db = TcpServer::hello(&nodes.mesh, nodes.mesh.addr(DB_PORT), b"db:", b"");
    let other = TcpServer::hello(&nodes.mesh, nodes.mesh.addr(UNKNOWN_PORT), b"other:", b"");
    let mut vm = Vm::start(nodes, &[&vm_yaml, &db_yaml], None);
    let vip = SocketAddr::new(service_ip(10).into(), DB_PORT);

    vm.converges("db through its VIP", vip, "db:hello");
    let seen = db.wait_for_connections(1, WAIT).unwrap();
    assert_eq!(
        seen[0].peer.ip(),
        vm.nodes.vm.ipv4(),
        "the server sees the VM"
    );

    // The WorkloadEntry goes: istiod pushes an empty assignment and the VIP has no endpoint.
    vm.istiod.delete(&db_yaml).unwrap();
    vm.converges("db without endpoints", vip, "");
    vm.istiod.apply(&db_yaml).unwrap();
    vm.converges("db with its endpoint back", vip, "db:hello");

    // ALLOW_ANY (istiod's default): a destination no service names passes through.
    let unknown = vm.nodes.mesh.addr(UNKNOWN_PORT);
    vm.converges("passthrough", unknown, "other:hello");
    assert!(!other.connections().is_empty());
    stop_proxy(&mut vm.proxy);
}

#[test]
fn registry_only_black_holes_unknown_destinations() {
    let nodes = Topology::vm_and_mesh();
    let (vm_yaml, db_yaml) = config(&nodes);
    let _db = TcpServer::hello(&nodes.mesh, nodes.mesh.addr(DB_PORT), b"db:", b"");
    let other = TcpServer::hello(&nodes.mesh, nodes.mesh.addr(UNKNOWN_PORT), b"other:", b"");
    let mut vm = Vm::start(
        nodes,
        &[&vm_yaml, &db_yaml],
        Some("outboundTrafficPolicy: {mode: REGISTRY_ONLY}"),
    );
    let vip = SocketAddr::new(service_ip(10).into(), DB_PORT);
    vm.converges("db through its VIP", vip, "db:hello");
    let unknown = vm.nodes.mesh.addr(UNKNOWN_PORT);
    assert_eq!(
        vm.exchange(unknown),
        "",
        "BlackHoleCluster closes the connection"
    );
    assert!(
        other.connections().is_empty(),
        "nothing reached the unknown server"
    );
    stop_proxy(&mut vm.proxy);
}
