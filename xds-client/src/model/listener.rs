use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::{DownstreamTls, TransportSocket};

/// A listener: where to accept, how to inspect, and which filter chain handles a connection.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: Arc<str>,
    pub address: SocketAddr,
    /// `false` for Istio's per-service listeners, which only receive connections handed over by
    /// the virtual 15001/15006 listeners.
    pub bind_to_port: bool,
    /// Hand a connection to the listener that matches its original destination
    /// (Envoy's `use_original_dst`), falling back to this listener's own chains.
    pub use_original_dst: bool,
    /// `IP_TRANSPARENT` on the socket (TPROXY inbound).
    pub transparent: bool,
    pub listener_filters: Vec<ListenerFilter>,
    /// Per entry of `listener_filters`, when the filter is skipped (`filter_disabled`);
    /// missing entries (an empty list) skip nothing.
    pub listener_filters_disabled: Vec<Option<FilterPredicate>>,
    /// How long the listener filters may wait for the bytes they inspect; `None` waits without
    /// limit. Envoy's default is 15 s.
    pub listener_filters_timeout: Option<Duration>,
    /// On that timeout, carry on to filter chain matching with what was learned, instead of
    /// closing the connection.
    pub continue_on_listener_filters_timeout: bool,
    pub filter_chains: Vec<FilterChain>,
    pub default_filter_chain: Option<FilterChain>,
    /// Envoy's `traffic_direction`: which reporter Istio's metrics speak as.
    pub traffic_direction: TrafficDirection,
}

/// Envoy's `core.v3.TrafficDirection` of a listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrafficDirection {
    #[default]
    Unspecified,
    Inbound,
    Outbound,
}

impl Listener {
    /// The condition under which the `index`th listener filter is skipped, if any.
    pub fn filter_disabled(&self, index: usize) -> Option<&FilterPredicate> {
        self.listener_filters_disabled
            .get(index)
            .and_then(Option::as_ref)
    }
}

/// Envoy's `ListenerFilterChainMatchPredicate`, judged on a connection before its listener
/// filters run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterPredicate {
    Or(Vec<FilterPredicate>),
    And(Vec<FilterPredicate>),
    Not(Box<FilterPredicate>),
    Any,
    /// The (restored) destination port is in `start..end`.
    DestinationPortRange {
        start: i32,
        end: i32,
    },
}

impl FilterPredicate {
    pub fn matches(&self, destination_port: u16) -> bool {
        match self {
            FilterPredicate::Or(rules) => rules.iter().any(|r| r.matches(destination_port)),
            FilterPredicate::And(rules) => rules.iter().all(|r| r.matches(destination_port)),
            FilterPredicate::Not(rule) => !rule.matches(destination_port),
            FilterPredicate::Any => true,
            FilterPredicate::DestinationPortRange { start, end } => {
                (*start..*end).contains(&i32::from(destination_port))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerFilter {
    /// Restore the pre-redirect destination (`SO_ORIGINAL_DST`, or the local address under TPROXY).
    OriginalDst,
    /// Peek a TLS ClientHello for SNI and ALPN.
    TlsInspector,
    /// Peek a plaintext HTTP/1.x request line or HTTP/2 preface.
    HttpInspector,
}

#[derive(Debug, Clone)]
pub struct FilterChain {
    pub name: Arc<str>,
    pub filter_chain_match: FilterChainMatch,
    pub filters: Vec<NetworkFilter>,
    pub transport_socket: TransportSocket<DownstreamTls>,
    /// How long the transport socket's handshake may take; `None` waits without limit.
    pub transport_socket_connect_timeout: Option<Duration>,
}

/// Envoy's `FilterChainMatch`; empty fields match anything.
#[derive(Debug, Clone, Default)]
pub struct FilterChainMatch {
    pub destination_port: Option<u16>,
    pub prefix_ranges: Vec<IpNet>,
    pub server_names: Vec<Arc<str>>,
    pub transport_protocol: Option<Arc<str>>,
    pub application_protocols: Vec<Arc<str>>,
    pub source_type: SourceType,
    pub source_prefix_ranges: Vec<IpNet>,
    pub source_ports: Vec<u16>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SourceType {
    #[default]
    Any,
    SameIpOrLoopback,
    External,
}

#[derive(Debug, Clone)]
pub enum NetworkFilter {
    TcpProxy(TcpProxy),
    HttpConnectionManager(Arc<super::HttpConnectionManager>),
    /// `envoy.filters.network.rbac`: runs before the terminal filter.
    Rbac(Arc<super::NetworkRbac>),
    /// Istio's `istio.metadata_exchange`: the ALPN protocol on which the peer's workload
    /// metadata would be exchanged in-band. vm-proxy never negotiates it (see
    /// `proxy/src/tls.rs`), so, as Envoy does on any other ALPN, the filter passes bytes on
    /// untouched.
    MetadataExchange(Arc<str>),
    /// Istio's `istio.stats`: the standard TCP metrics of the connection.
    IstioStats(Arc<super::StatsConfig>),
}

#[derive(Debug, Clone)]
pub struct TcpProxy {
    pub stat_prefix: Arc<str>,
    pub cluster: ClusterSpecifier,
    /// Close a connection with no traffic either way for this long; `None` disables it.
    /// Envoy's default is one hour.
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub enum ClusterSpecifier {
    Cluster(Arc<str>),
    Weighted(Vec<WeightedCluster>),
}

#[derive(Debug, Clone)]
pub struct WeightedCluster {
    pub name: Arc<str>,
    pub weight: u32,
}
