//! A cluster's passive health checking (Envoy's `OutlierDetection`), as istiod configures it
//! from a DestinationRule's `outlierDetection`.

use std::time::Duration;

/// When an endpoint is ejected from load balancing for misbehaving, and for how long.
/// Consecutive-error detection only: success-rate and failure-percentage detection are
/// accepted only when disabled (istiod always disables success rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Consecutive 5xx responses (or, for TCP and in non-split mode, connect failures and
    /// timeouts) that eject; Envoy: 5.
    pub consecutive_5xx: u32,
    /// Percent chance that reaching `consecutive_5xx` ejects; Envoy: 100.
    pub enforcing_consecutive_5xx: u32,
    /// Consecutive 502/503/504 (and connect failures in non-split mode); Envoy: 5.
    pub consecutive_gateway_failure: u32,
    /// Envoy: 0, i.e. counted but never ejects unless configured.
    pub enforcing_consecutive_gateway_failure: u32,
    /// Count connect failures and timeouts apart from responses (Envoy's split mode).
    pub split_external_local_origin_errors: bool,
    /// With split mode: consecutive local-origin failures that eject; Envoy: 5.
    pub consecutive_local_origin_failure: u32,
    /// Envoy: 100.
    pub enforcing_consecutive_local_origin_failure: u32,
    /// How often ejection multipliers decay; Envoy: 10 s.
    pub interval: Duration,
    /// Ejection time is this times the number of times the endpoint was ejected; Envoy: 30 s.
    pub base_ejection_time: Duration,
    /// Cap on one ejection's length (never below `base_ejection_time`); Envoy: 300 s.
    pub max_ejection_time: Duration,
    /// Most endpoints ejected at once, in percent; Envoy: 10.
    pub max_ejection_percent: u32,
    /// Eject one endpoint even when `max_ejection_percent` would allow none.
    pub always_eject_one_host: bool,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: 5,
            enforcing_consecutive_gateway_failure: 0,
            split_external_local_origin_errors: false,
            consecutive_local_origin_failure: 5,
            enforcing_consecutive_local_origin_failure: 100,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            always_eject_one_host: false,
        }
    }
}
