//! Workload identity for vm-proxy: what pilot-agent's certificate side does on an Istio VM.
//!
//! - **Sources** ([`IdentitySource`]): a CSR to istiod's `IstioCertificateService` over
//!   TLS (token first, then mTLS with the held certificate, so renewal survives the token's
//!   expiry and reboots), a local SDS server on a Unix socket, or file-mounted certificates.
//! - **Rotation** ([`RotationManager`], [`RotationPolicy`]): renew at half the lifetime
//!   (± 1 % jitter), back off on failure, keep serving the held certificate meanwhile, write
//!   issued certificates 0600 and atomically to `OUTPUT_CERTS`.
//! - **Publication** ([`IdentityHandle`]): lock-free reads for handshakes, a watch channel
//!   for code that reacts to rotations, readiness and status.
//! - **TLS** ([`tls`]): server and client configurations for mesh mTLS whose certificate
//!   and trust bundle follow the handle, with SPIFFE-ID peer checks and Istio's ALPNs.
//!
//! Exactly one crypto provider, aws-lc-rs, is used, passed explicitly to every builder.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use certs::{CertsConfig, IdentitySource, RotationManager, SpiffeMatcher, alpn, tls};
//!
//! let cfg = CertsConfig::from_env()?;
//! let manager = RotationManager::start(IdentitySource::from_config(&cfg), cfg.rotation.clone())?;
//! let handle = manager.handle().clone();
//! let td = SpiffeMatcher::TrustDomain(cfg.spiffe_id.trust_domain().to_owned());
//! let inbound = tls::server::server_config(&handle, td, alpn::INBOUND_HTTP)?;
//! # let _ = inbound;
//! # Ok(()) }
//! ```

pub mod config;
pub mod error;
pub mod handle;
pub mod identity;
pub mod istiod;
pub mod key;
pub mod manager;
pub mod pem_files;
pub mod rotation;
pub mod source;
pub mod spiffe;
pub mod tls;

/// Istio's CA API (`istio.v1.auth`), generated from `proto/istio/ca.proto`. The server
/// half exists only with the `ca-server` feature (test fakes of istiod).
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("istio.v1.auth");
}

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use config::{CaConfig, CertsConfig};
pub use handle::{IdentityHandle, IdentityStatus};
pub use identity::WorkloadIdentity;
pub use key::{KeyAlgorithm, RsaBits};
pub use manager::RotationManager;
pub use rotation::RotationPolicy;
pub use source::IdentitySource;
pub use spiffe::{SpiffeId, SpiffeMatcher};
pub use tls::alpn;

/// The aws-lc-rs provider every rustls object here is built with.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}
