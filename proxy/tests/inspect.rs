//! Listener filters that peek: chains chosen by SNI, ALPN, transport protocol and detected
//! HTTP, with every inspected byte still delivered upstream.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use xds_client::model::{FilterChainMatch, ListenerFilter};

/// A TLS 1.3-style ClientHello with optional SNI and ALPN, in records of `record_size`.
fn client_hello(sni: Option<&str>, alpn: &[&str], record_size: usize) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, t: u16, data: &[u8]) {
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    let mut exts = Vec::new();
    if let Some(name) = sni {
        let mut list = ((name.len() + 3) as u16).to_be_bytes().to_vec();
        list.push(0);
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name.as_bytes());
        ext(&mut exts, 0, &list);
    }
    if !alpn.is_empty() {
        let names: Vec<u8> = alpn
            .iter()
            .flat_map(|p| std::iter::once(p.len() as u8).chain(p.bytes()))
            .collect();
        let mut list = (names.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&names);
        ext(&mut exts, 16, &list);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[1u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    hs.chunks(record_size)
        .flat_map(|c| {
            let mut r = vec![22, 3, 1];
            r.extend_from_slice(&(c.len() as u16).to_be_bytes());
            r.extend_from_slice(c);
            r
        })
        .collect()
}

fn matching(f: impl FnOnce(&mut FilterChainMatch)) -> FilterChainMatch {
    let mut m = FilterChainMatch::default();
    f(&mut m);
    m
}

/// Sends `first`, returns the upstream's name and checks that the upstream received exactly
/// `first` (the echo), i.e. the inspector consumed nothing.
async fn route(at: std::net::SocketAddr, first: &[u8]) -> String {
    let mut s = connect(at).await;
    s.write_all(first).await.unwrap();
    let name = read_line(&mut s).await;
    let mut echoed = vec![0u8; first.len()];
    bounded("echo", s.read_exact(&mut echoed)).await.unwrap();
    assert_eq!(echoed, first, "upstream {name} got different bytes");
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_inspector_routes_by_sni_and_alpn() {
    let mut l = with_filters(listener("l", "plain"), &[ListenerFilter::TlsInspector]);
    l.filter_chains = vec![
        chain(
            "exact",
            matching(|m| m.server_names = vec!["a.example.com".into()]),
            tcp_proxy("exact"),
        ),
        chain(
            "wildcard-h2",
            matching(|m| {
                m.server_names = vec!["*.example.com".into()];
                m.application_protocols = vec!["h2".into()];
            }),
            tcp_proxy("wildcard-h2"),
        ),
        chain(
            "wildcard",
            matching(|m| m.server_names = vec!["*.example.com".into()]),
            tcp_proxy("wildcard"),
        ),
        chain(
            "tls",
            matching(|m| m.transport_protocol = Some("tls".into())),
            tcp_proxy("tls"),
        ),
        chain(
            "plain",
            matching(|m| m.transport_protocol = Some("raw_buffer".into())),
            tcp_proxy("plain"),
        ),
    ];
    let mut clusters = Vec::new();
    for name in ["exact", "wildcard-h2", "wildcard", "tls", "plain"] {
        clusters.push(static_cluster(name, &[named_echo(name).await]));
    }
    let proxy = start(snapshot(vec![l], clusters)).await;
    let at = addr(&proxy, "l");
    let hello = |sni, alpn: &[&str]| client_hello(sni, alpn, 16384);
    assert_eq!(route(at, &hello(Some("a.example.com"), &[])).await, "exact");
    assert_eq!(
        route(at, &hello(Some("b.example.com"), &["http/1.1", "h2"])).await,
        "wildcard-h2"
    );
    assert_eq!(
        route(at, &hello(Some("b.example.com"), &["http/1.1"])).await,
        "wildcard"
    );
    assert_eq!(route(at, &hello(Some("other.org"), &[])).await, "tls");
    assert_eq!(route(at, &hello(None, &["h2"])).await, "tls");
    assert_eq!(route(at, b"plain bytes\n").await, "plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_arriving_in_pieces_is_awaited() {
    let mut l = with_filters(listener("l", "other"), &[ListenerFilter::TlsInspector]);
    l.filter_chains.insert(
        0,
        chain(
            "sni",
            matching(|m| m.server_names = vec!["slow.example".into()]),
            tcp_proxy("sni"),
        ),
    );
    let proxy = start(snapshot(
        vec![l],
        vec![
            static_cluster("sni", &[named_echo("sni").await]),
            static_cluster("other", &[named_echo("other").await]),
        ],
    ))
    .await;
    // Several small records, written a few bytes at a time with pauses: each peek sees a
    // longer prefix of the same hello.
    let hello = client_hello(Some("slow.example"), &["istio"], 20);
    let mut s = connect(addr(&proxy, "l")).await;
    for piece in hello.chunks(7) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(read_line(&mut s).await, "sni");
    let mut echoed = vec![0u8; hello.len()];
    bounded("echo", s.read_exact(&mut echoed)).await.unwrap();
    assert_eq!(echoed, hello);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_inspector_detects_http1_and_h2c() {
    let mut l = with_filters(
        listener("l", "tcp"),
        &[ListenerFilter::TlsInspector, ListenerFilter::HttpInspector],
    );
    l.filter_chains = vec![
        chain(
            "http1",
            matching(|m| m.application_protocols = vec!["http/1.1".into(), "http/1.0".into()]),
            tcp_proxy("http1"),
        ),
        chain(
            "h2c",
            matching(|m| m.application_protocols = vec!["h2c".into()]),
            tcp_proxy("h2c"),
        ),
        chain("tcp", FilterChainMatch::default(), tcp_proxy("tcp")),
    ];
    let mut clusters = Vec::new();
    for name in ["http1", "h2c", "tcp"] {
        clusters.push(static_cluster(name, &[named_echo(name).await]));
    }
    let proxy = start(snapshot(vec![l], clusters)).await;
    let at = addr(&proxy, "l");
    assert_eq!(
        route(at, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await,
        "http1"
    );
    assert_eq!(route(at, b"GET / HTTP/1.0\r\n\r\n").await, "http1");
    assert_eq!(route(at, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await, "h2c");
    assert_eq!(route(at, b"SSH-2.0-OpenSSH_9.2\r\n").await, "tcp");
    // On TLS the offered ALPN counts: the HTTP inspector leaves it alone.
    assert_eq!(
        route(at, &client_hello(None, &["http/1.1"], 16384)).await,
        "http1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_first_protocol_continues_after_the_filter_timeout() {
    // The client waits for the server's banner: the inspector sees nothing, gives up at the
    // listener-filter timeout, and the connection proceeds as plaintext, because the listener
    // says to continue (as Istio's do).
    let mut l = with_filters(listener("l", "banner"), &[ListenerFilter::TlsInspector]);
    l.listener_filters_timeout = Some(Duration::from_millis(200));
    l.continue_on_listener_filters_timeout = true;
    let proxy = start_with(
        snapshot(
            vec![l],
            vec![static_cluster("banner", &[named_echo("banner").await])],
        ),
        options(),
    )
    .await;
    let mut s = connect(addr(&proxy, "l")).await;
    assert_eq!(read_line(&mut s).await, "banner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_timeout_closes_unless_the_listener_continues() {
    let mut l = with_filters(listener("l", "banner"), &[ListenerFilter::TlsInspector]);
    l.listener_filters_timeout = Some(Duration::from_millis(200));
    l.continue_on_listener_filters_timeout = false;
    let proxy = start_with(
        snapshot(
            vec![l],
            vec![static_cluster("banner", &[named_echo("banner").await])],
        ),
        options(),
    )
    .await;
    let mut s = connect(addr(&proxy, "l")).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the proxy closes the connection at the filter timeout")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "no upstream bytes may arrive: the connection is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_during_inspection_is_closed() {
    let l = with_filters(listener("l", "c"), &[ListenerFilter::TlsInspector]);
    let proxy = start(snapshot(
        vec![l],
        vec![static_cluster("c", &[echo_server().await])],
    ))
    .await;
    // Half a record header, then the client's FIN: no decision is possible.
    let mut s = connect(addr(&proxy, "l")).await;
    s.write_all(&[22, 3]).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(closed_without_data(&mut s).await);
    let s = TcpStream::connect(addr(&proxy, "l")).await.unwrap();
    drop(s);
    bounded("connections released", async {
        while proxy.open_connections() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
