//! Certificates from a local SDS server on a Unix socket: a tiny tonic SDS server here
//! pushes `default` and `ROOTCA`; the client subscribes, ACKs, NACKs bad pushes, keeps the
//! previous identity, and reconnects when the server comes back.

mod common;

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certs::source::sds::{DEFAULT_SECRET, ROOT_SECRET, SECRET_TYPE_URL};
use certs::{CertsConfig, IdentitySource, RotationManager};
use common::*;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use test_support::{IssuedCert, TempDir, TestPki};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(10);
const ID: &str = "spiffe://cluster.local/ns/bar/sa/sds";

fn inline_bytes(b: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineBytes(b.as_bytes().to_vec())),
        ..DataSource::default()
    })
}

fn default_secret(chain: &str, key: &str) -> Secret {
    Secret {
        name: DEFAULT_SECRET.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline_bytes(chain),
            private_key: inline_bytes(key),
            ..TlsCertificate::default()
        })),
    }
}

fn root_secret(roots: &str) -> Secret {
    Secret {
        name: ROOT_SECRET.into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(Specifier::InlineString(roots.to_owned())),
                    ..DataSource::default()
                }),
                ..CertificateValidationContext::default()
            },
        )),
    }
}

fn secrets(cert: &IssuedCert) -> Vec<Secret> {
    vec![
        default_secret(&cert.chain_pem, &cert.key_pem),
        root_secret(&cert.roots_pem),
    ]
}

/// A minimal SotW SDS server: each stream gets the current secrets, then every change.
#[derive(Clone)]
struct Sds {
    secrets: watch::Receiver<Vec<Secret>>,
    requests: Arc<Mutex<Vec<DiscoveryRequest>>>,
}

type ResponseStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type StreamSecretsStream = ResponseStream;
    type DeltaSecretsStream = DeltaStream;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let mut incoming = request.into_inner();
        let requests = self.requests.clone();
        let mut secrets = self.secrets.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut version = 0u32;
            let mut send = |secrets: &[Secret]| {
                version += 1;
                DiscoveryResponse {
                    version_info: format!("v{version}"),
                    nonce: format!("n{version}"),
                    type_url: SECRET_TYPE_URL.into(),
                    resources: secrets
                        .iter()
                        .map(|s| Any {
                            type_url: SECRET_TYPE_URL.into(),
                            value: s.encode_to_vec(),
                        })
                        .collect(),
                    ..DiscoveryResponse::default()
                }
            };
            // Ends when the client goes away.
            loop {
                tokio::select! {
                    req = incoming.message() => match req {
                        Ok(Some(req)) => {
                            let first = req.response_nonce.is_empty();
                            requests.lock().unwrap().push(req);
                            if first {
                                let resp = send(&secrets.borrow_and_update());
                                if tx.send(Ok(resp)).await.is_err() { break; }
                            }
                        }
                        _ => break,
                    },
                    changed = secrets.changed() => {
                        if changed.is_err() { break; }
                        let resp = send(&secrets.borrow_and_update());
                        if tx.send(Ok(resp)).await.is_err() { break; }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("delta SDS"))
    }

    async fn fetch_secrets(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("fetch SDS"))
    }
}

struct SdsServer {
    push: watch::Sender<Vec<Secret>>,
    requests: Arc<Mutex<Vec<DiscoveryRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SdsServer {
    fn start(path: &Path, initial: Vec<Secret>) -> SdsServer {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let (push, secrets) = watch::channel(initial);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sds = Sds {
            secrets,
            requests: requests.clone(),
        };
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(SecretDiscoveryServiceServer::new(sds))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        SdsServer {
            push,
            requests,
            task,
        }
    }

    fn requests(&self) -> Vec<DiscoveryRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for SdsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(socket: &Path) -> CertsConfig {
    let mut cfg = CertsConfig::from_vars([
        ("POD_NAMESPACE".to_owned(), "bar".to_owned()),
        ("SERVICE_ACCOUNT".to_owned(), "sds".to_owned()),
    ])
    .unwrap();
    cfg.sds_socket = socket.to_owned();
    cfg.rotation = fast_policy();
    cfg
}

#[tokio::test]
async fn sds_pushes_are_followed_acked_and_bad_ones_nacked() {
    init_tracing();
    let pki = TestPki::new("cluster.local");
    let dir = TempDir::new("certs-sds");
    let socket = dir.join("socket");
    let a = pki.issue_spiffe(ID, Duration::from_secs(3600));
    let server = SdsServer::start(&socket, secrets(&a));

    let cfg = config(&socket);
    let source = IdentitySource::from_config(&cfg);
    assert!(
        matches!(source, IdentitySource::Sds(_)),
        "{}",
        source.describe()
    );
    let manager = RotationManager::start(source, cfg.rotation.clone()).unwrap();
    let handle = manager.handle();
    let a_leaf = a.chain()[0].clone();
    wait_identity(handle, "the first SDS push", WAIT, |id| {
        id.leaf() == &a_leaf
    })
    .await;
    assert!(handle.is_ready());

    let first = server.requests()[0].clone();
    assert_eq!(first.type_url, SECRET_TYPE_URL);
    assert_eq!(first.resource_names, [DEFAULT_SECRET, ROOT_SECRET]);
    assert_eq!(first.node.unwrap().id, ID);

    // A new certificate.
    let b = pki.issue_spiffe(ID, Duration::from_secs(3600));
    server.push.send_replace(secrets(&b));
    let b_leaf = b.chain()[0].clone();
    wait_identity(handle, "the second push", WAIT, |id| id.leaf() == &b_leaf).await;

    // Two roots while the mesh CA rotates.
    pki.start_rotation();
    server.push.send_replace(vec![
        default_secret(&b.chain_pem, &b.key_pem),
        root_secret(&pki.roots_pem()),
    ]);
    wait_identity(handle, "a two-root bundle", WAIT, |id| {
        id.roots().len() == 2
    })
    .await;

    // An unusable key: NACKed with the reason, the previous identity kept.
    server.push.send_replace(vec![
        default_secret(&b.chain_pem, "no key here"),
        root_secret(&pki.roots_pem()),
    ]);
    wait_until("a NACK", WAIT, || {
        server.requests().iter().any(|r| r.error_detail.is_some())
    })
    .await;
    let nack = server
        .requests()
        .into_iter()
        .find(|r| r.error_detail.is_some())
        .unwrap();
    let detail = nack.error_detail.unwrap().message;
    assert!(
        detail.contains("private_key") && detail.contains("default"),
        "{detail}"
    );
    let err = handle.status().last_error.unwrap();
    assert!(
        err.contains(&socket.display().to_string()) && err.contains("private_key"),
        "{err}"
    );
    assert_eq!(handle.current().unwrap().leaf(), &b_leaf);
    assert_eq!(handle.current().unwrap().roots().len(), 2);

    // Every response was answered with its nonce.
    let nonces: Vec<String> = server
        .requests()
        .iter()
        .skip(1)
        .map(|r| r.response_nonce.clone())
        .collect();
    assert_eq!(nonces, ["n1", "n2", "n3", "n4"], "{nonces:?}");

    // The server goes away; the client reports it and keeps serving.
    drop(server);
    let failures = handle.status().failures;
    wait_until("the lost stream to be reported", WAIT, || {
        handle.status().failures > failures
    })
    .await;
    assert!(handle.is_ready());

    // A new server on the same socket: the client reconnects and takes its secrets.
    let c = pki.issue_spiffe(ID, Duration::from_secs(3600));
    let server = SdsServer::start(&socket, secrets(&c));
    let c_leaf = c.chain()[0].clone();
    wait_identity(handle, "the restarted server's push", WAIT, |id| {
        id.leaf() == &c_leaf
    })
    .await;
    assert!(!server.requests().is_empty());
}

#[tokio::test]
async fn a_stale_socket_file_does_not_select_sds() {
    init_tracing();
    let dir = TempDir::new("certs-sds-stale");
    let socket = dir.join("socket");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let source = IdentitySource::from_config(&config(&socket));
    assert!(
        matches!(source, IdentitySource::Ca(_)),
        "{}",
        source.describe()
    );
}
