//! The paths compared, and how each proxy is configured and started in the client node.
//!
//! Every proxy sits in the same place: in the client node, behind the same capture rules
//! (`vm-proxy capture`, istio-iptables' REDIRECT rules, outbound only), listening on 15001
//! as uid 1337, one worker thread, pinned to [`SERVER_CPU`]. vm-proxy and haproxy send each
//! connection to its original destination (SO_ORIGINAL_DST); nginx's stream module cannot
//! read it, so nginx forwards to the one upstream of the phase.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use test_support::{Node, Process};

use crate::harness::error::Error;
use crate::harness::net::{SERVER_CPU, wait_listening, write};

/// The proxy user, excluded from capture as istio-proxy is on a VM.
pub const PROXY_UID: u32 = 1337;
/// Istio's outbound capture port.
pub const OUTBOUND_PORT: u16 = 15001;
/// Where Debian's nginx keeps its dynamic stream module (package libnginx-mod-stream).
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// What sits between the app and the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKind {
    /// No proxy and no capture rules: the baseline.
    Direct,
    VmProxy,
    /// haproxy `mode tcp`, `server 0.0.0.0:0` (the original destination).
    Haproxy,
    /// nginx `stream` with `proxy_pass` to the phase's upstream.
    Nginx,
}

impl PathKind {
    pub const ALL: [PathKind; 4] = [
        PathKind::Direct,
        PathKind::VmProxy,
        PathKind::Haproxy,
        PathKind::Nginx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::VmProxy => "vm-proxy",
            PathKind::Haproxy => "haproxy",
            PathKind::Nginx => "nginx",
        }
    }
}

/// Installs the capture rules in the client node with `vm-proxy capture`: all outbound TCP
/// to 15001 except uid/gid 1337 and 127.0.0.1; no inbound capture, no IPv6.
pub fn capture(client: &Node, vm_proxy: &Path) -> Result<(), Error> {
    let bin = vm_proxy.to_string_lossy();
    let argv = [
        bin.as_ref(),
        "capture",
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
        "",
        "--ipv6=false",
    ];
    let out = client
        .run_timeout(&argv, std::time::Duration::from_secs(20))
        .map_err(Error::harness("vm-proxy capture"))?;
    if !out.status.success() {
        return Err(Error::Failed {
            program: format!("vm-proxy capture in {}", client.name()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Starts the proxy of `kind` (none for direct) in `client`, with its files in `dir`, and
/// waits until it listens on 15001. `upstream` is where nginx forwards; `max_conns` is how
/// many proxied connections the open-file limit allows (haproxy and nginx size their tables
/// from it and refuse to start beyond the limit).
pub fn start(
    kind: PathKind,
    client: &Node,
    dir: &Path,
    vm_proxy: &Path,
    upstream: SocketAddr,
    max_conns: u32,
) -> Result<Option<Process>, Error> {
    let own = dir.join(format!("{}-{}", kind.name(), upstream.port()));
    std::fs::create_dir_all(&own).map_err(Error::io(&own))?;
    // The proxy runs as 1337 and writes its pid file and logs here.
    nix::unistd::chown(
        &own,
        Some(nix::unistd::Uid::from_raw(PROXY_UID)),
        Some(nix::unistd::Gid::from_raw(PROXY_UID)),
    )
    .map_err(|e| Error::Io {
        path: own.clone(),
        source: e.into(),
    })?;
    let b = client
        .process("taskset")
        .args(["-c", SERVER_CPU])
        .user(PROXY_UID, PROXY_UID);
    let b = match kind {
        PathKind::Direct => return Ok(None),
        PathKind::VmProxy => {
            let conf = own.join("bootstrap.yaml");
            write(&conf, VM_PROXY_BOOTSTRAP)?;
            b.arg(vm_proxy)
                .args([
                    "run",
                    "--concurrency",
                    "1",
                    "--log-level",
                    "warn",
                    "--config",
                ])
                .arg(&conf)
        }
        PathKind::Haproxy => {
            let conf = own.join("haproxy.cfg");
            write(&conf, &haproxy_cfg(max_conns))?;
            b.args(["haproxy", "-db", "-f"]).arg(&conf)
        }
        PathKind::Nginx => {
            let conf = own.join("nginx.conf");
            let err = own.join("nginx.err");
            write(&conf, &nginx_stream_conf(&own, &err, upstream, max_conns))?;
            b.args(["nginx", "-e"]).arg(&err).arg("-c").arg(&conf)
        }
    };
    let mut p = b.spawn();
    wait_listening(client, OUTBOUND_PORT, &mut p)?;
    Ok(Some(p))
}

/// Makes `dir` (the run's work directory) traversable by the proxy user.
pub fn open_for_proxy_user(dir: &Path) -> Result<(), Error> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(Error::io(dir))
}

/// Istio's outbound side of a sidecar bootstrap, reduced to what an L4 passthrough uses:
/// `virtualOutbound` on 15001 with `use_original_dst`, catch-all tcp_proxy to the
/// ORIGINAL_DST PassthroughCluster.
const VM_PROXY_BOOTSTRAP: &str = r#"admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 15000}}
static_resources:
  listeners:
  - name: virtualOutbound
    address: {socket_address: {address: 0.0.0.0, port_value: 15001}}
    use_original_dst: true
    filter_chains:
    - name: virtualOutbound-catchall-tcp
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: PassthroughCluster
          cluster: PassthroughCluster
  clusters:
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 5s
"#;

/// One thread, no logs; 0.0.0.0:0 is haproxy's "connect to the original destination".
/// Timeouts outlast the idle-connection row.
fn haproxy_cfg(max_conns: u32) -> String {
    format!(
        "global
    nbthread 1
    maxconn {max_conns}

defaults
    mode tcp
    maxconn {max_conns}
    timeout connect 5s
    timeout client 10m
    timeout server 10m

frontend outbound
    bind 0.0.0.0:15001
    default_backend original_dst

backend original_dst
    server original_dst 0.0.0.0:0 maxconn {max_conns}
"
    )
}

/// nginx counts both sides of a proxied connection against `worker_connections`.
fn nginx_stream_conf(dir: &Path, err: &Path, upstream: SocketAddr, max_conns: u32) -> String {
    let worker_connections = 2 * max_conns + 100;
    format!(
        "load_module {NGINX_STREAM_MODULE};\n\
         worker_processes 1;\n\
         daemon off;\n\
         pid {d}/nginx.pid;\n\
         error_log {err} warn;\n\
         events {{ worker_connections {worker_connections}; }}\n\
         stream {{\n\
         \x20 server {{\n\
         \x20   listen 15001 backlog=8192;\n\
         \x20   proxy_pass {upstream};\n\
         \x20   proxy_timeout 10m;\n\
         \x20 }}\n\
         }}\n",
        d = dir.display(),
        err = err.display()
    )
}
