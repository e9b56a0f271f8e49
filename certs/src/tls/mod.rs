//! rustls building blocks for mesh mTLS that follow the rotating identity.

pub mod alpn;
pub mod client;
pub mod resolver;
pub mod server;

use std::sync::Arc;

use rustls::{CertificateError, OtherError};

use crate::error::PeerIdentityError;

/// A handshake rejected for the peer's identity, as a certificate error carrying the reason.
fn identity_rejection(e: PeerIdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn no_trust_bundle() -> rustls::Error {
    rustls::Error::General("no workload trust bundle held yet".into())
}
