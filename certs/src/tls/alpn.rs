//! ALPN protocol IDs Istio's sidecars offer and accept on mesh mTLS.
//!
//! A client offering [`ISTIO_PEER_EXCHANGE`] that gets it selected must speak Istio's TCP
//! metadata-exchange preamble on the stream; offer only [`ISTIO`] otherwise.

/// TCP metadata exchange (`istio.metadata_exchange`).
pub const ISTIO_PEER_EXCHANGE: &[u8] = b"istio-peer-exchange";
/// Plain mesh TCP.
pub const ISTIO: &[u8] = b"istio";
/// Mesh HTTP/1.0, as the `istio.alpn` filter sets it.
pub const ISTIO_HTTP10: &[u8] = b"istio-http/1.0";
/// Mesh HTTP/1.1.
pub const ISTIO_HTTP11: &[u8] = b"istio-http/1.1";
/// Mesh HTTP/2.
pub const ISTIO_H2: &[u8] = b"istio-h2";
/// Standard HTTP/2.
pub const H2: &[u8] = b"h2";
/// Standard HTTP/1.1.
pub const HTTP11: &[u8] = b"http/1.1";
/// Standard HTTP/1.0.
pub const HTTP10: &[u8] = b"http/1.0";

/// What an outbound mesh TCP connection offers.
pub const OUTBOUND_TCP: &[&[u8]] = &[ISTIO_PEER_EXCHANGE, ISTIO];
/// What an outbound mesh HTTP/1.0 connection offers (`istio.alpn` override).
pub const OUTBOUND_HTTP10: &[&[u8]] = &[ISTIO_HTTP10, ISTIO, HTTP10];
/// What an outbound mesh HTTP/1.1 connection offers.
pub const OUTBOUND_HTTP11: &[&[u8]] = &[ISTIO_HTTP11, ISTIO, HTTP11];
/// What an outbound mesh HTTP/2 connection offers.
pub const OUTBOUND_H2: &[&[u8]] = &[ISTIO_H2, ISTIO, H2];
/// What an inbound mesh HTTP filter chain selects from.
pub const INBOUND_HTTP: &[&[u8]] = &[H2, HTTP11];
/// What an inbound mesh TCP filter chain selects from.
pub const INBOUND_TCP: &[&[u8]] = &[ISTIO_PEER_EXCHANGE, H2, HTTP11];
/// The client ALPNs inbound filter chains match to tell mesh mTLS from other TLS.
pub const MESH_CLIENT_PROTOCOLS: &[&[u8]] = &[
    ISTIO_PEER_EXCHANGE,
    ISTIO,
    ISTIO_HTTP10,
    ISTIO_HTTP11,
    ISTIO_H2,
];
