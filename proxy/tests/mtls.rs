//! Mesh mTLS between two in-process proxies on loopback, with identities from a test PKI:
//! the client side originates TLS to endpoints labelled `tlsMode: istio`, the server side
//! terminates it on its inbound filter chain and proxies to a plaintext app.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use certs::{IdentityHandle, WorkloadIdentity};
use common::*;
use test_support::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vm_proxy::{Options, Proxy};
use xds_client::model::{
    CommonTls, DownstreamTls, FilterChainMatch, ListenerFilter, PeerMatch, Tls12CipherSuite,
    TlsParams, TlsVersions, TransportSocket, TransportSocketMatch, UpstreamTls, Validation,
};

const TD: &str = "cluster.local";

fn identity(pki: &TestPki, sa: &str) -> IdentityHandle {
    let cert = pki.issue_spiffe(&pki.spiffe_id("ns", sa), Duration::from_secs(3600));
    IdentityHandle::with_identity(
        WorkloadIdentity::new(cert.chain(), cert.key(), cert.roots()).unwrap(),
    )
}

fn with_identity(id: IdentityHandle) -> Options {
    Options {
        identity: Some(id),
        ..options()
    }
}

fn common_tls(peer: PeerMatch, alpn: &[&str]) -> CommonTls {
    CommonTls {
        certificate_secret: "default".into(),
        validation: Validation {
            trusted_ca: "ROOTCA".into(),
            peer,
        },
        alpn_protocols: alpn.iter().map(|&p| p.into()).collect(),
        params: Default::default(),
    }
}

fn inbound_tls() -> TransportSocket<DownstreamTls> {
    TransportSocket::Tls(DownstreamTls {
        require_client_certificate: true,
        common: common_tls(
            PeerMatch::TrustDomain(TD.into()),
            &["istio-peer-exchange", "h2", "http/1.1"],
        ),
    })
}

fn tls_match(transport_protocol: &str) -> FilterChainMatch {
    FilterChainMatch {
        transport_protocol: Some(transport_protocol.into()),
        ..FilterChainMatch::default()
    }
}

/// The server side: STRICT has one mTLS chain; PERMISSIVE adds a plaintext chain told apart
/// by the TLS inspector, as istiod builds them.
async fn server_proxy(pki: &TestPki, permissive: bool) -> (Proxy, SocketAddr) {
    server_proxy_with(pki, permissive, TlsParams::default()).await
}

async fn server_proxy_with(
    pki: &TestPki,
    permissive: bool,
    params: TlsParams,
) -> (Proxy, SocketAddr) {
    let app = echo_server().await;
    let mut inbound = listener("inbound", "app");
    inbound.filter_chains[0].transport_socket = inbound_tls();
    if let TransportSocket::Tls(t) = &mut inbound.filter_chains[0].transport_socket {
        t.common.params = params;
    }
    if permissive {
        inbound.filter_chains[0].filter_chain_match = tls_match("tls");
        inbound.filter_chains.push(chain(
            "plaintext",
            tls_match("raw_buffer"),
            tcp_proxy("app"),
        ));
        inbound = with_filters(inbound, &[ListenerFilter::TlsInspector]);
    }
    let proxy = start_with(
        snapshot(vec![inbound], vec![static_cluster("app", &[app])]),
        with_identity(identity(pki, "server")),
    )
    .await;
    let address = addr(&proxy, "inbound");
    (proxy, address)
}

/// The client side: its one endpoint (the server proxy) is labelled `tlsMode: istio`, so
/// the cluster's transport socket match picks TLS expecting `server_id`.
async fn client_proxy(pki: &TestPki, server: SocketAddr, server_id: &str) -> (Proxy, SocketAddr) {
    client_proxy_with(pki, server, server_id, TlsParams::default()).await
}

async fn client_proxy_with(
    pki: &TestPki,
    server: SocketAddr,
    server_id: &str,
    params: TlsParams,
) -> (Proxy, SocketAddr) {
    let mut common = common_tls(
        PeerMatch::Exact(vec![server_id.into()]),
        &["istio-peer-exchange", "istio"],
    );
    common.params = params;
    let mut cluster = static_cluster("svc", &[server]);
    cluster.endpoints[0].transport_socket_metadata =
        BTreeMap::from([("tlsMode".into(), "istio".into())]);
    cluster.transport_socket_matches = vec![
        TransportSocketMatch {
            name: "tlsMode-istio".into(),
            criteria: BTreeMap::from([("tlsMode".into(), "istio".into())]),
            transport_socket: TransportSocket::Tls(UpstreamTls {
                sni: Some("outbound_.9080_._.svc.ns.svc.cluster.local".into()),
                common,
            }),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".into(),
            criteria: BTreeMap::new(),
            transport_socket: TransportSocket::Raw,
        },
    ];
    let proxy = start_with(
        snapshot(vec![listener("outbound", "svc")], vec![cluster]),
        with_identity(identity(pki, "client")),
    )
    .await;
    let address = addr(&proxy, "outbound");
    (proxy, address)
}

/// Sends `msg`, half-closes, and returns everything read until the other side closes.
async fn exchange(to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    bounded("exchange", async {
        let mut s = TcpStream::connect(to).await.unwrap();
        // A refused connection may already be reset when we write.
        let _ = s.write_all(msg).await;
        let _ = s.shutdown().await;
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        got
    })
    .await
}

#[tokio::test]
async fn data_flows_over_mtls_between_two_proxies() {
    let pki = TestPki::new(TD);
    let (_server, inbound) = server_proxy(&pki, false).await;
    let (_client, outbound) = client_proxy(&pki, inbound, &pki.spiffe_id("ns", "server")).await;
    assert_eq!(
        exchange(outbound, b"hello over mTLS").await,
        b"hello over mTLS"
    );
}

fn tls12_only(suites: &[Tls12CipherSuite]) -> TlsParams {
    TlsParams {
        versions: TlsVersions::Tls12Only,
        tls12_cipher_suites: suites.to_vec(),
        ecdh_curves: Vec::new(),
    }
}

#[tokio::test]
async fn tls_params_limit_what_both_sides_negotiate() {
    use Tls12CipherSuite::*;
    let pki = TestPki::new(TD);
    let server_id = pki.spiffe_id("ns", "server");
    let aes128 = [EcdheEcdsaAes128GcmSha256, EcdheRsaAes128GcmSha256];
    let aes256 = [EcdheEcdsaAes256GcmSha384, EcdheRsaAes256GcmSha384];
    let (_server, inbound) = server_proxy_with(&pki, false, tls12_only(&aes128)).await;
    // A client allowing the same TLS 1.2 suite gets through...
    let (_ok, outbound) = client_proxy_with(&pki, inbound, &server_id, tls12_only(&aes128)).await;
    assert_eq!(exchange(outbound, b"aes128").await, b"aes128");
    // ...one allowing only other suites shares none with the server and is refused...
    let (_no_suite, outbound) =
        client_proxy_with(&pki, inbound, &server_id, tls12_only(&aes256)).await;
    assert_eq!(exchange(outbound, b"aes256").await, b"");
    // ...and so is one that speaks TLS 1.3 only to a TLS 1.2-only server.
    let tls13 = TlsParams {
        versions: TlsVersions::Tls13Only,
        ..TlsParams::default()
    };
    let (_no_version, outbound) = client_proxy_with(&pki, inbound, &server_id, tls13).await;
    assert_eq!(exchange(outbound, b"tls13").await, b"");
}

#[tokio::test]
async fn strict_inbound_refuses_plaintext_clients() {
    let pki = TestPki::new(TD);
    let (_server, inbound) = server_proxy(&pki, false).await;
    let got = exchange(inbound, b"plaintext").await;
    // Nothing reaches the app: the answer is nothing or a TLS alert record (content type 21).
    assert!(got.is_empty() || got[0] == 21, "{got:?}");
}

#[tokio::test]
async fn permissive_inbound_accepts_mtls_and_plaintext() {
    let pki = TestPki::new(TD);
    let (_server, inbound) = server_proxy(&pki, true).await;
    let (_client, outbound) = client_proxy(&pki, inbound, &pki.spiffe_id("ns", "server")).await;
    assert_eq!(exchange(outbound, b"via mTLS").await, b"via mTLS");
    assert_eq!(exchange(inbound, b"plaintext").await, b"plaintext");
}

#[tokio::test]
async fn a_server_with_another_spiffe_id_is_refused() {
    let pki = TestPki::new(TD);
    let (_server, inbound) = server_proxy(&pki, false).await;
    let (_client, outbound) =
        client_proxy(&pki, inbound, &pki.spiffe_id("ns", "someone-else")).await;
    assert_eq!(exchange(outbound, b"secret").await, b"");
}

#[tokio::test]
async fn a_client_from_another_ca_is_refused() {
    let pki = TestPki::new(TD);
    let (_server, inbound) = server_proxy(&pki, false).await;
    let other = TestPki::new(TD);
    let (_client, outbound) = client_proxy(&other, inbound, &pki.spiffe_id("ns", "server")).await;
    assert_eq!(exchange(outbound, b"secret").await, b"");
}

#[tokio::test]
async fn tls_without_an_identity_is_refused_at_start() {
    let mut inbound = listener("inbound", "app");
    inbound.filter_chains[0].transport_socket = inbound_tls();
    let app = echo_server().await;
    let err = Proxy::start(
        snapshot(vec![inbound], vec![static_cluster("app", &[app])]),
        || serde_json::json!({"configs": []}),
        options(),
    )
    .await
    .err()
    .expect("a TLS chain without an identity is refused");
    assert!(
        err.to_string().contains("without a workload identity"),
        "{err}"
    );
}

/// Reads `child`'s stdout until `expected` has arrived (or it ends), within [`WAIT`].
async fn read_until(stdout: &mut tokio::process::ChildStdout, expected: &[u8]) -> Vec<u8> {
    bounded("openssl output", async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(expected.len()).any(|w| w == expected) {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    })
    .await
}

#[tokio::test]
async fn openssl_s_client_with_a_mesh_certificate_reaches_the_app() {
    test_support::require_tools(&["openssl"]);
    let pki = TestPki::new(TD);
    let (_server, inbound) = server_proxy(&pki, false).await;
    let dir = test_support::TempDir::new("mtls-s-client");
    pki.issue_spiffe(&pki.spiffe_id("ns", "openssl"), Duration::from_secs(3600))
        .write_to(dir.path());
    let mut child = tokio::process::Command::new("openssl")
        .arg("s_client")
        .args(["-connect", &inbound.to_string()])
        .arg("-cert")
        .arg(dir.path().join("cert-chain.pem"))
        .arg("-key")
        .arg(dir.path().join("key.pem"))
        .arg("-CAfile")
        .arg(dir.path().join("root-cert.pem"))
        .args([
            "-verify_return_error",
            "-alpn",
            "istio-peer-exchange,istio",
            "-quiet",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(b"ping from openssl\n").await.unwrap();
    stdin.flush().await.unwrap();
    let got = read_until(&mut stdout, b"ping from openssl\n").await;
    assert!(
        got.windows(18).any(|w| w == b"ping from openssl\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // -quiet implies -ign_eof: s_client stays until it is stopped.
    drop(stdin);
    child.start_kill().expect("stop openssl");
    let _ = bounded("openssl exits", child.wait()).await;
}
