//! Choosing the endpoint of a cluster for one connection, and the cluster's circuit breakers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use xds_client::model::{
    Cluster, DiscoveryType, Endpoint, EndpointAddress, HealthStatus, LbPolicy,
};

use crate::original_dst::Destination;
use crate::outlier::{Detector, Outcome, Registry};

/// A cluster with the load balancer's state for one snapshot.
#[derive(Debug)]
pub(crate) struct ClusterState {
    pub cluster: Arc<Cluster>,
    /// What the circuit breakers count; kept across snapshots while the cluster exists.
    pub resources: Arc<Resources>,
    /// Every endpoint balanced over (see [`usable`]).
    all: HostSet,
    /// The same endpoints grouped by locality, with each locality's effective weight, when
    /// the cluster balances by locality weight first; empty otherwise.
    localities: Box<[HostSet]>,
    locality_cumulative: Box<[u64]>,
    /// Open connections per endpoint (indexed like `cluster.endpoints`), for least-request.
    active: Box<[AtomicUsize]>,
    /// The cluster's outlier detection, when configured.
    outlier: Option<Detector>,
}

/// Some endpoints of a cluster with their weights and round-robin position.
#[derive(Debug)]
struct HostSet {
    /// Indices into the cluster's `endpoints`.
    hosts: Box<[usize]>,
    /// Cumulative endpoint weights, for weighted choices.
    cumulative: Box<[u64]>,
    equal_weights: bool,
    next: AtomicUsize,
}

/// The counts behind a cluster's circuit breakers (Envoy's resource manager).
#[derive(Debug, Default)]
pub(crate) struct Resources {
    connections: AtomicU64,
    /// Connections refused because `max_connections` was reached (Envoy's
    /// `upstream_cx_overflow`).
    overflow: AtomicU64,
    /// The endpoints' outlier-detection records, which outlive a snapshot as the counts do.
    outlier: Arc<Registry>,
}

impl Resources {
    /// Counts one more upstream connection unless `max` are already open; a refusal is
    /// counted as an overflow.
    pub fn open_connection(self: &Arc<Self>, max: u32) -> Option<ConnectionSlot> {
        let before = self.connections.fetch_add(1, Ordering::AcqRel);
        if before >= u64::from(max) {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnectionSlot(self.clone()))
    }

    #[cfg(test)]
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }
}

/// One upstream connection counted against its cluster until dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot(Arc<Resources>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
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
    Endpoints(Arc<str>),
    #[error("cluster {0} has no healthy endpoint (panic mode is disabled)")]
    Healthy(Arc<str>),
    #[error(
        "ORIGINAL_DST cluster {0}: the connection has no original destination (it was not redirected to this proxy)"
    )]
    OriginalDestination(Arc<str>),
}

impl ClusterState {
    /// The state of `cluster`, counting its circuit breakers in `resources` (those of the
    /// previous snapshot's cluster of the same name, so that a config push does not reset
    /// the limits of connections still open).
    pub fn new(cluster: Arc<Cluster>, resources: Arc<Resources>) -> ClusterState {
        let hosts = usable(&cluster);
        let all = HostSet::new(&cluster.endpoints, hosts.clone());
        let (localities, locality_cumulative) = if cluster.common_lb.locality_weighted {
            by_locality(&cluster.endpoints, &hosts)
        } else {
            (Box::default(), Box::default())
        };
        let outlier = cluster.outlier_detection.map(|config| {
            Detector::new(
                config,
                cluster.name.clone(),
                resources.outlier.clone(),
                cluster.endpoints.iter().map(|e| e.address.clone()),
            )
        });
        ClusterState {
            outlier,
            active: cluster
                .endpoints
                .iter()
                .map(|_| AtomicUsize::new(0))
                .collect(),
            all,
            localities,
            locality_cumulative,
            resources,
            cluster,
        }
    }

    /// The endpoint for a connection whose destination is `destination`.
    pub fn pick(self: &Arc<Self>, destination: Destination) -> Result<Pick, NoHost> {
        if self.cluster.discovery == DiscoveryType::OriginalDst {
            if !destination.restored {
                return Err(NoHost::OriginalDestination(self.cluster.name.clone()));
            }
            return Ok(Pick {
                target: Target::Socket(destination.addr),
                endpoint: None,
                _active: None,
            });
        }
        if self.cluster.endpoints.is_empty() {
            return Err(NoHost::Endpoints(self.cluster.name.clone()));
        }
        if self.all.hosts.is_empty() {
            return Err(NoHost::Healthy(self.cluster.name.clone()));
        }
        let set = self.host_set();
        let index = match self.cluster.lb_policy {
            LbPolicy::RoundRobin => set.round_robin(),
            LbPolicy::LeastRequest => self.least_request(set),
            // Without a hash policy (tcp_proxy has none in our model) Envoy's hashing balancers
            // hash a random value: a weighted random choice.
            LbPolicy::Random | LbPolicy::RingHash | LbPolicy::Maglev => set.weighted_random(),
            // Rejected by validation for every discovery type but ORIGINAL_DST.
            LbPolicy::ClusterProvided => set.round_robin(),
        };
        let endpoint = self.skip_ejected(set, index);
        let target = match &self.cluster.endpoints[endpoint].address {
            EndpointAddress::Socket(a) => Target::Socket(*a),
            EndpointAddress::Dns { host, port } => Target::Dns {
                host: host.clone(),
                port: *port,
            },
        };
        self.active[endpoint].fetch_add(1, Ordering::Relaxed);
        Ok(Pick {
            target,
            endpoint: Some(endpoint),
            _active: Some(ActiveGuard {
                cluster: self.clone(),
                endpoint,
            }),
        })
    }

    /// The endpoint at `set.hosts[index]`, or, when outlier detection ejected it, the next
    /// one of `set` that is not ejected. When so many are ejected that fewer than
    /// `healthy_panic_threshold` percent remain, Envoy's panic mode balances over all of
    /// them, ejected or not, and so does this.
    fn skip_ejected(&self, set: &HostSet, index: usize) -> usize {
        let chosen = set.hosts[index];
        let Some(detector) = self.outlier.as_ref().filter(|d| d.any_ejected()) else {
            return chosen;
        };
        let ejected: Vec<bool> = set.hosts.iter().map(|&h| detector.is_ejected(h)).collect();
        if !ejected[index] {
            return chosen;
        }
        let left = ejected.iter().filter(|e| !**e).count();
        let available = 100.0 * left as f64 / set.hosts.len().max(1) as f64;
        if available < self.cluster.common_lb.healthy_panic_threshold || left == 0 {
            return chosen;
        }
        (1..set.hosts.len())
            .map(|k| (index + k) % set.hosts.len())
            .find(|&j| !ejected[j])
            .map_or(chosen, |j| set.hosts[j])
    }

    /// The endpoints this pick chooses from: a locality drawn by effective weight when the
    /// cluster balances by locality and some locality has weight, else all usable ones
    /// (Envoy falls back the same way when no locality can be chosen).
    fn host_set(&self) -> &HostSet {
        let total = self.locality_cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return &self.all;
        }
        let point = crate::random::below(total);
        let i = self.locality_cumulative.partition_point(|&c| c <= point);
        self.localities.get(i).unwrap_or(&self.all)
    }

    /// Two weighted-random candidates, the one with fewer open connections per unit of
    /// weight wins (Envoy's power of two choices).
    fn least_request(&self, set: &HostSet) -> usize {
        let a = set.weighted_random();
        let b = set.weighted_random();
        let load = |i: usize| {
            let active = self.active[set.hosts[i]].load(Ordering::Relaxed) as u64;
            (active, set.weight(i))
        };
        let ((la, wa), (lb, wb)) = (load(a), load(b));
        if lb * wa < la * wb { b } else { a }
    }
}

impl HostSet {
    fn new(endpoints: &[Endpoint], hosts: Box<[usize]>) -> HostSet {
        let weights: Vec<u64> = hosts
            .iter()
            // Envoy's default weight is 1; a weight of 0 is not valid there.
            .map(|&i| u64::from(endpoints[i].load_balancing_weight.max(1)))
            .collect();
        let equal_weights = weights.windows(2).all(|w| w[0] == w[1]);
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, w| {
                *sum += w;
                Some(*sum)
            })
            .collect();
        HostSet {
            hosts,
            cumulative,
            equal_weights,
            next: AtomicUsize::new(0),
        }
    }

    /// Weighted round robin: each endpoint gets a run of turns as long as its weight.
    fn round_robin(&self) -> usize {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        if self.equal_weights {
            return (turn % self.cumulative.len() as u64) as usize;
        }
        self.by_weight(turn % self.total_weight())
    }

    fn weighted_random(&self) -> usize {
        self.by_weight(crate::random::below(self.total_weight()))
    }

    fn weight(&self, i: usize) -> u64 {
        self.cumulative[i] - if i == 0 { 0 } else { self.cumulative[i - 1] }
    }

    fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(1)
    }

    /// The endpoint whose weight range contains `point` (in `0..total_weight`).
    fn by_weight(&self, point: u64) -> usize {
        self.cumulative.partition_point(|&c| c <= point)
    }
}

/// Health states Envoy balances over outside panic mode (unknown counts as healthy, as for
/// endpoints without health checking).
fn healthy(h: HealthStatus) -> bool {
    matches!(h, HealthStatus::Healthy | HealthStatus::Unknown)
}

/// The endpoints a cluster balances over, as Envoy decides with one priority: in panic mode
/// — when healthy and degraded endpoints together are fewer than `healthy_panic_threshold`
/// percent of all — every endpoint, so that a wrong health view cannot black-hole the
/// cluster (a threshold of 0 disables this); else the healthy ones when they carry the whole
/// load (their share times the overprovisioning factor reaches 100%), else healthy and
/// degraded together.
fn usable(cluster: &Cluster) -> Box<[usize]> {
    let endpoints = &cluster.endpoints;
    let total = endpoints.len() as f64;
    let select = |keep: &dyn Fn(HealthStatus) -> bool| -> Vec<usize> {
        (0..endpoints.len())
            .filter(|&i| keep(endpoints[i].health_status))
            .collect()
    };
    let healthy_hosts = select(&healthy);
    let with_degraded = select(&|h| healthy(h) || h == HealthStatus::Degraded);
    let available = 100.0 * with_degraded.len() as f64 / total.max(1.0);
    if available < cluster.common_lb.healthy_panic_threshold {
        return (0..endpoints.len()).collect();
    }
    let overprovisioning = endpoints
        .first()
        .map_or(100, |e| e.locality.overprovisioning);
    let healthy_load = healthy_hosts.len() as f64 * f64::from(overprovisioning) / total.max(1.0);
    if healthy_load >= 100.0 {
        healthy_hosts.into()
    } else {
        with_degraded.into()
    }
}

/// `hosts` grouped by their endpoint's locality, with cumulative effective locality weights:
/// the locality's weight scaled by the share of its endpoints in `hosts` times the
/// overprovisioning factor, capped at the full weight (Envoy's locality-weighted balancing).
/// A locality without a weight gets no traffic.
fn by_locality(endpoints: &[Endpoint], hosts: &[usize]) -> (Box<[HostSet]>, Box<[u64]>) {
    let mut order: Vec<u32> = endpoints.iter().map(|e| e.locality.index).collect();
    order.sort_unstable();
    order.dedup();
    let mut sets = Vec::with_capacity(order.len());
    let mut cumulative = Vec::with_capacity(order.len());
    let mut sum = 0u64;
    for index in order {
        let members: Vec<usize> = hosts
            .iter()
            .copied()
            .filter(|&i| endpoints[i].locality.index == index)
            .collect();
        let Some(first) = endpoints.iter().find(|e| e.locality.index == index) else {
            continue;
        };
        if members.is_empty() {
            continue;
        }
        let in_locality = endpoints
            .iter()
            .filter(|e| e.locality.index == index)
            .count() as u64;
        let weight = u64::from(first.locality.weight.unwrap_or(0));
        let available = (u64::from(first.locality.overprovisioning) * members.len() as u64)
            .min(100 * in_locality);
        // Scaled by 100 * in_locality on both sides of the ratio; 1000 keeps precision.
        sum += weight * 1000 * available / (100 * in_locality);
        cumulative.push(sum);
        sets.push(HostSet::new(endpoints, members.into()));
    }
    (sets.into(), cumulative.into())
}

impl Pick {
    /// Tells the cluster's outlier detection (if any) how the connection or request to the
    /// picked endpoint went.
    pub fn report(&self, outcome: Outcome) {
        if let Some(guard) = &self._active
            && let Some(detector) = &guard.cluster.outlier
        {
            detector.report(guard.endpoint, outcome);
        }
    }
}

/// Counts a connection against its endpoint until dropped.
#[derive(Debug)]
struct ActiveGuard {
    cluster: Arc<ClusterState>,
    endpoint: usize,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.cluster.active[self.endpoint].fetch_sub(1, Ordering::Relaxed);
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
                locality: Default::default(),
            })
            .collect();
        state(Cluster {
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
            circuit_breakers: Default::default(),
            common_lb: Default::default(),
            outlier_detection: None,
            metadata_exchange: None,
            endpoints,
        })
    }

    fn state(c: Cluster) -> Arc<ClusterState> {
        Arc::new(ClusterState::new(Arc::new(c), Arc::default()))
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
        // Both endpoints of one locality: the choice works the same inside a locality.
        let mut spec = (*c.cluster).clone();
        spec.common_lb.locality_weighted = true;
        for e in &mut spec.endpoints {
            e.locality.weight = Some(2);
        }
        let c = state(spec);
        let held: Vec<Pick> = (0..200)
            .map(|_| c.pick(any_destination()).unwrap())
            .collect();
        let on_first = held.iter().filter(|p| port(p) == 1000).count();
        assert!((60..=140).contains(&on_first), "{on_first} of 200");
    }

    #[test]
    fn no_endpoints_is_no_host() {
        let c = cluster(LbPolicy::RoundRobin, &[]);
        assert_eq!(
            c.pick(any_destination()).unwrap_err(),
            NoHost::Endpoints("c".into())
        );
    }

    #[test]
    fn original_dst_needs_a_restored_destination() {
        let mut spec = (*cluster(LbPolicy::ClusterProvided, &[]).cluster).clone();
        spec.discovery = DiscoveryType::OriginalDst;
        let c = state(spec);
        assert!(matches!(
            c.pick(any_destination()),
            Err(NoHost::OriginalDestination(_))
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
            state(c)
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

    #[test]
    fn a_panic_threshold_of_zero_never_balances_over_unhealthy_endpoints() {
        use HealthStatus::*;
        let mut spec = (*cluster(LbPolicy::RoundRobin, &[1, 1, 1]).cluster).clone();
        for (e, h) in spec
            .endpoints
            .iter_mut()
            .zip([Unhealthy, Draining, Healthy])
        {
            e.health_status = h;
        }
        spec.common_lb.healthy_panic_threshold = 0.0;
        let c = state(spec.clone());
        for _ in 0..6 {
            assert_eq!(port(&c.pick(any_destination()).unwrap()), 1002);
        }
        spec.endpoints[2].health_status = Unhealthy;
        let c = state(spec.clone());
        assert_eq!(
            c.pick(any_destination()).unwrap_err(),
            NoHost::Healthy("c".into())
        );
        // A higher threshold enters panic mode earlier: 1 of 3 healthy is below 40%.
        spec.endpoints[2].health_status = Healthy;
        spec.common_lb.healthy_panic_threshold = 40.0;
        let c = state(spec);
        let mut seen: Vec<u16> = (0..9)
            .map(|_| port(&c.pick(any_destination()).unwrap()))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, [1000, 1001, 1002]);
    }

    #[test]
    fn locality_weights_split_traffic_and_unweighted_localities_get_none() {
        let mut spec = (*cluster(LbPolicy::RoundRobin, &[1, 1, 1, 1]).cluster).clone();
        spec.common_lb.locality_weighted = true;
        // Localities: {1000} weight 1, {1001, 1002} weight 3, {1003} no weight.
        let placement = [(0, Some(1)), (1, Some(3)), (1, Some(3)), (2, None)];
        for (e, (index, weight)) in spec.endpoints.iter_mut().zip(placement) {
            e.locality.index = index;
            e.locality.weight = weight;
        }
        let c = state(spec.clone());
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[(port(&c.pick(any_destination()).unwrap()) - 1000) as usize] += 1;
        }
        // Expected 1000 / 1500 / 1500 / 0; standard deviation about 27.
        assert!((850..=1150).contains(&counts[0]), "{counts:?}");
        assert!((1300..=1700).contains(&counts[1]), "{counts:?}");
        assert!((1300..=1700).contains(&counts[2]), "{counts:?}");
        assert_eq!(counts[3], 0, "{counts:?}");

        // Half of the weight-3 locality unhealthy: 50% x 1.4 keeps 70% of its weight (2.1).
        spec.endpoints[1].health_status = HealthStatus::Unhealthy;
        let c = state(spec.clone());
        let mut counts = [0u32; 4];
        for _ in 0..3100 {
            counts[(port(&c.pick(any_destination()).unwrap()) - 1000) as usize] += 1;
        }
        // Expected 1000 / 0 / 2100 / 0.
        assert!((850..=1150).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[1], 0, "{counts:?}");
        assert_eq!(counts[3], 0, "{counts:?}");

        // Without locality weighting the weights are not looked at.
        spec.common_lb.locality_weighted = false;
        spec.endpoints[1].health_status = HealthStatus::Healthy;
        let c = state(spec);
        let ports: Vec<u16> = (0..4)
            .map(|_| port(&c.pick(any_destination()).unwrap()))
            .collect();
        assert_eq!(ports, [1000, 1001, 1002, 1003]);
    }

    #[test]
    fn max_connections_refuses_and_counts_the_overflow() {
        let r: Arc<Resources> = Arc::default();
        let a = r.open_connection(2).unwrap();
        let b = r.open_connection(2).unwrap();
        assert!(r.open_connection(2).is_none());
        assert_eq!((r.connections(), r.overflow()), (2, 1));
        drop(a);
        let c = r.open_connection(2).unwrap();
        assert_eq!((r.connections(), r.overflow()), (2, 1));
        drop((b, c));
        assert_eq!(r.connections(), 0);
        assert!(r.open_connection(0).is_none());
        assert_eq!(r.overflow(), 2);
    }
}
