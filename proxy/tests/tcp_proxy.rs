//! tcp_proxy through real loopback sockets: data both ways, half-close, a large transfer,
//! cluster and endpoint choice, and the ways a connection is refused or ended.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use xds_client::model::{ClusterSpecifier, NetworkFilter, TcpProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_flows_both_ways() {
    let up = named_echo("up").await;
    let proxy = start(snapshot(
        vec![listener("l", "c")],
        vec![static_cluster("c", &[up])],
    ))
    .await;
    let mut s = connect(addr(&proxy, "l")).await;
    assert_eq!(read_line(&mut s).await, "up");
    for round in 0..3 {
        let msg = format!("ping {round}\n");
        s.write_all(msg.as_bytes()).await.unwrap();
        assert_eq!(read_line(&mut s).await, msg.trim_end());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_still_gets_the_servers_answer() {
    // The server answers only after the request ended: it needs the client's FIN.
    let up = serve(|mut s: TcpStream| async move {
        let mut request = Vec::new();
        s.read_to_end(&mut request).await?;
        s.write_all(format!("got {} bytes", request.len()).as_bytes())
            .await?;
        s.shutdown().await
    })
    .await;
    let proxy = start(snapshot(
        vec![listener("l", "c")],
        vec![static_cluster("c", &[up])],
    ))
    .await;
    let mut s = connect(addr(&proxy, "l")).await;
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut s).await, b"got 5 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_half_close_still_gets_the_clients_bytes() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let up = serve(move |mut s: TcpStream| {
        let tx = tx.clone();
        async move {
            s.write_all(b"banner").await?;
            s.shutdown().await?;
            let mut got = Vec::new();
            s.read_to_end(&mut got).await?;
            let _ = tx.send(got);
            Ok(())
        }
    })
    .await;
    let proxy = start(snapshot(
        vec![listener("l", "c")],
        vec![static_cluster("c", &[up])],
    ))
    .await;
    let mut s = connect(addr(&proxy, "l")).await;
    // The server's FIN arrives while our own side is still open...
    assert_eq!(read_to_end(&mut s).await, b"banner");
    // ...and what we send afterwards still reaches it.
    s.write_all(b"after the server's FIN").await.unwrap();
    s.shutdown().await.unwrap();
    let got = bounded("server receives", rx.recv()).await.unwrap();
    assert_eq!(got, b"after the server's FIN");
}

/// FNV-1a, to compare 64 MiB without keeping it.
struct Fnv(u64);
impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfer_arrives_intact_both_ways() {
    const TOTAL: usize = 64 << 20;
    let up = echo_server().await;
    let proxy = start(snapshot(
        vec![listener("l", "c")],
        vec![static_cluster("c", &[up])],
    ))
    .await;
    let s = connect(addr(&proxy, "l")).await;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut sum = Fnv::new();
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut chunk = vec![0u8; 256 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            for b in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
            w.write_all(&chunk).await.unwrap();
            sum.update(&chunk);
            sent += chunk.len();
        }
        w.shutdown().await.unwrap();
        sum.0
    });
    let mut sum = Fnv::new();
    let mut received = 0;
    let mut buf = vec![0u8; 256 * 1024];
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            sum.update(&buf[..n]);
            received += n;
        }
    })
    .await
    .expect("the echo of 64 MiB ends");
    let sent_sum = bounded("writer", writer).await.unwrap();
    assert_eq!(received, TOTAL);
    assert_eq!(sum.0, sent_sum);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_by_weight() {
    let a = named_echo("a").await;
    let b = named_echo("b").await;
    let mut l = listener("l", "unused");
    l.filter_chains[0].filters = vec![weighted(&[("a", 1), ("b", 3)])];
    let proxy = start(snapshot(
        vec![l],
        vec![static_cluster("a", &[a]), static_cluster("b", &[b])],
    ))
    .await;
    let at = addr(&proxy, "l");
    let mut to_a = 0;
    for _ in 0..400 {
        match which_upstream(at).await.as_str() {
            "a" => to_a += 1,
            "b" => {}
            other => panic!("unexpected upstream {other:?}"),
        }
    }
    // Expected 100 (random choice like Envoy's; standard deviation ~8.7).
    assert!((50..=150).contains(&to_a), "{to_a} of 400 went to a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_take_turns() {
    let ups = [
        named_echo("e0").await,
        named_echo("e1").await,
        named_echo("e2").await,
    ];
    let proxy = start(snapshot(
        vec![listener("l", "c")],
        vec![static_cluster("c", &ups)],
    ))
    .await;
    let at = addr(&proxy, "l");
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(which_upstream(at).await);
    }
    assert_eq!(seen, ["e0", "e1", "e2", "e0", "e1", "e2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_without_endpoints_closes_the_connection() {
    let proxy = start(snapshot(
        vec![listener("l", "empty")],
        vec![static_cluster("empty", &[])],
    ))
    .await;
    let mut s = connect(addr(&proxy, "l")).await;
    assert!(closed_without_data(&mut s).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cluster_or_zero_weights_close_the_connection() {
    let mut zero = listener("zero", "unused");
    zero.filter_chains[0].filters = vec![weighted(&[("c", 0)])];
    let up = echo_server().await;
    let proxy = start(snapshot(
        vec![listener("unknown", "nope"), zero],
        vec![static_cluster("c", &[up])],
    ))
    .await;
    for l in ["unknown", "zero"] {
        let mut s = connect(addr(&proxy, l)).await;
        assert!(closed_without_data(&mut s).await, "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_closes_connections_over_the_limit_until_one_ends() {
    let up = named_echo("up").await;
    let mut c = static_cluster("c", &[up]);
    c.circuit_breakers.default.max_connections = 2;
    let proxy = start(snapshot(vec![listener("l", "c")], vec![c])).await;
    let at = addr(&proxy, "l");
    let mut first = connect(at).await;
    assert_eq!(read_line(&mut first).await, "up");
    let mut second = connect(at).await;
    assert_eq!(read_line(&mut second).await, "up");
    // The third is over the limit: closed before any upstream is opened.
    let mut third = connect(at).await;
    assert!(closed_without_data(&mut third).await);
    // The two admitted ones still work.
    second.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_line(&mut second).await, "still here");
    // When one ends, its place is free again.
    drop(first);
    let mut again = None;
    for _ in 0..100 {
        let mut s = connect(at).await;
        let mut b = [0u8; 3];
        if let Ok(Ok(3)) = tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut b)).await
        {
            again = Some(b);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(again.as_ref().map(|b| &b[..]), Some(&b"up\n"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_closes_the_connection() {
    // A port nothing listens on: bind one, take its number, close it.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start(snapshot(
        vec![listener("l", "c")],
        vec![static_cluster("c", &[gone])],
    ))
    .await;
    let mut s = connect(addr(&proxy, "l")).await;
    assert!(closed_without_data(&mut s).await);
}

/// A loopback listener that never accepts, with its accept queue full: the kernel drops
/// further SYNs, so a connect to it hangs until its timeout.
fn unresponsive_upstream() -> (Socket, Vec<std::net::TcpStream>, SocketAddr) {
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    l.listen(0).unwrap();
    let at = l.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&at, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (l, fillers, at),
            Err(e) => panic!("filling the accept queue: {e}"),
        }
    }
    panic!("the accept queue of a backlog-0 listener did not fill up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_closes_the_connection() {
    let (_listener, _fillers, at) = unresponsive_upstream();
    let mut c = static_cluster("c", &[at]);
    c.connect_timeout = Duration::from_millis(300);
    let proxy = start(snapshot(vec![listener("l", "c")], vec![c])).await;
    let mut s = connect(addr(&proxy, "l")).await;
    assert!(closed_without_data(&mut s).await);
    assert_eq!(
        bounded("connection released", async {
            while proxy.open_connections() != 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            proxy.open_connections()
        })
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_both_sides() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let up = serve(move |mut s: TcpStream| {
        let tx = tx.clone();
        async move {
            let r = echo(&mut s).await;
            // The proxy closed the upstream side too.
            let _ = tx.send(());
            r
        }
    })
    .await;
    let mut l = listener("l", "c");
    l.filter_chains[0].filters = vec![NetworkFilter::TcpProxy(TcpProxy {
        stat_prefix: "idle".into(),
        cluster: ClusterSpecifier::Cluster("c".into()),
        idle_timeout: Some(Duration::from_millis(300)),
    })];
    let proxy = start(snapshot(vec![l], vec![static_cluster("c", &[up])])).await;
    let mut s = connect(addr(&proxy, "l")).await;
    s.write_all(b"still here\n").await.unwrap();
    assert_eq!(read_line(&mut s).await, "still here");
    // Now nothing moves: the proxy ends the connection on its own.
    assert!(read_to_end(&mut s).await.is_empty());
    bounded("upstream closed", rx.recv()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_bind_address_is_the_source_the_upstream_sees() {
    let up = peer_reporter().await;
    let mut c = static_cluster("c", &[up]);
    c.upstream_bind_address = Some("127.0.0.6:0".parse().unwrap());
    let proxy = start(snapshot(vec![listener("l", "c")], vec![c])).await;
    for _ in 0..3 {
        let mut s = connect(addr(&proxy, "l")).await;
        assert_eq!(read_line(&mut s).await, "127.0.0.6");
    }
    // Without the setting the source is the ordinary loopback address.
    let proxy = start(snapshot(
        vec![listener("l", "c")],
        vec![static_cluster("c", &[up])],
    ))
    .await;
    let mut s = connect(addr(&proxy, "l")).await;
    assert_eq!(read_line(&mut s).await, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_dst_without_a_redirect_is_refused_not_looped() {
    // Connecting straight to a passthrough listener: there is no original destination, and
    // connecting to "where the client wanted to go" would mean connecting to ourselves.
    let mut l = listener("outbound", "PassthroughCluster");
    l.use_original_dst = true;
    let proxy = start(snapshot(
        vec![l],
        vec![original_dst_cluster("PassthroughCluster")],
    ))
    .await;
    let mut s = connect(addr(&proxy, "outbound")).await;
    assert!(closed_without_data(&mut s).await);
    bounded("no connection left", async {
        while proxy.open_connections() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_listener_proxies_and_refuses_to_loop() {
    // IP_TRANSPARENT needs CAP_NET_ADMIN, which the test suite has (it runs as root).
    let up = named_echo("up").await;
    let mut plain = listener("tproxy", "c");
    plain.transparent = true;
    let mut passthrough = listener("tproxy-passthrough", "PassthroughCluster");
    passthrough.transparent = true;
    passthrough.listener_filters = vec![xds_client::model::ListenerFilter::OriginalDst];
    let proxy = start(snapshot(
        vec![plain, passthrough],
        vec![
            static_cluster("c", &[up]),
            original_dst_cluster("PassthroughCluster"),
        ],
    ))
    .await;
    assert_eq!(which_upstream(addr(&proxy, "tproxy")).await, "up");
    // Reached directly rather than through TPROXY, the local address is the listener itself:
    // not an original destination to connect to.
    let mut s = connect(addr(&proxy, "tproxy-passthrough")).await;
    assert!(closed_without_data(&mut s).await);
    bounded("no connection left", async {
        while proxy.open_connections() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
