//! Network RBAC (Istio AuthorizationPolicy on TCP) between real sockets: a DENY by source
//! address on plaintext, an ALLOW by SPIFFE principal over mTLS between two proxies. Denied
//! connections are closed before any upstream connection is made.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use certs::{IdentityHandle, WorkloadIdentity};
use common::*;
use serde_json::{Value, json};
use test_support::TestPki;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use vm_proxy::{Options, Proxy};
use xds_client::decode::network_rbac_config;
use xds_client::model::{
    CommonTls, DownstreamTls, FilterChainMatch, ListenerFilter, NetworkFilter, PeerMatch,
    TransportSocket, TransportSocketMatch, UpstreamTls, Validation,
};
use xds_client::{Resource, ResourceKind};

const TD: &str = "cluster.local";

/// A network RBAC filter decoded from its Envoy JSON, as istiod would send it.
fn rbac(rules: Value) -> NetworkFilter {
    let any = xds_client::json::any_from_json(json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
        "stat_prefix": "tcp.",
        "rules": rules,
    }))
    .unwrap();
    let resource = Resource {
        kind: ResourceKind::Listener,
        name: "test".into(),
    };
    NetworkFilter::Rbac(Arc::new(network_rbac_config(&resource, &any).unwrap()))
}

/// An echo upstream that counts the connections it accepted.
async fn counting_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let addr = serve(move |mut s: TcpStream| {
        count.fetch_add(1, Ordering::SeqCst);
        async move { echo(&mut s).await }
    })
    .await;
    (addr, accepted)
}

/// Sends `msg` from `from` (a loopback address), half-closes, reads until closed.
async fn exchange_from(from: &str, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = bounded("connect", socket.connect(to)).await.unwrap();
    // A denied connection may already be closed when we write.
    let _ = s.write_all(msg).await;
    let _ = s.shutdown().await;
    read_to_end(&mut s).await
}

#[tokio::test]
async fn deny_by_source_address_closes_before_the_upstream() {
    let (app, accepted) = counting_echo().await;
    let mut l = listener("inbound", "app");
    l.filter_chains[0].filters = vec![
        rbac(json!({"action": "DENY", "policies": {"deny-127.0.0.2": {
            "permissions": [{"any": true}],
            "principals": [{"direct_remote_ip": {"address_prefix": "127.0.0.2", "prefix_len": 32}}],
        }}})),
        tcp_proxy("app"),
    ];
    let proxy = start(snapshot(vec![l], vec![static_cluster("app", &[app])])).await;
    let inbound = addr(&proxy, "inbound");

    assert_eq!(
        exchange_from("127.0.0.1", inbound, b"allowed").await,
        b"allowed"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(exchange_from("127.0.0.2", inbound, b"denied").await, b"");
    assert_eq!(exchange_from("127.0.0.2", inbound, b"denied").await, b"");
    assert_eq!(
        exchange_from("127.0.0.3", inbound, b"other").await,
        b"other"
    );
    // The denied connections never reached the app.
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn empty_allow_rules_deny_every_connection_after_delay_deny() {
    let (app, accepted) = counting_echo().await;
    let any = xds_client::json::any_from_json(json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
        "stat_prefix": "tcp.", "delay_deny": "0.2s", "rules": {},
    }))
    .unwrap();
    let resource = Resource {
        kind: ResourceKind::Listener,
        name: "test".into(),
    };
    let deny_all = network_rbac_config(&resource, &any).unwrap();
    assert_eq!(deny_all.delay_deny, Some(Duration::from_millis(200)));
    let mut l = listener("inbound", "app");
    l.filter_chains[0].filters = vec![NetworkFilter::Rbac(Arc::new(deny_all)), tcp_proxy("app")];
    let proxy = start(snapshot(vec![l], vec![static_cluster("app", &[app])])).await;
    // `rules: {}` is an ALLOW without policies: nothing is allowed.
    assert_eq!(
        exchange_from("127.0.0.1", addr(&proxy, "inbound"), b"x").await,
        b""
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

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

fn transport(protocol: &str) -> FilterChainMatch {
    FilterChainMatch {
        transport_protocol: Some(protocol.into()),
        ..FilterChainMatch::default()
    }
}

/// A PERMISSIVE inbound (mTLS chain and plaintext chain) whose chains both run an ALLOW
/// policy for one principal, as istiod writes `principals: ["cluster.local/ns/ns/sa/good"]`.
async fn server_proxy(pki: &TestPki, app: SocketAddr) -> (Proxy, SocketAddr) {
    let allow = rbac(json!({"policies": {"ns[ns]-policy[app]-rule[0]": {
        "permissions": [{"and_rules": {"rules": [{"any": true}]}}],
        "principals": [{"and_ids": {"ids": [{"or_ids": {"ids": [{"authenticated": {
            "principal_name": {"exact": pki.spiffe_id("ns", "good")}}}]}}]}}],
    }}}));
    let mut inbound = listener("inbound", "app");
    inbound.filter_chains[0].filter_chain_match = transport("tls");
    inbound.filter_chains[0].filters = vec![allow.clone(), tcp_proxy("app")];
    inbound.filter_chains[0].transport_socket = TransportSocket::Tls(DownstreamTls {
        require_client_certificate: true,
        common: common_tls(PeerMatch::TrustDomain(TD.into()), &["istio"]),
    });
    let mut plaintext = chain("plaintext", transport("raw_buffer"), allow);
    plaintext.filters.push(tcp_proxy("app"));
    inbound.filter_chains.push(plaintext);
    let inbound = with_filters(inbound, &[ListenerFilter::TlsInspector]);
    let proxy = start_with(
        snapshot(vec![inbound], vec![static_cluster("app", &[app])]),
        with_identity(identity(pki, "server")),
    )
    .await;
    let address = addr(&proxy, "inbound");
    (proxy, address)
}

/// A client sidecar with identity `sa` whose outbound cluster originates mTLS to `server`.
async fn client_proxy(pki: &TestPki, sa: &str, server: SocketAddr) -> (Proxy, SocketAddr) {
    let mut cluster = static_cluster("svc", &[server]);
    cluster.endpoints[0].transport_socket_metadata =
        BTreeMap::from([("tlsMode".into(), "istio".into())]);
    cluster.transport_socket_matches = vec![TransportSocketMatch {
        name: "tlsMode-istio".into(),
        criteria: BTreeMap::from([("tlsMode".into(), "istio".into())]),
        transport_socket: TransportSocket::Tls(UpstreamTls {
            sni: None,
            common: common_tls(
                PeerMatch::Exact(vec![pki.spiffe_id("ns", "server").into()]),
                &["istio"],
            ),
        }),
    }];
    let proxy = start_with(
        snapshot(vec![listener("outbound", "svc")], vec![cluster]),
        with_identity(identity(pki, sa)),
    )
    .await;
    let address = addr(&proxy, "outbound");
    (proxy, address)
}

#[tokio::test]
async fn allow_by_principal_over_mtls() {
    let pki = TestPki::new(TD);
    let (app, accepted) = counting_echo().await;
    let (_server, inbound) = server_proxy(&pki, app).await;
    let (_good, good) = client_proxy(&pki, "good", inbound).await;
    let (_bad, bad) = client_proxy(&pki, "bad", inbound).await;

    assert_eq!(
        exchange_from("127.0.0.1", good, b"from good").await,
        b"from good"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(exchange_from("127.0.0.1", bad, b"from bad").await, b"");
    // Plaintext (PERMISSIVE) has no principal, so the ALLOW policy does not match it.
    assert_eq!(exchange_from("127.0.0.1", inbound, b"plaintext").await, b"");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(exchange_from("127.0.0.1", good, b"again").await, b"again");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
