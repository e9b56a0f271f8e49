//! The istiod CA client: `istio.v1.auth.IstioCertificateService/CreateCertificate` over
//! TLS to `CA_ADDR`, and the renewal loop around it.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, SystemTime};

use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

use crate::config::CaConfig;
use crate::error::{CaError, FileError, status_text};
use crate::handle::IdentityHandle;
use crate::identity::WorkloadIdentity;
use crate::istiod::{DialError, IstiodEndpoint};
use crate::key::{self, KeyAndCsr};
use crate::pem_files::{self, CertPaths};
use crate::proto::IstioCertificateRequest;
use crate::proto::istio_certificate_service_client::IstioCertificateServiceClient;
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
        let endpoint = IstiodEndpoint::new(self.cfg.clone());
        // A fresh connection per request: renewals are hours apart, and each connection
        // then uses the current client certificate and root file.
        let tls = endpoint
            .client_tls(current)
            .map_err(|e| self.dial_error(e))?;

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
        *request.metadata_mut() = endpoint.metadata();

        let exchange = async {
            let channel = endpoint
                .connect_with(tls)
                .await
                .map_err(|e| self.dial_error(e))?;
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

    fn dial_error(&self, e: DialError) -> CaError {
        let addr = self.cfg.addr();
        match e {
            DialError::ReadRoots { path, reason } => CaError::ReadRoots { addr, path, reason },
            DialError::NoRoots { path } => CaError::NoRoots { addr, path },
            DialError::Tls(reason) => CaError::Tls { addr, reason },
            DialError::Connect(reason) => CaError::Connect { addr, reason },
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
