//! HTTP connection managers and the HTTP filters istiod writes.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use serde_json::{Value, json};

use crate::decode::error::Ctx;
use crate::decode::{DecodeError, Resource, http_connection_manager};
use crate::model::{
    self, CodecType, EscapedSlashes, ForwardClientCert, HttpFilter, RouteSource, UpstreamProtocol,
};
use crate::testing::{assert_invalid, assert_unsupported, pb};

const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const TYPED_STRUCT: &str = "type.googleapis.com/udpa.type.v1.TypedStruct";
const WASM: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

fn res() -> Resource {
    Resource::listener("l")
}

fn router() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}})
}

fn decode(mut json: Value) -> Result<model::HttpConnectionManager, DecodeError> {
    json["stat_prefix"] = json!("s");
    if ["rds", "route_config", "scoped_routes"]
        .iter()
        .all(|k| json.get(k).is_none())
    {
        json["rds"] = json!({"route_config_name": "80", "config_source": {"ads": {}}});
    }
    let resource = res();
    http_connection_manager(&Ctx::new(&resource), &pb::<HttpConnectionManager>(json))
}

fn filters(list: Value) -> Result<Vec<HttpFilter>, DecodeError> {
    decode(json!({"http_filters": list})).map(|h| h.http_filters)
}

#[test]
fn istio_outbound_settings() {
    let hcm = decode(json!({
        "use_remote_address": false, "stream_idle_timeout": "0s", "normalize_path": true,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED", "server_name": "istio-envoy",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "request_id_extension": {"typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
            "use_request_id_for_trace_sampling": true}},
        "forward_client_cert_details": "APPEND_FORWARD",
        "set_current_client_cert_details": {"subject": true, "dns": true, "uri": true},
        "common_http_protocol_options": {"idle_timeout": "30s"},
        "http_protocol_options": {"accept_http_10": true},
        "http2_protocol_options": {"max_concurrent_streams": 100},
        "http_filters": [router()],
    }))
    .unwrap();
    assert!(matches!(&hcm.routes, RouteSource::Rds(n) if &**n == "80"));
    assert_eq!(hcm.codec, CodecType::Auto);
    assert!(!hcm.use_remote_address && hcm.normalize_path && !hcm.merge_slashes);
    assert_eq!(hcm.stream_idle_timeout, None, "0s disables it");
    assert_eq!(hcm.request_timeout, None);
    assert_eq!(hcm.idle_timeout, Some(Duration::from_secs(30)));
    assert_eq!(hcm.escaped_slashes, EscapedSlashes::KeepUnchanged);
    assert_eq!(&*hcm.server_name, "istio-envoy");
    assert_eq!(hcm.forward_client_cert, ForwardClientCert::AppendForward);
    let cert = hcm.set_current_client_cert;
    assert!(cert.subject && cert.dns && cert.uri && !cert.cert && !cert.chain);
    assert!(hcm.generate_request_id, "Envoy's default");
    assert!(hcm.http1.accept_http_10 && hcm.http1.allow_absolute_url);
    assert_eq!(hcm.http2.max_concurrent_streams, Some(100));
    assert_eq!(&*hcm.upgrades[0].upgrade_type, "websocket");
    assert_eq!(hcm.max_request_headers_kb, 60);

    let defaults = decode(json!({"http_filters": [router()]})).unwrap();
    assert_eq!(defaults.stream_idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(defaults.idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(&*defaults.server_name, "envoy");
}

#[test]
fn logs_tracing_and_other_extensions_are_named() {
    let err = decode(json!({"http_filters": [router()], "tracing": {},
        "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": "/dev/stdout"}}],
        "codec_type": "HTTP3", "scoped_routes": {"name": "x"}}))
    .unwrap_err();
    let reasons = err.reasons().join("; ");
    for part in ["tracing", "access_log", "codec_type HTTP3", "scoped_routes"] {
        assert!(reasons.contains(part), "{part}: {reasons}");
    }
    let err = decode(
        json!({"http_filters": [router()], "rds": {"route_config_name": "r",
        "config_source": {"path_config_source": {"path": "/r.yaml"}}}}),
    )
    .unwrap_err();
    assert_unsupported(&err, &res(), &["rds.config_source", "other than ads"]);
}

#[test]
fn the_router_must_come_last() {
    let err = filters(json!([])).unwrap_err();
    assert_invalid(&err, &res(), "http_filters", "router");
    let cors = json!({"name": "envoy.filters.http.cors", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}});
    let err = filters(json!([router(), cors])).unwrap_err();
    let reasons = err.reasons().join("; ");
    assert!(
        reasons.contains("http_filters[0]: the router is terminal"),
        "{reasons}"
    );
    assert!(
        reasons.contains("http_filters[1]: the last HTTP filter must be the router"),
        "{reasons}"
    );

    let hcm = decode(
        json!({"http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
        "@type": ROUTER, "suppress_envoy_headers": true, "start_child_span": true}}]}),
    )
    .unwrap();
    assert!(hcm.suppress_envoy_headers);
}

#[test]
fn istio_filters() {
    let list = filters(json!([
        {"name": "istio.metadata_exchange", "typed_config": {"@type": WASM, "config": {
            "vm_config": {"runtime": "envoy.wasm.runtime.null", "code": {"local": {"inline_string": "envoy.wasm.metadata_exchange"}}},
            "configuration": {"@type": "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"}}}},
        {"name": "istio.metadata_exchange", "typed_config": {"@type": TYPED_STRUCT,
            "type_url": "type.googleapis.com/io.istio.http.peer_metadata.Config",
            "value": {"upstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
                      "upstream_propagation": [{"istio_headers": {}}]}}},
        {"name": "envoy.filters.http.grpc_stats", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "emit_filter_state": true, "stats_for_all_methods": false}},
        {"name": "istio.alpn", "typed_config": {
            "@type": "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
            "alpn_override": [{"alpn_override": ["istio-http/1.0", "istio", "http/1.0"]},
                              {"upstream_protocol": "HTTP2", "alpn_override": ["istio-h2", "istio", "h2"]}]}},
        {"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
        {"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
        {"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig",
            "disable_host_header_fallback": true}},
        router(),
    ]))
    .unwrap();
    assert!(matches!(list[0], HttpFilter::PeerMetadata));
    assert!(matches!(list[1], HttpFilter::PeerMetadata));
    assert!(matches!(list[2], HttpFilter::GrpcStats));
    let HttpFilter::IstioAlpn(alpn) = &list[3] else {
        panic!("{:?}", list[3])
    };
    assert_eq!(alpn[0].protocol, UpstreamProtocol::Http10);
    assert_eq!(alpn[1].protocol, UpstreamProtocol::Http2);
    assert_eq!(
        alpn[1].alpn.iter().map(|a| &**a).collect::<Vec<_>>(),
        ["istio-h2", "istio", "h2"]
    );
    assert!(matches!(&list[4], HttpFilter::Fault(f) if f.delay.is_none() && f.abort.is_none()));
    assert!(matches!(list[5], HttpFilter::Cors));
    assert!(matches!(&list[6], HttpFilter::IstioStats(c) if c.disable_host_header_fallback));
    let hcm = decode(json!({"http_filters": [
        {"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig",
            "disable_host_header_fallback": true}}, router()]}))
    .unwrap();
    assert!(hcm.stats_disable_host_header_fallback);
}

#[test]
fn other_filters_are_refused_by_name() {
    for (filter, part) in [
        (
            json!({"name": "envoy.filters.http.lua", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua", "default_source_code": {"inline_string": ""}}}),
            "\"envoy.filters.http.lua\"",
        ),
        (
            json!({"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}}),
            "\"envoy.filters.http.rbac\"",
        ),
        (
            json!({"name": "my-wasm", "typed_config": {"@type": WASM, "config": {"vm_config": {
            "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": "/x.wasm"}}}}}}),
            "envoy.wasm.runtime.v8",
        ),
        (
            json!({"name": "istio.metadata_exchange", "typed_config": {"@type": TYPED_STRUCT,
            "type_url": "type.googleapis.com/io.istio.http.peer_metadata.Config",
            "value": {"upstream_propagation": [{"istio_headers": {"skip_external_clusters": true}}]}}}),
            "\"istio_headers\" with options",
        ),
        (
            json!({"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig",
            "metrics": [{"name": "requests_total", "dimensions": {"x": "request.host"}}]}}),
            "CEL expression \"request.host\"",
        ),
    ] {
        let err = filters(json!([filter, router()])).unwrap_err();
        assert_unsupported(&err, &res(), &["http_filters[0]", part]);
    }
}

#[test]
fn inline_route_tables_validate_clusters_by_default() {
    let hcm = decode(json!({"http_filters": [router()], "route_config": {"virtual_hosts": [
        {"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]}}))
    .unwrap();
    let RouteSource::Inline(rc) = &hcm.routes else {
        panic!()
    };
    assert!(rc.validate_clusters);
    assert_eq!(
        rc.cluster_references(),
        [("virtual_hosts[0].routes[0].route.cluster".to_string(), "c")]
    );
}
