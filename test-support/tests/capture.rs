//! The harness under real capture rules: a process started as uid 1337 is excluded by an
//! owner match, while the same connection from root is redirected.

use std::time::Duration;

use test_support::{TcpServer, Topology, service_ip, tcp_exchange};

const T: Duration = Duration::from_secs(5);

#[test]
fn owner_match_sees_the_uid_of_spawned_processes() {
    let t = Topology::vm_and_mesh();
    let rules = "*nat\n\
                 -A OUTPUT -p tcp -m owner --uid-owner 1337 -j RETURN\n\
                 -A OUTPUT -p tcp -d 198.19.0.0/16 -j REDIRECT --to-ports 15001\n\
                 COMMIT\n";
    let out =
        t.vm.run_timeout_input(&["iptables-restore"], rules.as_bytes(), T)
            .unwrap();
    assert!(out.status.success(), "{out:?}");
    let captured = TcpServer::hello(&t.vm, "127.0.0.1:15001".parse().unwrap(), b"captured ", b"");
    // The mesh answers for the service address, so an uncaptured connection ends there.
    t.mesh.add_ip(service_ip(10).into());
    let direct = TcpServer::hello(&t.mesh, (service_ip(10), 80).into(), b"direct ", b"");

    let as_root = tcp_exchange(&t.vm, (service_ip(10), 80).into(), b"root", T).unwrap();
    assert_eq!(as_root.received_str(), "captured root");

    let mut p =
        t.vm.process("nc")
            .args(["-N", "-w", "5", &service_ip(10).to_string(), "80"])
            .user(1337, 1337)
            .spawn();
    // nc reads stdin from /dev/null: it half-closes at once and prints the reply.
    assert!(p.wait_timeout(T).unwrap().success(), "{}", p.logs());
    assert_eq!(p.stdout(), "direct ");
    assert_eq!(captured.wait_for_connections(1, T).unwrap().len(), 1);
    let seen = direct.wait_for_connections(1, T).unwrap();
    assert_eq!(seen[0].peer.ip(), t.vm.ipv4());
}
