//! What the RBAC engine may look at.

use std::net::{IpAddr, SocketAddr};

use super::metadata::{DynamicMetadata, NoMetadata};

/// A downstream connection, as the network filter sees it.
#[derive(Clone, Copy)]
pub struct Connection<'a> {
    /// The peer's certificate identity (its first URI SAN: the SPIFFE ID) when the
    /// connection is mTLS; `None` on plaintext.
    pub peer_principal: Option<&'a str>,
    /// The peer address (`direct_remote_ip`).
    pub source: SocketAddr,
    /// The local address, after the original destination was restored.
    pub destination: SocketAddr,
    /// The SNI the client sent.
    pub server_name: Option<&'a str>,
    /// Dynamic metadata the connection's filters wrote.
    pub metadata: &'a dyn DynamicMetadata,
}

impl<'a> Connection<'a> {
    /// A connection without dynamic metadata (vm-proxy's network filters write none).
    pub fn new(
        peer_principal: Option<&'a str>,
        source: SocketAddr,
        destination: SocketAddr,
        server_name: Option<&'a str>,
    ) -> Self {
        Self {
            peer_principal,
            source,
            destination,
            server_name,
            metadata: &NoMetadata,
        }
    }
}

/// One HTTP request, as the HTTP filter sees it.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent, query included (`:path`).
    pub path: &'a str,
    /// `:authority` (HTTP/1: `Host`).
    pub authority: &'a str,
    pub scheme: &'a str,
    /// The other headers.
    pub headers: &'a http::HeaderMap,
    /// The client address the connection manager trusts (`x-forwarded-for` per its
    /// settings); the peer address otherwise.
    pub remote_ip: IpAddr,
    /// Dynamic metadata the request's filters wrote (e.g. `envoy.filters.http.jwt_authn`).
    pub metadata: &'a dyn DynamicMetadata,
}
