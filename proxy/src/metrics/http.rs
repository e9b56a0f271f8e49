//! `istio_requests_total` and the request histograms, fed once per finished request by the
//! HTTP data path through [`Metrics::record_request`].

use std::sync::Arc;
use std::time::Duration;

use xds_client::model::StatsConfig;

use super::Metrics;
use super::labels::{LabelSet, Peers, Response, label_set};

/// `request_protocol`: Istio reports gRPC requests (content-type `application/grpc`) apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestProtocol {
    Http,
    Grpc,
}

/// One finished request, as the HTTP path saw it.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord<'a> {
    pub peers: Peers<'a>,
    pub protocol: RequestProtocol,
    /// The response status sent downstream; 0 when none was (the stream was reset).
    pub status: u16,
    /// `grpc-status` of a gRPC response (trailers, or headers for trailers-only).
    pub grpc_status: Option<u32>,
    /// Envoy's response flags string (`-` for none, `UF`, `UH`, `NR`, `URX,UF`...).
    pub response_flags: &'a str,
    /// The request's `Host`/`:authority`, the `destination_service` fallback when the
    /// cluster names no service (unless the filter disables it).
    pub host: Option<&'a str>,
    /// Headers and body, as Envoy counts `istio_request_bytes`.
    pub request_bytes: u64,
    /// Headers and body, as Envoy counts `istio_response_bytes`.
    pub response_bytes: u64,
    /// From the first byte of the request to the last of the response.
    pub duration: Duration,
}

impl Metrics {
    /// Records one request on the HCM whose `istio.stats` filter is `config`.
    pub fn record_request(&self, config: &StatsConfig, record: &RequestRecord<'_>) {
        let code = record.status.to_string();
        let grpc = record
            .grpc_status
            .map(|s| s.to_string())
            .unwrap_or_default();
        let labels = |metric: &str| {
            let protocol = match record.protocol {
                RequestProtocol::Http => "http",
                RequestProtocol::Grpc => "grpc",
            };
            let response = Response {
                code: &code,
                grpc_status: &grpc,
            };
            let mut set = label_set(
                &self.local,
                config,
                metric,
                &record.peers,
                protocol,
                Some(response),
                record.response_flags,
            );
            host_fallback(&mut set, config, record.host);
            set
        };
        if !config.drops("requests_total") {
            self.requests.get_or_create(&labels("requests_total")).inc();
        }
        if !config.drops("request_duration_milliseconds") {
            let ms = record.duration.as_secs_f64() * 1000.0;
            self.duration
                .get_or_create(&labels("request_duration_milliseconds"))
                .observe(ms);
        }
        if !config.drops("request_bytes") {
            self.request_bytes
                .get_or_create(&labels("request_bytes"))
                .observe(record.request_bytes as f64);
        }
        if !config.drops("response_bytes") {
            self.response_bytes
                .get_or_create(&labels("response_bytes"))
                .observe(record.response_bytes as f64);
        }
    }
}

/// Istio names an unknown destination service by the request's host (port removed).
fn host_fallback(set: &mut LabelSet, config: &StatsConfig, host: Option<&str>) {
    if config.disable_host_header_fallback {
        return;
    }
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return;
    };
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => match host.rsplit_once(':') {
            Some((name, port))
                if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        },
    };
    if let Some(entry) = set
        .iter_mut()
        .find(|(k, v)| k == "destination_service" && &**v == "unknown")
    {
        entry.1 = Arc::from(host);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use xds_client::model::{MetricOverride, WorkloadInfo};

    use super::*;
    use crate::metrics::Direction;

    fn local() -> WorkloadInfo {
        WorkloadInfo {
            workload_name: Some("ratings-vm".into()),
            namespace: Some("bookinfo".into()),
            canonical_service: Some("ratings".into()),
            canonical_revision: Some("v1".into()),
            app: Some("ratings".into()),
            version: Some("v1".into()),
            cluster_id: Some("Kubernetes".into()),
        }
    }

    fn record<'a>(peers: Peers<'a>) -> RequestRecord<'a> {
        RequestRecord {
            peers,
            protocol: RequestProtocol::Http,
            status: 200,
            grpc_status: None,
            response_flags: "-",
            host: Some("reviews:9080"),
            request_bytes: 300,
            response_bytes: 1200,
            duration: Duration::from_millis(7),
        }
    }

    #[test]
    fn inbound_request_labels_and_histograms() {
        let metrics = Metrics::new(local());
        let peers = Peers {
            direction: Direction::Inbound,
            downstream_principal: Some("spiffe://cluster.local/ns/default/sa/productpage"),
            local_principal: Some("spiffe://cluster.local/ns/bookinfo/sa/ratings"),
            upstream_principal: None,
            upstream_cluster: Some("inbound|9080||"),
        };
        let config = StatsConfig {
            disable_host_header_fallback: true,
            ..StatsConfig::default()
        };
        metrics.record_request(&config, &record(peers));
        metrics.record_request(&config, &record(peers));
        let text = metrics.render().unwrap();
        let labels = "reporter=\"destination\",source_workload=\"unknown\",\
source_canonical_service=\"unknown\",source_canonical_revision=\"unknown\",\
source_workload_namespace=\"unknown\",\
source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\",source_app=\"unknown\",\
source_version=\"unknown\",source_cluster=\"unknown\",destination_workload=\"ratings-vm\",\
destination_workload_namespace=\"bookinfo\",\
destination_principal=\"spiffe://cluster.local/ns/bookinfo/sa/ratings\",\
destination_app=\"ratings\",destination_version=\"v1\",destination_service=\"unknown\",\
destination_canonical_service=\"ratings\",destination_canonical_revision=\"v1\",\
destination_service_name=\"unknown\",destination_service_namespace=\"unknown\",\
destination_cluster=\"Kubernetes\",request_protocol=\"http\",response_code=\"200\",\
grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"mutual_tls\"";
        assert!(
            text.contains(&format!("istio_requests_total{{{labels}}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "istio_request_duration_milliseconds_bucket{{{labels},le=\"10\"}} 2\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "istio_request_duration_milliseconds_bucket{{{labels},le=\"5\"}} 0\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("istio_request_bytes_sum{{{labels}}} 600.0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("istio_response_bytes_count{{{labels}}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains("istio_build{component=\"proxy\",tag=\""),
            "{text}"
        );
    }

    #[test]
    fn outbound_request_host_fallback_and_overrides() {
        let metrics = Metrics::new(local());
        let peers = Peers {
            direction: Direction::Outbound,
            downstream_principal: None,
            local_principal: None,
            upstream_principal: None,
            upstream_cluster: Some("PassthroughCluster"),
        };
        let config = StatsConfig {
            overrides: vec![
                MetricOverride {
                    name: Some(Arc::from("requests_total")),
                    tags_to_remove: vec![Arc::from("source_version")],
                    dimensions: [(Arc::from("mesh"), Arc::from("prod"))].into(),
                    drop: false,
                },
                MetricOverride {
                    name: Some(Arc::from("request_bytes")),
                    drop: true,
                    ..MetricOverride::default()
                },
            ],
            ..StatsConfig::default()
        };
        let mut r = record(peers);
        r.protocol = RequestProtocol::Grpc;
        r.grpc_status = Some(14);
        r.status = 503;
        r.response_flags = "UF";
        metrics.record_request(&config, &r);
        let text = metrics.render().unwrap();
        let requests = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .unwrap_or_else(|| panic!("{text}"));
        for part in [
            "reporter=\"source\"",
            "source_workload=\"ratings-vm\"",
            "source_principal=\"unknown\"",
            // the Host header, port removed, names the otherwise unknown service
            "destination_service=\"reviews\"",
            "destination_service_name=\"PassthroughCluster\"",
            "request_protocol=\"grpc\"",
            "response_code=\"503\"",
            "grpc_response_status=\"14\"",
            "response_flags=\"UF\"",
            "connection_security_policy=\"unknown\"",
            "mesh=\"prod\"",
        ] {
            assert!(requests.contains(part), "{part} not in {requests}");
        }
        assert!(!requests.contains("source_version"), "{requests}");
        assert!(requests.ends_with("} 1"), "{requests}");
        // dropped for request_bytes only; the others keep their standard labels
        assert!(!text.contains("istio_request_bytes_count{"), "{text}");
        let duration = text
            .lines()
            .find(|l| l.starts_with("istio_request_duration_milliseconds_count{"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(duration.contains("source_version=\"v1\""), "{duration}");
        assert!(!duration.contains("mesh="), "{duration}");
    }
}
