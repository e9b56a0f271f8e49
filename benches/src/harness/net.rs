//! The namespaces of one measurement and the programs every path shares: the upstream app
//! (nginx serving a 1 KiB body over HTTP/1.1 keep-alive) and the iperf3 server.
//!
//! Pinning (`taskset`): load generators run on CPU 0; the upstream app, the iperf3 server
//! and the proxy under test share CPU 1, as in /work/shared/notes/benchmarking.md.

use std::path::Path;
use std::time::{Duration, Instant};

use test_support::{Netns, Node, Process, Topology};

use crate::harness::cleanup::PREFIX;
use crate::harness::error::Error;

/// CPU of the load generators.
pub const CLIENT_CPU: &str = "0";
/// CPU shared by the proxy under test and the servers.
pub const SERVER_CPU: &str = "1";
/// The upstream app's HTTP port and iperf3's port, on the server node.
pub const HTTP_PORT: u16 = 8080;
pub const IPERF_PORT: u16 = 5201;
/// Bytes of the response body.
pub const BODY_BYTES: usize = 1024;
/// How long a program gets to start listening.
const READY: Duration = Duration::from_secs(10);

/// The client ("VM", where the app and the proxy under capture run) and the server node,
/// on a veth pair. Dropping it kills everything inside and deletes both namespaces.
pub struct Net {
    topo: Topology,
}

const CLIENT: &str = "vmpb-cli";
const SERVER: &str = "vmpb-srv";

impl Net {
    pub fn build() -> Net {
        debug_assert!(CLIENT.starts_with(PREFIX) && SERVER.starts_with(PREFIX));
        let mut b = Topology::builder().node(CLIENT).node(SERVER);
        for label in [CLIENT, SERVER] {
            // 10k idle connections through a proxy need 20k local ports on the client.
            b = b
                .sysctl(label, "net.ipv4.ip_local_port_range", "1024 65000")
                .sysctl(label, "net.core.somaxconn", "8192");
        }
        Net { topo: b.build() }
    }

    pub fn client(&self) -> &Node {
        self.topo.node(CLIENT)
    }

    pub fn server(&self) -> &Node {
        self.topo.node(SERVER)
    }

    /// `http://server:8080/`: what the app asks for on every path (captured on proxy paths).
    pub fn url(&self) -> String {
        format!("http://{}/", self.server().addr(HTTP_PORT))
    }

    /// Starts the upstream app on the server node, pinned to [`SERVER_CPU`].
    pub fn start_app(&self, dir: &Path) -> Result<Process, Error> {
        let conf = dir.join("app-nginx.conf");
        let err = dir.join("app-nginx.err");
        write(&conf, &app_nginx_conf(dir, &err))?;
        let mut p = self
            .server()
            .process("taskset")
            .args(["-c", SERVER_CPU, "nginx", "-e"])
            .arg(&err)
            .arg("-c")
            .arg(&conf)
            .spawn();
        wait_listening(self.server(), HTTP_PORT, &mut p)?;
        Ok(p)
    }

    /// Starts `iperf3 -s` on the server node, pinned to [`SERVER_CPU`].
    pub fn start_iperf_server(&self) -> Result<Process, Error> {
        let mut p = self
            .server()
            .process("taskset")
            .args(["-c", SERVER_CPU, "iperf3", "-s", "-p"])
            .arg(IPERF_PORT.to_string())
            .spawn();
        wait_listening(self.server(), IPERF_PORT, &mut p)?;
        Ok(p)
    }
}

/// Waits until something in `ns` listens on TCP `port` (looked up with `ss`, so no probe
/// connection disturbs a server such as iperf3 or goes through a proxy), failing early if
/// `p` exits.
pub fn wait_listening(ns: &Netns, port: u16, p: &mut Process) -> Result<(), Error> {
    let deadline = Instant::now() + READY;
    let filter = format!("sport = :{port}");
    loop {
        let out = ns.run(&["ss", "-Hltn", &filter]);
        if out.status.success() && !out.stdout.is_empty() {
            return Ok(());
        }
        let status = p
            .try_status()
            .map_err(Error::harness(format!("watching pid {}", p.pid())))?;
        if let Some(status) = status {
            return Err(Error::Failed {
                program: format!("process listening on port {port} in {}", ns.name()),
                status: status.to_string(),
                stderr: p.logs(),
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::Failed {
                program: format!("process listening on port {port} in {}", ns.name()),
                status: format!("not listening after {READY:?}"),
                stderr: p.logs(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes a file readable by the proxy user.
pub fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(Error::io(path))
}

/// One worker, no access log, keep-alive practically unbounded (nginx 1.22 closes after
/// 1000 requests by default) and long enough for the idle-connection row, room for as many
/// connections as the open-file limit allows.
fn app_nginx_conf(dir: &Path, err: &Path) -> String {
    let body = "x".repeat(BODY_BYTES);
    let d = dir.display();
    format!(
        "worker_processes 1;\n\
         daemon off;\n\
         pid {d}/app-nginx.pid;\n\
         error_log {err} warn;\n\
         events {{ worker_connections 30000; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 keepalive_requests 100000000;\n\
         \x20 keepalive_timeout 600s;\n\
         \x20 client_header_timeout 600s;\n\
         \x20 default_type application/octet-stream;\n\
         \x20 client_body_temp_path {d}/app-body;\n\
         \x20 server {{\n\
         \x20   listen {HTTP_PORT} backlog=8192;\n\
         \x20   location / {{ return 200 \"{body}\"; }}\n\
         \x20 }}\n\
         }}\n",
        err = err.display()
    )
}
