//! The client side of mesh mTLS: the server's chain must verify against the current trust
//! bundle and its SPIFFE ID (a URI SAN, not the DNS name rustls checks by default) must be
//! one the caller expects.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, verify_server_cert_signed_by_trust_anchor};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::error::TlsError;
use crate::handle::IdentityHandle;
use crate::provider;
use crate::spiffe::{SpiffeId, SpiffeMatcher};
use crate::tls::params::HandshakeParams;
use crate::tls::resolver::CurrentCertResolver;
use crate::tls::{identity_rejection, no_trust_bundle, signatures};

/// Checks a server's chain against the bundle current at handshake time, then its SPIFFE ID.
/// The TLS server name is not checked: mesh SNI (`outbound_.80_._.svc...`) is a routing key,
/// and Istio certificates carry no DNS names.
#[derive(Debug, Clone)]
pub struct MeshServerVerifier {
    handle: IdentityHandle,
    peers: SpiffeMatcher,
}

impl MeshServerVerifier {
    /// Trusts `handle`'s bundle and accepts servers `peers` allows.
    pub fn new(handle: IdentityHandle, peers: SpiffeMatcher) -> Self {
        Self { handle, peers }
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let published = self.handle.published().ok_or_else(no_trust_bundle)?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &published.identity.root_store(),
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        let id = SpiffeId::from_certificate(end_entity).map_err(identity_rejection)?;
        self.peers.check(&id).map_err(identity_rejection)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes()
    }
}

/// A TLS 1.2/1.3 client configuration for mesh mTLS: presents the current certificate,
/// accepts servers whose chain verifies against the current bundle and whose SPIFFE ID
/// `peers` accepts (for an upstream cluster: its `match_subject_alt_names`), offering
/// `alpn` (e.g. [`crate::alpn::OUTBOUND_H2`]).
///
/// Session resumption is off, so every connection verifies the server against the bundle
/// and identity current at that moment.
pub fn client_config(
    handle: &IdentityHandle,
    peers: SpiffeMatcher,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    client_config_with(handle, peers, alpn, &HandshakeParams::default())
}

/// [`client_config`] negotiating only what `params` allows.
pub fn client_config_with(
    handle: &IdentityHandle,
    peers: SpiffeMatcher,
    alpn: &[&[u8]],
    params: &HandshakeParams,
) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(params.provider())
        .with_protocol_versions(params.versions())
        .map_err(|source| TlsError::Build {
            side: "client",
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshServerVerifier::new(handle.clone(), peers)))
        .with_client_cert_resolver(Arc::new(CurrentCertResolver::new(handle.clone())));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::disabled();
    Ok(config)
}
