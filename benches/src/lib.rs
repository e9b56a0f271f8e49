//! Shared pieces of vm-proxy's benchmarks: Istio-shaped xDS resources of any size, and the
//! process's memory as the kernel counts it.

use std::net::{Ipv4Addr, SocketAddr};

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, TrafficDirection,
    address, config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration};
use envoy_types::util::pack_any;

/// The port every generated service and endpoint uses.
pub const SERVICE_PORT: u16 = 8080;

/// One Istio-like outbound service: what istiod sends a sidecar for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `outbound|8080||svc7.ns7.svc.cluster.local`: the EDS cluster and its load assignment.
    pub cluster: String,
    /// Its virtual IP; the listener is `<vip>_8080`, as istiod names per-VIP TCP listeners.
    pub vip: Ipv4Addr,
}

impl Service {
    /// The `index`th service (namespaces cycle through ten).
    pub fn nth(index: u32) -> Service {
        let host = format!("svc{index}.ns{}.svc.cluster.local", index % 10);
        Service {
            cluster: format!("outbound|{SERVICE_PORT}||{host}"),
            vip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + index),
        }
    }

    pub fn listener_name(&self) -> String {
        format!("{}_{SERVICE_PORT}", self.vip)
    }

    /// The address of the `endpoint`th pod of the `index`th service, in `generation` of it
    /// (a new generation moves every pod, as a rollout does).
    pub fn endpoint(index: u32, endpoint: u32, generation: u32) -> SocketAddr {
        let base = u32::from(Ipv4Addr::new(10, 64, 0, 0));
        let ip = base + (generation << 20) + index * 16 + endpoint + 1;
        SocketAddr::from((Ipv4Addr::from(ip), SERVICE_PORT))
    }

    /// An EDS cluster over ADS, with istiod's connect timeout and balancing.
    pub fn cluster(&self) -> Any {
        pack_any(Cluster {
            name: self.cluster.clone(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            connect_timeout: Some(Duration {
                seconds: 10,
                nanos: 0,
            }),
            lb_policy: LbPolicy::LeastRequest as i32,
            eds_cluster_config: Some(EdsClusterConfig {
                service_name: self.cluster.clone(),
                eds_config: Some(ConfigSource {
                    resource_api_version: ApiVersion::V3 as i32,
                    config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                        AggregatedConfigSource {},
                    )),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        })
    }

    /// The load assignment of this service with `endpoints`.
    pub fn assignment(&self, endpoints: &[SocketAddr]) -> Any {
        let lb_endpoints = endpoints
            .iter()
            .map(|a| LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                    address: Some(socket(*a)),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .collect();
        pack_any(ClusterLoadAssignment {
            cluster_name: self.cluster.clone(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    /// istiod's per-VIP TCP listener: not bound, reached through `virtualOutbound`, one chain
    /// tcp-proxying to the service's cluster.
    pub fn listener(&self) -> Any {
        let tcp_proxy = TcpProxy {
            stat_prefix: self.cluster.clone(),
            cluster_specifier: Some(ClusterSpecifier::Cluster(self.cluster.clone())),
            ..Default::default()
        };
        pack_any(Listener {
            name: self.listener_name(),
            address: Some(socket(SocketAddr::from((self.vip, SERVICE_PORT)))),
            bind_to_port: Some(BoolValue { value: false }),
            traffic_direction: TrafficDirection::Outbound as i32,
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.tcp_proxy".to_string(),
                    config_type: Some(filter::ConfigType::TypedConfig(pack_any(tcp_proxy))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
    }
}

fn socket(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(addr.port()))),
            ..Default::default()
        })),
    }
}

/// A mesh of `services` services with `endpoints` pods each: every resource a sidecar gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Mesh {
    pub services: Vec<Service>,
    pub clusters: Vec<Any>,
    pub assignments: Vec<Any>,
    pub listeners: Vec<Any>,
}

impl Mesh {
    pub fn new(services: u32, endpoints: u32) -> Mesh {
        let services: Vec<Service> = (0..services).map(Service::nth).collect();
        let assignments = services
            .iter()
            .zip(0..)
            .map(|(s, i)| {
                let pods: Vec<SocketAddr> =
                    (0..endpoints).map(|e| Service::endpoint(i, e, 0)).collect();
                s.assignment(&pods)
            })
            .collect();
        Mesh {
            clusters: services.iter().map(Service::cluster).collect(),
            listeners: services.iter().map(Service::listener).collect(),
            assignments,
            services,
        }
    }

    /// Every resource, clusters first.
    pub fn resources(&self) -> impl Iterator<Item = Any> + '_ {
        self.clusters
            .iter()
            .chain(&self.assignments)
            .chain(&self.listeners)
            .cloned()
    }
}

/// The process's resident memory (`VmRSS`) and its peak (`VmHWM`), in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

impl Memory {
    /// Reads `/proc/self/status`.
    pub fn now() -> std::io::Result<Memory> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let field = |name: &str| -> std::io::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("/proc/self/status has no readable {name}"),
                    )
                })
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use prost::Message;

    use super::*;

    #[test]
    fn a_mesh_has_distinct_listeners_clusters_and_pods() {
        let mesh = Mesh::new(300, 10);
        assert_eq!(mesh.resources().count(), 900);
        let listeners: HashSet<String> = mesh
            .listeners
            .iter()
            .map(|a| Listener::decode(a.value.as_slice()).unwrap().name)
            .collect();
        assert_eq!(listeners.len(), 300);
        assert!(listeners.contains("10.96.0.1_8080"));
        let clusters: HashSet<&str> = mesh.services.iter().map(|s| s.cluster.as_str()).collect();
        assert_eq!(clusters.len(), 300);
        assert!(clusters.contains("outbound|8080||svc7.ns7.svc.cluster.local"));
        let mut pods = HashSet::new();
        for any in &mesh.assignments {
            let cla = ClusterLoadAssignment::decode(any.value.as_slice()).unwrap();
            assert_eq!(cla.endpoints[0].lb_endpoints.len(), 10);
            pods.extend(
                cla.endpoints[0]
                    .lb_endpoints
                    .iter()
                    .map(Message::encode_to_vec),
            );
        }
        assert_eq!(pods.len(), 3000);
        // A new generation moves every pod of a service.
        assert_ne!(Service::endpoint(5, 0, 0), Service::endpoint(5, 0, 1));
    }

    #[test]
    fn memory_is_read_from_the_kernel() {
        let m = Memory::now().unwrap();
        assert!(m.rss_kib > 0 && m.peak_kib >= m.rss_kib, "{m:?}");
    }
}
