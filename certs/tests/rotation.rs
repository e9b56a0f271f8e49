//! Rotation under traffic: two workloads on the fake CA with 4-second certificates, a
//! loopback mTLS pair built from the rotating identities, and a mesh root rotation.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use certs::tls::client::client_config;
use certs::tls::server::MeshAcceptor;
use certs::{
    IdentityHandle, IdentitySource, RotationManager, SpiffeMatcher, WorkloadIdentity, alpn,
};
use common::*;
use test_support::{TestCa, TestCaOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::prelude::FromDer;

const WAIT: Duration = Duration::from_secs(30);

struct Workload {
    _vm: VmFiles,
    manager: RotationManager,
}

impl Workload {
    async fn start(ca: &TestCa, sa: &str) -> Workload {
        let token = format!("token-{sa}");
        ca.add_token(&token, NS, sa);
        let vm = VmFiles::new(ca, Some(&token));
        let cfg = vm.config(ca, &[("SERVICE_ACCOUNT", sa)]);
        let manager =
            RotationManager::start(IdentitySource::from_config(&cfg), cfg.rotation.clone())
                .unwrap();
        wait_identity(
            manager.handle(),
            &format!("{sa}'s first certificate"),
            WAIT,
            |_| true,
        )
        .await;
        Workload { _vm: vm, manager }
    }

    fn handle(&self) -> &IdentityHandle {
        self.manager.handle()
    }
}

fn short_lived() -> TestCaOptions {
    TestCaOptions {
        max_ttl: Duration::from_secs(4),
        ..TestCaOptions::default()
    }
}

/// Writes and reads back a patterned stream until told to stop; returns the bytes echoed.
fn pump(
    mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<std::io::Result<(u64, Vec<u8>)>> {
    tokio::spawn(async move {
        let peer_leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let mut out = vec![0u8; 16 * 1024];
        let mut back = vec![0u8; 16 * 1024];
        let mut round: u8 = 0;
        // Bounded by the stop flag, which the test sets before its own deadline.
        while !stop.load(Ordering::Relaxed) {
            round = round.wrapping_add(1);
            out.iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = round ^ (i as u8));
            tls.write_all(&out).await?;
            tls.read_exact(&mut back).await?;
            assert_eq!(out, back, "echoed bytes differ in round {round}");
            progress.fetch_add(out.len() as u64, Ordering::Relaxed);
        }
        tls.shutdown().await?;
        Ok((progress.load(Ordering::Relaxed), peer_leaf))
    })
}

#[tokio::test]
async fn connections_survive_repeated_rotation_and_new_ones_use_the_new_certificates() {
    init_tracing();
    let ca = TestCa::start(short_lived()).await;
    let server = Workload::start(&ca, "server").await;
    let client = Workload::start(&ca, "client").await;
    let server_id = server.handle().current().unwrap().spiffe_id().clone();
    let client_id = client.handle().current().unwrap().spiffe_id().clone();

    let echo = EchoServer::start(
        MeshAcceptor::new(
            server.handle(),
            SpiffeMatcher::TrustDomain("cluster.local".into()),
            alpn::INBOUND_TCP,
        )
        .unwrap(),
    )
    .await;
    let cfg = client_config(
        client.handle(),
        SpiffeMatcher::Exact(vec![server_id.clone()]),
        alpn::OUTBOUND_TCP,
    )
    .unwrap();

    let first_server_leaf = server.handle().current().unwrap().leaf().to_vec();
    let long_lived = connect(cfg.clone(), echo.addr).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let traffic = pump(long_lived, stop.clone(), progress.clone());

    let mut server_leaves = vec![first_server_leaf.clone()];
    let mut client_leaves = vec![client.handle().current().unwrap().leaf().to_vec()];
    let mut fresh_connections = 0;
    while server_leaves.len() < 4 || client_leaves.len() < 4 {
        let prev_server = server_leaves.last().unwrap().clone();
        let prev_client = client_leaves.last().unwrap().clone();
        let bytes_before = progress.load(Ordering::Relaxed);
        let s = wait_identity(server.handle(), "a server rotation", WAIT, |id| {
            id.leaf().as_ref() != prev_server
        })
        .await;
        let c = wait_identity(client.handle(), "a client rotation", WAIT, |id| {
            id.leaf().as_ref() != prev_client
        })
        .await;
        server_leaves.push(s.leaf().to_vec());
        client_leaves.push(c.leaf().to_vec());

        // A new connection presents certificates at least as new as the ones just seen.
        let tls = connect(cfg.clone(), echo.addr).await.unwrap();
        fresh_connections += 1;
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert!(
            not_after(&presented) >= s.not_after(),
            "new connection got an old server certificate"
        );
        wait_until("traffic to keep flowing", WAIT, || {
            progress.load(Ordering::Relaxed) > bytes_before
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let (bytes, peer_leaf) = within("traffic to stop", WAIT, traffic)
        .await
        .unwrap()
        .unwrap();
    assert!(bytes > 0);
    assert_eq!(
        peer_leaf, first_server_leaf,
        "the long-lived connection kept its handshake"
    );

    let seen = echo.seen();
    assert_eq!(seen.len(), 1 + fresh_connections);
    for s in &seen {
        assert_eq!(s.peer.as_ref().unwrap(), &client_id);
    }
    assert!(ca.stats().by_client_cert >= 6, "{:?}", ca.stats());
    assert_eq!(server.handle().status().failures, 0);
    assert_eq!(client.handle().status().failures, 0);
}

fn not_after(cert: &rustls::pki_types::CertificateDer<'_>) -> std::time::SystemTime {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert).unwrap();
    std::time::UNIX_EPOCH + Duration::from_secs(parsed.validity().not_after.timestamp() as u64)
}

/// Whether `id`'s leaf was signed by the root in `root_pem`.
fn signed_by(id: &WorkloadIdentity, root_pem: &str) -> bool {
    let root = test_support::pki::pem_certs(root_pem).remove(0);
    let (_, root) = x509_parser::certificate::X509Certificate::from_der(&root).unwrap();
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(id.leaf()).unwrap();
    leaf.issuer() == root.subject()
}

#[tokio::test]
async fn mesh_root_rotation_keeps_the_mesh_connected_and_drops_the_old_root() {
    init_tracing();
    let ca = TestCa::start(short_lived()).await;
    let pki = ca.pki().clone();
    let server = Workload::start(&ca, "server").await;
    let client = Workload::start(&ca, "client").await;
    let server_id = server.handle().current().unwrap().spiffe_id().clone();
    let old_root = pki.signer_pem();
    // A workload that never renews: its certificate and bundle are from the old root only.
    let straggler_cert = ca.issue(
        &pki.spiffe_id(NS, "straggler"),
        Duration::from_secs(3600),
        Default::default(),
    );
    let straggler = IdentityHandle::with_identity(identity(&straggler_cert));

    let echo = EchoServer::start(
        MeshAcceptor::new(
            server.handle(),
            SpiffeMatcher::TrustDomain("cluster.local".into()),
            alpn::INBOUND_TCP,
        )
        .unwrap(),
    )
    .await;
    let cfg = client_config(
        client.handle(),
        SpiffeMatcher::Exact(vec![server_id.clone()]),
        alpn::OUTBOUND_TCP,
    )
    .unwrap();
    let mut before = connect(cfg.clone(), echo.addr).await.unwrap();

    // 1. The new root joins the bundle; the old one still signs.
    pki.start_rotation();
    for w in [&server, &client] {
        wait_identity(w.handle(), "a bundle with both roots", WAIT, |id| {
            id.roots().len() == 2
        })
        .await;
    }
    connect(cfg.clone(), echo.addr).await.unwrap();

    // 2. The new root signs. While one side has a new-root certificate and the other an
    //    old-root one, both bundles hold both roots, so the mesh stays connected.
    pki.promote_new_root();
    let new_root = pki.signer_pem();
    wait_identity(
        server.handle(),
        "a server certificate from the new root",
        WAIT,
        |id| signed_by(id, &new_root),
    )
    .await;
    connect(cfg.clone(), echo.addr).await.unwrap();
    wait_identity(
        client.handle(),
        "a client certificate from the new root",
        WAIT,
        |id| signed_by(id, &new_root),
    )
    .await;
    connect(cfg.clone(), echo.addr).await.unwrap();

    // 3. The old root leaves the bundle.
    pki.finish_rotation();
    for w in [&server, &client] {
        wait_identity(w.handle(), "a bundle with only the new root", WAIT, |id| {
            id.roots().len() == 1 && signed_by(id, &new_root)
        })
        .await;
    }
    connect(cfg.clone(), echo.addr).await.unwrap();

    // An old-root bundle no longer trusts the server...
    let seen_before = echo.seen().len();
    let straggler_cfg = client_config(
        &straggler,
        SpiffeMatcher::Exact(vec![server_id.clone()]),
        alpn::OUTBOUND_TCP,
    )
    .unwrap();
    let err = connect(straggler_cfg, echo.addr).await.unwrap_err();
    assert!(tls_error_text(&err).contains("UnknownIssuer"), "{err}");
    // ...and an old-root certificate no longer gets in.
    assert!(signed_by(&straggler.current().unwrap(), &old_root));
    let mut old_leaf = straggler_cert.clone();
    old_leaf.roots_pem = pki.roots_pem();
    let old_leaf = IdentityHandle::with_identity(identity(&old_leaf));
    let cfg_old_leaf = client_config(
        &old_leaf,
        SpiffeMatcher::Exact(vec![server_id]),
        alpn::OUTBOUND_TCP,
    )
    .unwrap();
    assert!(connect(cfg_old_leaf, echo.addr).await.is_err());
    wait_until("the server to see both failed handshakes", WAIT, || {
        echo.seen().len() == seen_before + 2
    })
    .await;
    let failures: Vec<String> = echo.seen()[seen_before..]
        .iter()
        .map(|s| s.peer.clone().unwrap_err())
        .collect();
    assert!(
        failures.iter().any(|e| e.contains("UnknownIssuer")),
        "{failures:?}"
    );

    // The connection from before the rotation still works.
    before.write_all(b"after").await.unwrap();
    let mut buf = [0u8; 5];
    before.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after");
}
