//! End to end on a VM namespace: `vm-proxy capture` rules (iptables, and native nftables),
//! `vm-proxy run` as uid 1337 with an Istio-shaped bootstrap, an app in the VM and a peer in
//! the mesh namespace. Each test first shows the traffic fails (or takes another path)
//! without the proxy, so a pass cannot come from the network alone. Needs root.

mod e2e;

use e2e::*;
use test_support::clients::dig;
use test_support::{TcpServer, Topology, UdpServer, VmAndMesh, tcp_exchange, udp_exchange};

/// The mesh peer the app talks to through the outbound passthrough.
const PEER_PORT: u16 = 8080;
/// A service port with a listener of its own in the bootstrap; nothing listens on it in the
/// mesh namespace, its cluster's endpoint is on [`SERVICE_BACKEND_PORT`].
const SERVICE_PORT: u16 = 8081;
const SERVICE_BACKEND_PORT: u16 = 9091;
/// The app's own port in the VM, captured inbound.
const APP_PORT: u16 = 8000;
/// Excluded from capture by [`vm_flags`]: inbound (`-d 22`) and outbound (`-o 9999`).
const SSH_PORT: u16 = 22;
const EXCLUDED_OUTBOUND_PORT: u16 = 9999;

fn service_bootstrap(t: &VmAndMesh, dir: &ConfigDir) -> std::path::PathBuf {
    dir.write(
        "bootstrap.yaml",
        &sidecar_bootstrap(
            &[Service {
                vip: t.mesh.addr(SERVICE_PORT),
                cluster: "outbound|8081||svc.mesh.example".into(),
                endpoint: t.mesh.addr(SERVICE_BACKEND_PORT),
            }],
            false,
        ),
    )
}

/// Outbound: the app's connection to the peer is redirected into the proxy, which passes it
/// through (peer sees the VM's address) or routes it by its own listener (a service port
/// reaches a different server). The proxy's own connections, as uid 1337, are not captured.
fn outbound(backend: Backend) {
    let t = Topology::vm_and_mesh();
    let peer = TcpServer::hello(&t.mesh, t.mesh.addr(PEER_PORT), b"peer:", b":end");
    let svc = TcpServer::hello(&t.mesh, t.mesh.addr(SERVICE_BACKEND_PORT), b"svc:", b":end");
    let dir = ConfigDir::new();
    let config = service_bootstrap(&t, &dir);
    capture_ok(&t.vm, &vm_flags(), backend);

    // Without the proxy the redirect target is closed: the connect is refused, although
    // the peer is listening.
    assert!(refused(&t.vm, t.mesh.addr(PEER_PORT)));
    assert!(peer.connections().is_empty());

    let mut proxy = start_proxy(&t.vm, &config, &[]);
    let x = tcp_exchange(&t.vm, t.mesh.addr(PEER_PORT), b"hello", WAIT).unwrap();
    assert_eq!(x.received_str(), "peer:hello:end");
    let seen = peer.wait_for_connections(1, WAIT).unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].peer.ip(), t.vm.ipv4(), "the peer sees the VM");
    assert_eq!(seen[0].local, t.mesh.addr(PEER_PORT));
    assert_eq!(seen[0].received, 5);

    // The service port has no server in the mesh; the proxy's listener for it sends the
    // connection to its cluster's endpoint, another server.
    let x = tcp_exchange(&t.vm, t.mesh.addr(SERVICE_PORT), b"query", WAIT).unwrap();
    assert_eq!(x.received_str(), "svc:query:end");
    let seen = svc.wait_for_connections(1, WAIT).unwrap();
    assert_eq!(seen[0].peer.ip(), t.vm.ipv4());
    assert_eq!(seen[0].local, t.mesh.addr(SERVICE_BACKEND_PORT));
    assert_eq!(peer.connections().len(), 1, "nothing else reached the peer");

    // Explicitly: uid 1337 (and gid 1337 under any uid) bypasses capture, even with the
    // proxy gone and its port closed, while the app is still redirected into nothing.
    stop_proxy(&mut proxy);
    assert!(refused(&t.vm, t.mesh.addr(PEER_PORT)));
    let port = PEER_PORT.to_string();
    let peer_ip = t.mesh.ipv4().to_string();
    for (uid, gid) in [(PROXY_UID, PROXY_UID), (4242, PROXY_UID)] {
        let mut argv = as_user(uid, gid);
        argv.extend(["nc", "-N", "-w", "5", &peer_ip, &port].map(String::from));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = t.vm.run_timeout_input(&argv, b"direct", WAIT).unwrap();
        assert!(
            out.status.success(),
            "uid {uid} gid {gid}: {}",
            describe(&out)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "peer:direct:end");
    }
    let seen = peer.wait_for_connections(3, WAIT).unwrap();
    assert!(seen.iter().all(|c| c.peer.ip() == t.vm.ipv4()), "{seen:?}");
}

#[test]
fn outbound_goes_through_the_proxy_iptables() {
    outbound(Backend::Iptables);
}

#[test]
fn outbound_goes_through_the_proxy_nftables() {
    outbound(Backend::Nftables);
}

/// Inbound: a mesh peer's connection to the app is redirected into the proxy, whose inbound
/// passthrough reaches the app from 127.0.0.6; data flows both ways including the half
/// close. SSH (excluded with `-d 22`) reaches its server directly with the peer's address.
fn inbound(backend: Backend) {
    let t = Topology::vm_and_mesh();
    let app = TcpServer::hello(&t.vm, t.vm.addr(APP_PORT), b"app:", b":end");
    let ssh = TcpServer::hello(&t.vm, t.vm.addr(SSH_PORT), b"ssh:", b":end");
    let dir = ConfigDir::new();
    let config = service_bootstrap(&t, &dir);
    capture_ok(&t.vm, &vm_flags(), backend);

    assert!(refused(&t.mesh, t.vm.addr(APP_PORT)), "captured, no proxy");
    assert!(app.connections().is_empty());
    let x = tcp_exchange(&t.mesh, t.vm.addr(SSH_PORT), b"key", WAIT).unwrap();
    assert_eq!(
        x.received_str(),
        "ssh:key:end",
        "excluded port, no proxy needed"
    );

    let mut proxy = start_proxy(&t.vm, &config, &[]);
    let x = tcp_exchange(&t.mesh, t.vm.addr(APP_PORT), b"ping", WAIT).unwrap();
    assert_eq!(x.received_str(), "app:ping:end");
    let seen = app.wait_for_connections(1, WAIT).unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].peer.ip().to_string(),
        "127.0.0.6",
        "via inbound passthrough"
    );
    assert_eq!(
        seen[0].local,
        t.vm.addr(APP_PORT),
        "original destination kept"
    );
    assert_eq!(seen[0].received, 4);

    let x = tcp_exchange(&t.mesh, t.vm.addr(SSH_PORT), b"key2", WAIT).unwrap();
    assert_eq!(x.received_str(), "ssh:key2:end");
    let seen = ssh.wait_for_connections(2, WAIT).unwrap();
    for c in &seen {
        assert_eq!(c.peer.ip(), t.mesh.ipv4(), "not proxied: {c:?}");
    }
    stop_proxy(&mut proxy);
}

#[test]
fn inbound_reaches_the_app_from_127_0_0_6_iptables() {
    inbound(Backend::Iptables);
}

#[test]
fn inbound_reaches_the_app_from_127_0_0_6_nftables() {
    inbound(Backend::Nftables);
}

/// `-o 9999`: the app reaches the peer's port 9999 directly, no proxy running, while the
/// captured port next to it is refused.
fn excluded_outbound_port(backend: Backend) {
    let t = Topology::vm_and_mesh();
    let peer = TcpServer::hello(&t.mesh, t.mesh.addr(PEER_PORT), b"peer:", b":end");
    let excluded = TcpServer::hello(&t.mesh, t.mesh.addr(EXCLUDED_OUTBOUND_PORT), b"x:", b":end");
    capture_ok(&t.vm, &vm_flags(), backend);

    assert!(refused(&t.vm, t.mesh.addr(PEER_PORT)));
    let x = tcp_exchange(&t.vm, t.mesh.addr(EXCLUDED_OUTBOUND_PORT), b"out", WAIT).unwrap();
    assert_eq!(x.received_str(), "x:out:end");
    let seen = excluded.wait_for_connections(1, WAIT).unwrap();
    assert_eq!(seen[0].peer, x.local, "straight from the app's own socket");
    assert!(peer.connections().is_empty());
}

#[test]
fn excluded_outbound_port_bypasses_capture_iptables() {
    excluded_outbound_port(Backend::Iptables);
}

#[test]
fn excluded_outbound_port_bypasses_capture_nftables() {
    excluded_outbound_port(Backend::Nftables);
}

/// `--redirect-dns --dns-servers MESH`: the app's DNS to that server lands on the local DNS
/// capture port, and the answer comes back from the server it asked; the proxy user's own
/// queries go to the real server.
fn dns(backend: Backend) {
    let t = Topology::vm_and_mesh();
    let resolver = UdpServer::echo(&t.mesh, t.mesh.addr(53));
    // Istio's DNS proxy runs as the proxy user, and must: the capture rules put its replies
    // from 15053 into the conntrack zone of the redirected queries, so that they are
    // translated back. socat stands in for it, echoing and logging (-v) every datagram.
    let local = format!("UDP-RECVFROM:{DNS_CAPTURE_PORT},bind=127.0.0.1,fork");
    let mut dns_proxy =
        t.vm.process("socat")
            .args(["-v", "-T", "5", &local, "SYSTEM:cat"])
            .user(PROXY_UID, PROXY_UID)
            .spawn();
    eventually("DNS stand-in bound", || {
        t.vm.run_ok(&["ss", "-Huln", "sport", "= :15053"])
            .contains("127.0.0.1:15053")
    });
    let mut flags = vm_flags();
    flags.extend([
        "--redirect-dns".to_string(),
        "--dns-servers".into(),
        t.mesh.ipv4().to_string(),
    ]);
    capture_ok(&t.vm, &flags, backend);

    let reply = udp_exchange(&t.vm, t.mesh.addr(53), b"app-query", WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", dns_proxy.logs()));
    assert_eq!(reply, b"app-query");
    // A real resolver client, talking to the mesh server as far as it knows.
    let server = format!("@{}", t.mesh.ipv4());
    let out = dig(&t.vm, &[&server, "e2e.mesh.example", "A"], WAIT).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text.contains("QUESTION SECTION:\n;e2e.mesh.example."),
        "{text}"
    );
    assert!(
        text.contains(&format!("SERVER: {}#53", t.mesh.ipv4())),
        "{text}"
    );
    assert!(
        resolver.datagrams().is_empty(),
        "{:?}",
        resolver.datagrams()
    );
    let seen = dns_proxy.stderr();
    assert!(
        seen.contains("app-query") && seen.contains("e2e.mesh"),
        "{seen}"
    );

    // The proxy user's query is not captured: it reaches the resolver in the mesh.
    let mut argv = as_user(PROXY_UID, PROXY_UID);
    let to = format!("UDP:{}:53", t.mesh.ipv4());
    argv.extend(["socat", "-t", "3", "-", &to].map(String::from));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = t.vm.run_timeout_input(&argv, b"proxy-query", WAIT).unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "proxy-query");
    let at_resolver = resolver.wait_for_datagrams(1, WAIT).unwrap();
    assert_eq!(at_resolver.len(), 1, "{at_resolver:?}");
    assert_eq!(at_resolver[0].payload, b"proxy-query");
    assert_eq!(at_resolver[0].peer.ip(), t.vm.ipv4());
    assert!(!dns_proxy.stderr().contains("proxy-query"));
    dns_proxy.kill().unwrap();
}

#[test]
fn dns_is_redirected_except_for_the_proxy_user_iptables() {
    dns(Backend::Iptables);
}

#[test]
fn dns_is_redirected_except_for_the_proxy_user_nftables() {
    dns(Backend::Nftables);
}
