//! Helpers shared by the certs integration tests (each test binary uses a subset).
#![allow(dead_code)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certs::tls::server::MeshAcceptor;
use certs::{CertsConfig, IdentityHandle, RotationPolicy, SpiffeId, WorkloadIdentity};
use test_support::{IssuedCert, TempDir, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

pub const TOKEN: &str = "token-for-vm";
pub const NS: &str = "bar";
pub const SA: &str = "vm";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("certs=debug,test_support=info")
            }),
        )
        .with_test_writer()
        .try_init();
}

/// Backoff and polling short enough for tests.
pub fn fast_policy() -> RotationPolicy {
    RotationPolicy {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(800),
        file_poll_interval: Duration::from_millis(100),
        ..RotationPolicy::default()
    }
}

/// The VM's certificate directory and token, as an operator provisions them: the mesh root
/// in `root-cert.pem` and (if given) the token file.
pub struct VmFiles {
    pub dir: TempDir,
}

impl VmFiles {
    pub fn new(ca: &TestCa, token: Option<&str>) -> VmFiles {
        let dir = TempDir::new("certs-vm");
        std::fs::create_dir(dir.join("certs")).unwrap();
        std::fs::write(
            dir.join("certs").join("root-cert.pem"),
            ca.pki().roots_pem(),
        )
        .unwrap();
        if let Some(t) = token {
            std::fs::write(dir.join("istio-token"), t).unwrap();
        }
        VmFiles { dir }
    }

    pub fn cert_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    pub fn token_path(&self) -> PathBuf {
        self.dir.join("istio-token")
    }

    /// The configuration `cluster.env` would give, pointed at `ca` and these files.
    pub fn config(&self, ca: &TestCa, extra: &[(&str, &str)]) -> CertsConfig {
        let certs = self.cert_dir();
        let certs = certs.to_str().unwrap();
        let addr = ca.addr().to_string();
        let mut vars: Vec<(String, String)> = [
            ("CA_ADDR", addr.as_str()),
            ("ISTIOD_SAN", test_support::ca::ISTIOD_SAN),
            ("PROV_CERT", certs),
            ("OUTPUT_CERTS", certs),
            ("ISTIO_META_CLUSTER_ID", "Kubernetes"),
            ("POD_NAMESPACE", NS),
            ("SERVICE_ACCOUNT", SA),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut cfg = CertsConfig::from_vars(vars).unwrap();
        // No variable moves the token file; tests keep it in their own directory.
        cfg.ca.token_path = self.token_path();
        // Nothing must be picked up from the machine's real SDS socket.
        cfg.sds_socket = self.dir.join("no-sds-here");
        cfg.rotation = fast_policy();
        cfg
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the handle to hold an identity satisfying `pred`.
pub async fn wait_identity(
    handle: &IdentityHandle,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&WorkloadIdentity) -> bool,
) -> Arc<WorkloadIdentity> {
    let mut rx = handle.subscribe();
    let wait = async {
        loop {
            if let Some(id) = rx.borrow_and_update().clone()
                && pred(&id)
            {
                return id;
            }
            rx.changed().await.expect("handle alive");
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(id) => id,
        Err(_) => panic!(
            "timed out after {timeout:?} waiting for {what}; status {:?}",
            handle.status()
        ),
    }
}

/// A test-PKI certificate as an identity.
pub fn identity(cert: &IssuedCert) -> WorkloadIdentity {
    WorkloadIdentity::new(cert.chain(), cert.key(), cert.roots()).unwrap()
}

pub fn spiffe(id: &str) -> SpiffeId {
    SpiffeId::parse(id).unwrap()
}

/// What a TLS echo server saw of one connection.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer: Result<SpiffeId, String>,
    pub alpn: Option<Vec<u8>>,
}

/// A loopback mTLS echo server; records each connection's verified peer identity or the
/// handshake error.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(acceptor: MeshAcceptor) -> EchoServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            let (_, conn) = tls.get_ref();
                            let peer =
                                certs::tls::server::peer_spiffe_id(conn).map_err(|e| e.to_string());
                            let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
                            seen.lock().unwrap().push(Seen { peer, alpn });
                            let mut buf = vec![0u8; 64 * 1024];
                            loop {
                                match tls.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        if tls.write_all(&buf[..n]).await.is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                            let _ = tls.shutdown().await;
                        }
                        Err(e) => seen.lock().unwrap().push(Seen {
                            peer: Err(e.to_string()),
                            alpn: None,
                        }),
                    }
                });
            }
        });
        EchoServer { addr, seen, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects with `config`, checks one echo round trip, returns the stream.
pub async fn connect(
    config: rustls::ClientConfig,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    // Mesh SNI is a routing key, not a name the certificate carries.
    let sni =
        rustls::pki_types::ServerName::try_from("outbound_.8080_._.svc.bar.svc.cluster.local")
            .unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(sni.to_owned(), tcp)
        .await?;
    tls.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");
    Ok(tls)
}

/// Runs `f` with a timeout, failing the test with `what`.
pub async fn within<T>(what: &str, timeout: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?}: {what}"))
}

/// The rustls error inside a failed handshake's io error, as text.
pub fn tls_error_text(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}
