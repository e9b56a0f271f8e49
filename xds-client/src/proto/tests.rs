use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use prost::Message;
use serde_json::json;

use super::{ProtoError, from_json_str, from_json_value, to_json};

#[test]
fn enum_names_are_case_insensitive_as_in_envoy() {
    let json = json!({"name": "c", "type": "strict_dns", "lb_policy": "least_request", "dns_lookup_family": "v4_only"});
    let from_value: Cluster = from_json_value(json.clone()).unwrap();
    let from_text: Cluster = from_json_str(&json.to_string()).unwrap();
    assert_eq!(from_value, from_text);
    let rendered = to_json(&from_text).unwrap();
    assert_eq!(rendered["type"], "STRICT_DNS");
    assert_eq!(rendered["lb_policy"], "LEAST_REQUEST");
    assert_eq!(rendered["dns_lookup_family"], "V4_ONLY");

    // Inside an Any, found through its @type.
    let listener: Listener = from_json_value(json!({"filter_chains": [{"filters": [{"name": "h", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "codec_type": "http2", "stat_prefix": "s"}}]}]}))
    .unwrap();
    let Some(filter::ConfigType::TypedConfig(any)) =
        &listener.filter_chains[0].filters[0].config_type
    else {
        panic!("no typed config")
    };
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    assert_eq!(hcm.codec_type().as_str_name(), "HTTP2");
}

#[test]
fn a_name_that_is_no_enum_value_in_any_case_stays_an_error() {
    let err = from_json_str::<Cluster>(r#"{"name": "c", "type": "static_dns"}"#).unwrap_err();
    let ProtoError::Json { path, message } = err else {
        panic!("expected a JSON error, got {err:?}")
    };
    assert_eq!(path, "type");
    assert!(
        message.contains("static_dns") && message.contains("line 1"),
        "{message}"
    );
}

#[test]
fn unknown_type_urls_are_named() {
    let err = from_json_value::<Listener>(
        json!({"filter_chains": [{"filters": [{"name": "x", "typed_config": {
        "@type": "type.googleapis.com/example.Unknown"}}]}]}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("example.Unknown"), "{err}");
}
