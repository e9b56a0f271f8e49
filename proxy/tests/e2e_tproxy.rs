//! Inbound capture with `-m TPROXY`: mangle rules plus policy routing installed by
//! `vm-proxy capture`, the proxy as uid 1337 with ambient CAP_NET_ADMIN and a `transparent`
//! inbound listener. Both backends. Needs root.
//!
//! What the app sees: Istio's TPROXY sidecar adds the `original_src` listener filter to
//! keep the peer's address towards the app; vm-proxy does not implement that filter and
//! refuses a bootstrap naming it (checked below), so the supported shape is Istio's without
//! it, where Envoy binds the inbound passthrough to 127.0.0.6, and so must we.

mod e2e;

use std::time::Duration;

use e2e::*;
use test_support::{TcpServer, Topology, tcp_exchange};

const APP_PORT: u16 = 8000;

fn tproxy_flags() -> Vec<String> {
    let mut flags = vm_flags();
    let i = flags.iter().position(|f| f == "-m").unwrap();
    flags[i + 1] = "TPROXY".into();
    flags
}

fn tproxy_inbound(backend: Backend) {
    let t = Topology::vm_and_mesh();
    let app = TcpServer::hello(&t.vm, t.vm.addr(APP_PORT), b"app:", b":end");
    let ssh = TcpServer::hello(&t.vm, t.vm.addr(22), b"ssh:", b":end");
    let dir = ConfigDir::new();
    let config = dir.write("bootstrap.yaml", &sidecar_bootstrap(&[], true));
    capture_ok(&t.vm, &tproxy_flags(), backend);
    let rules = t.vm.run_ok(&["ip", "-4", "rule", "show"]);
    assert!(rules.contains("fwmark 0x539 lookup 133"), "{rules}");
    let routes = t.vm.run_ok(&["ip", "-4", "route", "show", "table", "133"]);
    assert!(routes.contains("local default dev lo"), "{routes}");

    // Without a transparent socket on 15006 the two backends differ, as the kernel's do:
    // xt_TPROXY drops what it cannot deliver (the handshake never completes), nft's tproxy
    // statement just does not match, so the packet goes on to the app unproxied, from the
    // peer's own address. Istio's nftables rules are the same, so capture keeps that.
    match backend {
        Backend::Iptables => {
            let attempt =
                test_support::tcp_connect(&t.mesh, t.vm.addr(APP_PORT), Duration::from_secs(2));
            assert!(attempt.is_err(), "reached the app without the proxy");
            assert!(app.connections().is_empty());
        }
        Backend::Nftables => {
            let x = tcp_exchange(&t.mesh, t.vm.addr(APP_PORT), b"raw", WAIT).unwrap();
            assert_eq!(x.received_str(), "app:raw:end");
            let seen = app.wait_for_connections(1, WAIT).unwrap();
            assert_eq!(seen[0].peer, x.local, "not proxied: {seen:?}");
        }
    }
    let before = app.connections().len();

    let mut proxy = start_proxy_with(&t.vm, &config, &[], &["net_admin"]);
    let x = tcp_exchange(&t.mesh, t.vm.addr(APP_PORT), b"tp", WAIT).unwrap();
    assert_eq!(x.received_str(), "app:tp:end");
    let seen = app.wait_for_connections(before + 1, WAIT).unwrap();
    assert_eq!(seen.len(), before + 1, "{seen:?}");
    assert_eq!(seen[before].peer.ip().to_string(), "127.0.0.6");
    assert_eq!(seen[before].local, t.vm.addr(APP_PORT));
    // The excluded port is not diverted: the peer's own address.
    let x = tcp_exchange(&t.mesh, t.vm.addr(22), b"k", WAIT).unwrap();
    assert_eq!(x.received_str(), "ssh:k:end");
    assert_eq!(
        ssh.wait_for_connections(1, WAIT).unwrap()[0].peer.ip(),
        t.mesh.ipv4()
    );
    stop_proxy(&mut proxy);

    // Cleanup takes the policy routing with the rules.
    capture_ok(&t.vm, &["--cleanup-only".to_string()], backend);
    let rules = t.vm.run_ok(&["ip", "-4", "rule", "show"]);
    assert!(!rules.contains("lookup 133"), "{rules}");
    let routes = t.vm.run(&["ip", "-4", "route", "show", "table", "133"]);
    assert!(String::from_utf8_lossy(&routes.stdout).trim().is_empty());
}

#[test]
fn tproxy_inbound_reaches_the_app_iptables() {
    tproxy_inbound(Backend::Iptables);
}

#[test]
fn tproxy_inbound_reaches_the_app_nftables() {
    tproxy_inbound(Backend::Nftables);
}

/// Istio's TPROXY inbound listener carries `original_src`; a proxy that cannot honour it
/// must say so rather than run with the app seeing another source.
#[test]
fn original_src_is_refused_by_name() {
    let t = Topology::vm_and_mesh();
    let dir = ConfigDir::new();
    let istio = sidecar_bootstrap(&[], true).replace(
        "    listener_filters:\n",
        "    listener_filters:\n\
         \x20   - name: envoy.filters.listener.original_src\n\
         \x20     typed_config:\n\
         \x20       \"@type\": type.googleapis.com/envoy.extensions.filters.listener.original_src.v3.OriginalSrc\n\
         \x20       mark: 1337\n",
    );
    assert!(istio.contains("original_src"), "{istio}");
    let config = dir.write("bootstrap.yaml", &istio);
    let mut p =
        t.vm.process(BIN)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .user(PROXY_UID, PROXY_UID)
            .ambient_caps(&["net_admin"])
            .spawn();
    let status = p.wait_timeout(WAIT).unwrap();
    assert!(!status.success(), "{}", p.logs());
    let err = p.stderr();
    assert!(
        err.contains("original_src") && err.contains(&config.display().to_string()),
        "{err}"
    );
}
