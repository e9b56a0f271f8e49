use std::collections::BTreeMap;
use std::sync::Arc;

/// How bytes travel on a connection: as they are, or inside TLS configured by `T`
/// ([`DownstreamTls`] on filter chains, [`UpstreamTls`] on clusters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TransportSocket<T> {
    /// No transport socket or `raw_buffer`: plaintext.
    #[default]
    Raw,
    Tls(T),
}

/// A filter chain's `DownstreamTlsContext`: vm-proxy terminates TLS with the workload
/// identity (SDS secret `default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamTls {
    /// Refuse clients that present no certificate (Istio STRICT and PERMISSIVE mTLS chains).
    pub require_client_certificate: bool,
    pub common: CommonTls,
}

/// A cluster's `UpstreamTlsContext`: vm-proxy originates TLS with the workload identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The server name sent in the ClientHello (Istio: `outbound_.<port>_.<subset>_.<host>`).
    pub sni: Option<Arc<str>>,
    pub common: CommonTls,
}

/// What both TLS sides share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonTls {
    /// The SDS secret holding the certificate presented; always [`WORKLOAD_CERTIFICATE`].
    pub certificate_secret: Arc<str>,
    /// How the peer's certificate is checked.
    pub validation: Validation,
    /// ALPN protocols offered (upstream) or selected from (downstream), in preference order.
    pub alpn_protocols: Vec<Arc<str>>,
    /// What handshakes may negotiate (`tls_params`).
    pub params: TlsParams,
}

/// Envoy's `TlsParameters`: the TLS versions, TLS 1.2 cipher suites and key exchange groups
/// allowed, in preference order. Empty lists mean vm-proxy's defaults; TLS 1.3 suites are
/// not configurable (as in Envoy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsParams {
    pub versions: TlsVersions,
    pub tls12_cipher_suites: Vec<Tls12CipherSuite>,
    pub ecdh_curves: Vec<EcdhCurve>,
}

/// Which TLS versions a handshake may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsVersions {
    #[default]
    Tls12And13,
    Tls12Only,
    Tls13Only,
}

/// The TLS 1.2 cipher suites vm-proxy implements (all ECDHE with AEAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls12CipherSuite {
    EcdheEcdsaAes128GcmSha256,
    EcdheEcdsaAes256GcmSha384,
    EcdheEcdsaChacha20Poly1305,
    EcdheRsaAes128GcmSha256,
    EcdheRsaAes256GcmSha384,
    EcdheRsaChacha20Poly1305,
}

/// The key exchange groups vm-proxy implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcdhCurve {
    X25519,
    P256,
    P384,
    X25519Mlkem768,
}

/// The SDS secret name Istio gives the workload certificate and key.
pub const WORKLOAD_CERTIFICATE: &str = "default";
/// The SDS secret name Istio gives the mesh trust bundle.
pub const WORKLOAD_TRUST_BUNDLE: &str = "ROOTCA";

/// Peer certificate validation: the chain must verify against `trusted_ca`, and the peer's
/// SPIFFE ID must satisfy `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// The SDS secret holding the trusted roots; always [`WORKLOAD_TRUST_BUNDLE`].
    pub trusted_ca: Arc<str>,
    pub peer: PeerMatch,
}

/// Which peer SPIFFE IDs (URI SANs) are accepted, from the SAN matchers Istio sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMatch {
    /// No SAN matcher: any ID whose chain verifies.
    Any,
    /// `prefix: spiffe://<td>/`: any ID in trust domain `<td>`.
    TrustDomain(Arc<str>),
    /// `exact` matchers: one of these IDs.
    Exact(Vec<Arc<str>>),
}

/// A cluster's `transport_socket_matches` entry: endpoints whose
/// `envoy.transport_socket_match` metadata holds every `criteria` entry use `transport_socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSocketMatch {
    pub name: Arc<str>,
    /// Empty matches every endpoint.
    pub criteria: BTreeMap<Arc<str>, Arc<str>>,
    pub transport_socket: TransportSocket<UpstreamTls>,
}
