//! TLS transport sockets shaped as istiod sends them (see the 1.18 config dump fixture).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use serde_json::{Value, json};

use crate::decode::{Resource, cluster, listener};
use crate::model::{
    CommonTls, DownstreamTls, EcdhCurve, PeerMatch, Tls12CipherSuite, TlsParams, TlsVersions,
    TransportSocket, UpstreamTls, Validation,
};
use crate::testing::{assert_unsupported, pb};

const DOWNSTREAM: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

fn sds(name: &str) -> Value {
    json!({"name": name, "sds_config": {"api_config_source": {"api_type": "GRPC",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
        "set_node_on_first_message_only": true, "transport_api_version": "V3"},
        "initial_fetch_timeout": "0s", "resource_api_version": "V3"}})
}

fn common(alpn: &[&str], sans: Value) -> Value {
    json!({
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
        "alpn_protocols": alpn,
        "tls_certificate_sds_secret_configs": [sds("default")],
        "combined_validation_context": {
            "default_validation_context": {"match_subject_alt_names": sans},
            "validation_context_sds_secret_config": sds("ROOTCA"),
        },
    })
}

fn inbound_chain(common_tls: Value) -> Value {
    json!({
        "name": "virtualInbound-catchall-tcp",
        "filter_chain_match": {"transport_protocol": "tls"},
        "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "InboundPassthroughClusterIpv4", "cluster": "InboundPassthroughClusterIpv4"}}],
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": DOWNSTREAM, "common_tls_context": common_tls, "require_client_certificate": true}},
        "transport_socket_connect_timeout": "10s",
    })
}

fn decode_listener(chain: Value) -> Result<crate::model::Listener, crate::DecodeError> {
    listener(&pb::<Listener>(json!({
        "name": "virtualInbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
        "filter_chains": [chain],
    })))
}

fn outbound_cluster(tls: Value) -> Value {
    json!({
        "name": "outbound|11211||memcached.ns.svc.cluster.local",
        "type": "STATIC",
        "load_assignment": {"cluster_name": "outbound|11211||memcached.ns.svc.cluster.local", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 11211}}},
             "metadata": {"filter_metadata": {"istio": {"workload": "memcached;ns"},
                "envoy.transport_socket_match": {"tlsMode": "istio"}}}},
            {"endpoint": {"address": {"socket_address": {"address": "10.0.0.2", "port_value": 11211}}}},
        ]}]},
        "transport_socket_matches": [
            {"name": "tlsMode-istio", "match": {"tlsMode": "istio"}, "transport_socket": {
                "name": "envoy.transport_sockets.tls", "typed_config": tls}},
            {"name": "tlsMode-disabled", "match": {}, "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}},
        ],
    })
}

fn upstream_tls(sans: Value) -> Value {
    json!({"@type": UPSTREAM,
        "common_tls_context": common(&["istio-peer-exchange", "istio"], sans),
        "sni": "outbound_.11211_._.memcached.ns.svc.cluster.local"})
}

fn arcs(values: &[&str]) -> Vec<Arc<str>> {
    values.iter().map(|&v| Arc::from(v)).collect()
}

#[test]
fn istio_inbound_mtls_chain() {
    let l = decode_listener(inbound_chain(common(
        &["istio-peer-exchange", "h2", "http/1.1"],
        json!([{"prefix": "spiffe://cluster.local/"}]),
    )))
    .unwrap();
    let chain = &l.filter_chains[0];
    assert_eq!(
        chain.transport_socket,
        TransportSocket::Tls(DownstreamTls {
            require_client_certificate: true,
            common: CommonTls {
                certificate_secret: "default".into(),
                validation: Validation {
                    trusted_ca: "ROOTCA".into(),
                    peer: PeerMatch::TrustDomain("cluster.local".into()),
                },
                alpn_protocols: arcs(&["istio-peer-exchange", "h2", "http/1.1"]),
                params: Default::default(),
            },
        })
    );
    assert_eq!(
        chain.transport_socket_connect_timeout,
        Some(Duration::from_secs(10))
    );
}

#[test]
fn typed_uri_san_matchers_and_plain_sds_validation() {
    let mut tls = common(&[], json!([]));
    tls["combined_validation_context"]["default_validation_context"] = json!({
        "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": "spiffe://td/ns/a/sa/b"}}]});
    let l = decode_listener(inbound_chain(tls)).unwrap();
    let TransportSocket::Tls(t) = &l.filter_chains[0].transport_socket else {
        panic!("not TLS");
    };
    assert_eq!(
        t.common.validation.peer,
        PeerMatch::Exact(arcs(&["spiffe://td/ns/a/sa/b"]))
    );
    assert!(t.common.alpn_protocols.is_empty());

    let mut tls = common(&[], json!([]));
    tls.as_object_mut()
        .unwrap()
        .remove("combined_validation_context");
    tls["validation_context_sds_secret_config"] = sds("ROOTCA");
    let l = decode_listener(inbound_chain(tls)).unwrap();
    let TransportSocket::Tls(t) = &l.filter_chains[0].transport_socket else {
        panic!("not TLS");
    };
    assert_eq!(t.common.validation.peer, PeerMatch::Any);
}

#[test]
fn istio_outbound_transport_socket_matches_pick_by_endpoint_metadata() {
    let c = cluster(&pb::<Cluster>(outbound_cluster(upstream_tls(json!([
        {"exact": "spiffe://cluster.local/ns/ns/sa/memcached"}
    ])))))
    .unwrap();
    let expected = UpstreamTls {
        sni: Some("outbound_.11211_._.memcached.ns.svc.cluster.local".into()),
        common: CommonTls {
            certificate_secret: "default".into(),
            validation: Validation {
                trusted_ca: "ROOTCA".into(),
                peer: PeerMatch::Exact(arcs(&["spiffe://cluster.local/ns/ns/sa/memcached"])),
            },
            alpn_protocols: arcs(&["istio-peer-exchange", "istio"]),
            params: Default::default(),
        },
    };
    assert_eq!(c.transport_socket_matches.len(), 2);
    assert_eq!(&*c.transport_socket_matches[0].name, "tlsMode-istio");
    assert_eq!(
        c.transport_socket_matches[0].criteria,
        BTreeMap::from([(Arc::from("tlsMode"), Arc::from("istio"))])
    );
    assert_eq!(
        c.endpoints[0].transport_socket_metadata,
        BTreeMap::from([(Arc::from("tlsMode"), Arc::from("istio"))])
    );
    assert!(c.endpoints[1].transport_socket_metadata.is_empty());
    assert_eq!(
        c.transport_socket_for(Some(&c.endpoints[0])),
        &TransportSocket::Tls(expected)
    );
    assert_eq!(
        c.transport_socket_for(Some(&c.endpoints[1])),
        &TransportSocket::Raw
    );
    assert_eq!(c.transport_socket_for(None), &TransportSocket::Raw);
    assert_eq!(c.transport_socket, TransportSocket::Raw);
}

#[test]
fn cluster_default_transport_socket_is_tls_when_no_match_applies() {
    let mut c = outbound_cluster(upstream_tls(json!([])));
    let tls = c["transport_socket_matches"][0]["transport_socket"].clone();
    c.as_object_mut()
        .unwrap()
        .remove("transport_socket_matches");
    c["transport_socket"] = tls;
    let c = cluster(&pb::<Cluster>(c)).unwrap();
    assert!(matches!(
        c.transport_socket_for(Some(&c.endpoints[1])),
        TransportSocket::Tls(UpstreamTls {
            common: CommonTls {
                validation: Validation {
                    peer: PeerMatch::Any,
                    ..
                },
                ..
            },
            ..
        })
    ));
}

/// Changes a `common_tls_context` into one vm-proxy rejects.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn what_vm_proxy_cannot_do_yet_is_rejected_by_name() {
    let res = Resource::listener("virtualInbound");
    let cases: Vec<(Edit, &[&str])> = vec![
        (
            Box::new(|t| {
                t["tls_certificate_sds_secret_configs"][0]["name"] =
                    json!("file-cert:/etc/c.pem~/etc/k.pem")
            }),
            &[
                "tls_certificate_sds_secret_configs[0]",
                "file-cert:/etc/c.pem~/etc/k.pem",
            ],
        ),
        (
            Box::new(|t| {
                t["combined_validation_context"]["validation_context_sds_secret_config"]["name"] =
                    json!("file-root:/etc/ca.pem")
            }),
            &[
                "validation_context_sds_secret_config",
                "file-root:/etc/ca.pem",
            ],
        ),
        (
            Box::new(|t| {
                t["tls_params"]["cipher_suites"] = json!(["AES128-GCM-SHA256"]);
                t["tls_params"]["tls_maximum_protocol_version"] = json!("TLSv1_2");
            }),
            &[
                "tls_params.cipher_suites",
                "AES128-GCM-SHA256",
                "none of these",
            ],
        ),
        (
            Box::new(|t| t["tls_params"]["tls_maximum_protocol_version"] = json!("TLSv1_1")),
            &["tls_maximum_protocol_version", "TLSv1_1"],
        ),
        (
            Box::new(|t| {
                t["combined_validation_context"]["default_validation_context"]["match_subject_alt_names"] =
                    json!([{"prefix": "spiffe://cluster.local/ns/"}])
            }),
            &["match_subject_alt_names[0]", "spiffe://cluster.local/ns/"],
        ),
        (
            Box::new(|t| {
                t["combined_validation_context"]["default_validation_context"]["match_subject_alt_names"] =
                    json!([{"exact": "web.example.com"}])
            }),
            &["web.example.com"],
        ),
        (
            Box::new(|t| {
                t["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"] =
                    json!([{"san_type": "DNS", "matcher": {"exact": "a"}}])
            }),
            &["match_typed_subject_alt_names[0]", "URI"],
        ),
        (
            Box::new(|t| {
                t["combined_validation_context"]["default_validation_context"]["crl"] =
                    json!({"filename": "/crl.pem"})
            }),
            &["default_validation_context", "crl"],
        ),
        (
            Box::new(|t| {
                t.as_object_mut()
                    .unwrap()
                    .remove("combined_validation_context");
            }),
            &["without peer validation"],
        ),
        (
            Box::new(|t| {
                t["tls_certificates"] = json!([{"certificate_chain": {"filename": "/c.pem"}}])
            }),
            &["tls_certificates"],
        ),
    ];
    for (edit, parts) in cases {
        let mut tls = common(&["h2"], json!([]));
        edit(&mut tls);
        let err = decode_listener(inbound_chain(tls)).unwrap_err();
        assert_unsupported(&err, &res, parts);
        assert!(
            err.to_string()
                .contains("filter_chains[0].transport_socket.typed_config.common_tls_context"),
            "{err}"
        );
    }

    let mut chain = inbound_chain(common(&[], json!([])));
    chain["transport_socket"]["typed_config"]["require_sni"] = json!(true);
    let err = decode_listener(chain).unwrap_err();
    assert_unsupported(&err, &res, &["require_sni"]);

    let mut c = outbound_cluster(upstream_tls(json!([])));
    c["transport_socket_matches"][0]["match"] = json!({"tlsMode": 1});
    let err = cluster(&pb::<Cluster>(c)).unwrap_err();
    assert_unsupported(
        &err,
        &Resource::cluster("outbound|11211||memcached.ns.svc.cluster.local"),
        &["transport_socket_matches[0]", "match.tlsMode"],
    );
}

#[test]
fn istio_cipher_suites_curves_and_versions_are_carried() {
    let params = |tls_params: Value| {
        let mut tls = common(&[], json!([]));
        tls["tls_params"] = tls_params;
        decode_listener(inbound_chain(tls)).map(|l| match &l.filter_chains[0].transport_socket {
            TransportSocket::Tls(t) => t.common.params.clone(),
            TransportSocket::Raw => panic!("not TLS"),
        })
    };
    // istiod's inbound default: the static-RSA suites are allowed but never offered.
    let p = params(
        json!({"tls_minimum_protocol_version": "TLSv1_2", "cipher_suites": [
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "AES256-GCM-SHA384", "AES128-GCM-SHA256"]}),
    )
    .unwrap();
    use Tls12CipherSuite::*;
    assert_eq!(
        p,
        TlsParams {
            versions: TlsVersions::Tls12And13,
            tls12_cipher_suites: vec![
                EcdheEcdsaAes256GcmSha384,
                EcdheRsaAes256GcmSha384,
                EcdheEcdsaAes128GcmSha256,
                EcdheRsaAes128GcmSha256
            ],
            ecdh_curves: vec![],
        }
    );
    let p = params(json!({"tls_minimum_protocol_version": "TLSv1_3",
        "cipher_suites": ["[ECDHE-ECDSA-CHACHA20-POLY1305|ECDHE-RSA-CHACHA20-POLY1305]"],
        "ecdh_curves": ["P-256", "X25519", "P-521"]}))
    .unwrap();
    assert_eq!(p.versions, TlsVersions::Tls13Only);
    assert_eq!(
        p.tls12_cipher_suites,
        [EcdheEcdsaChacha20Poly1305, EcdheRsaChacha20Poly1305]
    );
    assert_eq!(p.ecdh_curves, [EcdhCurve::P256, EcdhCurve::X25519]);
    let p = params(json!({"tls_maximum_protocol_version": "TLSv1_2"})).unwrap();
    assert_eq!(p.versions, TlsVersions::Tls12Only);
    // A name BoringSSL does not know fails the resource, naming it.
    let err = params(json!({"cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256", "RC4-BOGUS"]}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls_params.cipher_suites[1]") && err.contains("\"RC4-BOGUS\""),
        "{err}"
    );
    let err = params(json!({"ecdh_curves": ["P-999"]}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ecdh_curves[0]") && err.contains("P-999"),
        "{err}"
    );
    let err = params(json!({"tls_minimum_protocol_version": "TLSv1_3",
        "tls_maximum_protocol_version": "TLSv1_2"}))
    .unwrap_err()
    .to_string();
    assert!(err.contains("tls_minimum_protocol_version"), "{err}");
}
