//! In-namespace peers and clients, our own and real programs.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use test_support::clients::{curl, dig, nc, socat};
use test_support::{
    Error, HttpServer, TcpServer, Topology, UdpServer, read_to_eof, tcp_connect, tcp_exchange,
    udp_exchange, wait_for_tcp,
};

const T: Duration = Duration::from_secs(5);

#[test]
fn hello_server_answers_fin_with_its_trailer() {
    let t = Topology::vm_and_mesh();
    let srv = TcpServer::hello(&t.mesh, t.mesh.addr(0), b"hello\n", b"bye\n");
    let got = tcp_exchange(&t.vm, srv.addr(), b"ping\n", T).unwrap();
    assert_eq!(got.received_str(), "hello\nping\nbye\n");
}

#[test]
fn half_closed_client_still_reads() {
    let t = Topology::vm_and_mesh();
    let srv = TcpServer::hello(&t.mesh, t.mesh.addr(0), b"banner:", b":trailer");
    let mut s = tcp_connect(&t.vm, srv.addr(), T).unwrap();
    let mut banner = [0u8; 7];
    s.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"banner:");
    s.write_all(b"data").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let rest = read_to_eof(&mut s, Instant::now() + T).unwrap();
    assert_eq!(rest, b"data:trailer");
    let conns = srv.wait_for_connections(1, T).unwrap();
    assert!(conns[0].finished);
    assert_eq!(conns[0].received, 4);
}

#[test]
fn loopback_servers_are_private_to_their_namespace() {
    let t = Topology::vm_and_mesh();
    let srv = TcpServer::echo(&t.vm, "127.0.0.1:0".parse().unwrap());
    let got = tcp_exchange(&t.vm, srv.addr(), b"local", T).unwrap();
    assert_eq!(got.received, b"local");
    assert_eq!(got.local.ip().to_string(), "127.0.0.1");
    match tcp_exchange(&t.mesh, srv.addr(), b"x", T) {
        Err(Error::Connect { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("mesh must not reach vm's loopback: {other:?}"),
    }
}

#[test]
fn in_ns_threads_run_inside_the_namespace() {
    use std::os::unix::fs::MetadataExt;
    let t = Topology::vm_and_mesh();
    let want = std::fs::metadata(t.vm.path()).unwrap().ino();
    let got =
        t.vm.in_ns(|| std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino())
            .unwrap();
    assert_eq!(got, want);
    let outside = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    assert_ne!(outside, want, "the calling thread stays where it was");
}

#[test]
fn records_the_source_address_a_client_bound() {
    let t = Topology::vm_and_mesh();
    t.vm.add_ip("127.0.0.6".parse().unwrap());
    let app = TcpServer::echo(&t.vm, t.vm.addr(0));
    let out = socat(
        &t.vm,
        &[
            "-t",
            "2",
            "-",
            &format!("TCP:{},bind=127.0.0.6", app.addr()),
        ],
        b"from 127.0.0.6",
        T,
    )
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"from 127.0.0.6");
    let conns = app.wait_for_connections(1, T).unwrap();
    let want: SocketAddr = "127.0.0.6:0".parse().unwrap();
    assert_eq!(conns[0].peer.ip(), want.ip());
    assert_eq!(conns[0].local, app.addr());
}

#[test]
fn wait_for_connections_is_bounded() {
    let t = Topology::vm_and_mesh();
    let srv = TcpServer::echo(&t.mesh, t.mesh.addr(0));
    match srv.wait_for_connections(1, Duration::from_millis(100)) {
        Err(Error::TooFew {
            want: 1, seen: 0, ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn wait_for_tcp_sees_a_listener_and_times_out_without_one() {
    let t = Topology::vm_and_mesh();
    let srv = TcpServer::echo(&t.mesh, t.mesh.addr(0));
    wait_for_tcp(&t.vm, srv.addr(), T).unwrap();
    match wait_for_tcp(&t.vm, t.mesh.addr(1), Duration::from_millis(200)) {
        Err(Error::NotReady { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn http_server_answers_curl_with_its_name_and_keeps_alive() {
    let t = Topology::vm_and_mesh();
    let srv = HttpServer::start(&t.mesh, t.mesh.addr(0), "mesh-http");
    let base = format!("http://{}", srv.addr());
    let out = curl(
        &t.vm,
        &[
            "-H",
            "x-test: 1",
            &format!("{base}/one"),
            &format!("{base}/two"),
        ],
        T,
    )
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "mesh-http\nmesh-http\n"
    );
    let reqs = srv.wait_for_requests(2, T).unwrap();
    assert_eq!(reqs[0].path, "/one");
    assert_eq!(reqs[1].path, "/two");
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].header("X-Test"), Some("1"));
    assert_eq!(
        reqs[0].header("host"),
        Some(srv.addr().to_string().as_str())
    );
    assert_eq!(reqs[0].peer.ip(), std::net::IpAddr::V4(t.vm.ipv4()));
    // curl reused the connection for the second URL.
    assert_eq!(reqs[0].peer, reqs[1].peer);
}

#[test]
fn http_server_reads_request_bodies() {
    let t = Topology::vm_and_mesh();
    let srv = HttpServer::start(&t.mesh, t.mesh.addr(0), "sink");
    let out = curl(
        &t.vm,
        &[
            "-i",
            "--data-binary",
            "0123456789",
            &format!("http://{}/up", srv.addr()),
        ],
        T,
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("x-served-by: sink"), "{text}");
    assert!(
        text.contains(&format!("x-peer-addr: {}:", t.vm.ipv4())),
        "{text}"
    );
    let reqs = srv.wait_for_requests(1, T).unwrap();
    assert_eq!((reqs[0].method.as_str(), reqs[0].body_len), ("POST", 10));
}

#[test]
fn nc_talks_to_the_hello_server() {
    let t = Topology::vm_and_mesh();
    let srv = TcpServer::hello(&t.mesh, t.mesh.addr(0), b"hi ", b" bye");
    let ip = t.mesh.ipv4().to_string();
    let out = nc(&t.vm, &ip, srv.addr().port(), b"there", T).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi there bye");
}

#[test]
fn dig_without_a_server_fails_within_its_time() {
    let t = Topology::vm_and_mesh();
    let server = format!("@{}", t.mesh.ipv4());
    let out = dig(
        &t.vm,
        &[&server, "-p", "5353", "example.test"],
        Duration::from_secs(1),
    )
    .unwrap();
    // dig: 9 means no reply from the server.
    assert_eq!(out.status.code(), Some(9), "{out:?}");
}

#[test]
fn udp_echo_records_the_sender() {
    let t = Topology::vm_and_mesh_dual_stack();
    for addr in [t.mesh.addr(5353), t.mesh.addr6(5353)] {
        let srv = UdpServer::echo(&t.mesh, addr);
        assert_eq!(
            udp_exchange(&t.vm, srv.addr(), b"query", T).unwrap(),
            b"query"
        );
        let got = srv.wait_for_datagrams(1, T).unwrap();
        let vm_ip = if addr.is_ipv4() {
            std::net::IpAddr::V4(t.vm.ipv4())
        } else {
            std::net::IpAddr::V6(t.vm.ipv6().unwrap())
        };
        assert_eq!(
            (got[0].peer.ip(), got[0].payload.as_slice()),
            (vm_ip, &b"query"[..])
        );
    }
    // Nothing answers on a port without a server: the wait is bounded.
    match udp_exchange(
        &t.vm,
        t.mesh.addr(9),
        b"x",
        std::time::Duration::from_millis(200),
    ) {
        Err(Error::Exchange { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn binding_a_taken_address_fails_clearly() {
    let t = Topology::vm_and_mesh();
    let first = TcpServer::echo(&t.mesh, t.mesh.addr(0));
    let addr = first.addr();
    let err = std::panic::catch_unwind(|| TcpServer::echo(&t.mesh, addr))
        .map(|_| ())
        .expect_err("the port is taken");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains(&format!("cannot bind {addr}")), "{msg}");
    assert!(msg.contains(t.mesh.name()), "{msg}");
}
