//! The HTTP connection manager (`envoy.filters.network.http_connection_manager`) and the HTTP
//! filters istiod puts in it.

use std::sync::Arc;
use std::time::Duration;

use super::{FaultPolicy, RouteConfig, UpgradeConfig};

/// What an HCM terminates a connection into: requests, each routed by a route configuration.
#[derive(Debug, Clone)]
pub struct HttpConnectionManager {
    pub stat_prefix: Arc<str>,
    pub routes: RouteSource,
    /// In order; the last one is the router.
    pub http_filters: Vec<HttpFilter>,
    pub codec: CodecType,
    /// Trust the downstream peer address as the client's (Istio: true on inbound, false on
    /// outbound); decides `x-forwarded-for` and `x-envoy-external-address` handling.
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    pub forward_client_cert: ForwardClientCert,
    /// Which parts of the client certificate go into `x-forwarded-client-cert`.
    pub set_current_client_cert: ClientCertDetails,
    /// Reset a stream with no activity for this long; `None` disables it. Envoy: 5 min.
    pub stream_idle_timeout: Option<Duration>,
    /// Whole request (headers and body) must arrive within this; `None` disables it.
    pub request_timeout: Option<Duration>,
    /// Close a downstream connection with no streams for this long; `None`: Envoy's 1 h.
    pub idle_timeout: Option<Duration>,
    /// RFC 3986 path normalisation before routing (istiod's default mesh setting: BASE).
    pub normalize_path: bool,
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
    /// Upgrades (`websocket`, `CONNECT`) allowed on every route unless a route says otherwise.
    pub upgrades: Vec<UpgradeConfig>,
    /// Create `x-request-id` when absent.
    pub generate_request_id: bool,
    /// Keep an `x-request-id` that arrived from an external (untrusted) client.
    pub preserve_external_request_id: bool,
    pub server_header: ServerHeader,
    /// The `server` response header value (Envoy default: `envoy`).
    pub server_name: Arc<str>,
    pub http1: Http1Options,
    pub http2: Http2Options,
    /// Limit on request header size; Envoy's default is 60 KiB.
    pub max_request_headers_kb: u32,
    /// Send `x-envoy-*` response headers such as `x-envoy-upstream-service-time`.
    pub suppress_envoy_headers: bool,
    /// `istio.stats`'s `disable_host_header_fallback` (istiod sets it on inbound): the
    /// `destination_service` label never falls back to the `Host` header.
    pub stats_disable_host_header_fallback: bool,
}

/// Where the route table comes from.
#[derive(Debug, Clone)]
pub enum RouteSource {
    /// Fetched by RDS under this name; the HCM waits for it (listener warming).
    Rds(Arc<str>),
    Inline(Arc<RouteConfig>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CodecType {
    /// HTTP/1.1 or HTTP/2 by the connection preface.
    #[default]
    Auto,
    Http1,
    Http2,
}

/// Envoy's `ForwardClientCertDetails`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardClientCert {
    /// Remove any `x-forwarded-client-cert`.
    #[default]
    Sanitize,
    ForwardOnly,
    AppendForward,
    SanitizeSet,
    AlwaysForwardOnly,
}

/// Envoy's `SetCurrentClientCertDetails`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCertDetails {
    pub subject: bool,
    pub cert: bool,
    pub chain: bool,
    pub dns: bool,
    pub uri: bool,
}

/// Envoy's `PathWithEscapedSlashesAction`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    #[default]
    KeepUnchanged,
    RejectRequest,
    UnescapeAndRedirect,
    UnescapeAndForward,
}

/// Envoy's `ServerHeaderTransformation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServerHeader {
    #[default]
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

#[derive(Debug, Clone, Default)]
pub struct Http1Options {
    /// Accept HTTP/1.0 requests (Envoy's `accept_http_10`).
    pub accept_http_10: bool,
    /// Host used for HTTP/1.0 requests without one.
    pub default_host_for_http_10: Option<Arc<str>>,
    pub allow_absolute_url: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Http2Options {
    pub max_concurrent_streams: Option<u32>,
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
}

/// One HTTP filter, decoded. Filters that only observe (stats) still appear so the data path
/// runs them; anything vm-proxy does not implement is rejected when decoded.
#[derive(Debug, Clone)]
pub enum HttpFilter {
    /// `envoy.filters.http.router`: always last.
    Router,
    /// `envoy.filters.http.fault`: the listener-level policy (often empty: istiod puts the
    /// real ones per route).
    Fault(FaultPolicy),
    /// `envoy.filters.http.cors`: the policies are per virtual host / route.
    Cors,
    /// Istio's `istio.metadata_exchange` / `io.istio.http.peer_metadata`: exchange workload
    /// metadata with the peer in `x-envoy-peer-metadata(-id)` headers.
    PeerMetadata,
    /// Istio's `istio.stats`: the standard request metrics.
    IstioStats(Arc<super::StatsConfig>),
    /// Istio's `istio.alpn`: the upstream ALPN that tells the peer's sidecar the protocol.
    IstioAlpn(Vec<AlpnOverride>),
    /// `envoy.filters.http.grpc_stats`: per-method gRPC message counts.
    GrpcStats,
    /// `envoy.filters.http.rbac`: Istio's AuthorizationPolicy per request.
    Rbac(Arc<super::HttpRbac>),
}

/// One `istio.alpn` entry: requests of `protocol` offer `alpn` upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlpnOverride {
    pub protocol: UpstreamProtocol,
    pub alpn: Vec<Arc<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http10,
    Http11,
    Http2,
}
