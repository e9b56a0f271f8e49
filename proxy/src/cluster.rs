//! Choosing the endpoint of a cluster for one connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use xds_client::model::{
    Cluster, DiscoveryType, Endpoint, EndpointAddress, HealthStatus, LbPolicy,
};

use crate::original_dst::Destination;

/// A cluster with the load balancer's state for one snapshot.
#[derive(Debug)]
pub(crate) struct ClusterState {
    pub cluster: Arc<Cluster>,
    /// Indices into `cluster.endpoints` of the endpoints balanced over (see [`hosts`]); the
    /// per-endpoint state below is indexed like this list.
    hosts: Box<[usize]>,
    next: AtomicUsize,
    /// Open connections per endpoint, for least-request.
    active: Box<[AtomicUsize]>,
    /// Cumulative endpoint weights, for weighted choices.
    cumulative: Box<[u64]>,
    equal_weights: bool,
}

/// Where a connection goes, and the endpoint's connection count while it lasts.
#[derive(Debug)]
pub(crate) struct Pick {
    pub target: Target,
    /// The index in the cluster's `endpoints` (none for ORIGINAL_DST).
    pub endpoint: Option<usize>,
    _active: Option<ActiveGuard>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Socket(SocketAddr),
    Dns { host: Arc<str>, port: u16 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum NoHost {
    #[error("cluster {0} has no endpoints")]
    NoEndpoints(Arc<str>),
    #[error(
        "ORIGINAL_DST cluster {0}: the connection has no original destination (it was not redirected to this proxy)"
    )]
    NoOriginalDestination(Arc<str>),
}

impl ClusterState {
    pub fn new(cluster: Arc<Cluster>) -> ClusterState {
        let hosts = hosts(&cluster.endpoints);
        let weights: Vec<u64> = hosts
            .iter()
            // Envoy's default weight is 1; a weight of 0 is not valid there.
            .map(|&i| u64::from(cluster.endpoints[i].load_balancing_weight.max(1)))
            .collect();
        let equal_weights = weights.windows(2).all(|w| w[0] == w[1]);
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, w| {
                *sum += w;
                Some(*sum)
            })
            .collect();
        ClusterState {
            active: hosts.iter().map(|_| AtomicUsize::new(0)).collect(),
            hosts,
            cluster,
            next: AtomicUsize::new(0),
            cumulative,
            equal_weights,
        }
    }

    /// The endpoint for a connection whose destination is `destination`.
    pub fn pick(self: &Arc<Self>, destination: Destination) -> Result<Pick, NoHost> {
        if self.cluster.discovery == DiscoveryType::OriginalDst {
            if !destination.restored {
                return Err(NoHost::NoOriginalDestination(self.cluster.name.clone()));
            }
            return Ok(Pick {
                target: Target::Socket(destination.addr),
                endpoint: None,
                _active: None,
            });
        }
        if self.hosts.is_empty() {
            return Err(NoHost::NoEndpoints(self.cluster.name.clone()));
        }
        let index = match self.cluster.lb_policy {
            LbPolicy::RoundRobin => self.round_robin(),
            LbPolicy::LeastRequest => self.least_request(),
            // Without a hash policy (tcp_proxy has none in our model) Envoy's hashing balancers
            // hash a random value: a weighted random choice.
            LbPolicy::Random | LbPolicy::RingHash | LbPolicy::Maglev => self.weighted_random(),
            // Rejected by validation for every discovery type but ORIGINAL_DST.
            LbPolicy::ClusterProvided => self.round_robin(),
        };
        let target = match &self.cluster.endpoints[self.hosts[index]].address {
            EndpointAddress::Socket(a) => Target::Socket(*a),
            EndpointAddress::Dns { host, port } => Target::Dns {
                host: host.clone(),
                port: *port,
            },
        };
        self.active[index].fetch_add(1, Ordering::Relaxed);
        Ok(Pick {
            target,
            endpoint: Some(self.hosts[index]),
            _active: Some(ActiveGuard {
                cluster: self.clone(),
                index,
            }),
        })
    }

    /// Weighted round robin: each endpoint gets a run of turns as long as its weight.
    fn round_robin(&self) -> usize {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        if self.equal_weights {
            return (turn % self.cumulative.len() as u64) as usize;
        }
        self.by_weight(turn % self.total_weight())
    }

    /// Two weighted-random candidates, the one with fewer open connections per unit of
    /// weight wins (Envoy's power of two choices).
    fn least_request(&self) -> usize {
        let a = self.weighted_random();
        let b = self.weighted_random();
        let load = |i: usize| {
            let weight = self.cumulative[i] - if i == 0 { 0 } else { self.cumulative[i - 1] };
            (self.active[i].load(Ordering::Relaxed) as u64, weight)
        };
        let ((la, wa), (lb, wb)) = (load(a), load(b));
        if lb * wa < la * wb { b } else { a }
    }

    fn weighted_random(&self) -> usize {
        self.by_weight(crate::random::below(self.total_weight()))
    }

    fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(1)
    }

    /// The endpoint whose weight range contains `point` (in `0..total_weight`).
    fn by_weight(&self, point: u64) -> usize {
        self.cumulative.partition_point(|&c| c <= point)
    }
}

/// The endpoints a cluster balances over, as Envoy does with its default panic threshold of
/// 50%: the healthy ones (health unknown counts as healthy, as for endpoints without health
/// checking) when they are at least half; else healthy and degraded together when those are;
/// else every endpoint (panic mode), so that a wrong health view cannot black-hole a cluster.
fn hosts(endpoints: &[Endpoint]) -> Box<[usize]> {
    let usable = |wanted: &[HealthStatus]| -> Vec<usize> {
        (0..endpoints.len())
            .filter(|&i| wanted.contains(&endpoints[i].health_status))
            .collect()
    };
    let enough = |hosts: &[usize]| !hosts.is_empty() && hosts.len() * 2 >= endpoints.len();
    let healthy = usable(&[HealthStatus::Healthy, HealthStatus::Unknown]);
    if enough(&healthy) {
        return healthy.into();
    }
    let with_degraded = usable(&[
        HealthStatus::Healthy,
        HealthStatus::Unknown,
        HealthStatus::Degraded,
    ]);
    if enough(&with_degraded) {
        return with_degraded.into();
    }
    (0..endpoints.len()).collect()
}

/// Counts a connection against its endpoint until dropped.
#[derive(Debug)]
struct ActiveGuard {
    cluster: Arc<ClusterState>,
    index: usize,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.cluster.active[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use xds_client::model::Endpoint;

    use super::*;

    fn cluster(policy: LbPolicy, weights: &[u32]) -> Arc<ClusterState> {
        let endpoints = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Endpoint {
                address: EndpointAddress::Socket(SocketAddr::from((
                    [127, 0, 0, 1],
                    1000 + i as u16,
                ))),
                load_balancing_weight: w,
                health_status: Default::default(),
                transport_socket_metadata: Default::default(),
            })
            .collect();
        Arc::new(ClusterState::new(Arc::new(Cluster {
            name: "c".into(),
            discovery: DiscoveryType::Static,
            connect_timeout: Duration::from_secs(1),
            lb_policy: policy,
            upstream_bind_address: None,
            eds_service_name: None,
            dns_lookup_family: Default::default(),
            dns_refresh_rate: Duration::from_secs(5),
            respect_dns_ttl: false,
            transport_socket: Default::default(),
            transport_socket_matches: Vec::new(),
            http: Default::default(),
            endpoints,
        })))
    }

    fn port(p: &Pick) -> u16 {
        match p.target {
            Target::Socket(a) => a.port(),
            Target::Dns { .. } => unreachable!(),
        }
    }

    fn any_destination() -> Destination {
        Destination::local("127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn round_robin_cycles_by_weight() {
        let c = cluster(LbPolicy::RoundRobin, &[1, 1, 1]);
        let ports: Vec<u16> = (0..6)
            .map(|_| port(&c.pick(any_destination()).unwrap()))
            .collect();
        assert_eq!(ports, [1000, 1001, 1002, 1000, 1001, 1002]);
        let w = cluster(LbPolicy::RoundRobin, &[1, 3]);
        let ports: Vec<u16> = (0..8)
            .map(|_| port(&w.pick(any_destination()).unwrap()))
            .collect();
        assert_eq!(ports, [1000, 1001, 1001, 1001, 1000, 1001, 1001, 1001]);
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let c = cluster(LbPolicy::LeastRequest, &[1, 1]);
        // Hold many connections on whichever endpoints are chosen; the counts stay close
        // because every choice prefers the less loaded of two candidates.
        let held: Vec<Pick> = (0..200)
            .map(|_| c.pick(any_destination()).unwrap())
            .collect();
        let on_first = held.iter().filter(|p| port(p) == 1000).count();
        assert!(
            (60..=140).contains(&on_first),
            "{on_first} of 200 on one endpoint"
        );
        drop(held);
        assert!(c.active.iter().all(|a| a.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn no_endpoints_is_no_host() {
        let c = cluster(LbPolicy::RoundRobin, &[]);
        assert_eq!(
            c.pick(any_destination()).unwrap_err(),
            NoHost::NoEndpoints("c".into())
        );
    }

    #[test]
    fn original_dst_needs_a_restored_destination() {
        let mut spec = (*cluster(LbPolicy::ClusterProvided, &[]).cluster).clone();
        spec.discovery = DiscoveryType::OriginalDst;
        let c = Arc::new(ClusterState::new(Arc::new(spec)));
        assert!(matches!(
            c.pick(any_destination()),
            Err(NoHost::NoOriginalDestination(_))
        ));
        let restored = Destination {
            addr: "10.0.0.7:8080".parse().unwrap(),
            restored: true,
        };
        assert_eq!(
            c.pick(restored).unwrap().target,
            Target::Socket("10.0.0.7:8080".parse().unwrap())
        );
    }

    #[test]
    fn unhealthy_endpoints_get_no_traffic_until_panic_mode() {
        let with_health = |health: &[HealthStatus]| {
            let mut c = (*cluster(LbPolicy::RoundRobin, &vec![1; health.len()]).cluster).clone();
            for (e, h) in c.endpoints.iter_mut().zip(health) {
                e.health_status = *h;
            }
            Arc::new(ClusterState::new(Arc::new(c)))
        };
        let ports = |c: &Arc<ClusterState>| {
            let mut p: Vec<u16> = (0..8)
                .map(|_| port(&c.pick(any_destination()).unwrap()))
                .collect();
            p.sort();
            p.dedup();
            p
        };
        use HealthStatus::*;
        assert_eq!(
            ports(&with_health(&[Healthy, Unhealthy, Unknown])),
            [1000, 1002]
        );
        assert_eq!(
            ports(&with_health(&[Degraded, Unhealthy, Healthy])),
            [1000, 1002]
        );
        // Fewer than half usable: Envoy's panic mode balances over all of them.
        assert_eq!(
            ports(&with_health(&[Unhealthy, Draining, Healthy])),
            [1000, 1001, 1002]
        );
    }
}
