//! Mesh mTLS on the data path with the workload identity: terminated on filter chains whose
//! transport socket is TLS, originated to endpoints whose transport socket is TLS.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use certs::error::PeerIdentityError;
use certs::tls::client::client_config_with;
use certs::tls::params::{HandshakeParams, Versions};
use certs::tls::server::{MeshAcceptor, peer_spiffe_id};
use certs::{IdentityHandle, SpiffeId, SpiffeMatcher};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{CipherSuite, NamedGroup};
use tokio_rustls::{client, server};
use xds_client::model::{
    CommonTls, DownstreamTls, EcdhCurve, PeerMatch, Tls12CipherSuite, TlsParams, TlsVersions,
    UpstreamTls,
};

/// Envoy waits for a downstream handshake without limit when the filter chain sets no
/// `transport_socket_connect_timeout`; vm-proxy bounds it so a silent client cannot hold a
/// connection task forever.
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("TLS is configured but vm-proxy runs without a workload identity")]
    NoIdentity,
    #[error("SAN matcher: {0}")]
    Matcher(#[source] PeerIdentityError),
    #[error("building the TLS configuration: {0}")]
    Config(#[source] certs::error::TlsError),
    #[error("SNI {0:?} is not a valid server name")]
    Sni(Arc<str>),
    #[error("TLS handshake: {0}")]
    Handshake(#[source] io::Error),
    #[error("TLS handshake not done within {0:?}")]
    Timeout(Duration),
    #[error("peer identity after the handshake: {0}")]
    Peer(#[source] PeerIdentityError),
}

/// The SPIFFE IDs a [`PeerMatch`] accepts, as the certs crate checks them.
pub(crate) fn matcher(peer: &PeerMatch) -> Result<SpiffeMatcher, TlsError> {
    Ok(match peer {
        PeerMatch::Any => SpiffeMatcher::Any,
        PeerMatch::TrustDomain(td) => SpiffeMatcher::TrustDomain(td.to_string()),
        PeerMatch::Exact(ids) => SpiffeMatcher::Exact(
            ids.iter()
                .map(|id| SpiffeId::parse(id))
                .collect::<Result<_, _>>()
                .map_err(TlsError::Matcher)?,
        ),
    })
}

/// The server name sent in the ClientHello: the configured SNI, else the endpoint's address
/// (rustls sends no SNI for an address, as Envoy sends none without `sni`).
pub(crate) fn server_name(
    sni: Option<&Arc<str>>,
    target: SocketAddr,
) -> Result<ServerName<'static>, TlsError> {
    match sni {
        Some(sni) => ServerName::try_from(sni.to_string()).map_err(|_| TlsError::Sni(sni.clone())),
        None => Ok(ServerName::from(target.ip())),
    }
}

/// The configured ALPN protocols, without `istio-peer-exchange`: a peer that negotiates it
/// writes Istio's metadata-exchange preamble into the stream and expects one back, which
/// vm-proxy does not speak yet; left out, Envoy peers fall back to plain mesh TCP.
fn alpn(common: &CommonTls) -> Vec<&[u8]> {
    common
        .alpn_protocols
        .iter()
        .map(|p| p.as_bytes())
        .filter(|p| *p != certs::alpn::ISTIO_PEER_EXCHANGE)
        .collect()
}

/// The handshake restrictions of a TLS context's `tls_params`.
fn handshake_params(p: &TlsParams) -> HandshakeParams {
    HandshakeParams {
        versions: match p.versions {
            TlsVersions::Tls12And13 => Versions::Tls12And13,
            TlsVersions::Tls12Only => Versions::Tls12Only,
            TlsVersions::Tls13Only => Versions::Tls13Only,
        },
        tls12_cipher_suites: p
            .tls12_cipher_suites
            .iter()
            .map(|s| match s {
                Tls12CipherSuite::EcdheEcdsaAes128GcmSha256 => {
                    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                }
                Tls12CipherSuite::EcdheEcdsaAes256GcmSha384 => {
                    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                }
                Tls12CipherSuite::EcdheEcdsaChacha20Poly1305 => {
                    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                }
                Tls12CipherSuite::EcdheRsaAes128GcmSha256 => {
                    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                }
                Tls12CipherSuite::EcdheRsaAes256GcmSha384 => {
                    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                }
                Tls12CipherSuite::EcdheRsaChacha20Poly1305 => {
                    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
                }
            })
            .collect(),
        groups: p
            .ecdh_curves
            .iter()
            .map(|c| match c {
                EcdhCurve::X25519 => NamedGroup::X25519,
                EcdhCurve::P256 => NamedGroup::secp256r1,
                EcdhCurve::P384 => NamedGroup::secp384r1,
                EcdhCurve::X25519Mlkem768 => NamedGroup::X25519MLKEM768,
            })
            .collect(),
    }
}

/// Terminates TLS on `stream` within `timeout`, requiring a client certificate whose
/// SPIFFE ID the chain's validation accepts; returns that ID with the stream.
pub(crate) async fn accept(
    tls: &DownstreamTls,
    identity: Option<&IdentityHandle>,
    stream: TcpStream,
    timeout: Duration,
) -> Result<(server::TlsStream<TcpStream>, SpiffeId), TlsError> {
    let identity = identity.ok_or(TlsError::NoIdentity)?;
    let peers = matcher(&tls.common.validation.peer)?;
    let params = handshake_params(&tls.common.params);
    let acceptor = MeshAcceptor::with_params(identity, peers, &alpn(&tls.common), &params)
        .map_err(TlsError::Config)?;
    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(r) => r.map_err(TlsError::Handshake)?,
        Err(_) => return Err(TlsError::Timeout(timeout)),
    };
    let peer = peer_spiffe_id(stream.get_ref().1).map_err(TlsError::Peer)?;
    Ok((stream, peer))
}

/// Originates TLS on `stream` (connected to `target`) within `timeout`, accepting a server
/// whose SPIFFE ID the cluster's validation accepts; returns that ID with the stream.
pub(crate) async fn connect(
    tls: &UpstreamTls,
    identity: Option<&IdentityHandle>,
    stream: TcpStream,
    target: SocketAddr,
    timeout: Duration,
) -> Result<(client::TlsStream<TcpStream>, SpiffeId), TlsError> {
    let identity = identity.ok_or(TlsError::NoIdentity)?;
    let peers = matcher(&tls.common.validation.peer)?;
    let params = handshake_params(&tls.common.params);
    let config = client_config_with(identity, peers, &alpn(&tls.common), &params)
        .map_err(TlsError::Config)?;
    let name = server_name(tls.sni.as_ref(), target)?;
    let connecting = TlsConnector::from(Arc::new(config)).connect(name, stream);
    let stream = match tokio::time::timeout(timeout, connecting).await {
        Ok(r) => r.map_err(TlsError::Handshake)?,
        Err(_) => return Err(TlsError::Timeout(timeout)),
    };
    let peer = peer_spiffe_id(stream.get_ref().1).map_err(TlsError::Peer)?;
    Ok((stream, peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_client::model::Validation;

    #[test]
    fn peer_exchange_is_never_negotiated() {
        let common = CommonTls {
            certificate_secret: "default".into(),
            validation: Validation {
                trusted_ca: "ROOTCA".into(),
                peer: PeerMatch::Any,
            },
            alpn_protocols: vec!["istio-peer-exchange".into(), "istio".into()],
            params: Default::default(),
        };
        assert_eq!(alpn(&common), vec![b"istio".as_slice()]);
    }

    #[test]
    fn sni_is_the_configured_name_or_none_for_an_address() {
        let target: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let sni: Arc<str> = "outbound_.80_._.a.ns.svc.cluster.local".into();
        assert_eq!(
            server_name(Some(&sni), target).unwrap().to_str(),
            "outbound_.80_._.a.ns.svc.cluster.local"
        );
        assert!(matches!(
            server_name(None, target).unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(server_name(Some(&"bad sni!".into()), target).is_err());
    }
}
