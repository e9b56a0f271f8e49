//! `vm-proxy run` as a process: the built-in configuration as an unprivileged user, bad
//! configuration files, and the graceful drain of a captured connection after SIGTERM.
//! Needs root (namespaces, users, capture rules).

mod e2e;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Instant;

use e2e::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use test_support::clients::curl;
use test_support::{Netns, TcpServer, Topology, read_to_eof, tcp_connect};

/// Nobody: no capabilities, no files of its own.
const NOBODY: u32 = 65534;

fn curl_ok(ns: &Netns, url: &str) -> String {
    let out = curl(ns, &[url], WAIT).unwrap();
    assert!(out.status.success(), "curl {url}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn default_configuration_runs_unprivileged() {
    let ns = Netns::new("vmp-default");
    let mut proxy = ns.process(BIN).arg("run").user(NOBODY, NOBODY).spawn();
    proxy
        .wait_for_tcp(([127, 0, 0, 1], 15080).into(), WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.logs()));

    // 15080 is a proxy listener whose cluster is the admin server.
    assert_eq!(curl_ok(&ns, "http://127.0.0.1:15080/ready"), "LIVE\n");
    let dump: Value = serde_json::from_str(&curl_ok(&ns, "http://127.0.0.1:15000/config_dump"))
        .expect("config_dump is JSON");
    let configs = dump["configs"].as_array().expect("configs");
    let bootstrap = configs
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump")
        .unwrap_or_else(|| panic!("no BootstrapConfigDump in {dump:#}"));
    let b = &bootstrap["bootstrap"];
    assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 15000);
    let listeners: Vec<&str> = b["static_resources"]["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(listeners, ["admin_loopback", "outbound", "inbound"]);

    // Nothing open: SIGTERM ends it at once, well within the 5 s drain.
    let status = proxy
        .terminate(WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.logs()));
    assert!(status.success(), "{status}\n{}", proxy.logs());
    assert!(
        proxy.stderr().contains("SIGTERM"),
        "logged why it stopped:\n{}",
        proxy.logs()
    );
}

#[test]
fn bad_configuration_files_are_named() {
    let ns = Netns::new("vmp-badcfg");
    let dir = ConfigDir::new();
    let missing = dir.path().join("missing.yaml");
    let not_yaml = dir.write("broken.yaml", "admin: [\n");
    let bad_field = dir.write(
        "field.yaml",
        "static_resources:\n  clusters:\n  - name: c\n    connect_timeout: soon\n",
    );
    let unreadable = dir.write("secret.yaml", "admin: {}\n");
    std::fs::set_permissions(
        &unreadable,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    for (file, why) in [
        (&missing, "No such file"),
        (&not_yaml, "not a YAML document"),
        (&bad_field, "connect_timeout"),
        (&unreadable, "Permission denied"),
    ] {
        let mut p = ns
            .process(BIN)
            .arg("run")
            .arg("--config")
            .arg(file)
            .user(NOBODY, NOBODY)
            .spawn();
        let status = p.wait_timeout(WAIT).unwrap();
        let err = p.stderr();
        assert!(!status.success(), "{}: {status}\n{err}", file.display());
        assert!(
            err.contains(&file.display().to_string()) && err.contains(why),
            "{}: {err}",
            file.display()
        );
    }
}

/// Capture and the proxy on a VM, the peer in the mesh; the proxy user's drain timeout given.
struct Captured {
    t: test_support::VmAndMesh,
    peer: TcpServer,
    _dir: ConfigDir,
    proxy: test_support::Process,
}

fn captured(drain_timeout: &str) -> Captured {
    let t = Topology::vm_and_mesh();
    let peer = TcpServer::hello(&t.mesh, t.mesh.addr(8080), b"peer:", b":end");
    let dir = ConfigDir::new();
    let config = dir.write("bootstrap.yaml", &sidecar_bootstrap(&[], false));
    capture_ok(&t.vm, &vm_flags(), Backend::Iptables);
    let proxy = start_proxy(&t.vm, &config, &["--drain-timeout", drain_timeout]);
    Captured {
        t,
        peer,
        _dir: dir,
        proxy,
    }
}

fn echo(s: &mut std::net::TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).unwrap();
    got
}

/// After SIGTERM the proxy stops accepting (the captured connect is refused), while an open
/// proxied connection keeps carrying data both ways until its client ends it; then the
/// proxy exits 0, long before its drain timeout.
#[test]
fn sigterm_drains_a_captured_connection() {
    let mut c = captured("60s");
    let to = c.t.mesh.addr(8080);
    let mut open = tcp_connect(&c.t.vm, to, WAIT).unwrap();
    let mut banner = [0; 5];
    open.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"peer:");
    assert_eq!(echo(&mut open, b"before"), b"before");

    c.proxy.signal(Signal::SIGTERM).unwrap();
    eventually("captured connects refused", || refused(&c.t.vm, to));
    assert_eq!(echo(&mut open, b"during"), b"during");
    assert!(
        c.proxy.try_status().unwrap().is_none(),
        "exited with a connection open\n{}",
        c.proxy.logs()
    );

    open.shutdown(Shutdown::Write).unwrap();
    let rest = read_to_eof(&mut open, Instant::now() + WAIT).unwrap();
    assert_eq!(rest, b":end", "the peer's last word after our FIN");
    let status = c.proxy.wait_timeout(WAIT).unwrap();
    assert!(status.success(), "{status}\n{}", c.proxy.logs());
    // Probes that connected before the listener closed were accepted and passed through
    // (the signal and the close race them); they sent nothing.
    let seen = c.peer.wait_for_connections(1, WAIT).unwrap();
    assert!(seen[1..].iter().all(|p| p.received == 0), "{seen:?}");
    assert_eq!(seen[0].received, 12);
}

/// A connection still open when the drain timeout passes is closed, and the proxy exits 0.
#[test]
fn drain_timeout_closes_what_is_still_open() {
    let mut c = captured("1s");
    let to = c.t.mesh.addr(8080);
    let mut open = tcp_connect(&c.t.vm, to, WAIT).unwrap();
    let mut banner = [0; 5];
    open.read_exact(&mut banner).unwrap();
    assert_eq!(echo(&mut open, b"held"), b"held");

    c.proxy.signal(Signal::SIGTERM).unwrap();
    let status = c.proxy.wait_timeout(WAIT).unwrap();
    assert!(status.success(), "{status}\n{}", c.proxy.logs());
    // The proxy closed its side: the client sees the end (or a reset), not a hang.
    match read_to_eof(&mut open, Instant::now() + WAIT) {
        Ok(rest) => assert!(rest.is_empty(), "{rest:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    // And the admin server went with it.
    assert!(refused(&c.t.vm, ADMIN.parse().unwrap()));
}
