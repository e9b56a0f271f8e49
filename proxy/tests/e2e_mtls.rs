//! Mesh mTLS between two `vm-proxy run --workload-identity` processes, each in its own
//! network namespace, with certificates from the test CA (one CA server inside each
//! namespace, both issuing from the same PKI). The bootstraps are shaped like istiod's:
//! outbound clusters with `transport_socket_matches` on `tlsMode: istio`, an inbound
//! listener with a `DownstreamTlsContext` requiring client certificates (STRICT), and a
//! PERMISSIVE one whose TLS and plaintext chains the TLS inspector tells apart.
//! Needs root (namespaces) and openssl.

mod e2e;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{Value, json};
use test_support::{
    CaStats, Netns, Process, TcpServer, TestCa, TestCaOptions, TestPki, Topology, read_to_eof,
    require_tools, tcp_connect,
};

const TD: &str = "cluster.local";
const NAMESPACE: &str = "e2e";
const CLUSTER_ID: &str = "Kubernetes";
/// What the app behind the server-side proxy says first, so that a client sees at once
/// whether it reached the app.
const BANNER: &[u8] = b"hello from the app\n";
const APP: &str = "127.0.0.1:9000";
const STRICT_PORT: u16 = 15006;
const PERMISSIVE_PORT: u16 = 15007;
/// Client-side listeners, one per upstream cluster.
const TO_STRICT: &str = "127.0.0.1:15001";
const TO_PERMISSIVE: &str = "127.0.0.1:15002";
const TO_WRONG_ID: &str = "127.0.0.1:15003";
const TO_OPENSSL: &str = "127.0.0.1:15004";
const OPENSSL_SERVER: &str = "127.0.0.1:9443";

const DOWNSTREAM: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

fn sock(addr: &str) -> SocketAddr {
    addr.parse().unwrap()
}

fn socket_address(a: SocketAddr) -> Value {
    json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}})
}

fn sds(name: &str) -> Value {
    json!({"name": name, "sds_config": {"api_config_source": {"api_type": "GRPC",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
        "set_node_on_first_message_only": true, "transport_api_version": "V3"},
        "initial_fetch_timeout": "0s", "resource_api_version": "V3"}})
}

fn common_tls(alpn: &[&str], sans: Value) -> Value {
    json!({
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
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

fn inbound_tls_chain(name: &str, transport_protocol: Option<&str>) -> Value {
    let mut chain = json!({
        "name": name,
        "filters": tcp_proxy("inbound|9000||"),
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": DOWNSTREAM,
            "common_tls_context": common_tls(
                &["istio-peer-exchange", "h2", "http/1.1"],
                json!([{"prefix": format!("spiffe://{TD}/")}]),
            ),
            "require_client_certificate": true}},
    });
    if let Some(p) = transport_protocol {
        chain["filter_chain_match"] = json!({"transport_protocol": p});
    }
    chain
}

fn static_cluster(name: &str, endpoint: SocketAddr, metadata: Value) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket_address(endpoint)}, "metadata": metadata}]}]},
    })
}

/// An outbound cluster as istiod writes it for auto mTLS: the endpoint says
/// `tlsMode: istio`, which picks TLS expecting `server_id`.
fn mtls_cluster(name: &str, endpoint: SocketAddr, server_id: &str) -> Value {
    let mut c = static_cluster(
        name,
        endpoint,
        json!({"filter_metadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}}),
    );
    c["transport_socket_matches"] = json!([
        {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": {
            "name": "envoy.transport_sockets.tls", "typed_config": {"@type": UPSTREAM,
                "common_tls_context": common_tls(
                    &["istio-peer-exchange", "istio"],
                    json!([{"exact": server_id}]),
                ),
                "sni": format!("outbound_.9000_._.{name}.{NAMESPACE}.svc.cluster.local")}}},
        {"name": "tlsMode-disabled", "match": {}, "transport_socket": {
            "name": "envoy.transport_sockets.raw_buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}},
    ]);
    c
}

fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> String {
    json!({
        "admin": {"address": socket_address(sock(ADMIN))},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
    .to_string()
}

/// The server side: STRICT on 15006, PERMISSIVE on 15007, both to the app.
fn server_bootstrap() -> String {
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    bootstrap(
        vec![
            json!({"name": "inbound-strict", "address": socket_address(any(STRICT_PORT)),
                "filter_chains": [inbound_tls_chain("strict-mtls", None)]}),
            json!({"name": "inbound-permissive", "address": socket_address(any(PERMISSIVE_PORT)),
            "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
            "filter_chains": [
                inbound_tls_chain("permissive-mtls", Some("tls")),
                {"name": "permissive-plaintext",
                 "filter_chain_match": {"transport_protocol": "raw_buffer"},
                 "filters": tcp_proxy("inbound|9000||")},
            ]}),
        ],
        vec![static_cluster("inbound|9000||", sock(APP), json!({}))],
    )
}

/// The client side: one listener per upstream cluster.
fn client_bootstrap(server: Ipv4Addr, pki: &TestPki) -> String {
    let server_id = pki.spiffe_id(NAMESPACE, "server");
    let listener = |name: &str, addr: &str, cluster: &str| {
        json!({"name": name, "address": socket_address(sock(addr)),
            "filter_chains": [{"filters": tcp_proxy(cluster)}]})
    };
    bootstrap(
        vec![
            listener("to-strict", TO_STRICT, "strict"),
            listener("to-permissive", TO_PERMISSIVE, "permissive"),
            listener("to-wrong-id", TO_WRONG_ID, "wrong-id"),
            listener("to-openssl", TO_OPENSSL, "openssl"),
        ],
        vec![
            mtls_cluster("strict", (server, STRICT_PORT).into(), &server_id),
            mtls_cluster("permissive", (server, PERMISSIVE_PORT).into(), &server_id),
            mtls_cluster(
                "wrong-id",
                (server, STRICT_PORT).into(),
                &pki.spiffe_id(NAMESPACE, "not-the-server"),
            ),
            mtls_cluster(
                "openssl",
                sock(OPENSSL_SERVER),
                &pki.spiffe_id(NAMESPACE, "openssl-server"),
            ),
        ],
    )
}

/// One side: its namespace's CA, its files and the running proxy.
struct Side {
    ca: TestCa,
    dir: ConfigDir,
    token: PathBuf,
    proxy: Process,
}

impl Side {
    /// Starts a CA inside `ns` (on its loopback) and `vm-proxy run --config
    /// --workload-identity` as service account `sa`, certificates living `ttl`.
    fn start(
        ns: &Netns,
        runtime: &tokio::runtime::Runtime,
        pki: &Arc<TestPki>,
        sa: &str,
        ttl: &str,
        config: &str,
    ) -> Side {
        let handle = runtime.handle().clone();
        let pki_for_ca = pki.clone();
        let ca = ns
            .in_ns(move || {
                handle.block_on(TestCa::start_with(
                    TestCaOptions::default(),
                    pki_for_ca.clone(),
                ))
            })
            .unwrap();
        let token = format!("token-of-{sa}");
        ca.add_token(&token, NAMESPACE, sa);
        let dir = ConfigDir::new();
        dir.write("root-cert.pem", &pki.roots_pem());
        let token_path = dir.write("istio-token", &token);
        let config = dir.write("bootstrap.json", config);
        let out = dir.path().join("out");
        let proxy = ns
            .process(BIN)
            .args(["run", "--workload-identity", "--config"])
            .arg(&config)
            .arg("--token")
            .arg(&token_path)
            .args(["--log-level", "info,vm_proxy=debug"])
            .env("CA_ADDR", ca.addr().to_string())
            .env("ISTIOD_SAN", test_support::ca::ISTIOD_SAN)
            .env("PROV_CERT", dir.path())
            .env("OUTPUT_CERTS", &out)
            .env("TRUST_DOMAIN", TD)
            .env("POD_NAMESPACE", NAMESPACE)
            .env("SERVICE_ACCOUNT", sa)
            .env("ISTIO_META_CLUSTER_ID", CLUSTER_ID)
            .env("SECRET_TTL", ttl)
            .spawn();
        Side {
            ca,
            dir,
            token: token_path,
            proxy,
        }
    }

    fn wait_for(&mut self, addr: SocketAddr) {
        self.proxy
            .wait_for_tcp(addr, WAIT)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.proxy.logs()));
    }
}

/// Both sides and the app, in two namespaces on one link.
struct Mesh {
    topology: test_support::VmAndMesh,
    _app: TcpServer,
    pki: Arc<TestPki>,
    client: Side,
    server: Side,
    // Last: the CAs' tasks run here.
    _runtime: tokio::runtime::Runtime,
}

impl Mesh {
    fn start(ttl: &str) -> Mesh {
        require_tools(&["openssl", "curl"]);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let topology = Topology::vm_and_mesh();
        let pki = Arc::new(TestPki::new(TD));
        let app = TcpServer::hello(topology.mesh.ns(), sock(APP), BANNER, b"");
        let mut server = Side::start(
            topology.mesh.ns(),
            &runtime,
            &pki,
            "server",
            ttl,
            &server_bootstrap(),
        );
        let mut client = Side::start(
            topology.vm.ns(),
            &runtime,
            &pki,
            "client",
            ttl,
            &client_bootstrap(topology.mesh.ipv4(), &pki),
        );
        server.wait_for(topology.mesh.addr(STRICT_PORT));
        client.wait_for(sock(TO_STRICT));
        Mesh {
            topology,
            _app: app,
            pki,
            client,
            server,
            _runtime: runtime,
        }
    }

    fn client_ns(&self) -> &Netns {
        self.topology.vm.ns()
    }

    fn logs(&self) -> String {
        format!(
            "=== client proxy ===\n{}\n=== server proxy ===\n{}",
            self.client.proxy.logs(),
            self.server.proxy.logs()
        )
    }
}

/// Connects from `ns`, sends `msg`, half-closes and reads to the end.
fn exchange(ns: &Netns, to: SocketAddr, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = tcp_connect(ns, to, WAIT).map_err(std::io::Error::other)?;
    // A refused connection may already be closed when we write.
    let _ = s.write_all(msg);
    let _ = s.shutdown(std::net::Shutdown::Write);
    read_to_eof(&mut s, Instant::now() + WAIT)
}

fn reply(msg: &[u8]) -> Vec<u8> {
    [BANNER, msg].concat()
}

/// A connection kept open for `duration`, echoing `chunk`-sized writes one at a time; every
/// byte must come back in order. Bounded by the number of rounds.
fn long_transfer(mut s: TcpStream, duration: Duration) -> std::io::Result<u64> {
    let mut banner = vec![0u8; BANNER.len()];
    s.read_exact(&mut banner)?;
    assert_eq!(banner, BANNER);
    let chunk: Vec<u8> = (0..32 * 1024).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; chunk.len()];
    let mut total = 0u64;
    let end = Instant::now() + duration;
    let max_rounds = 100_000;
    for _ in 0..max_rounds {
        if Instant::now() >= end {
            break;
        }
        s.write_all(&chunk)?;
        s.read_exact(&mut back)?;
        assert_eq!(back, chunk, "echoed bytes differ after {total} bytes");
        total += chunk.len() as u64;
        std::thread::sleep(Duration::from_millis(20));
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let rest = read_to_eof(&mut s, Instant::now() + WAIT)?;
    assert!(
        rest.is_empty(),
        "{} unexpected bytes at the end",
        rest.len()
    );
    Ok(total)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting: {what}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn certificates_rotate_under_a_running_transfer_and_after_the_token_is_gone() {
    // Renewal at half of 4 s: a rotation about every 2 s on each side.
    let mesh = Mesh::start("4s");
    let before = (mesh.client.ca.stats(), mesh.server.ca.stats());

    let stop = Arc::new(AtomicBool::new(false));
    let long = {
        let s = tcp_connect(mesh.client_ns(), sock(TO_STRICT), WAIT).unwrap();
        std::thread::spawn(move || long_transfer(s, Duration::from_secs(9)))
    };
    // Meanwhile new connections, each a new pair of handshakes with whatever certificates
    // are current: none may fail.
    let short = {
        let ns_name = mesh.client_ns().name().to_string();
        let stop = stop.clone();
        mesh.client_ns().spawn_thread(move || {
            let mut done = 0u32;
            let mut failures = Vec::new();
            for i in 0..200u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let msg = format!("request {i}\n");
                let got = TcpStream::connect_timeout(&sock(TO_STRICT), WAIT).and_then(|mut s| {
                    s.set_read_timeout(Some(WAIT))?;
                    s.write_all(msg.as_bytes())?;
                    s.shutdown(std::net::Shutdown::Write)?;
                    read_to_eof(&mut s, Instant::now() + WAIT)
                });
                match got {
                    Ok(bytes) if bytes == reply(msg.as_bytes()) => done += 1,
                    Ok(bytes) => {
                        failures.push(format!("{i}: got {:?}", String::from_utf8_lossy(&bytes)))
                    }
                    Err(e) => failures.push(format!("{i}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (ns_name, done, failures)
        })
    };
    let total = long
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("long transfer failed: {e}\n{}", mesh.logs()));
    stop.store(true, Ordering::Relaxed);
    let (_, done, failures) = short.join().unwrap().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} short requests failed: {failures:?}\n{}",
        failures.len(),
        done as usize + failures.len(),
        mesh.logs()
    );
    assert!(done >= 20, "only {done} short requests ran");
    assert!(total > 0);

    let after = (mesh.client.ca.stats(), mesh.server.ca.stats());
    for (side, b, a) in [
        ("client", &before.0, &after.0),
        ("server", &before.1, &after.1),
    ] {
        assert!(
            a.issued >= b.issued + 3,
            "{side}: {} certificates issued during the transfer, expected at least 3\n{}",
            a.issued - b.issued,
            mesh.logs()
        );
        assert_eq!(a.rejected, 0, "{side}: {a:?}");
    }

    // The token "expires": renewal goes on with the client certificate alone.
    std::fs::remove_file(&mesh.client.token).unwrap();
    std::fs::remove_file(&mesh.server.token).unwrap();
    let gone: (CaStats, CaStats) = (mesh.client.ca.stats(), mesh.server.ca.stats());
    wait_until(
        "three renewals on each side without a token",
        || {
            mesh.client.ca.stats().issued >= gone.0.issued + 3
                && mesh.server.ca.stats().issued >= gone.1.issued + 3
        },
        || mesh.logs(),
    );
    for (side, g, a) in [
        ("client", &gone.0, mesh.client.ca.stats()),
        ("server", &gone.1, mesh.server.ca.stats()),
    ] {
        assert!(a.by_client_cert >= g.by_client_cert + 3, "{side}: {a:?}");
        assert_eq!(a.by_token, g.by_token, "{side}: no token is left to send");
        assert_eq!(a.last_authorization, None, "{side}: {a:?}");
        assert_eq!(a.rejected, 0, "{side}: {a:?}");
    }
    assert_eq!(
        exchange(mesh.client_ns(), sock(TO_STRICT), b"after the token\n").unwrap(),
        reply(b"after the token\n"),
        "{}",
        mesh.logs()
    );
}

#[test]
fn strict_refuses_plaintext_permissive_takes_both_wrong_ids_are_refused() {
    let mesh = Mesh::start("1h");
    let ns = mesh.client_ns();
    let server = mesh.topology.mesh.ipv4();

    // mTLS through both inbound modes.
    assert_eq!(
        exchange(ns, sock(TO_STRICT), b"strict\n").unwrap(),
        reply(b"strict\n")
    );
    assert_eq!(
        exchange(ns, sock(TO_PERMISSIVE), b"permissive mtls\n").unwrap(),
        reply(b"permissive mtls\n"),
        "{}",
        mesh.logs()
    );
    // Plaintext straight to the server side: PERMISSIVE takes it, STRICT does not.
    assert_eq!(
        exchange(ns, (server, PERMISSIVE_PORT).into(), b"plain\n").unwrap(),
        reply(b"plain\n")
    );
    let refused = exchange(ns, (server, STRICT_PORT).into(), b"plain\n").unwrap_or_default();
    // Nothing from the app: at most a TLS alert record (content type 21).
    assert!(
        refused.is_empty() || refused[0] == 21,
        "STRICT answered plaintext with {refused:?}"
    );
    // The client side expects another SPIFFE ID than the server presents: no connection
    // to the app.
    let wrong = exchange(ns, sock(TO_WRONG_ID), b"secret\n").unwrap_or_default();
    assert!(wrong.is_empty(), "{:?}", String::from_utf8_lossy(&wrong));
    let logs = mesh.client.proxy.stderr();
    assert!(
        logs.contains("is not allowed") && logs.contains("not-the-server"),
        "the client side says why it refused:\n{logs}"
    );
}

/// `openssl s_client` with stdin held open for a moment after `input`, so that the reply
/// arrives before it hangs up.
fn s_client(ns: &Netns, dir: &ConfigDir, to: SocketAddr, cert: &str, input: &str) -> String {
    let script = format!(
        "(printf '{input}'; sleep 2) | openssl s_client -connect {to} -cert {dir}/{cert}.pem \
         -key {dir}/{cert}-key.pem -CAfile {dir}/root-cert.pem -verify 5 -verify_return_error \
         -alpn istio-peer-exchange,istio 2>&1",
        dir = dir.path().display()
    );
    let out = ns
        .run_timeout(&["sh", "-c", &script], Duration::from_secs(20))
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn openssl_interop_both_ways() {
    let mesh = Mesh::start("1h");
    let ns = mesh.client_ns();
    let dir = &mesh.client.dir;
    let issue = |name: &str, spiffe_id: &str| {
        let c = mesh.pki.issue_spiffe(spiffe_id, Duration::from_secs(3600));
        dir.write(&format!("{name}.pem"), &c.chain_pem);
        dir.write(&format!("{name}-key.pem"), &c.key_pem);
    };
    issue(
        "openssl-client",
        &mesh.pki.spiffe_id(NAMESPACE, "openssl-client"),
    );
    issue(
        "openssl-server",
        &mesh.pki.spiffe_id(NAMESPACE, "openssl-server"),
    );
    issue("foreign", "spiffe://other.domain/ns/e2e/sa/intruder");

    // openssl s_client → server-side vm-proxy (STRICT).
    let strict: SocketAddr = (mesh.topology.mesh.ipv4(), STRICT_PORT).into();
    let out = s_client(ns, dir, strict, "openssl-client", "from openssl\\n");
    assert!(
        out.contains("Verify return code: 0 (ok)")
            && out.contains(std::str::from_utf8(BANNER).unwrap().trim())
            && out.contains("from openssl"),
        "s_client into vm-proxy:\n{out}\n{}",
        mesh.logs()
    );
    // A certificate of another trust domain is refused before any byte reaches the app.
    let out = s_client(ns, dir, strict, "foreign", "intruder\\n");
    assert!(
        !out.contains(std::str::from_utf8(BANNER).unwrap().trim()),
        "a foreign SPIFFE ID reached the app:\n{out}"
    );

    // Client-side vm-proxy → openssl s_server, which demands a client certificate from the
    // test CA and echoes lines reversed.
    let mut s_server = ns
        .process("openssl")
        .args([
            "s_server",
            "-accept",
            OPENSSL_SERVER,
            "-rev",
            "-Verify",
            "5",
        ])
        .args(["-verify_return_error", "-cert"])
        .arg(dir.path().join("openssl-server.pem"))
        .arg("-key")
        .arg(dir.path().join("openssl-server-key.pem"))
        .arg("-CAfile")
        .arg(dir.path().join("root-cert.pem"))
        .spawn();
    s_server
        .wait_for_tcp(sock(OPENSSL_SERVER), WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", s_server.logs()));
    let mut s = tcp_connect(ns, sock(TO_OPENSSL), WAIT).unwrap();
    s.write_all(b"to openssl\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + WAIT;
    while !String::from_utf8_lossy(&got).contains("lssnepo ot") {
        assert!(
            Instant::now() < deadline,
            "no reversed line from s_server: {:?}\n{}\n{}",
            String::from_utf8_lossy(&got),
            s_server.logs(),
            mesh.logs()
        );
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed: {:?}\n{}",
            String::from_utf8_lossy(&got),
            s_server.logs()
        );
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let logs = s_server.logs();
    assert!(
        logs.contains("depth=0")
            && logs.contains("verify return:1")
            && !logs.contains("verify error"),
        "s_server verified vm-proxy's certificate:\n{logs}"
    );
}
