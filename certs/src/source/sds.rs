//! Certificates from a local SDS server on a Unix socket (SPIRE, or an Istio agent), the
//! way Envoy asks for them: one `StreamSecrets` stream subscribed to `default` (chain and
//! key) and `ROOTCA` (trust bundle), acknowledging every push.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, Node, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use hyper_util::rt::TokioIo;
use prost::Message;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{SdsError, chain, status_text};
use crate::handle::IdentityHandle;
use crate::identity::WorkloadIdentity;
use crate::pem_files::pem_certs;
use crate::rotation::RotationPolicy;

/// Type URL of SDS resources.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// The secret holding the workload chain and key.
pub const DEFAULT_SECRET: &str = "default";
/// The secret holding the trust bundle.
pub const ROOT_SECRET: &str = "ROOTCA";

/// An SDS client for one socket.
#[derive(Debug, Clone)]
pub struct SdsSource {
    path: PathBuf,
    node_id: String,
}

/// What the stream has delivered so far; an identity needs both halves.
#[derive(Default, Clone)]
struct Secrets {
    cert: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    roots: Option<Vec<CertificateDer<'static>>>,
}

impl SdsSource {
    /// A client for the server on `path`, identifying itself with `node_id` in the first
    /// request as Envoy does.
    pub fn new(path: PathBuf, node_id: String) -> Self {
        Self { path, node_id }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps a stream open, reconnecting with backoff when it fails or ends.
    pub(crate) async fn run(self, handle: IdentityHandle, policy: RotationPolicy) {
        let mut backoff = policy.backoff();
        loop {
            let err = self.stream(&handle, &mut backoff).await;
            handle.record_failure(&err);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One stream, until it fails. Returns why it ended.
    async fn stream(
        &self,
        handle: &IdentityHandle,
        backoff: &mut crate::rotation::Backoff,
    ) -> SdsError {
        let channel = match self.channel().await {
            Ok(c) => c,
            Err(e) => return e,
        };
        let (tx, rx) = mpsc::channel(4);
        let subscribe = DiscoveryRequest {
            node: Some(Node {
                id: self.node_id.clone(),
                ..Node::default()
            }),
            resource_names: vec![DEFAULT_SECRET.into(), ROOT_SECRET.into()],
            type_url: SECRET_TYPE_URL.into(),
            ..DiscoveryRequest::default()
        };
        if tx.send(subscribe).await.is_err() {
            return self.closed();
        }
        let mut responses = match SecretDiscoveryServiceClient::new(channel)
            .stream_secrets(ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) => return self.status_error(&status),
        };

        let mut have = Secrets::default();
        loop {
            let response = match responses.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return self.closed(),
                Err(status) => return self.status_error(&status),
            };
            backoff.reset();
            let outcome = self.apply(&response, &have);
            let ack = DiscoveryRequest {
                version_info: response.version_info.clone(),
                resource_names: vec![DEFAULT_SECRET.into(), ROOT_SECRET.into()],
                type_url: SECRET_TYPE_URL.into(),
                response_nonce: response.nonce.clone(),
                error_detail: outcome.as_ref().err().map(|e| RpcStatus {
                    // INVALID_ARGUMENT, as Envoy NACKs a config it cannot use.
                    code: 3,
                    message: e.to_string(),
                    details: Vec::new(),
                }),
                ..DiscoveryRequest::default()
            };
            match outcome {
                Ok((next, identity)) => {
                    have = next;
                    if let Some(identity) = identity {
                        handle.publish(identity);
                    }
                }
                Err(e) => handle.record_failure(&e),
            }
            if tx.send(ack).await.is_err() {
                return self.closed();
            }
        }
    }

    /// Merges a push into what is held. Returns the new state and, once both halves are
    /// there, the identity they form. Nothing changes if any part of the push is unusable.
    fn apply(
        &self,
        response: &DiscoveryResponse,
        have: &Secrets,
    ) -> Result<(Secrets, Option<WorkloadIdentity>), SdsError> {
        let mut next = have.clone();
        let mut changed = false;
        for any in &response.resources {
            if any.type_url != SECRET_TYPE_URL {
                return Err(self.bad(
                    "?",
                    format!("resource of type {} in an SDS response", any.type_url),
                ));
            }
            let secret = Secret::decode(any.value.as_slice())
                .map_err(|e| self.bad("?", format!("undecodable Secret: {e}")))?;
            match (secret.name.as_str(), secret.r#type) {
                (DEFAULT_SECRET, Some(secret::Type::TlsCertificate(tc))) => {
                    let chain = pem_certs(&self.data(
                        DEFAULT_SECRET,
                        "certificate_chain",
                        tc.certificate_chain.as_ref(),
                    )?)
                    .map_err(|e| self.bad(DEFAULT_SECRET, format!("certificate_chain: {e}")))?;
                    let key = PrivateKeyDer::from_pem_slice(&self.data(
                        DEFAULT_SECRET,
                        "private_key",
                        tc.private_key.as_ref(),
                    )?)
                    .map_err(|e| {
                        self.bad(
                            DEFAULT_SECRET,
                            format!("private_key: no usable PEM key: {e}"),
                        )
                    })?;
                    next.cert = Some((chain, Arc::new(key)));
                    changed = true;
                }
                (ROOT_SECRET, Some(secret::Type::ValidationContext(vc))) => {
                    let roots =
                        pem_certs(&self.data(ROOT_SECRET, "trusted_ca", vc.trusted_ca.as_ref())?)
                            .map_err(|e| self.bad(ROOT_SECRET, format!("trusted_ca: {e}")))?;
                    next.roots = Some(roots);
                    changed = true;
                }
                (name @ (DEFAULT_SECRET | ROOT_SECRET), _) => {
                    return Err(self.bad(name, "secret of the wrong kind".into()));
                }
                (other, _) => {
                    tracing::debug!(name = other, "ignoring a secret that was not asked for")
                }
            }
        }
        let identity = match (&next.cert, &next.roots) {
            (Some((chain, key)), Some(roots)) if changed => Some(
                WorkloadIdentity::new(chain.clone(), key.clone_key(), roots.clone())
                    .map_err(|e| self.bad(DEFAULT_SECRET, e.to_string()))?,
            ),
            _ => None,
        };
        Ok((next, identity))
    }

    fn data(
        &self,
        secret: &str,
        field: &str,
        source: Option<&DataSource>,
    ) -> Result<Vec<u8>, SdsError> {
        match source.and_then(|d| d.specifier.as_ref()) {
            Some(Specifier::InlineBytes(b)) => Ok(b.clone()),
            Some(Specifier::InlineString(s)) => Ok(s.clone().into_bytes()),
            Some(Specifier::Filename(f)) => std::fs::read(f)
                .map_err(|e| self.bad(secret, format!("{field}: cannot read {f}: {e}"))),
            Some(Specifier::EnvironmentVariable(v)) => std::env::var(v)
                .map(String::into_bytes)
                .map_err(|e| self.bad(secret, format!("{field}: environment variable {v}: {e}"))),
            None => Err(self.bad(secret, format!("{field} is missing"))),
        }
    }

    async fn channel(&self) -> Result<Channel, SdsError> {
        let path = Arc::new(self.path.clone());
        let err = |e: &dyn std::error::Error| SdsError::Connect {
            path: self.path.clone(),
            reason: chain(e),
        };
        // The URI is a placeholder that only fills in :authority.
        Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(&*path).await?)) }
            }))
            .await
            .map_err(|e| err(&e))
    }

    fn bad(&self, name: &str, reason: String) -> SdsError {
        SdsError::BadSecret {
            path: self.path.clone(),
            name: name.to_owned(),
            reason,
        }
    }

    fn closed(&self) -> SdsError {
        SdsError::Closed {
            path: self.path.clone(),
        }
    }

    fn status_error(&self, status: &tonic::Status) -> SdsError {
        SdsError::Stream {
            path: self.path.clone(),
            code: status.code(),
            message: status_text(status),
        }
    }
}

/// Whether an SDS server accepts connections on `path` right now. A socket file left by a
/// dead server does not count.
pub(crate) fn answers(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}
