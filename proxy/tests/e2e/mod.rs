//! Shared pieces of the end-to-end tests: the `vm-proxy` binary run inside test namespaces
//! (capture as root, the proxy as uid 1337), Istio-shaped bootstrap files the proxy user can
//! read, and the capture flags of a VM. Everything a test makes is removed on drop.
#![allow(dead_code)] // each e2e test binary uses a different part

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use test_support::{
    Error, Netns, Node, Process, iptables_save, nft_ruleset, require_tools, unique_name,
};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vm-proxy");
/// The proxy user, as on an Istio VM (`istio-proxy`).
pub const PROXY_UID: u32 = 1337;
/// Upper bound for any single wait; reaching it fails the test, nothing more.
pub const WAIT: Duration = Duration::from_secs(10);
/// Istio's capture ports.
pub const OUTBOUND_PORT: u16 = 15001;
pub const INBOUND_PORT: u16 = 15006;
pub const DNS_CAPTURE_PORT: u16 = 15053;
pub const ADMIN: &str = "127.0.0.1:15000";

/// Which packet filter `vm-proxy capture` programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// iptables-restore (the default).
    Iptables,
    /// `--native-nftables`: tables `inet istio-proxy-*`.
    Nftables,
}

impl Backend {
    /// The flags that select this backend.
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Backend::Iptables => &[],
            Backend::Nftables => &["--native-nftables"],
        }
    }
}

/// The whole packet-filter state of `ns` as both tools print it (normalised): a change made
/// by either backend, or by iptables-nft underneath nft, shows up in it.
pub fn rules_of(ns: &Netns) -> String {
    format!(
        "### iptables-save\n{}### nft list ruleset\n{}",
        iptables_save(ns),
        nft_ruleset(ns)
    )
}

/// The capture flags of a VM in these tests: everything outbound and inbound captured, the
/// proxy user excluded, SSH (22) never captured inbound, 9999 never captured outbound,
/// IPv4 only.
pub fn vm_flags() -> Vec<String> {
    [
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-g",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-b",
        "*",
        "-d",
        "22",
        "-o",
        "9999",
        "--ipv6=false",
    ]
    .map(String::from)
    .to_vec()
}

/// Runs `vm-proxy capture FLAGS... BACKEND-FLAGS` as root inside `ns`.
pub fn capture(ns: &Netns, flags: &[String], backend: Backend) -> Output {
    require_tools(&[
        "iptables",
        "iptables-save",
        "nft",
        "setpriv",
        "socat",
        "nc",
        "dig",
        "curl",
        "ss",
    ]);
    let mut argv = vec![BIN, "capture"];
    argv.extend(flags.iter().map(String::as_str));
    argv.extend_from_slice(backend.flags());
    ns.run_timeout(&argv, WAIT)
        .unwrap_or_else(|e| panic!("vm-proxy capture in {}: {e}", ns.name()))
}

/// Like [`capture`], failing the test unless it succeeds.
pub fn capture_ok(ns: &Netns, flags: &[String], backend: Backend) {
    let out = capture(ns, flags, backend);
    assert!(
        out.status.success(),
        "vm-proxy capture {flags:?} ({backend:?}) failed: {}",
        describe(&out)
    );
}

/// Exit status and both outputs, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A directory only root can write but everyone can read, holding bootstrap files for a
/// proxy that runs as another user; removed on drop.
pub struct ConfigDir {
    path: PathBuf,
}

impl ConfigDir {
    pub fn new() -> ConfigDir {
        let path = std::env::temp_dir().join(unique_name("vm-proxy-e2e"));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ConfigDir { path }
    }

    /// Writes `name` with mode 0644 and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A static service listener as Istio writes one per outbound TCP service: not bound, reached
/// by the virtual outbound listener's hand-off on the original destination `vip`, proxying to
/// the static cluster `cluster` whose only endpoint is `endpoint`.
pub struct Service {
    pub vip: SocketAddr,
    pub cluster: String,
    pub endpoint: SocketAddr,
}

/// An Istio-shaped sidecar bootstrap: admin on 127.0.0.1:15000; `virtualOutbound` on
/// 0.0.0.0:15001 with `use_original_dst` → PassthroughCluster (ORIGINAL_DST);
/// `virtualInbound` on 0.0.0.0:15006 (original_dst listener filter, `transparent` if asked)
/// → InboundPassthroughCluster (ORIGINAL_DST, bound to 127.0.0.6); plus one unbound
/// listener and static cluster per service.
pub fn sidecar_bootstrap(services: &[Service], inbound_transparent: bool) -> String {
    let mut listeners = format!(
        r#"
  - name: virtualOutbound
    address: {{socket_address: {{address: 0.0.0.0, port_value: {OUTBOUND_PORT}}}}}
    use_original_dst: true
    filter_chains:
    - name: virtualOutbound-catchall-tcp
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: PassthroughCluster
          cluster: PassthroughCluster
  - name: virtualInbound
    address: {{socket_address: {{address: 0.0.0.0, port_value: {INBOUND_PORT}}}}}
    transparent: {inbound_transparent}
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst
    filter_chains:
    - name: virtualInbound-catchall-tcp
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: InboundPassthroughCluster
          cluster: InboundPassthroughCluster
"#
    );
    let mut clusters = String::from(
        r#"
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 5s
  - name: InboundPassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 5s
    upstream_bind_config:
      source_address: {address: 127.0.0.6, port_value: 0}
"#,
    );
    for s in services {
        listeners.push_str(&format!(
            r#"
  - name: {ip}_{port}
    address: {{socket_address: {{address: {ip}, port_value: {port}}}}}
    bind_to_port: false
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: "{cluster}"
          cluster: "{cluster}"
"#,
            ip = s.vip.ip(),
            port = s.vip.port(),
            cluster = s.cluster,
        ));
        clusters.push_str(&format!(
            r#"
  - name: "{cluster}"
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: "{cluster}"
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: {ip}, port_value: {port}}}}}
"#,
            cluster = s.cluster,
            ip = s.endpoint.ip(),
            port = s.endpoint.port(),
        ));
    }
    format!(
        "admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: 15000}}}}\n\
         static_resources:\n  listeners:{listeners}  clusters:{clusters}"
    )
}

/// Starts `vm-proxy run --config CONFIG EXTRA...` as uid 1337 in `node` and waits until both
/// capture ports accept connections.
pub fn start_proxy(node: &Node, config: &Path, extra: &[&str]) -> Process {
    start_proxy_with(node, config, extra, &[])
}

/// [`start_proxy`] keeping ambient capabilities `caps` (e.g. `net_admin` for TPROXY).
pub fn start_proxy_with(node: &Node, config: &Path, extra: &[&str], caps: &[&str]) -> Process {
    let mut b = node
        .process(BIN)
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(extra)
        .user(PROXY_UID, PROXY_UID)
        .env("RUST_LOG", "info,vm_proxy=debug");
    if !caps.is_empty() {
        b = b.ambient_caps(caps);
    }
    let mut p = b.spawn();
    for port in [OUTBOUND_PORT, INBOUND_PORT] {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        if let Err(e) = p.wait_for_tcp(addr, WAIT) {
            panic!("proxy not listening on {addr}: {e}\n{}", p.logs());
        }
    }
    p
}

/// SIGTERM, and the exit status must be success within a generous bound.
pub fn stop_proxy(p: &mut Process) {
    match p.terminate(WAIT + WAIT) {
        Ok(s) => assert!(s.success(), "proxy exited with {s}\n{}", p.logs()),
        Err(e) => panic!("proxy did not stop: {e}\n{}", p.logs()),
    }
}

/// True when connecting from `ns` to `addr` is actively refused (RST), as a connection
/// redirected to a capture port nobody listens on is.
pub fn refused(ns: &Netns, addr: SocketAddr) -> bool {
    match test_support::tcp_connect(ns, addr, WAIT) {
        Err(Error::Connect { source, .. }) => source.kind() == ErrorKind::ConnectionRefused,
        Err(e) => panic!("connect to {addr} from {}: {e}", ns.name()),
        Ok(_) => false,
    }
}

/// Polls `f` every 20 ms until it holds, at most [`WAIT`].
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// argv prefix running a program as `uid`/`gid` with no supplementary groups, for one-shot
/// clients (long-running ones use `ProcessBuilder::user`).
pub fn as_user(uid: u32, gid: u32) -> Vec<String> {
    vec![
        "setpriv".into(),
        "--reuid".into(),
        uid.to_string(),
        "--regid".into(),
        gid.to_string(),
        "--clear-groups".into(),
        "--".into(),
    ]
}
