//! The embedded default bootstrap, decoded exactly as `vm-proxy run` decodes it: loopback
//! only, unprivileged ports, Istio's capture listeners and passthrough clusters, and every
//! cluster a listener names defined.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use vm_proxy::config::DEFAULT_BOOTSTRAP;
use xds_client::bootstrap::load_str;
use xds_client::model::{
    ClusterSpecifier, DiscoveryType, EndpointAddress, LbPolicy, Listener, ListenerFilter,
    NetworkFilter,
};

fn at(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The one cluster the listener's only chain proxies to.
fn cluster_of(l: &Listener) -> &str {
    assert_eq!(l.filter_chains.len(), 1, "{}", l.name);
    assert!(l.default_filter_chain.is_none(), "{}", l.name);
    let chain = &l.filter_chains[0];
    let m = &chain.filter_chain_match;
    assert!(
        m.destination_port.is_none() && m.prefix_ranges.is_empty() && m.server_names.is_empty(),
        "{}: matches everything",
        l.name
    );
    let [NetworkFilter::TcpProxy(tcp)] = chain.filters.as_slice() else {
        panic!("{}: {:?}", l.name, chain.filters);
    };
    match &tcp.cluster {
        ClusterSpecifier::Cluster(c) => c,
        other => panic!("{}: {other:?}", l.name),
    }
}

#[test]
fn default_bootstrap_decodes_to_loopback_capture_listeners() {
    let loaded = load_str(DEFAULT_BOOTSTRAP, "default-bootstrap.yaml").expect("decodes");
    let snap = &loaded.snapshot;
    assert_eq!(snap.admin, Some(at("127.0.0.1:15000")));

    let listeners: Vec<(&str, SocketAddr)> = snap
        .listeners
        .iter()
        .map(|l| (&*l.name, l.address))
        .collect();
    assert_eq!(
        listeners,
        [
            ("admin_loopback", at("127.0.0.1:15080")),
            ("outbound", at("127.0.0.1:15001")),
            ("inbound", at("127.0.0.1:15006")),
        ]
    );
    for l in &snap.listeners {
        assert!(l.bind_to_port, "{}", l.name);
        assert!(!l.transparent, "{} needs no CAP_NET_ADMIN", l.name);
        assert!(l.address.ip().is_loopback() && l.address.port() >= 1024);
    }
    let by_name = |n: &str| {
        snap.listeners
            .iter()
            .find(|l| &*l.name == n)
            .unwrap_or_else(|| panic!("no listener {n}"))
    };
    let admin_loopback = by_name("admin_loopback");
    assert!(!admin_loopback.use_original_dst);
    assert!(admin_loopback.listener_filters.is_empty());
    assert_eq!(cluster_of(admin_loopback), "admin");
    let outbound = by_name("outbound");
    assert!(outbound.use_original_dst);
    assert_eq!(outbound.listener_filters, [ListenerFilter::OriginalDst]);
    assert_eq!(cluster_of(outbound), "PassthroughCluster");
    let inbound = by_name("inbound");
    assert!(!inbound.use_original_dst);
    assert_eq!(inbound.listener_filters, [ListenerFilter::OriginalDst]);
    assert_eq!(cluster_of(inbound), "InboundPassthroughCluster");

    let names: HashSet<&str> = snap.clusters.keys().map(|k| &**k).collect();
    assert_eq!(
        names,
        HashSet::from(["admin", "PassthroughCluster", "InboundPassthroughCluster"])
    );
    let admin = &snap.clusters["admin"];
    assert_eq!(admin.discovery, DiscoveryType::Static);
    assert_eq!(admin.connect_timeout, Duration::from_secs(1));
    let endpoints: Vec<&EndpointAddress> = admin.endpoints.iter().map(|e| &e.address).collect();
    assert_eq!(
        endpoints,
        [&EndpointAddress::Socket(at("127.0.0.1:15000"))],
        "the admin server itself"
    );
    for name in ["PassthroughCluster", "InboundPassthroughCluster"] {
        let c = &snap.clusters[name];
        assert_eq!(c.discovery, DiscoveryType::OriginalDst, "{name}");
        assert_eq!(c.lb_policy, LbPolicy::ClusterProvided, "{name}");
        assert!(c.endpoints.is_empty(), "{name}");
    }
    assert_eq!(
        snap.clusters["PassthroughCluster"].upstream_bind_address,
        None
    );
    assert_eq!(
        snap.clusters["InboundPassthroughCluster"].upstream_bind_address,
        Some(at("127.0.0.6:0")),
        "Istio's inbound passthrough source"
    );

    // The admin's config dump shows the bootstrap it was decoded from.
    let dump = loaded.dump.to_json();
    assert_eq!(
        dump["configs"][0]["@type"],
        "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"
    );
    assert_eq!(
        dump["configs"][0]["bootstrap"]["static_resources"]["listeners"][0]["name"],
        "admin_loopback"
    );
}
