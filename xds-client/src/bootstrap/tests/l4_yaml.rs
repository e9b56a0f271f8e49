use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{L4_YAML, L4_YAML_PATH};
use crate::bootstrap::{load_file, load_str};
use crate::model::{
    ClusterSpecifier, DiscoveryType, DnsLookupFamily, EndpointAddress, HealthStatus, LbPolicy,
    ListenerFilter, NetworkFilter, Snapshot, SourceType, TcpProxy,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn only_tcp_proxy(filters: &[NetworkFilter]) -> &TcpProxy {
    assert_eq!(filters.len(), 1);
    let NetworkFilter::TcpProxy(tcp) = &filters[0] else {
        panic!("expected tcp_proxy");
    };
    tcp
}

fn single_cluster(tcp: &TcpProxy) -> &str {
    match &tcp.cluster {
        ClusterSpecifier::Cluster(name) => name,
        other => panic!("expected one cluster, got {other:?}"),
    }
}

fn check_snapshot(s: &Snapshot) {
    assert_eq!(s.admin, Some(addr("127.0.0.1:15000")));
    let names: Vec<&str> = s.listeners.iter().map(|l| &*l.name).collect();
    assert_eq!(
        names,
        ["virtualOutbound", "virtualInbound", "10.0.0.5_5432"]
    );

    let outbound = &s.listeners[0];
    assert_eq!(outbound.address, addr("0.0.0.0:15001"));
    assert!(outbound.bind_to_port && outbound.use_original_dst && !outbound.transparent);
    assert!(outbound.listener_filters.is_empty());
    assert_eq!(outbound.filter_chains.len(), 2);
    let blackhole = &outbound.filter_chains[0];
    assert_eq!(&*blackhole.name, "virtualOutbound-blackhole");
    assert_eq!(blackhole.filter_chain_match.destination_port, Some(15001));
    let tcp = only_tcp_proxy(&blackhole.filters);
    assert_eq!(single_cluster(tcp), "BlackHoleCluster");
    assert_eq!(&*tcp.stat_prefix, "BlackHoleCluster");
    assert_eq!(tcp.idle_timeout, Some(Duration::from_secs(3600)));
    let catchall = &outbound.filter_chains[1];
    assert_eq!(catchall.filter_chain_match.destination_port, None);
    let tcp = only_tcp_proxy(&catchall.filters);
    assert_eq!(single_cluster(tcp), "PassthroughCluster");
    assert_eq!(tcp.idle_timeout, None);
    assert!(outbound.default_filter_chain.is_none());

    let inbound = &s.listeners[1];
    assert_eq!(inbound.address, addr("0.0.0.0:15006"));
    assert!(inbound.bind_to_port && !inbound.use_original_dst && inbound.transparent);
    assert_eq!(
        inbound.listener_filters,
        [ListenerFilter::OriginalDst, ListenerFilter::TlsInspector]
    );
    assert_eq!(
        inbound.listener_filters_timeout,
        Some(Duration::from_secs(1))
    );
    assert!(inbound.continue_on_listener_filters_timeout);
    let chain = &inbound.filter_chains[0];
    assert_eq!(&*chain.name, "inbound|8080||");
    let m = &chain.filter_chain_match;
    assert_eq!(m.destination_port, Some(8080));
    assert_eq!(m.prefix_ranges, ["10.0.0.0/8".parse().unwrap()]);
    assert_eq!(m.transport_protocol.as_deref(), Some("raw_buffer"));
    assert!(m.server_names.is_empty() && m.application_protocols.is_empty());
    assert_eq!(m.source_type, SourceType::Any);
    let tcp = only_tcp_proxy(&chain.filters);
    assert_eq!(tcp.idle_timeout, Some(Duration::from_secs(300)));
    let ClusterSpecifier::Weighted(weighted) = &tcp.cluster else {
        panic!("expected weighted clusters, got {:?}", tcp.cluster)
    };
    let weighted: Vec<(&str, u32)> = weighted.iter().map(|w| (&*w.name, w.weight)).collect();
    assert_eq!(
        weighted,
        [("inbound|8080||", 90), ("InboundPassthroughCluster", 10)]
    );
    let default = inbound.default_filter_chain.as_ref().unwrap();
    assert_eq!(&*default.name, "virtualInbound-passthrough");
    assert_eq!(
        single_cluster(only_tcp_proxy(&default.filters)),
        "InboundPassthroughCluster"
    );

    let service = &s.listeners[2];
    assert_eq!(service.address, addr("10.0.0.5:5432"));
    assert!(!service.bind_to_port);
    assert_eq!(
        single_cluster(only_tcp_proxy(&service.filter_chains[0].filters)),
        "outbound|5432||db"
    );

    assert_eq!(s.clusters.len(), 5);
    let blackhole = &s.clusters["BlackHoleCluster"];
    assert_eq!(blackhole.discovery, DiscoveryType::Static);
    assert_eq!(blackhole.connect_timeout, Duration::from_secs(10));
    assert!(blackhole.endpoints.is_empty());

    let passthrough = &s.clusters["PassthroughCluster"];
    assert_eq!(passthrough.discovery, DiscoveryType::OriginalDst);
    assert_eq!(passthrough.lb_policy, LbPolicy::ClusterProvided);
    assert_eq!(passthrough.upstream_bind_address, None);
    let inbound_passthrough = &s.clusters["InboundPassthroughCluster"];
    assert_eq!(inbound_passthrough.discovery, DiscoveryType::OriginalDst);
    assert_eq!(
        inbound_passthrough.upstream_bind_address,
        Some(addr("127.0.0.6:0"))
    );

    let local = &s.clusters["inbound|8080||"];
    assert_eq!(local.discovery, DiscoveryType::Static);
    assert_eq!(local.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(local.connect_timeout, Duration::from_secs(1));
    assert_eq!(local.endpoints.len(), 1);
    assert_eq!(
        local.endpoints[0].address,
        EndpointAddress::Socket(addr("127.0.0.1:8080"))
    );
    assert_eq!(local.endpoints[0].load_balancing_weight, 1);
    assert_eq!(local.endpoints[0].health_status, HealthStatus::Unknown);

    let db = &s.clusters["outbound|5432||db"];
    assert_eq!(db.discovery, DiscoveryType::StrictDns);
    assert_eq!(db.lb_policy, LbPolicy::LeastRequest);
    assert_eq!(db.dns_lookup_family, DnsLookupFamily::V4Only);
    assert_eq!(db.dns_refresh_rate, Duration::from_secs(5));
    let endpoints: Vec<(&EndpointAddress, u32)> = db
        .endpoints
        .iter()
        .map(|e| (&e.address, e.load_balancing_weight))
        .collect();
    assert_eq!(
        endpoints,
        [
            (
                &EndpointAddress::Dns {
                    host: "db.internal.example".into(),
                    port: 5432
                },
                2
            ),
            (&EndpointAddress::Socket(addr("10.0.0.6:5432")), 1),
        ]
    );
    for cluster in s.clusters.values() {
        assert_eq!(cluster.eds_service_name, None);
    }
}

#[test]
fn yaml_bootstrap_decodes_in_detail() {
    let loaded = load_str(L4_YAML, "l4-bootstrap.yaml").unwrap();
    check_snapshot(&loaded.snapshot);
}

#[test]
fn file_and_json_forms_give_the_same_snapshot() {
    let loaded = load_file(Path::new(L4_YAML_PATH)).unwrap();
    check_snapshot(&loaded.snapshot);

    // The same document as JSON, picked by content since the origin has no extension.
    let value: serde_json::Value = serde_saphyr::from_str(L4_YAML).unwrap();
    let loaded = load_str(&value.to_string(), "inline").unwrap();
    check_snapshot(&loaded.snapshot);
}
