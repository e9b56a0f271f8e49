//! A fake istiod CA: `istio.v1.auth.IstioCertificateService` over real gRPC and TLS on
//! loopback, authenticating the way istiod does (a client certificate it issued first,
//! then a bearer token) and issuing short-lived SPIFFE certificates from a [`TestPki`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use certs::proto::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use certs::proto::{IstioCertificateRequest, IstioCertificateResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};

use crate::pki::{IssuedCert, LeafSpec, TestKey, TestPki, pem_certs};

/// The name istiod's serving certificate carries, and clients verify.
pub const ISTIOD_SAN: &str = "istiod.istio-system.svc";

/// How the CA misbehaves, for failure tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behaves.
    #[default]
    None,
    /// Closes every connection right after accepting it.
    Down,
    /// Answers with a chain that is not certificates.
    Garbage,
    /// Answers with a valid certificate for some other key.
    ForeignKey,
}

/// Setup of a [`TestCa`].
#[derive(Debug, Clone)]
pub struct TestCaOptions {
    pub trust_domain: String,
    /// The `ClusterID` header value it accepts.
    pub cluster_id: String,
    /// Longest lifetime it issues, whatever is requested.
    pub max_ttl: Duration,
}

impl Default for TestCaOptions {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            cluster_id: "Kubernetes".into(),
            max_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// What the CA saw, for assertions.
#[derive(Debug, Clone, Default)]
pub struct CaStats {
    /// CreateCertificate calls.
    pub requests: u64,
    /// Certificates issued.
    pub issued: u64,
    /// Calls authenticated by bearer token.
    pub by_token: u64,
    /// Calls authenticated by a client certificate.
    pub by_client_cert: u64,
    /// Calls refused (no credentials, unknown token, wrong cluster, bad CSR).
    pub rejected: u64,
    /// Connections dropped while [`Fault::Down`].
    pub dropped_connections: u64,
    /// TLS handshakes that failed.
    pub failed_handshakes: u64,
    pub last_validity_duration: Option<i64>,
    pub last_cert_signer: Option<String>,
    pub last_cluster_id: Option<String>,
    pub last_authorization: Option<String>,
    /// Identity the last issued certificate was for.
    pub last_identity: Option<String>,
    /// Every metadata entry of the last request, names lower-case.
    pub last_headers: Vec<(String, String)>,
}

struct Shared {
    opts: TestCaOptions,
    pki: Arc<TestPki>,
    tokens: Mutex<HashMap<String, String>>,
    fault: Mutex<Fault>,
    stats: Mutex<CaStats>,
    serving: Mutex<(IssuedCert, String)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn stats(&self, f: impl FnOnce(&mut CaStats)) {
        f(&mut lock(&self.stats));
    }

    /// istiod's serving certificate, re-issued whenever the signing root changed.
    fn serving_cert(&self) -> IssuedCert {
        let mut serving = lock(&self.serving);
        let signer = self.pki.signer_pem();
        if serving.1 != signer {
            *serving = (issue_serving(&self.pki), signer);
        }
        serving.0.clone()
    }

    /// Built per connection, so root rotation applies to the next handshake.
    fn tls_config(&self) -> rustls::ServerConfig {
        server_config(&self.pki, &self.serving_cert())
    }

    fn authenticate(&self, request: &Request<IstioCertificateRequest>) -> Result<String, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.stats(|s| s.last_authorization = header.clone());
        if let Some(certs) = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            && let Some(leaf) = certs.first()
        {
            let id = certs::SpiffeId::from_certificate(leaf)
                .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
            self.stats(|s| s.by_client_cert += 1);
            return Ok(id.to_string());
        }
        let token = header.as_deref().and_then(|h| h.strip_prefix("Bearer "));
        match token.and_then(|t| lock(&self.tokens).get(t).cloned()) {
            Some(id) => {
                self.stats(|s| s.by_token += 1);
                Ok(id)
            }
            None if token.is_some() => Err(Status::unauthenticated("token is not valid")),
            None => Err(Status::unauthenticated(
                "no client certificate and no bearer token",
            )),
        }
    }
}

/// A rustls server configuration as istiod's port 15012 has: a serving certificate for
/// [`ISTIOD_SAN`] (and 127.0.0.1) from `pki`, client certificates from `pki` optional, ALPN h2.
pub fn istiod_server_config(pki: &TestPki) -> rustls::ServerConfig {
    server_config(pki, &issue_serving(pki))
}

fn server_config(pki: &TestPki, serving: &IssuedCert) -> rustls::ServerConfig {
    let provider = certs::provider();
    let mut roots = RootCertStore::empty();
    for root in pem_certs(&pki.roots_pem()) {
        roots.add(root).expect("test root is a trust anchor");
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .expect("client verifier");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(serving.chain(), serving.key())
        .expect("serving certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

fn issue_serving(pki: &TestPki) -> IssuedCert {
    let mut spec = LeafSpec::spiffe(
        &pki.spiffe_id("istio-system", "istiod"),
        Duration::from_secs(3600),
    );
    spec.dns_names = vec![ISTIOD_SAN.into()];
    spec.ip_addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    spec.not_before -= Duration::from_secs(60);
    pki.issue(&spec)
}

struct Service(Arc<Shared>);

#[tonic::async_trait]
impl IstioCertificateService for Service {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let ca = &self.0;
        ca.stats(|s| s.requests += 1);
        let cluster = request
            .metadata()
            .get("clusterid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let headers: Vec<(String, String)> = request
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        ca.stats(|s| {
            s.last_cluster_id = cluster.clone();
            s.last_headers = headers;
        });
        let identity = match ca.authenticate(&request) {
            Ok(id) => id,
            Err(status) => {
                ca.stats(|s| s.rejected += 1);
                return Err(status);
            }
        };
        if cluster.as_deref() != Some(ca.opts.cluster_id.as_str()) {
            ca.stats(|s| s.rejected += 1);
            return Err(Status::permission_denied(format!(
                "client claims to be in cluster {cluster:?}, but this CA serves {:?}",
                ca.opts.cluster_id
            )));
        }
        let req = request.into_inner();
        let signer = req
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get("CertSigner"))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            });
        ca.stats(|s| {
            s.last_validity_duration = Some(req.validity_duration);
            s.last_cert_signer = signer;
        });
        let requested = u64::try_from(req.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map_or(ca.opts.max_ttl, Duration::from_secs);
        let ttl = requested.min(ca.opts.max_ttl);

        let fault = *lock(&ca.fault);
        let leaf = match fault {
            Fault::Garbage => {
                return Ok(Response::new(IstioCertificateResponse {
                    cert_chain: vec![
                        "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"
                            .into(),
                        "not a certificate".into(),
                    ],
                }));
            }
            Fault::ForeignKey => ca.pki.issue(&LeafSpec::spiffe(&identity, ttl)).chain_pem,
            Fault::None | Fault::Down => match ca.pki.sign_csr(&req.csr, &identity, ttl) {
                Ok(pem) => pem,
                Err(reason) => {
                    ca.stats(|s| s.rejected += 1);
                    return Err(Status::invalid_argument(reason));
                }
            },
        };
        ca.stats(|s| {
            s.issued += 1;
            s.last_identity = Some(identity);
        });
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: vec![leaf, ca.pki.roots_pem()],
        }))
    }
}

/// A running fake CA on `127.0.0.1:<port>`. Stops when dropped.
pub struct TestCa {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    accept: JoinHandle<()>,
    server: JoinHandle<()>,
}

impl TestCa {
    /// Starts a CA with its own new PKI. Call inside a Tokio runtime.
    pub async fn start(opts: TestCaOptions) -> TestCa {
        let pki = Arc::new(TestPki::new(&opts.trust_domain));
        Self::start_with(opts, pki).await
    }

    /// Starts a CA issuing from `pki`.
    pub async fn start_with(opts: TestCaOptions, pki: Arc<TestPki>) -> TestCa {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind test CA");
        let addr = listener.local_addr().expect("test CA address");
        let serving = (issue_serving(&pki), pki.signer_pem());
        let shared = Arc::new(Shared {
            opts,
            pki,
            tokens: Mutex::new(HashMap::new()),
            fault: Mutex::new(Fault::None),
            stats: Mutex::new(CaStats::default()),
            serving: Mutex::new(serving),
        });

        let (conn_tx, conn_rx) = mpsc::channel::<Result<TlsStream<TcpStream>, std::io::Error>>(16);
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), conn_tx));
        let (shutdown, stop) = oneshot::channel::<()>();
        let service = IstioCertificateServiceServer::new(Service(shared.clone()));
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), async {
                    let _ = stop.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "test CA server failed");
            }
        });
        TestCa {
            addr,
            shared,
            shutdown: Some(shutdown),
            accept,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pki(&self) -> &Arc<TestPki> {
        &self.shared.pki
    }

    /// Accepts `token` as a credential for `spiffe://<td>/ns/<namespace>/sa/<service_account>`.
    pub fn add_token(&self, token: &str, namespace: &str, service_account: &str) {
        let id = self.shared.pki.spiffe_id(namespace, service_account);
        lock(&self.shared.tokens).insert(token.to_owned(), id);
    }

    /// Stops accepting `token` (it "expired").
    pub fn revoke_token(&self, token: &str) {
        lock(&self.shared.tokens).remove(token);
    }

    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.shared.fault) = fault;
    }

    pub fn stats(&self) -> CaStats {
        lock(&self.shared.stats).clone()
    }

    /// Issues a workload certificate directly (no gRPC), as if for a CSR.
    pub fn issue(&self, spiffe_id: &str, lifetime: Duration, key: TestKey) -> IssuedCert {
        let mut spec = LeafSpec::spiffe(spiffe_id, lifetime);
        spec.key = key;
        self.shared.pki.issue(&spec)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.accept.abort();
        self.server.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    conns: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
) {
    // Ends when the CA is dropped (the task is aborted).
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "test CA accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if *lock(&shared.fault) == Fault::Down {
            shared.stats(|s| s.dropped_connections += 1);
            drop(tcp);
            continue;
        }
        let acceptor = TlsAcceptor::from(Arc::new(shared.tls_config()));
        let conns = conns.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = conns.send(Ok(tls)).await;
                }
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "test CA TLS handshake failed");
                    shared.stats(|s| s.failed_handshakes += 1);
                }
                Err(_) => shared.stats(|s| s.failed_handshakes += 1),
            }
        });
    }
}
