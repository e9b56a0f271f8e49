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
