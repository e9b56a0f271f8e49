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
