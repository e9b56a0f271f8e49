//! The server side of mesh mTLS: client certificates are required, verified against the
//! current trust bundle, and must carry an acceptable SPIFFE ID.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::NoServerSessionStorage;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CommonState, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

use crate::error::{PeerIdentityError, TlsError};
use crate::handle::IdentityHandle;
use crate::spiffe::{SpiffeId, SpiffeMatcher};
use crate::tls::params::HandshakeParams;
use crate::tls::resolver::CurrentCertResolver;
use crate::tls::{identity_rejection, no_trust_bundle, signatures};

/// Verifies client chains with rustls' `WebPkiClientVerifier` (aws-lc-rs) built for the
/// trust bundle current at handshake time, then checks the client's SPIFFE ID.
#[derive(Debug, Clone)]
pub struct MeshClientVerifier {
    handle: IdentityHandle,
    peers: SpiffeMatcher,
}

impl MeshClientVerifier {
    /// Trusts `handle`'s bundle and accepts clients `peers` allows.
    pub fn new(handle: IdentityHandle, peers: SpiffeMatcher) -> Self {
        Self { handle, peers }
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    // No CA names in the CertificateRequest: mesh clients hold one certificate and send it
    // anyway, and the bundle changes under us.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let published = self.handle.published().ok_or_else(no_trust_bundle)?;
        published
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        let id = SpiffeId::from_certificate(end_entity).map_err(identity_rejection)?;
        self.peers.check(&id).map_err(identity_rejection)?;
        Ok(ClientCertVerified::assertion())
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

/// A TLS 1.2/1.3 server configuration for mesh mTLS: presents the current certificate,
/// requires a client certificate from the current trust bundle whose SPIFFE ID `peers`
/// accepts, and negotiates one of `alpn`.
///
/// rustls refuses a client whose ALPN offer shares nothing with `alpn`, where Envoy goes on
/// without ALPN; [`MeshAcceptor`] behaves like Envoy.
///
/// Session resumption is off: a resumed session skips certificate verification, and the
/// bundle and peer identities must be checked against the current roots on every handshake
/// (a root dropped after a CA rotation must stop working at once).
pub fn server_config(
    handle: &IdentityHandle,
    peers: SpiffeMatcher,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    server_config_with(handle, peers, alpn, &HandshakeParams::default())
}

/// [`server_config`] negotiating only what `params` allows.
pub fn server_config_with(
    handle: &IdentityHandle,
    peers: SpiffeMatcher,
    alpn: &[&[u8]],
    params: &HandshakeParams,
) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(params.provider())
        .with_protocol_versions(params.versions())
        .map_err(|source| TlsError::Build {
            side: "server",
            source,
        })?
        .with_client_cert_verifier(Arc::new(MeshClientVerifier::new(handle.clone(), peers)))
        .with_cert_resolver(Arc::new(CurrentCertResolver::new(handle.clone())));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// Accepts mesh mTLS connections choosing ALPN as Envoy does: the first of the server's
/// protocols the client offers, and no ALPN at all (rather than a refusal) when there is
/// none in common, so e.g. a client offering `istio-peer-exchange, istio` can reach an HTTP
/// chain that advertises `h2, http/1.1`.
#[derive(Debug, Clone)]
pub struct MeshAcceptor {
    by_protocol: Vec<(Vec<u8>, Arc<ServerConfig>)>,
    without_alpn: Arc<ServerConfig>,
}

impl MeshAcceptor {
    /// An acceptor presenting `handle`'s certificate, accepting clients `peers` allows,
    /// preferring `alpn` in order (e.g. [`crate::alpn::INBOUND_HTTP`]).
    pub fn new(
        handle: &IdentityHandle,
        peers: SpiffeMatcher,
        alpn: &[&[u8]],
    ) -> Result<Self, TlsError> {
        Self::with_params(handle, peers, alpn, &HandshakeParams::default())
    }

    /// [`MeshAcceptor::new`] negotiating only what `params` allows.
    pub fn with_params(
        handle: &IdentityHandle,
        peers: SpiffeMatcher,
        alpn: &[&[u8]],
        params: &HandshakeParams,
    ) -> Result<Self, TlsError> {
        let base = server_config_with(handle, peers, &[], params)?;
        let by_protocol = alpn
            .iter()
            .map(|p| {
                let mut config = base.clone();
                config.alpn_protocols = vec![p.to_vec()];
                (p.to_vec(), Arc::new(config))
            })
            .collect();
        Ok(Self {
            by_protocol,
            without_alpn: Arc::new(base),
        })
    }

    /// The configuration to finish a handshake whose ClientHello offered `offered`. Use with
    /// [`tokio_rustls::LazyConfigAcceptor`] when the ClientHello is needed for other
    /// decisions too (SNI, filter chains).
    pub fn config_for<'a>(
        &self,
        offered: Option<impl Iterator<Item = &'a [u8]>>,
    ) -> Arc<ServerConfig> {
        let offered: Vec<&[u8]> = offered.map(Iterator::collect).unwrap_or_default();
        self.by_protocol
            .iter()
            .find(|(p, _)| offered.contains(&p.as_slice()))
            .map_or_else(|| self.without_alpn.clone(), |(_, c)| c.clone())
    }

    /// Runs the whole server handshake on `io`.
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let config = self.config_for(start.client_hello().alpn());
        start.into_stream(config).await
    }
}

/// The verified peer's SPIFFE ID after a handshake (server or client side).
pub fn peer_spiffe_id(conn: &CommonState) -> Result<SpiffeId, PeerIdentityError> {
    let leaf = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or(PeerIdentityError::NoCertificate)?;
    SpiffeId::from_certificate(leaf)
}
