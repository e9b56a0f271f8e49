//! TLS and gRPC to istiod as pilot-agent dials it, for certificate requests and for xDS:
//! istiod's certificate verified against the root file (and the trust bundle held), the
//! server name `ISTIOD_SAN` or the address's host, the workload certificate as the client
//! certificate once one is held, and per-call metadata `authorization: Bearer <token>`
//! (the token re-read every time), `ClusterID` and any extra headers.

use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::CaConfig;
use crate::error::chain;
use crate::handle::IdentityHandle;
use crate::identity::WorkloadIdentity;
use crate::pem_files;
use crate::provider;

/// Why a connection to istiod could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot read root certificates {path}: {reason}")]
    ReadRoots {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("no root certificate to verify it with ({path} is empty and no trust bundle is held)")]
    NoRoots { path: std::path::PathBuf },
    #[error("cannot build the TLS client: {0}")]
    Tls(String),
    #[error("connection failed: {0}")]
    Connect(String),
}

/// One istiod address and how to authenticate to it; only `host`, `port`, `server_name`,
/// `root_cert`, `token_path`, `cluster_id` and `extra_headers` of the [`CaConfig`] count.
#[derive(Debug, Clone)]
pub struct IstiodEndpoint {
    cfg: CaConfig,
}

impl IstiodEndpoint {
    pub fn new(cfg: CaConfig) -> Self {
        Self { cfg }
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> String {
        self.cfg.addr()
    }

    /// The client configuration for one connection: roots from the file (re-read now) and
    /// from `current`, whose certificate is presented while it is valid.
    pub fn client_tls(
        &self,
        current: Option<&WorkloadIdentity>,
    ) -> Result<Arc<ClientConfig>, DialError> {
        let path = &self.cfg.root_cert;
        let mut roots = RootCertStore::empty();
        let from_file = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| pem_files::pem_certs(&pem));
        match from_file {
            Ok(certs) => {
                for cert in certs {
                    if let Err(e) = roots.add(cert) {
                        tracing::warn!(path = %path.display(), error = %e, "skipping an unusable istiod root");
                    }
                }
            }
            Err(reason) if current.is_some() => {
                tracing::warn!(path = %path.display(), %reason, "istiod root file unusable; trusting the held trust bundle");
            }
            Err(reason) => {
                return Err(DialError::ReadRoots {
                    path: path.clone(),
                    reason,
                });
            }
        }
        if let Some(cur) = current {
            for root in cur.roots() {
                // A root already taken from the file is simply added twice.
                let _ = roots.add(root.clone());
            }
        }
        if roots.is_empty() {
            return Err(DialError::NoRoots { path: path.clone() });
        }
        let tls_err = |e: rustls::Error| DialError::Tls(e.to_string());
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_root_certificates(roots);
        let mut config = match current.filter(|c| c.is_valid_at(SystemTime::now())) {
            Some(cur) => builder
                .with_client_auth_cert(cur.chain().to_vec(), cur.key().clone_key())
                .map_err(tls_err)?,
            None => builder.with_no_client_auth(),
        };
        // gRPC servers (grpc-go included) insist on ALPN h2 over TLS.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// A new gRPC channel over TLS with `tls` (the host is resolved again every time).
    pub async fn connect_with(&self, tls: Arc<ClientConfig>) -> Result<Channel, DialError> {
        let server_name = ServerName::try_from(self.cfg.server_name.clone()).map_err(|e| {
            DialError::Tls(format!(
                "invalid TLS server name {:?}: {e}",
                self.cfg.server_name
            ))
        })?;
        let connector = TlsConnector::from(tls);
        let host = self.cfg.host.clone();
        let port = self.cfg.port;
        // The URI only fills in :authority; the connector below does the dialling.
        let endpoint = Endpoint::from_shared(format!("http://{}", self.cfg.addr()))
            .map_err(|e| DialError::Connect(chain(&e)))?;
        endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let connector = connector.clone();
                let host = host.clone();
                let server_name = server_name.clone();
                async move {
                    let tcp = TcpStream::connect((host.as_str(), port)).await?;
                    tcp.set_nodelay(true)?;
                    let tls = connector.connect(server_name, tcp).await?;
                    Ok::<_, io::Error>(TokioIo::new(tls))
                }
            }))
            .await
            .map_err(|e| DialError::Connect(chain(&e)))
    }

    /// [`IstiodEndpoint::client_tls`] with `handle`'s identity, then
    /// [`IstiodEndpoint::connect_with`]: a connection made after a rotation presents the new
    /// certificate.
    pub async fn connect(&self, handle: &IdentityHandle) -> Result<Channel, DialError> {
        let current = handle.current();
        let tls = self.client_tls(current.as_deref())?;
        self.connect_with(tls).await
    }

    /// The call metadata: the bearer token (re-read; a missing file just means none, the
    /// client certificate may do), `ClusterID`, the extra headers.
    pub fn metadata(&self) -> MetadataMap {
        let mut md = MetadataMap::new();
        let path = &self.cfg.token_path;
        match std::fs::read_to_string(path) {
            Ok(token) if !token.trim().is_empty() => {
                match AsciiMetadataValue::try_from(format!("Bearer {}", token.trim())) {
                    Ok(v) => {
                        md.insert("authorization", v);
                    }
                    Err(_) => {
                        tracing::warn!(path = %path.display(), "token holds characters not allowed in a header; not sent");
                    }
                }
            }
            Ok(_) => tracing::warn!(path = %path.display(), "token file is empty; not sent"),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "no token; relying on the client certificate")
            }
        }
        match AsciiMetadataValue::try_from(self.cfg.cluster_id.as_str()) {
            Ok(v) => {
                md.insert("clusterid", v);
            }
            Err(_) => {
                tracing::warn!(cluster_id = %self.cfg.cluster_id, "cluster ID is not valid header text; not sent")
            }
        }
        for (name, value) in &self.cfg.extra_headers {
            // Both were checked when the configuration was read.
            if let (Ok(k), Ok(v)) = (
                AsciiMetadataKey::from_bytes(name.as_bytes()),
                AsciiMetadataValue::try_from(value.as_str()),
            ) {
                md.insert(k, v);
            }
        }
        md
    }
}
