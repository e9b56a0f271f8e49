//! rustls building blocks for mesh mTLS that follow the rotating identity.

pub mod alpn;
pub mod client;
pub mod params;
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

/// Handshake-signature checks shared by the mesh client and server verifiers: both verify
/// with the one crypto provider, whatever the peer's certificate chain decision was.
pub(crate) mod signatures {
    use rustls::client::danger::HandshakeSignatureValid;
    use rustls::pki_types::CertificateDer;
    use rustls::{DigitallySignedStruct, SignatureScheme};

    use crate::provider;

    pub(crate) fn tls12(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    pub(crate) fn tls13(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    pub(crate) fn schemes() -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
