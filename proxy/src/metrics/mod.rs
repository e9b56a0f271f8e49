//! Istio's standard metrics, as Envoy with the `istio.stats` filter exposes them on
//! `/stats/prometheus`: the TCP families the tcp_proxy path feeds, the HTTP families the HTTP
//! path feeds through [`Metrics::record_request`], and `istio_build`.

mod http;
mod labels;
mod tcp;

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use xds_client::model::WorkloadInfo;

pub use http::{RequestProtocol, RequestRecord};
pub use labels::{Direction, Peers};
pub(crate) use tcp::{Progress, TcpConnection};

use labels::LabelSet;

/// Envoy's default histogram bucket bounds (`Stats::HistogramSettingsImpl::defaultBuckets`).
pub const ENVOY_DEFAULT_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

type Histograms = Family<LabelSet, Histogram, fn() -> Histogram>;

fn envoy_histogram() -> Histogram {
    Histogram::new(ENVOY_DEFAULT_BUCKETS)
}

/// Every metric family of the process and the local workload their labels describe. One per
/// proxy; cloning the families is cheap (they are shared maps), and series live as long as
/// the process, as Envoy's do.
pub struct Metrics {
    registry: Registry,
    local: WorkloadInfo,
    tcp_opened: Family<LabelSet, Counter>,
    tcp_closed: Family<LabelSet, Counter>,
    tcp_sent: Family<LabelSet, Counter>,
    tcp_received: Family<LabelSet, Counter>,
    requests: Family<LabelSet, Counter>,
    duration: Histograms,
    request_bytes: Histograms,
    response_bytes: Histograms,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(WorkloadInfo::default())
    }
}

impl Metrics {
    /// The metrics of a proxy whose own workload is `local` (from the node metadata).
    pub fn new(local: WorkloadInfo) -> Metrics {
        let mut registry = Registry::default();
        // prometheus-client appends `_total` to counters itself.
        let tcp_opened = Family::default();
        registry.register(
            "istio_tcp_connections_opened",
            "Total number of TCP connections opened",
            tcp_opened.clone(),
        );
        let tcp_closed = Family::default();
        registry.register(
            "istio_tcp_connections_closed",
            "Total number of TCP connections closed",
            tcp_closed.clone(),
        );
        let tcp_sent = Family::default();
        registry.register(
            "istio_tcp_sent_bytes",
            "Total bytes sent in response to TCP connections",
            tcp_sent.clone(),
        );
        let tcp_received = Family::default();
        registry.register(
            "istio_tcp_received_bytes",
            "Total bytes received in requests on TCP connections",
            tcp_received.clone(),
        );
        let requests = Family::default();
        registry.register(
            "istio_requests",
            "Total number of requests",
            requests.clone(),
        );
        let histograms = || Histograms::new_with_constructor(envoy_histogram as fn() -> Histogram);
        let duration = histograms();
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            duration.clone(),
        );
        let request_bytes = histograms();
        registry.register(
            "istio_request_bytes",
            "Request size in bytes (headers and body)",
            request_bytes.clone(),
        );
        let response_bytes = histograms();
        registry.register(
            "istio_response_bytes",
            "Response size in bytes (headers and body)",
            response_bytes.clone(),
        );
        let build = Family::<[(&'static str, &'static str); 2], Gauge>::default();
        build
            .get_or_create(&[("component", "proxy"), ("tag", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("istio_build", "Istio component build info", build);
        Metrics {
            registry,
            local,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            requests,
            duration,
            request_bytes,
            response_bytes,
        }
    }

    pub fn local(&self) -> &WorkloadInfo {
        &self.local
    }

    /// Prometheus text exposition format 0.0.4, as Envoy's `/stats/prometheus` serves.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Shared by the data path and the admin server.
pub type SharedMetrics = Arc<Metrics>;
