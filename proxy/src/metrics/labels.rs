//! The labels of Istio's standard metrics, with the meaning Istio's stats filter gives them
//! for each reporter: `source` (an outbound connection, the local workload is the source) and
//! `destination` (inbound, the local workload is the destination). What a proxy cannot know
//! is `unknown`, as in Istio.

use std::borrow::Cow;
use std::sync::Arc;

use xds_client::model::{StatsConfig, StatsReporter, TrafficDirection, WorkloadInfo};

/// A metric's labels in Istio's order. Built once per connection or request, never per byte.
pub(crate) type LabelSet = Vec<(Cow<'static, str>, Arc<str>)>;

const UNKNOWN: &str = "unknown";

/// Which way the connection goes relative to the local workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Into the local workload: reported as `destination`.
    Inbound,
    /// Out of the local workload: reported as `source`.
    Outbound,
}

impl Direction {
    /// A listener's `traffic_direction`; Istio's stats filter treats unspecified as outbound.
    pub fn of_listener(direction: TrafficDirection) -> Direction {
        match direction {
            TrafficDirection::Inbound => Direction::Inbound,
            TrafficDirection::Outbound | TrafficDirection::Unspecified => Direction::Outbound,
        }
    }
}

/// What a connection knows of its ends, for the labels.
#[derive(Debug, Clone, Copy)]
pub struct Peers<'a> {
    pub direction: Direction,
    /// The downstream client's verified SPIFFE ID, when the connection came in over mTLS.
    pub downstream_principal: Option<&'a str>,
    /// The local workload's SPIFFE ID, when this connection presented it (mTLS on either side).
    pub local_principal: Option<&'a str>,
    /// The upstream server's verified SPIFFE ID, when the proxy originated mTLS.
    pub upstream_principal: Option<&'a str>,
    /// The upstream cluster (`outbound|port|subset|host`, `inbound|port||`, `PassthroughCluster`...).
    pub upstream_cluster: Option<&'a str>,
}

/// `destination_service`, `destination_service_name`, `destination_service_namespace` from
/// an Istio cluster name.
fn service_of_cluster(cluster: Option<&str>) -> (Arc<str>, Arc<str>, Arc<str>) {
    let unknown = || Arc::<str>::from(UNKNOWN);
    let Some(cluster) = cluster else {
        return (unknown(), unknown(), unknown());
    };
    let mut parts = cluster.split('|');
    let kind = parts.next().unwrap_or_default();
    let host = parts.nth(2).unwrap_or_default();
    if (kind != "outbound" && kind != "inbound") || host.is_empty() {
        // Istio's passthrough and blackhole clusters name the service by the cluster.
        return match kind {
            "PassthroughCluster"
            | "BlackHoleCluster"
            | "InboundPassthroughCluster"
            | "InboundPassthroughClusterIpv4"
            | "InboundPassthroughClusterIpv6" => (unknown(), Arc::from(cluster), unknown()),
            _ => (unknown(), unknown(), unknown()),
        };
    }
    // Kubernetes service hosts are `name.namespace.svc.<domain>`; other hosts (service
    // entries) are their own name.
    let labels: Vec<&str> = host.split('.').collect();
    let (name, namespace) = match labels.as_slice() {
        [name, namespace, "svc", ..] => (Arc::from(*name), Arc::from(*namespace)),
        _ => (Arc::from(host), unknown()),
    };
    (Arc::from(host), name, namespace)
}

fn value(v: &Option<Arc<str>>) -> Arc<str> {
    v.clone().unwrap_or_else(|| Arc::from(UNKNOWN))
}

fn text(v: Option<&str>) -> Arc<str> {
    Arc::from(v.unwrap_or(UNKNOWN))
}

/// The reporter Istio's filter speaks as.
fn reporter(config: &StatsConfig, direction: Direction) -> &'static str {
    match (config.reporter, direction) {
        (StatsReporter::ServerGateway, _) | (_, Direction::Outbound) => "source",
        (StatsReporter::Unspecified, Direction::Inbound) => "destination",
    }
}

/// The HTTP-only labels, between `request_protocol` and `response_flags` in Istio's order.
pub(crate) struct Response<'a> {
    pub code: &'a str,
    pub grpc_status: &'a str,
}

/// The labels of `metric` (Istio's `metrics[].name`: `tcp_sent_bytes_total`, ...) for one
/// connection or request, shaped by the filter's `tags_to_remove` and `dimensions`.
pub(crate) fn label_set(
    local: &WorkloadInfo,
    config: &StatsConfig,
    metric: &str,
    peers: &Peers<'_>,
    protocol: &'static str,
    response: Option<Response<'_>>,
    response_flags: &str,
) -> LabelSet {
    let remote = WorkloadInfo::default();
    let (source, destination) = match peers.direction {
        Direction::Outbound => (local, &remote),
        Direction::Inbound => (&remote, local),
    };
    let (source_principal, destination_principal) = match peers.direction {
        Direction::Outbound => (peers.local_principal, peers.upstream_principal),
        Direction::Inbound => (peers.downstream_principal, peers.local_principal),
    };
    let (service, service_name, service_namespace) = service_of_cluster(peers.upstream_cluster);
    // Istio's outbound side cannot see the server's TLS policy; inbound knows it.
    let security = match peers.direction {
        Direction::Outbound => UNKNOWN,
        Direction::Inbound if peers.downstream_principal.is_some() => "mutual_tls",
        Direction::Inbound => "none",
    };
    let mut labels: LabelSet = vec![
        (
            "reporter".into(),
            Arc::from(reporter(config, peers.direction)),
        ),
        ("source_workload".into(), value(&source.workload_name)),
        (
            "source_canonical_service".into(),
            value(&source.canonical_service),
        ),
        (
            "source_canonical_revision".into(),
            value(&source.canonical_revision),
        ),
        ("source_workload_namespace".into(), value(&source.namespace)),
        ("source_principal".into(), text(source_principal)),
        ("source_app".into(), value(&source.app)),
        ("source_version".into(), value(&source.version)),
        ("source_cluster".into(), value(&source.cluster_id)),
        (
            "destination_workload".into(),
            value(&destination.workload_name),
        ),
        (
            "destination_workload_namespace".into(),
            value(&destination.namespace),
        ),
        ("destination_principal".into(), text(destination_principal)),
        ("destination_app".into(), value(&destination.app)),
        ("destination_version".into(), value(&destination.version)),
        ("destination_service".into(), service),
        (
            "destination_canonical_service".into(),
            value(&destination.canonical_service),
        ),
        (
            "destination_canonical_revision".into(),
            value(&destination.canonical_revision),
        ),
        ("destination_service_name".into(), service_name),
        ("destination_service_namespace".into(), service_namespace),
        ("destination_cluster".into(), value(&destination.cluster_id)),
        ("request_protocol".into(), Arc::from(protocol)),
    ];
    if let Some(r) = response {
        labels.push(("response_code".into(), Arc::from(r.code)));
        labels.push(("grpc_response_status".into(), Arc::from(r.grpc_status)));
    }
    labels.push(("response_flags".into(), Arc::from(response_flags)));
    labels.push(("connection_security_policy".into(), Arc::from(security)));
    shape(labels, config, metric)
}

/// Applies the filter's overrides for `metric`: removed tags go, fixed dimensions replace
/// (or add) their label.
fn shape(mut labels: LabelSet, config: &StatsConfig, metric: &str) -> LabelSet {
    if config.overrides.is_empty() {
        return labels;
    }
    let shaping = config.shaping(metric);
    let (removed, fixed) = (shaping.removed, shaping.fixed);
    labels.retain(|(k, _)| !removed.iter().any(|r| **r == **k));
    for (key, v) in fixed {
        match labels.iter_mut().find(|(k, _)| **k == *key) {
            Some(entry) => entry.1 = v,
            None => labels.push((Cow::Owned(key.to_string()), v)),
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_from_cluster_names() {
        let s = |c| {
            let (a, b, c) = service_of_cluster(c);
            (a.to_string(), b.to_string(), c.to_string())
        };
        let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            s(Some("outbound|9080|v1|reviews.bookinfo.svc.cluster.local")),
            t("reviews.bookinfo.svc.cluster.local", "reviews", "bookinfo")
        );
        assert_eq!(
            s(Some("outbound|443||httpbin.org")),
            t("httpbin.org", "httpbin.org", "unknown")
        );
        assert_eq!(
            s(Some("PassthroughCluster")),
            t("unknown", "PassthroughCluster", "unknown")
        );
        assert_eq!(
            s(Some("inbound|9080||")),
            t("unknown", "unknown", "unknown")
        );
        assert_eq!(s(None), t("unknown", "unknown", "unknown"));
    }
}
