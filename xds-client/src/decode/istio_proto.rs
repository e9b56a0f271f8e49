//! prost declarations of the Istio-only HTTP filter configs, wire-compatible with the
//! `.proto` files under `xds-client/proto/istio/` (which serve the JSON side).

use prost::{Message, Name};

/// `istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct AlpnFilterConfig {
    #[prost(message, repeated, tag = "1")]
    pub alpn_override: Vec<AlpnOverride>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct AlpnOverride {
    /// 0: HTTP10, 1: HTTP11, 2: HTTP2.
    #[prost(int32, tag = "1")]
    pub upstream_protocol: i32,
    #[prost(string, repeated, tag = "2")]
    pub alpn_override: Vec<String>,
}

impl Name for AlpnFilterConfig {
    const NAME: &'static str = "FilterConfig";
    const PACKAGE: &'static str = "istio.envoy.config.filter.http.alpn.v2alpha1";
}

/// `stats.PluginConfig` (`istio.stats`); the tags match `proto/istio/stats.proto`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct StatsPluginConfig {
    #[prost(bool, tag = "6")]
    pub disable_host_header_fallback: bool,
    #[prost(message, optional, tag = "7")]
    pub tcp_reporting_duration: Option<envoy_types::pb::google::protobuf::Duration>,
    #[prost(message, repeated, tag = "8")]
    pub metrics: Vec<StatsMetricConfig>,
    #[prost(message, repeated, tag = "9")]
    pub definitions: Vec<StatsMetricDefinition>,
    #[prost(int32, tag = "10")]
    pub reporter: i32,
    #[prost(message, optional, tag = "11")]
    pub rescoping_duration: Option<envoy_types::pb::google::protobuf::Duration>,
    #[prost(message, optional, tag = "12")]
    pub scope_grace_period_duration: Option<envoy_types::pb::google::protobuf::Duration>,
}

impl Name for StatsPluginConfig {
    const NAME: &'static str = "PluginConfig";
    const PACKAGE: &'static str = "stats";
}

/// `stats.MetricConfig`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct StatsMetricConfig {
    #[prost(map = "string, string", tag = "1")]
    pub dimensions: std::collections::HashMap<String, String>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, repeated, tag = "3")]
    pub tags_to_remove: Vec<String>,
    #[prost(string, tag = "4")]
    pub r#match: String,
    #[prost(bool, tag = "5")]
    pub drop: bool,
}

/// `stats.MetricDefinition`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct StatsMetricDefinition {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(int32, tag = "3")]
    pub r#type: i32,
}

/// `envoy.tcp.metadataexchange.config.MetadataExchange`, which istiod ≤ 1.19 also puts in the
/// HTTP Wasm filter's `configuration`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct MetadataExchange {
    #[prost(string, tag = "1")]
    pub protocol: String,
    #[prost(bool, tag = "2")]
    pub enable_discovery: bool,
    #[prost(string, repeated, tag = "3")]
    pub additional_labels: Vec<String>,
}

impl Name for MetadataExchange {
    const NAME: &'static str = "MetadataExchange";
    const PACKAGE: &'static str = "envoy.tcp.metadataexchange.config";
}
