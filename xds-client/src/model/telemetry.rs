//! Istio's standard metrics (`istio.stats`, `stats.PluginConfig`) and the workload facts their
//! labels are made of.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Istio's default `tcp_reporting_duration`: TCP byte counts are flushed this often while a
/// connection is open.
pub const DEFAULT_TCP_REPORTING_INTERVAL: Duration = Duration::from_secs(5);

/// One decoded `istio.stats` filter (network or HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsConfig {
    pub reporter: StatsReporter,
    /// The `destination_service` label never falls back to the `Host` header (istiod sets
    /// it on inbound).
    pub disable_host_header_fallback: bool,
    /// How often the bytes of an open TCP connection are reported.
    pub tcp_reporting_interval: Duration,
    /// `metrics` overrides, in order; each applies to the metric it names (all when `None`).
    pub overrides: Vec<MetricOverride>,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            reporter: StatsReporter::Unspecified,
            disable_host_header_fallback: false,
            tcp_reporting_interval: DEFAULT_TCP_REPORTING_INTERVAL,
            overrides: Vec::new(),
        }
    }
}

impl StatsConfig {
    /// Whether the Istio metric `metric` (its name without `istio_` and `_total`, as in
    /// Istio's `metrics[].name`: `requests_total`, `tcp_sent_bytes_total`, ...) is dropped.
    pub fn drops(&self, metric: &str) -> bool {
        self.overrides
            .iter()
            .filter(|o| o.applies_to(metric))
            .any(|o| o.drop)
    }

    /// The labels `metric` loses (`tags_to_remove`), and the ones given fixed values
    /// (`dimensions`), over every override that applies to it.
    pub fn shaping(&self, metric: &str) -> LabelShaping {
        let mut shaping = LabelShaping::default();
        for o in self.overrides.iter().filter(|o| o.applies_to(metric)) {
            shaping.removed.extend(o.tags_to_remove.iter().cloned());
            for (k, v) in &o.dimensions {
                shaping.fixed.insert(k.clone(), v.clone());
            }
        }
        shaping
    }
}

/// What the overrides do to one metric's labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelShaping {
    pub removed: Vec<Arc<str>>,
    pub fixed: BTreeMap<Arc<str>, Arc<str>>,
}

/// Which side of a connection the filter reports as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatsReporter {
    /// By the listener's direction: `source` outbound, `destination` inbound.
    #[default]
    Unspecified,
    /// A gateway reports as `source` on its server side.
    ServerGateway,
}

/// One entry of `stats.PluginConfig.metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricOverride {
    /// `None`: every standard metric.
    pub name: Option<Arc<str>>,
    pub tags_to_remove: Vec<Arc<str>>,
    /// Labels set to a fixed value (only CEL string literals are accepted).
    pub dimensions: BTreeMap<Arc<str>, Arc<str>>,
    pub drop: bool,
}

impl MetricOverride {
    fn applies_to(&self, metric: &str) -> bool {
        self.name.as_deref().is_none_or(|n| n == metric)
    }
}

/// What Istio knows of a workload for its labels: the local one from the node metadata, a
/// remote one from endpoint metadata or the mTLS peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadInfo {
    pub workload_name: Option<Arc<str>>,
    pub namespace: Option<Arc<str>>,
    pub canonical_service: Option<Arc<str>>,
    pub canonical_revision: Option<Arc<str>>,
    pub app: Option<Arc<str>>,
    pub version: Option<Arc<str>>,
    pub cluster_id: Option<Arc<str>>,
}

/// One service of a cluster's `istio.services` metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    pub host: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
}
