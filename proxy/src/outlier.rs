//! Passive health checking (Envoy's outlier detection): endpoints that fail in a row are
//! ejected from load balancing for a while.
//!
//! Each endpoint's record lives as long as the endpoint does in its cluster, across config
//! snapshots, keyed by its address (as Envoy keeps a host's monitor while EDS keeps the
//! host). Results are reported with atomics only; the registry's lock is taken when a
//! snapshot is built, never on a connection's path.
//!
//! Unlike Envoy, which un-ejects and decays ejection multipliers on an `interval` timer,
//! both happen lazily here: an ejection ends when its time is up (checked at the next
//! pick), and an endpoint's multiplier drops by one per `interval` elapsed since its last
//! ejection ended, counted when it is next ejected. What traffic sees is the same.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::info;
use xds_client::model::{EndpointAddress, OutlierDetection};

/// What a connection or request to an endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The upstream connection was established.
    Connected,
    /// The upstream connection (or its TLS handshake) was refused or reset.
    Refused,
    /// The upstream connection was not established within the connect timeout.
    TimedOut,
}

/// One endpoint's failure counts and ejection state.
#[derive(Debug, Default)]
pub(crate) struct HostOutlier {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Milliseconds on [`clock`] until which the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    /// When the last ejection ended (or would have), for the multiplier's decay.
    last_ejection_end: AtomicU64,
    /// Envoy's ejection multiplier: how many times in a row it was ejected.
    ejections: AtomicU32,
}

impl HostOutlier {
    fn ejected_at(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0 && now < until
    }
}

/// The records of a cluster's endpoints, kept across snapshots while the cluster exists.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    hosts: Mutex<HashMap<EndpointAddress, Arc<HostOutlier>>>,
    /// Ejections started and not yet seen to end, so that picks skip all checks when 0.
    active: AtomicUsize,
}

impl Registry {
    /// The records for `endpoints` (in their order), reusing those of endpoints already
    /// known and forgetting endpoints that are gone.
    pub fn hosts_for<'a>(
        &self,
        endpoints: impl Iterator<Item = &'a EndpointAddress>,
    ) -> Box<[Arc<HostOutlier>]> {
        let mut known = match self.hosts.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut kept = HashMap::new();
        let records: Box<[Arc<HostOutlier>]> = endpoints
            .map(|a| {
                let r = known.get(a).cloned().unwrap_or_default();
                kept.insert(a.clone(), r.clone());
                r
            })
            .collect();
        let ejected_gone = known
            .iter()
            .filter(|(a, r)| !kept.contains_key(*a) && r.ejected_until.load(Ordering::Acquire) != 0)
            .count();
        if ejected_gone > 0 {
            let _ = self
                .active
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(ejected_gone))
                });
        }
        *known = kept;
        records
    }
}

/// A cluster's outlier detector for one snapshot: its config and its endpoints' records.
#[derive(Debug)]
pub(crate) struct Detector {
    config: OutlierDetection,
    cluster: Arc<str>,
    registry: Arc<Registry>,
    /// Indexed like the cluster's endpoints.
    hosts: Box<[Arc<HostOutlier>]>,
}

impl Detector {
    pub fn new(
        config: OutlierDetection,
        cluster: Arc<str>,
        registry: Arc<Registry>,
        endpoints: impl Iterator<Item = EndpointAddress>,
    ) -> Detector {
        let addresses: Vec<EndpointAddress> = endpoints.collect();
        let hosts = registry.hosts_for(addresses.iter());
        Detector {
            config,
            cluster,
            registry,
            hosts,
        }
    }

    /// Whether endpoint `i` is ejected now; ends ejections whose time is up.
    pub fn is_ejected(&self, i: usize) -> bool {
        if self.registry.active.load(Ordering::Acquire) == 0 {
            return false;
        }
        let Some(h) = self.hosts.get(i) else {
            return false;
        };
        let now = clock();
        let until = h.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        if now < until {
            return true;
        }
        if h.ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            h.last_ejection_end.store(until, Ordering::Release);
            let _ = self
                .registry
                .active
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(1))
                });
            info!(cluster = %self.cluster, endpoint = i, "outlier detection: endpoint returns to load balancing");
        }
        false
    }

    /// Whether any endpoint may be ejected at all right now (skips per-pick work).
    pub fn any_ejected(&self) -> bool {
        self.registry.active.load(Ordering::Acquire) > 0
    }

    /// Counts `outcome` for endpoint `i`, ejecting it when a consecutive-error threshold is
    /// reached (Envoy's rules: in the default mode connect failures count as 503 and
    /// timeouts as 504, a success resets the counts).
    pub fn report(&self, i: usize, outcome: Outcome) {
        let Some(h) = self.hosts.get(i) else {
            return;
        };
        let c = &self.config;
        if c.split_external_local_origin_errors {
            match outcome {
                Outcome::Connected => h.consecutive_local.store(0, Ordering::Relaxed),
                Outcome::Refused | Outcome::TimedOut => {
                    let n = h.consecutive_local.fetch_add(1, Ordering::AcqRel) + 1;
                    if n == c.consecutive_local_origin_failure {
                        self.maybe_eject(
                            i,
                            h,
                            c.enforcing_consecutive_local_origin_failure,
                            "consecutive local-origin failures",
                        );
                    }
                }
            }
            return;
        }
        let code = match outcome {
            Outcome::Connected => 200,
            Outcome::Refused => 503,
            Outcome::TimedOut => 504,
        };
        self.response(i, h, code);
    }

    fn response(&self, i: usize, h: &HostOutlier, code: u16) {
        let c = &self.config;
        if !(500..600).contains(&code) {
            h.consecutive_5xx.store(0, Ordering::Relaxed);
            h.consecutive_gateway.store(0, Ordering::Relaxed);
            return;
        }
        if (502..=504).contains(&code) {
            let n = h.consecutive_gateway.fetch_add(1, Ordering::AcqRel) + 1;
            if n == c.consecutive_gateway_failure {
                self.maybe_eject(
                    i,
                    h,
                    c.enforcing_consecutive_gateway_failure,
                    "consecutive gateway failures",
                );
            }
        } else {
            h.consecutive_gateway.store(0, Ordering::Relaxed);
        }
        let n = h.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1;
        if n == c.consecutive_5xx {
            self.maybe_eject(i, h, c.enforcing_consecutive_5xx, "consecutive 5xx");
        }
    }

    fn maybe_eject(&self, i: usize, h: &HostOutlier, enforcing: u32, why: &'static str) {
        // Whatever happens next, the run that reached the threshold is over.
        h.consecutive_5xx.store(0, Ordering::Relaxed);
        h.consecutive_gateway.store(0, Ordering::Relaxed);
        h.consecutive_local.store(0, Ordering::Relaxed);
        let now = clock();
        if h.ejected_at(now) || crate::random::below(100) >= u64::from(enforcing) {
            return;
        }
        let c = &self.config;
        let ejected = self.hosts.iter().filter(|o| o.ejected_at(now)).count();
        let total = self.hosts.len().max(1);
        let percent = 100 * (ejected + 1) / total;
        if percent > c.max_ejection_percent as usize && !(c.always_eject_one_host && ejected == 0) {
            info!(cluster = %self.cluster, endpoint = i, ejected, max_ejection_percent = c.max_ejection_percent, "outlier detection: {why}, but ejecting would exceed max_ejection_percent");
            return;
        }
        let interval = millis(c.interval).max(1);
        let idle = now.saturating_sub(h.last_ejection_end.load(Ordering::Acquire));
        let decay = u32::try_from(idle / interval).unwrap_or(u32::MAX);
        let multiplier = h.ejections.load(Ordering::Acquire).saturating_sub(decay) + 1;
        h.ejections.store(multiplier, Ordering::Release);
        let base = millis(c.base_ejection_time);
        let cap = millis(c.max_ejection_time).max(base);
        let length = base.saturating_mul(u64::from(multiplier)).min(cap);
        let previous = h.ejected_until.swap(now + length.max(1), Ordering::AcqRel);
        if previous == 0 {
            self.registry.active.fetch_add(1, Ordering::AcqRel);
        }
        info!(cluster = %self.cluster, endpoint = i, ejection_ms = length, multiplier, "outlier detection: {why}; endpoint ejected");
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the first call, never 0 (0 means "not ejected").
fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    millis(start.elapsed()) + 1
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn detector(config: OutlierDetection, n: u16, registry: &Arc<Registry>) -> Detector {
        Detector::new(
            config,
            "c".into(),
            registry.clone(),
            (0..n).map(|p| EndpointAddress::Socket(SocketAddr::from(([127, 0, 0, 1], 1000 + p)))),
        )
    }

    fn all_percent() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 3,
            max_ejection_percent: 100,
            ..OutlierDetection::default()
        }
    }

    #[test]
    fn consecutive_connect_failures_eject_and_a_success_resets_the_run() {
        let registry = Arc::default();
        let d = detector(all_percent(), 2, &registry);
        d.report(0, Outcome::Refused);
        d.report(0, Outcome::TimedOut);
        d.report(0, Outcome::Connected);
        d.report(0, Outcome::Refused);
        d.report(0, Outcome::Refused);
        assert!(!d.is_ejected(0), "the success broke the run");
        d.report(0, Outcome::Refused);
        assert!(d.is_ejected(0));
        assert!(!d.is_ejected(1));
    }

    #[test]
    fn max_ejection_percent_limits_ejections_unless_one_is_always_allowed() {
        let registry = Arc::default();
        let config = OutlierDetection {
            consecutive_5xx: 1,
            max_ejection_percent: 10,
            ..OutlierDetection::default()
        };
        let d = detector(config, 4, &registry);
        d.report(0, Outcome::Refused);
        assert!(!d.is_ejected(0), "25% > 10%");
        let registry = Arc::default();
        let d = detector(
            OutlierDetection {
                always_eject_one_host: true,
                ..config
            },
            4,
            &registry,
        );
        d.report(0, Outcome::Refused);
        d.report(1, Outcome::Refused);
        assert!(d.is_ejected(0) && !d.is_ejected(1));
    }

    #[test]
    fn gateway_failures_eject_only_when_enforced() {
        let registry = Arc::default();
        let config = OutlierDetection {
            consecutive_5xx: 100,
            consecutive_gateway_failure: 2,
            max_ejection_percent: 100,
            ..OutlierDetection::default()
        };
        let d = detector(config, 2, &registry);
        d.report(0, Outcome::Refused);
        d.report(0, Outcome::TimedOut);
        assert!(
            !d.is_ejected(0),
            "enforcing_consecutive_gateway_failure defaults to 0"
        );
        let d = detector(
            OutlierDetection {
                enforcing_consecutive_gateway_failure: 100,
                ..config
            },
            2,
            &Arc::default(),
        );
        d.report(1, Outcome::Refused);
        d.report(1, Outcome::Refused);
        assert!(d.is_ejected(1));
    }

    #[test]
    fn ejection_ends_after_its_time_and_state_survives_a_new_snapshot() {
        let registry = Arc::default();
        let config = OutlierDetection {
            consecutive_5xx: 1,
            base_ejection_time: Duration::from_millis(50),
            ..all_percent()
        };
        let d = detector(config, 2, &registry);
        d.report(1, Outcome::Refused);
        assert!(d.is_ejected(1));
        // The next snapshot, with the same endpoints, sees the same ejection.
        let next = detector(config, 3, &registry);
        assert!(next.is_ejected(1) && !next.is_ejected(2));
        std::thread::sleep(Duration::from_millis(80));
        assert!(!next.is_ejected(1));
        assert!(!next.any_ejected());
    }

    #[test]
    fn split_mode_counts_local_origin_failures_apart() {
        let registry = Arc::default();
        let config = OutlierDetection {
            split_external_local_origin_errors: true,
            consecutive_local_origin_failure: 2,
            consecutive_5xx: 2,
            ..all_percent()
        };
        let d = detector(config, 2, &registry);
        d.report(0, Outcome::Refused);
        d.report(0, Outcome::Connected);
        d.report(0, Outcome::Refused);
        assert!(!d.is_ejected(0), "a success broke the run");
        d.report(0, Outcome::TimedOut);
        assert!(d.is_ejected(0));
    }
}
