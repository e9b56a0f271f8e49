//! The mesh verifiers accept exactly the peers they should and say why they reject the
//! rest: checked directly and through real loopback handshakes.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use certs::tls::client::{MeshServerVerifier, client_config};
use certs::tls::server::{MeshAcceptor, MeshClientVerifier, server_config};
use certs::{IdentityHandle, SpiffeMatcher, alpn};
use common::*;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use test_support::pki::self_signed;
use test_support::{IssuedCert, LeafSpec, TestPki};

const HOUR: Duration = Duration::from_secs(3600);
const SERVER: &str = "spiffe://cluster.local/ns/bar/sa/server";
const CLIENT: &str = "spiffe://cluster.local/ns/bar/sa/client";

struct Mesh {
    pki: TestPki,
    other: TestPki,
}

impl Mesh {
    fn new() -> Mesh {
        Mesh {
            pki: TestPki::new("cluster.local"),
            other: TestPki::new("cluster.local"),
        }
    }

    fn handle(&self, id: &str) -> IdentityHandle {
        IdentityHandle::with_identity(identity(&self.pki.issue_spiffe(id, HOUR)))
    }

    fn spec(&self, id: &str, from: SystemTime, to: SystemTime) -> IssuedCert {
        let mut spec = LeafSpec::spiffe(id, HOUR);
        spec.not_before = from;
        spec.not_after = to;
        self.pki.issue(&spec)
    }

    /// Every certificate a verifier expecting `expected` must refuse, with the words its
    /// error must contain.
    fn rejects(&self, expected: &str) -> Vec<(&'static str, IssuedCert, &'static str)> {
        let now = SystemTime::now();
        let mut dns_only = LeafSpec::spiffe(expected, HOUR);
        dns_only.uris.clear();
        dns_only.dns_names = vec!["server.bar.svc.cluster.local".into()];
        vec![
            (
                "wrong SAN",
                self.pki
                    .issue_spiffe("spiffe://cluster.local/ns/bar/sa/intruder", HOUR),
                "not allowed",
            ),
            (
                "wrong CA",
                self.other.issue_spiffe(expected, HOUR),
                "UnknownIssuer",
            ),
            (
                "expired",
                self.spec(expected, now - 2 * HOUR, now - HOUR),
                "expired",
            ),
            (
                "not yet valid",
                self.spec(expected, now + HOUR, now + 2 * HOUR),
                "not valid yet",
            ),
            ("self-signed", self_signed(expected, HOUR), "UnknownIssuer"),
            (
                "no SPIFFE ID",
                self.pki.issue(&dns_only),
                "no spiffe:// URI SAN",
            ),
        ]
    }
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

#[test]
fn server_verifier_accepts_the_expected_id_and_says_why_it_rejects() {
    let mesh = Mesh::new();
    let local = mesh.handle(CLIENT);
    let verifier = MeshServerVerifier::new(local, SpiffeMatcher::Exact(vec![spiffe(SERVER)]));
    let sni = ServerName::try_from("outbound_.8080_._.server.bar.svc.cluster.local").unwrap();
    let check = |cert: &IssuedCert| {
        let chain = cert.chain();
        verifier.verify_server_cert(&chain[0], &chain[1..], &sni, &[], UnixTime::now())
    };

    check(&mesh.pki.issue_spiffe(SERVER, HOUR)).unwrap();
    for (case, cert, words) in mesh.rejects(SERVER) {
        let err = check(&cert).expect_err(case);
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{case}: {err:?}"
        );
        let text = format!("{err} {err:?}");
        assert!(contains_ci(&text, words), "{case}: {text}");
    }
    let err = check(
        &mesh
            .pki
            .issue_spiffe("spiffe://cluster.local/ns/bar/sa/intruder", HOUR),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("spiffe://cluster.local/ns/bar/sa/intruder") && text.contains(SERVER),
        "{text}"
    );

    // Nothing held yet: nothing is trusted.
    let empty = MeshServerVerifier::new(IdentityHandle::new(), SpiffeMatcher::Any);
    let cert = mesh.pki.issue_spiffe(SERVER, HOUR);
    let err = empty
        .verify_server_cert(&cert.chain()[0], &[], &sni, &[], UnixTime::now())
        .unwrap_err();
    assert!(
        err.to_string().contains("no workload trust bundle"),
        "{err}"
    );
}

#[test]
fn client_verifier_requires_a_trusted_spiffe_client() {
    let mesh = Mesh::new();
    let local = mesh.handle(SERVER);
    let verifier =
        MeshClientVerifier::new(local, SpiffeMatcher::TrustDomain("cluster.local".into()));
    assert!(verifier.offer_client_auth() && verifier.client_auth_mandatory());
    let check = |cert: &IssuedCert| {
        let chain = cert.chain();
        verifier.verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
    };

    check(&mesh.pki.issue_spiffe(CLIENT, HOUR)).unwrap();
    let foreign_td = mesh
        .pki
        .issue_spiffe("spiffe://other.td/ns/bar/sa/client", HOUR);
    let text = check(&foreign_td).unwrap_err().to_string();
    assert!(
        text.contains("spiffe://other.td/ns/bar/sa/client")
            && text.contains("trust domain cluster.local"),
        "{text}"
    );
    for (case, cert, words) in mesh.rejects(CLIENT) {
        if case == "wrong SAN" {
            continue; // same trust domain: allowed by this matcher
        }
        let err = check(&cert).expect_err(case);
        let text = format!("{err} {err:?}");
        assert!(contains_ci(&text, words), "{case}: {text}");
    }
}

#[tokio::test]
async fn mtls_handshakes_negotiate_alpn_and_expose_the_peer_id() {
    init_tracing();
    let mesh = Mesh::new();
    let server_handle = mesh.handle(SERVER);
    let client_handle = mesh.handle(CLIENT);
    let server = EchoServer::start(
        MeshAcceptor::new(
            &server_handle,
            SpiffeMatcher::TrustDomain("cluster.local".into()),
            alpn::INBOUND_HTTP,
        )
        .unwrap(),
    )
    .await;

    let cfg = client_config(
        &client_handle,
        SpiffeMatcher::Exact(vec![spiffe(SERVER)]),
        alpn::OUTBOUND_H2,
    )
    .unwrap();
    let tls = connect(cfg, server.addr).await.unwrap();
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(alpn::H2));
    assert_eq!(
        certs::tls::server::peer_spiffe_id(conn).unwrap(),
        spiffe(SERVER)
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].peer.as_ref().unwrap(), &spiffe(CLIENT));
    assert_eq!(seen[0].alpn.as_deref(), Some(alpn::H2));

    // A TCP client's ALPNs share nothing with an HTTP chain's: no ALPN, as with Envoy.
    let cfg = client_config(
        &client_handle,
        SpiffeMatcher::Exact(vec![spiffe(SERVER)]),
        alpn::OUTBOUND_TCP,
    )
    .unwrap();
    let tls = connect(cfg, server.addr).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    // rustls' own strict behaviour, with the plain server configuration.
    let strict = tokio_rustls::TlsAcceptor::from(Arc::new(
        server_config(&server_handle, SpiffeMatcher::Any, alpn::INBOUND_HTTP).unwrap(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let strict_addr = listener.local_addr().unwrap();
    let strict_server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        strict
            .accept(tcp)
            .await
            .map(|_| ())
            .map_err(|e| tls_error_text(&e))
    });
    let cfg = client_config(&client_handle, SpiffeMatcher::Any, alpn::OUTBOUND_TCP).unwrap();
    assert!(connect(cfg, strict_addr).await.is_err());
    let refused = strict_server.await.unwrap().unwrap_err();
    assert!(
        refused.contains("doesn't support any known protocol"),
        "{refused}"
    );

    // Expecting another server: refused with the reason, and the server hears why.
    let cfg = client_config(
        &client_handle,
        SpiffeMatcher::Exact(vec![spiffe("spiffe://cluster.local/ns/bar/sa/db")]),
        alpn::OUTBOUND_TCP,
    )
    .unwrap();
    let err = connect(cfg, server.addr).await.unwrap_err();
    let text = tls_error_text(&err);
    assert!(
        text.contains("not allowed") && text.contains(SERVER),
        "{text}"
    );
    wait_until(
        "the server to see the rejection",
        Duration::from_secs(5),
        || server.seen().len() == 3,
    )
    .await;
    let seen = server.seen();
    assert!(
        seen[2]
            .peer
            .as_ref()
            .is_err_and(|e| e.contains("CertificateUnknown")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_server_refuses_clients_without_a_trusted_certificate() {
    init_tracing();
    let mesh = Mesh::new();
    let server_handle = mesh.handle(SERVER);
    let server = EchoServer::start(
        MeshAcceptor::new(&server_handle, SpiffeMatcher::Any, alpn::INBOUND_TCP).unwrap(),
    )
    .await;

    // A client that trusts the server but has no certificate.
    let mut roots = rustls::RootCertStore::empty();
    for r in mesh.pki.issue_spiffe(CLIENT, HOUR).roots() {
        roots.add(r).unwrap();
    }
    let no_cert = rustls::ClientConfig::builder_with_provider(certs::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshServerVerifier::new(
            server_handle.clone(),
            SpiffeMatcher::Any,
        )))
        .with_no_client_auth();
    // With TLS 1.3 the client learns of the refusal on its first read.
    let _ = connect(no_cert, server.addr).await;
    // A client whose certificate comes from another mesh (but which trusts the server).
    let mut foreign = mesh.other.issue_spiffe(CLIENT, HOUR);
    foreign.roots_pem = mesh.pki.roots_pem();
    let stranger = IdentityHandle::with_identity(identity(&foreign));
    let cfg = client_config(&stranger, SpiffeMatcher::Any, alpn::OUTBOUND_TCP).unwrap();
    let _ = connect(cfg, server.addr).await;

    wait_until("both rejections", Duration::from_secs(5), || {
        server.seen().len() == 2
    })
    .await;
    let seen = server.seen();
    let errors: Vec<String> = seen.iter().map(|s| s.peer.clone().unwrap_err()).collect();
    assert!(contains_ci(&errors[0], "no certificates"), "{errors:?}");
    assert!(contains_ci(&errors[1], "UnknownIssuer"), "{errors:?}");
}

#[tokio::test]
async fn a_new_trust_bundle_applies_to_the_next_handshake_only() {
    init_tracing();
    let mesh = Mesh::new();
    let server_handle = mesh.handle(SERVER);
    let client_handle = mesh.handle(CLIENT);
    let server = EchoServer::start(
        MeshAcceptor::new(&server_handle, SpiffeMatcher::Any, alpn::INBOUND_TCP).unwrap(),
    )
    .await;
    let cfg = client_config(
        &client_handle,
        SpiffeMatcher::Exact(vec![spiffe(SERVER)]),
        alpn::OUTBOUND_TCP,
    )
    .unwrap();
    let mut open = connect(cfg.clone(), server.addr).await.unwrap();

    // The client now trusts only another mesh's root (its own certificate from there too).
    client_handle.publish(identity(&mesh.other.issue_spiffe(CLIENT, HOUR)));
    let err = connect(cfg.clone(), server.addr).await.unwrap_err();
    assert!(contains_ci(&tls_error_text(&err), "UnknownIssuer"), "{err}");

    // The connection made before still carries data.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    open.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");

    // A bundle with both roots (a CA rotation): the same config connects again.
    let mut both = mesh.other.issue_spiffe(CLIENT, HOUR);
    both.roots_pem.push_str(&mesh.pki.roots_pem());
    server_handle.publish(identity(&{
        let mut s = mesh.pki.issue_spiffe(SERVER, HOUR);
        s.roots_pem.push_str(&mesh.other.roots_pem());
        s
    }));
    client_handle.publish(identity(&both));
    connect(cfg, server.addr).await.unwrap();
}
