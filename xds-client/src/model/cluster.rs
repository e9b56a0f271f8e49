use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{
    CircuitBreakers, CommonLb, EndpointLocality, TransportSocket, TransportSocketMatch, UpstreamTls,
};

/// An upstream cluster: how endpoints are found and how a connection to one is made.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: Arc<str>,
    pub discovery: DiscoveryType,
    /// Envoy's default is 5 s.
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    /// Source address for upstream connections (Istio's inbound passthrough binds 127.0.0.6).
    pub upstream_bind_address: Option<SocketAddr>,
    pub endpoints: Vec<Endpoint>,
    /// The `ClusterLoadAssignment` name to ask EDS for (`Some` only for EDS clusters; Envoy
    /// defaults it to the cluster name).
    pub eds_service_name: Option<Arc<str>>,
    /// Which address families a DNS lookup returns (STRICT_DNS / LOGICAL_DNS).
    pub dns_lookup_family: DnsLookupFamily,
    /// How often DNS names are re-resolved; Envoy's default is 5 s.
    pub dns_refresh_rate: Duration,
    /// Re-resolve when the DNS record's TTL runs out instead of on `dns_refresh_rate`.
    pub respect_dns_ttl: bool,
    /// The transport socket of endpoints no entry of `transport_socket_matches` matches.
    pub transport_socket: TransportSocket<UpstreamTls>,
    /// Per-endpoint transport sockets, first match wins.
    pub transport_socket_matches: Vec<TransportSocketMatch>,
    /// How HTTP requests routed here travel upstream (`envoy.extensions.upstreams.http.v3.
    /// HttpProtocolOptions`); unused by TCP proxying.
    pub http: HttpUpstreamOptions,
    pub circuit_breakers: CircuitBreakers,
    pub common_lb: CommonLb,
    /// Passive health checking; `None`: endpoints are never ejected.
    pub outlier_detection: Option<super::OutlierDetection>,
    /// The ALPN of Istio's upstream metadata exchange filter, when the cluster has one. As
    /// with the listener filter, vm-proxy never negotiates it, so connections carry only
    /// the application's bytes (Envoy's behaviour on any other ALPN).
    pub metadata_exchange: Option<Arc<str>>,
}

/// A cluster's HTTP protocol options.
#[derive(Debug, Clone, Default)]
pub struct HttpUpstreamOptions {
    pub protocol: UpstreamHttpProtocol,
    /// Close an upstream connection with no active request for this long; Envoy: 1 h.
    pub idle_timeout: Option<Duration>,
    /// Requests per upstream connection before it is retired; `None`: no limit.
    pub max_requests_per_connection: Option<u32>,
    pub http2: super::Http2Options,
}

/// Which HTTP version requests use upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamHttpProtocol {
    /// Envoy's default without protocol options.
    #[default]
    Http1,
    Http2,
    /// The downstream request's version (istiod's `use_downstream_protocol_config`).
    UseDownstream,
}

impl Cluster {
    /// The transport socket a connection to `endpoint` uses, as Envoy picks it: the first
    /// of `transport_socket_matches` whose criteria the endpoint's metadata holds, else
    /// `transport_socket`.
    pub fn transport_socket_for(
        &self,
        endpoint: Option<&Endpoint>,
    ) -> &TransportSocket<UpstreamTls> {
        let metadata = endpoint.map(|e| &e.transport_socket_metadata);
        self.transport_socket_matches
            .iter()
            .find(|m| {
                m.criteria.iter().all(|(k, v)| {
                    metadata
                        .and_then(|md| md.get(k))
                        .is_some_and(|have| have == v)
                })
            })
            .map_or(&self.transport_socket, |m| &m.transport_socket)
    }
}

/// Envoy's `Cluster.DnsLookupFamily`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DnsLookupFamily {
    /// IPv6 if the name has AAAA records, else IPv4.
    #[default]
    Auto,
    V4Only,
    V6Only,
    /// IPv4 if the name has A records, else IPv6.
    V4Preferred,
    /// Both families.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryType {
    Static,
    StrictDns,
    LogicalDns,
    Eds,
    /// Connect to the downstream connection's original destination.
    OriginalDst,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
    Maglev,
    ClusterProvided,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: EndpointAddress,
    pub load_balancing_weight: u32,
    /// As the control plane reported it. Envoy balances over healthy (and unknown) endpoints
    /// and uses the others only in panic mode.
    pub health_status: HealthStatus,
    /// The string entries of the endpoint's `envoy.transport_socket_match` filter metadata
    /// (Istio: `tlsMode: istio`), which pick its transport socket.
    pub transport_socket_metadata: BTreeMap<Arc<str>, Arc<str>>,
    pub locality: EndpointLocality,
}

/// Envoy's `core.v3.HealthStatus` of an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HealthStatus {
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
    Draining,
    Timeout,
    Degraded,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    Socket(SocketAddr),
    /// A DNS name to resolve (STRICT_DNS / LOGICAL_DNS clusters).
    Dns {
        host: Arc<str>,
        port: u16,
    },
}
