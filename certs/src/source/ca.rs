//! The istiod CA client: `istio.v1.auth.IstioCertificateService/CreateCertificate` over
//! TLS to `CA_ADDR`, and the renewal loop around it.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::CaConfig;
use crate::error::{CaError, FileError, chain, status_text};
use crate::handle::IdentityHandle;
use crate::identity::WorkloadIdentity;
use crate::key::{self, KeyAndCsr};
use crate::pem_files::{self, CertPaths};
use crate::proto::IstioCertificateRequest;
use crate::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use crate::provider;
use crate::rotation::{RotationPolicy, sleep_until_wall};
use crate::spiffe::SpiffeId;

/// How long a wait for the renewal time may run before the wall clock is checked again.
const WALL_CLOCK_STEP: Duration = Duration::from_secs(30);

/// Gets certificates from istiod, as pilot-agent does on a VM.
#[derive(Debug, Clone)]
pub struct CaSource {
    cfg: CaConfig,
    spiffe_id: SpiffeId,
}

/// A certificate the CA issued, with the PEM text written to `OUTPUT_CERTS`.
pub struct Issued {
    /// The checked identity.
    pub identity: WorkloadIdentity,
    chain_pem: String,
    key_pem: String,
    roots_pem: String,
}

impl std::fmt::Debug for Issued {
    // Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl CaSource {
    /// A client for `cfg`, asking for `spiffe_id` in its CSRs.
    pub fn new(cfg: CaConfig, spiffe_id: SpiffeId) -> Self {
        Self { cfg, spiffe_id }
    }

    /// The CA's `host:port`.
    pub fn addr(&self) -> String {
        self.cfg.addr()
    }

    /// One CreateCertificate exchange with a new key.
    ///
    /// `current` is the identity held now: if it is still valid its certificate is presented
    /// as the TLS client certificate, which istiod accepts in place of a token, and its roots
    /// are trusted for istiod's certificate besides the root file. The bearer token is re-read
    /// from its file; a missing file just means no `authorization` header.
    pub async fn fetch(&self, current: Option<&WorkloadIdentity>) -> Result<Issued, CaError> {
        let addr = self.cfg.addr();
        let KeyAndCsr {
            key,
            key_pem,
            csr_pem,
        } = key::generate(self.cfg.key_algorithm, &self.spiffe_id).map_err(|source| {
            CaError::Key {
                addr: addr.clone(),
                source,
            }
        })?;
        let tls = self.tls_config(current)?;

        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr_pem,
            validity_duration: i64::try_from(self.cfg.ttl.as_secs().max(1)).unwrap_or(i64::MAX),
            metadata: Some(Struct {
                fields: HashMap::from([(
                    "CertSigner".to_owned(),
                    Value {
                        kind: Some(Kind::StringValue(self.cfg.cert_signer.clone())),
                    },
                )]),
            }),
        });
        self.add_metadata(request.metadata_mut()).await;

        let exchange = async {
            let channel = self.connect(tls).await?;
            IstioCertificateServiceClient::new(channel)
                .create_certificate(request)
                .await
                .map_err(|status| CaError::Rpc {
                    addr: addr.clone(),
                    code: status.code(),
                    message: status_text(&status),
                })
        };
        let response = tokio::time::timeout(self.cfg.request_timeout, exchange)
            .await
            .map_err(|_| CaError::Timeout {
                addr: addr.clone(),
                after: self.cfg.request_timeout,
            })??
            .into_inner();

        let issued = issued_from_response(response.cert_chain, key, key_pem).map_err(|reason| {
            CaError::BadResponse {
                addr: addr.clone(),
                reason,
            }
        })?;
        if issued.identity.spiffe_id() != &self.spiffe_id {
            // istiod signs the identity it authenticated, not the one in the CSR.
            tracing::warn!(
                requested = %self.spiffe_id,
                issued = %issued.identity.spiffe_id(),
                "CA issued a different identity than the CSR asked for"
            );
        }
        Ok(issued)
    }

    /// A certificate left by an earlier run, if it is still valid and is this workload's
    /// identity: served at once, and presented to the CA so that renewal works without a
    /// token (which on a VM expires after an hour and does not survive a reboot). Looks in
    /// `OUTPUT_CERTS` (where this process writes) and then `PROV_CERT` (where pilot-agent
    /// reads its client certificate; on a VM both are `/etc/certs`).
    pub fn persisted(&self) -> Option<WorkloadIdentity> {
        let mut dirs = Vec::new();
        dirs.extend(self.cfg.output_dir.as_deref());
        if !dirs.contains(&self.cfg.prov_cert_dir.as_path()) {
            dirs.push(&self.cfg.prov_cert_dir);
        }
        dirs.into_iter().find_map(|dir| self.persisted_in(dir))
    }

    fn persisted_in(&self, dir: &std::path::Path) -> Option<WorkloadIdentity> {
        let identity = match pem_files::load(&CertPaths::in_dir(dir)) {
            Ok(id) => id,
            Err(FileError::Read { path, source }) if source.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "no certificate from an earlier run");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the certificate from an earlier run");
                return None;
            }
        };
        if identity.spiffe_id() != &self.spiffe_id {
            tracing::warn!(
                found = %identity.spiffe_id(),
                configured = %self.spiffe_id,
                dir = %dir.display(),
                "ignoring the certificate from an earlier run: different identity"
            );
            return None;
        }
        if !identity.is_valid_at(SystemTime::now()) {
            tracing::info!(
                not_after = ?identity.not_after(),
                dir = %dir.display(),
                "certificate from an earlier run is not valid now"
            );
            return None;
        }
        Some(identity)
    }

    fn tls_config(&self, current: Option<&WorkloadIdentity>) -> Result<Arc<ClientConfig>, CaError> {
        let addr = self.cfg.addr();
        let path = &self.cfg.root_cert;
        let mut roots = RootCertStore::empty();
        let from_file = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| pem_files::pem_certs(&pem));
        match from_file {
            Ok(certs) => {
                for cert in certs {
                    if let Err(e) = roots.add(cert) {
                        tracing::warn!(path = %path.display(), error = %e, "skipping an unusable CA root");
                    }
                }
            }
            Err(reason) if current.is_some() => {
                tracing::warn!(path = %path.display(), %reason, "CA root file unusable; trusting the held trust bundle");
            }
            Err(reason) => {
                return Err(CaError::ReadRoots {
                    addr,
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
            return Err(CaError::NoRoots {
                addr,
                path: path.clone(),
            });
        }

        let tls_err = |e: rustls::Error| CaError::Tls {
            addr: addr.clone(),
            reason: e.to_string(),
        };
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

    // A fresh connection per request: renewals are hours apart, and each connection then
    // uses the current client certificate and root file.
    async fn connect(&self, tls: Arc<ClientConfig>) -> Result<Channel, CaError> {
        let addr = self.cfg.addr();
        let server_name =
            ServerName::try_from(self.cfg.server_name.clone()).map_err(|e| CaError::Tls {
                addr: addr.clone(),
                reason: format!("invalid TLS server name {:?}: {e}", self.cfg.server_name),
            })?;
        let connector = TlsConnector::from(tls);
        let host = self.cfg.host.clone();
        let port = self.cfg.port;
        // The URI only fills in :authority; the connector below does the dialling.
        let endpoint =
            Endpoint::from_shared(format!("http://{addr}")).map_err(|e| CaError::Connect {
                addr: addr.clone(),
                reason: chain(&e),
            })?;
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
            .map_err(|e| CaError::Connect {
                addr,
                reason: chain(&e),
            })
    }

    async fn add_metadata(&self, md: &mut MetadataMap) {
        let path = &self.cfg.token_path;
        match tokio::fs::read_to_string(path).await {
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
    }

    /// Serves a persisted certificate if there is one, then renews at the policy's time,
    /// retrying failures with backoff while the held certificate stays in service.
    /// Every issued certificate is written to `OUTPUT_CERTS`.
    pub(crate) async fn run(self, handle: IdentityHandle, policy: RotationPolicy) {
        if handle.current().is_none()
            && let Some(identity) = self.persisted()
        {
            tracing::info!("serving the certificate from an earlier run");
            handle.publish(identity);
        }
        let mut backoff = policy.backoff();
        loop {
            if let Some(current) = handle.current() {
                let at = policy.renew_at(&current);
                tracing::debug!(renew_at = ?at, not_after = ?current.not_after(), "next certificate renewal");
                sleep_until_wall(at, WALL_CLOCK_STEP).await;
            }
            loop {
                let current = handle.current();
                match self.fetch(current.as_deref()).await {
                    Ok(issued) => {
                        let Issued {
                            identity,
                            chain_pem,
                            key_pem,
                            roots_pem,
                        } = issued;
                        handle.publish(identity);
                        if let Some(dir) = &self.cfg.output_dir
                            && let Err(e) = pem_files::write(dir, &chain_pem, &key_pem, &roots_pem)
                        {
                            handle.record_failure(&e);
                        }
                        backoff.reset();
                        break;
                    }
                    Err(e) => {
                        handle.record_failure(&e);
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
    }
}

/// Checks a CreateCertificate answer: leaf (and intermediates) first, the root bundle as the
/// last element (several PEM roots in it while the mesh CA rotates); the leaf must match our
/// key and chain to that bundle.
fn issued_from_response(
    elements: Vec<String>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
    key_pem: String,
) -> Result<Issued, String> {
    let Some((roots_elem, chain_elems)) = elements.split_last() else {
        return Err("empty certificate chain".into());
    };
    if chain_elems.is_empty() {
        return Err("only one element; expected the leaf and then the root bundle".into());
    }
    let mut chain = Vec::new();
    for (i, elem) in chain_elems.iter().enumerate() {
        chain.extend(
            pem_files::pem_certs(elem.as_bytes()).map_err(|e| format!("element {i}: {e}"))?,
        );
    }
    let roots = pem_files::pem_certs(roots_elem.as_bytes())
        .map_err(|e| format!("last element (root bundle): {e}"))?;
    let identity = WorkloadIdentity::new(chain, key, roots).map_err(|e| e.to_string())?;
    identity
        .verify_at(SystemTime::now())
        .map_err(|e| e.to_string())?;

    let mut chain_pem = String::new();
    for elem in chain_elems {
        chain_pem.push_str(elem);
        if !elem.ends_with('\n') {
            chain_pem.push('\n');
        }
    }
    Ok(Issued {
        identity,
        chain_pem,
        key_pem,
        roots_pem: roots_elem.clone(),
    })
}
