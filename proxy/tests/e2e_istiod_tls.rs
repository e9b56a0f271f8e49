//! `vm-proxy run --istio-vm` without `--xds-plaintext`: the workload certificate from the
//! test CA, then ADS over TLS to an istiod-like server (its certificate for
//! `istiod.istio-system.svc` from the mesh root), authenticated like pilot-agent: bearer
//! token, `ClusterID` header, and the workload certificate, which a reconnect after a
//! rotation presents anew. Needs root (namespaces).

mod e2e;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;
use test_support::ads_server::resources::{static_cluster, tcp_listener};
use test_support::ca::istiod_server_config;
use test_support::{AdsServer, Netns, TcpServer, TestCa, TestCaOptions, TestPki, tcp_exchange};

const TOKEN: &str = "vm-token";

fn wait_until(what: &str, mut done: impl FnMut() -> bool, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting: {what}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn istio_vm_speaks_xds_over_tls_with_the_token_and_the_rotating_certificate() {
    let ns = Netns::new("vmp-istiodtls");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pki = Arc::new(TestPki::new("cluster.local"));
    let ca = {
        let (handle, pki) = (runtime.handle().clone(), pki.clone());
        ns.in_ns(move || handle.block_on(TestCa::start_with(TestCaOptions::default(), pki)))
            .unwrap()
    };
    ca.add_token(TOKEN, "shop", "cart");
    let tls = istiod_server_config(&pki);
    let istiod = ns
        .in_ns(move || AdsServer::start_tls("127.0.0.1:0".parse().unwrap(), tls))
        .unwrap();
    let upstream = TcpServer::hello(&ns, "127.0.0.1:0".parse().unwrap(), b"mesh ", b"");
    let front: SocketAddr = "127.0.0.1:18080".parse().unwrap();
    istiod.set([static_cluster("outbound|8080||up", &[upstream.addr()])]);
    istiod.set([tcp_listener("front", front, "outbound|8080||up")]);

    let dir = ConfigDir::new();
    let cluster_env = dir.write(
        "cluster.env",
        &format!(
            "ISTIO_NAMESPACE='shop'\nPOD_NAMESPACE='shop'\nSERVICE_ACCOUNT='cart'\n\
             ISTIO_SVC_IP='10.128.0.7'\nISTIO_META_CLUSTER_ID='Kubernetes'\n\
             CA_ADDR='{}'\nISTIOD_SAN='istiod.istio-system.svc'\nSECRET_TTL='4s'\n\
             PROV_CERT='{dir}'\nOUTPUT_CERTS='{dir}/out'\n",
            ca.addr(),
            dir = dir.path().display()
        ),
    );
    let mesh = dir.write(
        "mesh",
        &format!(
            "defaultConfig:\n  discoveryAddress: localhost:{}\n",
            istiod.address().port()
        ),
    );
    let root = dir.write("root-cert.pem", &pki.roots_pem());
    let token = dir.write("istio-token", TOKEN);
    let mut proxy = ns
        .process(BIN)
        .args(["run", "--istio-vm", "--cluster-env"])
        .arg(&cluster_env)
        .arg("--sidecar-env")
        .arg(dir.path().join("no-sidecar.env"))
        .arg("--mesh-config")
        .arg(&mesh)
        .arg("--token")
        .arg(&token)
        .arg("--root-cert")
        .arg(&root)
        .env("RUST_LOG", "info,xds_client=debug")
        .spawn();
    if let Err(e) = proxy.wait_for_tcp(front, WAIT) {
        panic!("pushed listener not bound: {e}\n{}", proxy.logs());
    }
    let reply = tcp_exchange(&ns, front, b"hello", WAIT).unwrap();
    assert_eq!(reply.received_str(), "mesh hello");

    // The first stream: token, ClusterID and the certificate the CA issued on the token.
    let first = istiod.opened()[0].clone();
    assert_eq!(first.authorization.as_deref(), Some("Bearer vm-token"));
    assert_eq!(first.cluster_id.as_deref(), Some("Kubernetes"));
    let first_cert = first.client_cert.expect("workload certificate presented");
    let spiffe = certs::SpiffeId::from_certificate(&first_cert.clone().into()).unwrap();
    assert_eq!(spiffe.as_str(), "spiffe://cluster.local/ns/shop/sa/cart");
    assert!(ca.stats().by_token >= 1, "{:?}", ca.stats());

    // Rotations, the token gone, then istiod restarts: the new stream comes with the
    // current certificate and no token.
    let issued = ca.stats().issued;
    std::fs::remove_file(&token).unwrap();
    wait_until(
        "two renewals",
        || ca.stats().issued >= issued + 2,
        || proxy.logs(),
    );
    let streams = istiod.opened().len();
    // Restarted inside the namespace, where it binds again.
    let istiod = ns
        .in_ns(move || {
            let mut istiod = istiod;
            istiod.restart();
            istiod
        })
        .unwrap();
    wait_until(
        "a new xDS stream after the restart",
        || istiod.opened().len() > streams,
        || proxy.logs(),
    );
    let again = istiod.opened().last().cloned().unwrap();
    assert_eq!(again.authorization, None, "no token file, no header");
    assert_eq!(again.cluster_id.as_deref(), Some("Kubernetes"));
    let again_cert = again.client_cert.expect("workload certificate presented");
    assert_ne!(
        again_cert, first_cert,
        "the rotated certificate is presented"
    );
    assert_eq!(
        tcp_exchange(&ns, front, b"again", WAIT)
            .unwrap()
            .received_str(),
        "mesh again"
    );
    assert!(
        ca.stats().by_client_cert >= 2,
        "renewals by client certificate: {:?}",
        ca.stats()
    );
    stop_proxy(&mut proxy);
}
