//! A cluster's circuit breakers and load-balancer settings shared by every policy.

/// Envoy's `CircuitBreakers`: limits on what vm-proxy opens towards a cluster at once, per
/// routing priority. vm-proxy's own traffic is always of the default priority (Envoy's
/// tcp_proxy uses it too); `high` is kept for routes that ask for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CircuitBreakers {
    pub default: Thresholds,
    pub high: Thresholds,
}

/// One priority's limits. Envoy's defaults: 1024 connections, pending requests and requests,
/// 3 retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Upstream connections open (or being opened) at once.
    pub max_connections: u32,
    /// Requests waiting for a connection from a pool.
    pub max_pending_requests: u32,
    /// Requests in flight at once.
    pub max_requests: u32,
    /// Retries in flight at once.
    pub max_retries: u32,
    /// Publish the remaining capacity of each limit as a gauge (Istio sets it).
    pub track_remaining: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            track_remaining: false,
        }
    }
}

/// Envoy's `Cluster.CommonLbConfig`, the parts vm-proxy implements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommonLb {
    /// Below this percentage of usable endpoints the cluster balances over all of them
    /// (panic mode); 0 disables panic mode. Envoy's default is 50.
    pub healthy_panic_threshold: f64,
    /// Pick a locality by its EDS `load_balancing_weight` first, then an endpoint in it
    /// (Istio sets this whenever locality load balancing is on, its default).
    pub locality_weighted: bool,
}

impl Default for CommonLb {
    fn default() -> Self {
        CommonLb {
            healthy_panic_threshold: 50.0,
            locality_weighted: false,
        }
    }
}

/// Where an endpoint sits among its cluster's localities (one `LocalityLbEndpoints` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointLocality {
    /// The position of its `LocalityLbEndpoints` in the load assignment; endpoints with the
    /// same index share a locality.
    pub index: u32,
    /// The locality's `load_balancing_weight`; `None` counts as 0 under locality-weighted
    /// balancing, as in Envoy.
    pub weight: Option<u32>,
    /// The load assignment's `overprovisioning_factor` in percent (Envoy's default 140): a
    /// locality keeps its full weight while this much of its share of endpoints is healthy.
    pub overprovisioning: u32,
}

/// Envoy's default `overprovisioning_factor`, in percent.
pub const DEFAULT_OVERPROVISIONING: u32 = 140;

impl Default for EndpointLocality {
    fn default() -> Self {
        EndpointLocality {
            index: 0,
            weight: None,
            overprovisioning: DEFAULT_OVERPROVISIONING,
        }
    }
}
