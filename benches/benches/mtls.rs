//! Mesh mTLS cost on one core: new connections per second with full mutual-TLS handshakes
//! (`openssl s_time -new`, a client we did not write), vm-proxy's inbound mTLS listener
//! against nginx's stream TLS with the same ECDSA P-256 certificates; and TCP throughput
//! (iperf3) through a client-side → server-side vm-proxy pair with mesh mTLS between them,
//! against the same pair in plaintext and the direct path.
//!
//! The proxies (both vm-proxy instances run in this process, on one single-threaded
//! runtime; nginx with one worker) are pinned to CPU 1, the clients and the iperf3 server to
//! CPU 0. Figures are reported with ratios, because absolute numbers on a shared machine move
//! from run to run. `cargo bench -p vm-proxy-benches --bench mtls` prints a table and writes
//! `target/bench/mtls.json`; `MTLS_BENCH_SECONDS` sets each measurement's length (default 3).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certs::{IdentityHandle, WorkloadIdentity};
use serde_json::{Value, json};
use test_support::TestPki;
use vm_proxy::{Options, Proxy};

const PROXY_CPU: usize = 1;
const CLIENT_CPU: &str = "0";
const TD: &str = "cluster.local";

fn main() {
    let seconds: u64 = std::env::var("MTLS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    pin_to(PROXY_CPU);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("vm-proxy-mtls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let results = runtime.block_on(measure(&dir, seconds));
    let _ = std::fs::remove_dir_all(&dir);
    report(&results);
}

fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok()
        && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
    {
        return;
    }
    eprintln!("could not pin to CPU {cpu}; figures are less comparable");
}

struct Results {
    seconds: u64,
    handshakes_vm_proxy: f64,
    handshakes_nginx: Option<f64>,
    direct_gbps: f64,
    plain_pair_gbps: f64,
    mtls_pair_gbps: f64,
    plain_cpu_per_gbit: f64,
    mtls_cpu_per_gbit: f64,
}

async fn measure(dir: &Path, seconds: u64) -> Results {
    let pki = TestPki::new(TD);
    let server_cert = pki.issue_spiffe(&pki.spiffe_id("ns", "server"), Duration::from_secs(3600));
    let client_cert = pki.issue_spiffe(&pki.spiffe_id("ns", "client"), Duration::from_secs(3600));
    let client_files = dir.join("client");
    std::fs::create_dir_all(&client_files).expect("client dir");
    client_cert.write_to(&client_files);
    let server_files = dir.join("server");
    std::fs::create_dir_all(&server_files).expect("server dir");
    server_cert.write_to(&server_files);

    let iperf_port = free_port();
    let _iperf = spawn(
        Command::new("taskset")
            .args(["-c", CLIENT_CPU, "iperf3", "-s", "-B", "127.0.0.1", "-p"])
            .arg(iperf_port.to_string()),
    );
    let sink: SocketAddr = ([127, 0, 0, 1], iperf_port).into();
    wait_for_port(sink);

    // Handshake connections go to a sink that accepts and closes: never to iperf3's server,
    // which would take them for broken tests.
    let discard = discard_sink();
    let server_id = identity(&server_cert);
    let handshakes = start(bootstrap_server(discard, true), Some(server_id.clone())).await;
    let server = start(bootstrap_server(sink, true), Some(server_id.clone())).await;
    let inbound = address(&server, "inbound");
    let plain_server = start(bootstrap_server(sink, false), None).await;
    let plain_inbound = address(&plain_server, "inbound");
    let client = start(
        bootstrap_client(inbound, true, &pki.spiffe_id("ns", "server")),
        Some(identity(&client_cert)),
    )
    .await;
    let plain_client = start(bootstrap_client(plain_inbound, false, ""), None).await;

    let handshakes_vm_proxy = s_time(address(&handshakes, "inbound"), &client_files, seconds).await;
    let handshakes_nginx = match nginx_tls(dir, &server_files, discard) {
        Some((mut nginx, at)) => {
            let rate = s_time(at, &client_files, seconds).await;
            let _ = nginx.kill();
            let _ = nginx.wait();
            Some(rate)
        }
        None => None,
    };
    let (direct_gbps, _) = iperf(sink, seconds).await;
    let (plain_pair_gbps, plain_cpu) = iperf(address(&plain_client, "outbound"), seconds).await;
    let (mtls_pair_gbps, mtls_cpu) = iperf(address(&client, "outbound"), seconds).await;
    Results {
        seconds,
        handshakes_vm_proxy,
        handshakes_nginx,
        direct_gbps,
        plain_pair_gbps,
        mtls_pair_gbps,
        plain_cpu_per_gbit: plain_cpu / (plain_pair_gbps * seconds as f64).max(f64::EPSILON),
        mtls_cpu_per_gbit: mtls_cpu / (mtls_pair_gbps * seconds as f64).max(f64::EPSILON),
    }
}

fn identity(cert: &test_support::IssuedCert) -> IdentityHandle {
    IdentityHandle::with_identity(
        WorkloadIdentity::new(cert.chain(), cert.key(), cert.roots()).expect("test identity"),
    )
}

async fn start(bootstrap: Value, identity: Option<IdentityHandle>) -> Proxy {
    let loaded = xds_client::bootstrap::load_str(&bootstrap.to_string(), "mtls bench bootstrap")
        .expect("bench bootstrap decodes");
    let options = Options {
        identity,
        default_admin_address: ([127, 0, 0, 1], 0).into(),
        ..Options::default()
    };
    Proxy::start(loaded.snapshot, || json!({"configs": []}), options)
        .await
        .expect("proxy starts")
}

fn address(proxy: &Proxy, listener: &str) -> SocketAddr {
    proxy
        .listener_address(listener)
        .unwrap_or_else(|| panic!("{listener} not bound"))
}

fn sds(name: &str) -> Value {
    json!({"name": name, "sds_config": {"ads": {}, "resource_api_version": "V3"}})
}

fn common_tls(alpn: &[&str], sans: Value) -> Value {
    json!({
        "alpn_protocols": alpn,
        "tls_certificate_sds_secret_configs": [sds("default")],
        "combined_validation_context": {
            "default_validation_context": {"match_subject_alt_names": sans},
            "validation_context_sds_secret_config": sds("ROOTCA"),
        },
    })
}

fn tcp_proxy(cluster: &str) -> Value {
    json!([{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": cluster, "cluster": cluster}}])
}

fn static_cluster(name: &str, to: SocketAddr, tls: Option<Value>) -> Value {
    let mut c = json!({
        "name": name, "type": "STATIC", "connect_timeout": "5s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {
                "address": to.ip().to_string(), "port_value": to.port()}}}}]}]},
    });
    if let Some(tls) = tls {
        c["transport_socket"] = json!({"name": "envoy.transport_sockets.tls", "typed_config": tls});
    }
    c
}

fn listener(name: &str, chain: Value) -> Value {
    json!({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [chain]})
}

/// The server side: an inbound listener terminating mesh mTLS (client certificates of the
/// trust domain required), or plaintext, in front of `sink`.
fn bootstrap_server(sink: SocketAddr, mtls: bool) -> Value {
    let mut chain = json!({"filters": tcp_proxy("app")});
    if mtls {
        chain["transport_socket"] = json!({"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": common_tls(&["istio"],
                json!([{"prefix": format!("spiffe://{TD}/")}]))}});
    }
    json!({"static_resources": {
        "listeners": [listener("inbound", chain)],
        "clusters": [static_cluster("app", sink, None)]}})
}

/// The client side: an outbound listener to the server side, originating mesh mTLS that
/// expects `server_id`, or plaintext.
fn bootstrap_client(server: SocketAddr, mtls: bool, server_id: &str) -> Value {
    let tls = mtls.then(|| {
        json!({"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "outbound_.5201_._.sink.ns.svc.cluster.local",
            "common_tls_context": common_tls(&["istio"], json!([{"exact": server_id}]))})
    });
    json!({"static_resources": {
        "listeners": [listener("outbound", json!({"filters": tcp_proxy("server")}))],
        "clusters": [static_cluster("server", server, tls)]}})
}

/// Full handshakes per second with `openssl s_time -new` for `seconds` against `at`.
async fn s_time(at: SocketAddr, files: &Path, seconds: u64) -> f64 {
    let out = tokio::process::Command::new("taskset")
        .args(["-c", CLIENT_CPU, "openssl", "s_time", "-new", "-connect"])
        .arg(at.to_string())
        .arg("-cert")
        .arg(files.join("cert-chain.pem"))
        .arg("-key")
        .arg(files.join("key.pem"))
        .arg("-CAfile")
        .arg(files.join("root-cert.pem"))
        .args(["-time", &seconds.to_string()])
        .output()
        .await
        .expect("openssl s_time runs");
    let text = String::from_utf8_lossy(&out.stdout);
    // "N connections in T real seconds, B bytes read per connection"
    text.lines()
        .find_map(|l| {
            let (n, rest) = l.split_once(" connections in ")?;
            let (t, _) = rest.split_once(" real seconds")?;
            Some(n.trim().parse::<f64>().ok()? / t.trim().parse::<f64>().ok()?)
        })
        .unwrap_or_else(|| {
            eprintln!(
                "no rate in openssl s_time output:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            f64::NAN
        })
}

/// A loopback listener that accepts connections and closes them, on its own thread.
fn discard_sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("discard sink");
    let at = l.local_addr().expect("discard sink address");
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    at
}

/// iperf3 through `at` for `seconds`: Gbit/s received, and this process's CPU seconds
/// (user + system) meanwhile, i.e. the in-process proxies' cost. iperf3's server takes one
/// test at a time and may still be finishing the last one: a failed run is retried; one
/// that keeps failing is reported as NaN with iperf3's error (benchmarks report, they do
/// not fail).
async fn iperf(at: SocketAddr, seconds: u64) -> (f64, f64) {
    for attempt in 1..=3 {
        match iperf_once(at, seconds).await {
            Ok(r) => return r,
            Err(e) => {
                eprintln!("iperf3 through {at}, attempt {attempt}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    (f64::NAN, f64::NAN)
}

async fn iperf_once(at: SocketAddr, seconds: u64) -> Result<(f64, f64), String> {
    let before = own_cpu_seconds();
    let out = tokio::process::Command::new("taskset")
        .args(["-c", CLIENT_CPU, "iperf3", "-J", "-c"])
        .arg(at.ip().to_string())
        .args(["-p", &at.port().to_string(), "-t", &seconds.to_string()])
        .output()
        .await
        .map_err(|e| format!("cannot run iperf3: {e}"))?;
    let cpu = own_cpu_seconds() - before;
    let report: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 printed no JSON ({e})"))?;
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| format!("no throughput: {}", report["error"]))?;
    Ok((bps / 1e9, cpu))
}

fn own_cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// nginx's stream module terminating TLS with the server's certificate and requiring a
/// client certificate from the same root, in front of `sink`; `None` when nginx is missing.
fn nginx_tls(dir: &Path, files: &Path, sink: SocketAddr) -> Option<(Child, SocketAddr)> {
    let port = free_port();
    let own = dir.join("nginx");
    std::fs::create_dir_all(&own).ok()?;
    let conf = own.join("nginx.conf");
    let f = |n: &str| files.join(n).display().to_string();
    std::fs::write(
        &conf,
        format!(
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
             worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             stream {{ server {{ listen 127.0.0.1:{port} ssl;\n\
             ssl_certificate {chain}; ssl_certificate_key {key};\n\
             ssl_client_certificate {root}; ssl_verify_client on;\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n\
             proxy_pass {sink}; }} }}\n",
            d = own.display(),
            chain = f("cert-chain.pem"),
            key = f("key.pem"),
            root = f("root-cert.pem"),
        ),
    )
    .ok()?;
    let child = Command::new("taskset")
        .args(["-c", &PROXY_CPU.to_string(), "nginx", "-e"])
        .arg(own.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let at: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for_port(at);
    Some((child, at))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Killed {
    Killed(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(at: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(at).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {at}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn report(r: &Results) {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "mTLS on one proxy core ({} s per figure; proxies on CPU {PROXY_CPU}, clients on CPU {CLIENT_CPU})",
        r.seconds
    );
    println!("| figure | value | ratio |");
    println!("| --- | --- | --- |");
    match r.handshakes_nginx {
        Some(n) => println!(
            "| new mTLS connections/s (openssl s_time -new), vm-proxy / nginx | {:.0} / {:.0} | {:.2} |",
            r.handshakes_vm_proxy,
            n,
            ratio(r.handshakes_vm_proxy, n)
        ),
        None => println!(
            "| new mTLS connections/s (openssl s_time -new), vm-proxy (nginx missing) | {:.0} | |",
            r.handshakes_vm_proxy
        ),
    }
    println!(
        "| iperf3 Gbit/s: direct / plaintext pair / mTLS pair | {:.2} / {:.2} / {:.2} | mTLS/plain {:.2}, mTLS/direct {:.2} |",
        r.direct_gbps,
        r.plain_pair_gbps,
        r.mtls_pair_gbps,
        ratio(r.mtls_pair_gbps, r.plain_pair_gbps),
        ratio(r.mtls_pair_gbps, r.direct_gbps)
    );
    println!(
        "| CPU s per Gbit, both proxies: plaintext / mTLS | {:.3} / {:.3} | {:.2} |",
        r.plain_cpu_per_gbit,
        r.mtls_cpu_per_gbit,
        ratio(r.mtls_cpu_per_gbit, r.plain_cpu_per_gbit)
    );
    let json = json!({
        "seconds": r.seconds,
        "handshakes_per_second": {"vm_proxy": r.handshakes_vm_proxy, "nginx": r.handshakes_nginx},
        "iperf3_gbps": {"direct": r.direct_gbps, "plain_pair": r.plain_pair_gbps, "mtls_pair": r.mtls_pair_gbps},
        "cpu_seconds_per_gbit": {"plain_pair": r.plain_cpu_per_gbit, "mtls_pair": r.mtls_cpu_per_gbit},
    });
    let out: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "target", "bench"]
        .iter()
        .collect();
    if std::fs::create_dir_all(&out).is_ok() {
        let _ = std::fs::write(out.join("mtls.json"), json.to_string());
    }
}
