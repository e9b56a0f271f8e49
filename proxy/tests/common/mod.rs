//! Building blocks for in-process tests: snapshots built by hand, real upstream servers and
//! clients on loopback, every wait bounded.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vm_proxy::{Options, Proxy};
use xds_client::model::{
    Cluster, ClusterSpecifier, DiscoveryType, Endpoint, EndpointAddress, FilterChain,
    FilterChainMatch, LbPolicy, Listener, ListenerFilter, NetworkFilter, Snapshot, TcpProxy,
    WeightedCluster,
};

/// Upper bound for any single wait in a test; reaching it fails the test, nothing more.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing happened within {WAIT:?}"),
    }
}

pub fn tcp_proxy(cluster: &str) -> NetworkFilter {
    NetworkFilter::TcpProxy(TcpProxy {
        stat_prefix: cluster.into(),
        cluster: ClusterSpecifier::Cluster(cluster.into()),
        idle_timeout: None,
    })
}

pub fn weighted(clusters: &[(&str, u32)]) -> NetworkFilter {
    NetworkFilter::TcpProxy(TcpProxy {
        stat_prefix: "weighted".into(),
        cluster: ClusterSpecifier::Weighted(
            clusters
                .iter()
                .map(|&(name, weight)| WeightedCluster {
                    name: name.into(),
                    weight,
                })
                .collect(),
        ),
        idle_timeout: None,
    })
}

pub fn chain(name: &str, m: FilterChainMatch, filter: NetworkFilter) -> FilterChain {
    FilterChain {
        name: name.into(),
        filter_chain_match: m,
        filters: vec![filter],
        transport_socket: Default::default(),
        transport_socket_connect_timeout: None,
    }
}

/// A bound loopback listener (kernel-chosen port) whose only chain proxies to `cluster`.
pub fn listener(name: &str, cluster: &str) -> Listener {
    Listener {
        name: name.into(),
        address: "127.0.0.1:0".parse().unwrap(),
        bind_to_port: true,
        use_original_dst: false,
        transparent: false,
        listener_filters: Vec::new(),
        listener_filters_disabled: Vec::new(),
        filter_chains: vec![chain(
            "default",
            FilterChainMatch::default(),
            tcp_proxy(cluster),
        )],
        default_filter_chain: None,
        traffic_direction: Default::default(),
        listener_filters_timeout: Some(Duration::from_secs(15)),
        continue_on_listener_filters_timeout: false,
    }
}

pub fn with_filters(mut l: Listener, filters: &[ListenerFilter]) -> Listener {
    l.listener_filters = filters.to_vec();
    l
}

pub fn static_cluster(name: &str, endpoints: &[SocketAddr]) -> Cluster {
    Cluster {
        name: name.into(),
        discovery: DiscoveryType::Static,
        connect_timeout: Duration::from_secs(5),
        lb_policy: LbPolicy::RoundRobin,
        upstream_bind_address: None,
        eds_service_name: None,
        dns_lookup_family: Default::default(),
        dns_refresh_rate: Duration::from_secs(5),
        respect_dns_ttl: false,
        transport_socket: Default::default(),
        transport_socket_matches: Vec::new(),
        http: Default::default(),
        circuit_breakers: Default::default(),
        common_lb: Default::default(),
        outlier_detection: None,
        metadata_exchange: None,
        endpoints: endpoints
            .iter()
            .map(|&a| Endpoint {
                address: EndpointAddress::Socket(a),
                load_balancing_weight: 1,
                health_status: Default::default(),
                transport_socket_metadata: Default::default(),
                locality: Default::default(),
            })
            .collect(),
    }
}

pub fn original_dst_cluster(name: &str) -> Cluster {
    Cluster {
        discovery: DiscoveryType::OriginalDst,
        lb_policy: LbPolicy::ClusterProvided,
        ..static_cluster(name, &[])
    }
}

/// A snapshot with its admin server on a kernel-chosen loopback port.
pub fn snapshot(listeners: Vec<Listener>, clusters: Vec<Cluster>) -> Snapshot {
    Snapshot {
        listeners: listeners.into_iter().map(Arc::new).collect(),
        clusters: clusters
            .into_iter()
            .map(|c| (c.name.clone(), Arc::new(c)))
            .collect::<HashMap<_, _>>(),
        routes: HashMap::new(),
        admin: Some("127.0.0.1:0".parse().unwrap()),
    }
}

pub fn options() -> Options {
    Options {
        drain_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

pub async fn start(snapshot: Snapshot) -> Proxy {
    start_with(snapshot, options()).await
}

pub async fn start_with(snapshot: Snapshot, options: Options) -> Proxy {
    Proxy::start(snapshot, || serde_json::json!({"configs": []}), options)
        .await
        .expect("proxy starts")
}

pub fn addr(proxy: &Proxy, listener: &str) -> SocketAddr {
    proxy
        .listener_address(listener)
        .unwrap_or_else(|| panic!("listener {listener} is not bound"))
}

/// An upstream that first writes `name\n`, then echoes everything it reads; at the client's
/// end of stream it shuts down its own sending side.
pub async fn named_echo(name: &'static str) -> SocketAddr {
    named_echo_at("127.0.0.1:0".parse().unwrap(), name).await
}

/// [`named_echo`] at a given address.
pub async fn named_echo_at(at: SocketAddr, name: &'static str) -> SocketAddr {
    serve_at(at, move |mut s: TcpStream| async move {
        s.write_all(format!("{name}\n").as_bytes()).await?;
        echo(&mut s).await
    })
    .await
}

/// An upstream that echoes everything and half-closes after the client does.
pub async fn echo_server() -> SocketAddr {
    serve(|mut s: TcpStream| async move { echo(&mut s).await }).await
}

/// An upstream that writes the address it sees the connection coming from, then closes.
pub async fn peer_reporter() -> SocketAddr {
    peer_reporter_at("127.0.0.1:0".parse().unwrap()).await
}

/// [`peer_reporter`] at a given address.
pub async fn peer_reporter_at(at: SocketAddr) -> SocketAddr {
    serve_at(at, |mut s: TcpStream| async move {
        let peer = s.peer_addr()?;
        s.write_all(format!("{}\n", peer.ip()).as_bytes()).await?;
        s.shutdown().await
    })
    .await
}

pub async fn echo(s: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        s.write_all(&buf[..n]).await?;
    }
}

/// Accepts forever on a loopback port, one task per connection running `handler`.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    serve_at("127.0.0.1:0".parse().unwrap(), handler).await
}

/// [`serve`] at a given address.
pub async fn serve_at<F, Fut>(at: SocketAddr, handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let l = TcpListener::bind(at)
        .await
        .unwrap_or_else(|e| panic!("upstream cannot listen on {at}: {e}"));
    let a = l.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let h = handler.clone();
            tokio::spawn(async move {
                let _ = h(s).await;
            });
        }
    });
    a
}

pub async fn connect(a: SocketAddr) -> TcpStream {
    bounded("connect", TcpStream::connect(a))
        .await
        .unwrap_or_else(|e| panic!("connect to {a}: {e}"))
}

/// Reads one `\n`-terminated line.
pub async fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    bounded("read line", async {
        loop {
            match s.read(&mut b).await {
                Ok(0) => break,
                Ok(_) if b[0] == b'\n' => break,
                Ok(_) => line.push(b[0]),
                Err(e) => panic!("read: {e}"),
            }
        }
    })
    .await;
    String::from_utf8(line).unwrap()
}

/// Reads until end of stream (or a reset, which also ends it).
pub async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    bounded("read to end", async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// Whether the connection through the proxy was closed without a byte from upstream.
pub async fn closed_without_data(s: &mut TcpStream) -> bool {
    read_to_end(s).await.is_empty()
}

/// The name an upstream made by [`named_echo`] greets a new connection through `a` with.
pub async fn which_upstream(a: SocketAddr) -> String {
    let mut s = connect(a).await;
    read_line(&mut s).await
}
