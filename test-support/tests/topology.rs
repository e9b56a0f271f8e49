//! Topologies: links, addresses, routes and sysctls work, and tests running in parallel do
//! not collide.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use test_support::{TcpServer, Topology, service_ip, service_ipv6, tcp_exchange};

const T: Duration = Duration::from_secs(5);

#[test]
fn pair_reaches_peer_over_ipv4_and_ipv6() {
    let t = Topology::vm_and_mesh_dual_stack();
    let v4 = TcpServer::echo(&t.mesh, t.mesh.addr(0));
    let v6 = TcpServer::echo(&t.mesh, t.mesh.addr6(0));

    let got = tcp_exchange(&t.vm, v4.addr(), b"over ipv4", T).unwrap();
    assert_eq!(got.received, b"over ipv4");
    assert_eq!(got.local.ip(), IpAddr::V4(t.vm.ipv4()));
    let got = tcp_exchange(&t.vm, v6.addr(), b"over ipv6", T).unwrap();
    assert_eq!(got.received, b"over ipv6");

    let seen = v4.wait_for_connections(1, T).unwrap();
    assert_eq!(seen[0].peer.ip(), IpAddr::V4(t.vm.ipv4()));
    assert_eq!(seen[0].local, v4.addr());
    assert_eq!(seen[0].received, 9);
    let seen = v6.wait_for_connections(1, T).unwrap();
    assert_eq!(seen[0].peer.ip(), IpAddr::V6(t.vm.ipv6().unwrap()));
}

#[test]
fn ipv4_only_pair_has_no_ipv6_address() {
    let t = Topology::vm_and_mesh();
    assert_eq!(t.vm.ipv6(), None);
    let addrs = t.vm.run_ok(&["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("inet 198.18.0.2/24"), "{addrs}");
    assert!(!addrs.contains("fd00:"), "{addrs}");
}

#[test]
fn three_nodes_share_a_bridge() {
    let t = Topology::builder()
        .node("vm")
        .node("mesh")
        .node("istiod")
        .ipv6()
        .build();
    assert!(t.hub().is_some());
    let istiod = t.node("istiod");
    let srv = TcpServer::echo(istiod, istiod.addr6(0));
    for from in ["vm", "mesh"] {
        let got = tcp_exchange(t.node(from), srv.addr(), from.as_bytes(), T).unwrap();
        assert_eq!(got.received, from.as_bytes());
    }
    let peers: Vec<IpAddr> = srv
        .wait_for_connections(2, T)
        .unwrap()
        .iter()
        .map(|c| c.peer.ip())
        .collect();
    let want: Vec<IpAddr> = ["vm", "mesh"]
        .iter()
        .map(|n| IpAddr::V6(t.node(n).ipv6().unwrap()))
        .collect();
    assert_eq!(peers, want);
}

#[test]
fn service_ips_are_routed_to_the_node_that_claims_them() {
    let t = Topology::vm_and_mesh_dual_stack();
    let vip4 = IpAddr::V4(service_ip(10));
    let vip6 = IpAddr::V6(service_ipv6(10));
    t.mesh.add_ip(vip4);
    t.mesh.add_ip(vip6);
    for vip in [vip4, vip6] {
        let srv = TcpServer::echo(&t.mesh, SocketAddr::new(vip, 80));
        let got = tcp_exchange(&t.vm, srv.addr(), b"vip", T).unwrap();
        assert_eq!(got.received, b"vip");
        assert_eq!(srv.wait_for_connections(1, T).unwrap()[0].local, srv.addr());
    }
}

#[test]
fn sysctls_are_set_per_node() {
    let key = "net.ipv4.conf.all.route_localnet";
    let t = Topology::builder()
        .node("vm")
        .node("mesh")
        .sysctl("vm", key, "1")
        .build();
    assert_eq!(t.node("vm").run_ok(&["sysctl", "-n", key]).trim(), "1");
    assert_eq!(t.node("mesh").run_ok(&["sysctl", "-n", key]).trim(), "0");
}

#[test]
fn parallel_topologies_do_not_collide() {
    let workers: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let t = Topology::vm_and_mesh();
                let srv = TcpServer::echo(&t.mesh, t.mesh.addr(7000));
                let msg = format!("worker {i}");
                let got = tcp_exchange(&t.vm, srv.addr(), msg.as_bytes(), T).unwrap();
                assert_eq!(got.received_str(), msg);
                t.vm.name().to_string()
            })
        })
        .collect();
    let mut names: Vec<String> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 6);
}
