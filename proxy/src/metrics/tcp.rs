//! `istio_tcp_*` for one proxied connection: opened once, bytes flushed every
//! `tcp_reporting_duration` while it is open and at its end, closed once.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use xds_client::model::StatsConfig;

use super::Metrics;
use super::labels::{LabelSet, Peers, label_set};

/// Bytes moved so far in each direction, written by the copy loop (one relaxed add per
/// read) and read by the reporter.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub downstream_to_upstream: AtomicU64,
    pub upstream_to_downstream: AtomicU64,
}

/// The metrics of one connection that `istio.stats` watches.
#[derive(Debug)]
pub(crate) struct TcpConnection {
    sent: Option<Counter>,
    received: Option<Counter>,
    /// Created at the close, as Envoy creates a stat on its first increment: an open
    /// connection shows no closed series.
    closed: Option<(Family<LabelSet, Counter>, LabelSet)>,
    reported_sent: u64,
    reported_received: u64,
}

impl TcpConnection {
    /// Counts the connection opened, with the labels it keeps until closed. `response_flags`
    /// is Envoy's (`-` for none; `UF`, `UH`, `UO`... when no upstream could be had).
    pub(crate) fn open(
        metrics: &Metrics,
        config: &StatsConfig,
        peers: &Peers<'_>,
        response_flags: &str,
    ) -> TcpConnection {
        let labels = |metric: &str| {
            (!config.drops(metric)).then(|| {
                label_set(
                    &metrics.local,
                    config,
                    metric,
                    peers,
                    "tcp",
                    None,
                    response_flags,
                )
            })
        };
        let counter = |family: &Family<LabelSet, Counter>, metric: &str| {
            labels(metric).map(|l| family.get_or_create_owned(&l))
        };
        if let Some(opened) = counter(&metrics.tcp_opened, "tcp_connections_opened_total") {
            opened.inc();
        }
        TcpConnection {
            sent: counter(&metrics.tcp_sent, "tcp_sent_bytes_total"),
            received: counter(&metrics.tcp_received, "tcp_received_bytes_total"),
            closed: labels("tcp_connections_closed_total").map(|l| (metrics.tcp_closed.clone(), l)),
            reported_sent: 0,
            reported_received: 0,
        }
    }

    /// Reports the bytes moved since the last report: `sent` is what went to the downstream
    /// client (the response side), `received` what came from it, as Istio counts them.
    pub(crate) fn flush(&mut self, progress: &Progress) {
        let received = progress.downstream_to_upstream.load(Ordering::Relaxed);
        let sent = progress.upstream_to_downstream.load(Ordering::Relaxed);
        if let Some(c) = &self.received {
            c.inc_by(received.saturating_sub(self.reported_received));
        }
        if let Some(c) = &self.sent {
            c.inc_by(sent.saturating_sub(self.reported_sent));
        }
        self.reported_received = received.max(self.reported_received);
        self.reported_sent = sent.max(self.reported_sent);
    }

    /// The final report: remaining bytes, then the close.
    pub(crate) fn close(mut self, progress: &Progress) {
        self.flush(progress);
        if let Some((family, labels)) = &self.closed {
            family.get_or_create(labels).inc();
        }
    }
}
