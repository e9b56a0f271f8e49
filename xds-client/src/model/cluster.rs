use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAddress {
    Socket(SocketAddr),
    /// A DNS name to resolve (STRICT_DNS / LOGICAL_DNS clusters).
    Dns {
        host: Arc<str>,
        port: u16,
    },
}
