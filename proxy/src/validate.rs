//! Checks a snapshot must pass before the data path runs it.
//!
//! The decoder validates what Envoy validates about each resource; these are the checks the
//! data path relies on across resources.

use std::collections::HashSet;

use xds_client::model::{
    CommonTls, DiscoveryType, LbPolicy, NetworkFilter, Snapshot, TransportSocket,
};

use crate::error::Error;
use crate::original_dst::canonical;
use crate::tls;

/// `has_identity`: whether the proxy holds a workload identity for TLS transport sockets.
pub(crate) fn snapshot(s: &Snapshot, has_identity: bool) -> Result<(), Error> {
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    for l in &s.listeners {
        let resource = || format!("listener {}", l.name);
        if !names.insert(&l.name) {
            return Err(Error::invalid(resource(), "duplicate listener name"));
        }
        // Port 0 asks the kernel for any free port, so it never clashes.
        if l.address.port() != 0 && !addresses.insert(canonical(l.address)) {
            return Err(Error::invalid(
                resource(),
                format!("another listener has address {}", l.address),
            ));
        }
        for chain in l.filter_chains.iter().chain(&l.default_filter_chain) {
            if let TransportSocket::Tls(t) = &chain.transport_socket {
                let resource = || format!("listener {} filter chain {}", l.name, chain.name);
                tls_usable(&t.common, has_identity).map_err(|e| Error::invalid(resource(), e))?;
                if !t.require_client_certificate {
                    return Err(Error::invalid(
                        resource(),
                        "TLS without require_client_certificate is not supported (vm-proxy terminates mutual TLS only)",
                    ));
                }
            }
            let terminal = chain
                .filters
                .iter()
                .position(|f| matches!(f, NetworkFilter::TcpProxy(_)));
            if terminal.is_some_and(|i| i + 1 != chain.filters.len()) {
                return Err(Error::invalid(
                    format!("listener {} filter chain {}", l.name, chain.name),
                    "tcp_proxy is a terminal filter and must be the last one",
                ));
            }
        }
    }
    for (name, c) in &s.clusters {
        let sockets = std::iter::once(&c.transport_socket).chain(
            c.transport_socket_matches
                .iter()
                .map(|m| &m.transport_socket),
        );
        for socket in sockets {
            if let TransportSocket::Tls(t) = socket {
                let resource = || format!("cluster {name}");
                tls_usable(&t.common, has_identity).map_err(|e| Error::invalid(resource(), e))?;
                if let Some(sni) = &t.sni {
                    tls::server_name(Some(sni), ([0, 0, 0, 0], 0).into())
                        .map_err(|e| Error::invalid(resource(), e.to_string()))?;
                }
            }
        }
        let original_dst = c.discovery == DiscoveryType::OriginalDst;
        let cluster_provided = c.lb_policy == LbPolicy::ClusterProvided;
        if original_dst != cluster_provided {
            return Err(Error::invalid(
                format!("cluster {name}"),
                format!(
                    "lb_policy {:?} is not valid with discovery type {:?}: ORIGINAL_DST clusters use CLUSTER_PROVIDED and only they do",
                    c.lb_policy, c.discovery
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a TLS transport socket can be set up: an identity to present and SAN matchers
/// that are valid SPIFFE IDs.
fn tls_usable(common: &CommonTls, has_identity: bool) -> Result<(), String> {
    if !has_identity {
        return Err(
            "TLS transport socket, but vm-proxy runs without a workload identity".to_string(),
        );
    }
    tls::matcher(&common.validation.peer).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use xds_client::model::{
        Cluster, ClusterSpecifier, FilterChain, FilterChainMatch, Listener, TcpProxy,
    };

    use super::*;

    fn listener(name: &str, addr: &str, filters: Vec<NetworkFilter>) -> Arc<Listener> {
        Arc::new(Listener {
            name: name.into(),
            address: addr.parse().unwrap(),
            bind_to_port: true,
            use_original_dst: false,
            transparent: false,
            listener_filters: Vec::new(),
            listener_filters_disabled: Vec::new(),
            filter_chains: vec![FilterChain {
                name: "c".into(),
                filter_chain_match: FilterChainMatch::default(),
                filters,
                transport_socket: Default::default(),
                transport_socket_connect_timeout: None,
            }],
            default_filter_chain: None,
            traffic_direction: Default::default(),
            listener_filters_timeout: Some(Duration::from_secs(15)),
            continue_on_listener_filters_timeout: false,
        })
    }

    fn tcp() -> NetworkFilter {
        NetworkFilter::TcpProxy(TcpProxy {
            stat_prefix: "s".into(),
            cluster: ClusterSpecifier::Cluster("x".into()),
            idle_timeout: None,
        })
    }

    fn cluster(discovery: DiscoveryType, lb_policy: LbPolicy) -> Snapshot {
        let mut s = Snapshot::default();
        s.clusters.insert(
            "x".into(),
            Arc::new(Cluster {
                name: "x".into(),
                discovery,
                connect_timeout: Duration::from_secs(1),
                lb_policy,
                upstream_bind_address: None,
                eds_service_name: None,
                dns_lookup_family: Default::default(),
                dns_refresh_rate: Duration::from_secs(5),
                respect_dns_ttl: false,
                transport_socket: Default::default(),
                transport_socket_matches: Vec::new(),
                http: Default::default(),
                circuit_breakers: Default::default(),
                common_lb: Default::default(),
                outlier_detection: None,
                metadata_exchange: None,
                endpoints: Vec::new(),
            }),
        );
        s
    }

    #[test]
    fn names_and_addresses_must_be_unique_except_port_zero() {
        let mut s = Snapshot {
            listeners: vec![
                listener("a", "127.0.0.1:0", vec![tcp()]),
                listener("b", "127.0.0.1:0", vec![tcp()]),
            ],
            ..Default::default()
        };
        assert!(snapshot(&s, false).is_ok());
        s.listeners.push(listener("a", "127.0.0.1:1", vec![tcp()]));
        assert!(
            snapshot(&s, false)
                .unwrap_err()
                .to_string()
                .contains("duplicate listener name")
        );
        s.listeners.pop();
        s.listeners.push(listener("c", "127.0.0.1:7", vec![tcp()]));
        s.listeners.push(listener("d", "127.0.0.1:7", vec![tcp()]));
        let e = snapshot(&s, false).unwrap_err().to_string();
        assert!(e.contains("listener d") && e.contains("127.0.0.1:7"), "{e}");
    }

    #[test]
    fn tcp_proxy_must_be_last() {
        let s = Snapshot {
            listeners: vec![listener("a", "127.0.0.1:0", vec![tcp(), tcp()])],
            ..Default::default()
        };
        let e = snapshot(&s, false).unwrap_err().to_string();
        assert!(e.contains("terminal"), "{e}");
    }

    #[test]
    fn cluster_provided_goes_with_original_dst_only() {
        assert!(
            snapshot_of(&cluster(
                DiscoveryType::OriginalDst,
                LbPolicy::ClusterProvided
            ))
            .is_ok()
        );
        assert!(snapshot_of(&cluster(DiscoveryType::Static, LbPolicy::RoundRobin)).is_ok());
        let e = snapshot_of(&cluster(DiscoveryType::Static, LbPolicy::ClusterProvided))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cluster x:"), "{e}");
        assert!(snapshot_of(&cluster(DiscoveryType::OriginalDst, LbPolicy::RoundRobin)).is_err());
    }

    fn tls() -> xds_client::model::CommonTls {
        xds_client::model::CommonTls {
            certificate_secret: "default".into(),
            validation: xds_client::model::Validation {
                trusted_ca: "ROOTCA".into(),
                peer: xds_client::model::PeerMatch::Any,
            },
            alpn_protocols: Vec::new(),
            params: Default::default(),
        }
    }

    fn snapshot_of(s: &Snapshot) -> Result<(), Error> {
        snapshot(s, false)
    }

    #[test]
    fn tls_transport_sockets_need_an_identity_mutual_tls_and_spiffe_matchers() {
        let downstream = |require_client_certificate| {
            let mut l = listener("a", "127.0.0.1:0", vec![tcp()]);
            Arc::make_mut(&mut l).filter_chains[0].transport_socket =
                TransportSocket::Tls(xds_client::model::DownstreamTls {
                    require_client_certificate,
                    common: tls(),
                });
            Snapshot {
                listeners: vec![l],
                ..Default::default()
            }
        };
        assert!(snapshot(&downstream(true), true).is_ok());
        let e = snapshot(&downstream(true), false).unwrap_err().to_string();
        assert!(
            e.contains("listener a filter chain c") && e.contains("without a workload identity"),
            "{e}"
        );
        let e = snapshot(&downstream(false), true).unwrap_err().to_string();
        assert!(e.contains("require_client_certificate"), "{e}");

        let upstream = |peer, sni: Option<&str>| {
            let mut s = cluster(DiscoveryType::Static, LbPolicy::RoundRobin);
            let c = s.clusters.get_mut("x").unwrap();
            let mut common = tls();
            common.validation.peer = peer;
            Arc::make_mut(c).transport_socket_matches.push(
                xds_client::model::TransportSocketMatch {
                    name: "tlsMode-istio".into(),
                    criteria: Default::default(),
                    transport_socket: TransportSocket::Tls(xds_client::model::UpstreamTls {
                        sni: sni.map(Into::into),
                        common,
                    }),
                },
            );
            s
        };
        let exact = |id: &str| xds_client::model::PeerMatch::Exact(vec![id.into()]);
        let good = upstream(
            exact("spiffe://td/ns/a/sa/b"),
            Some("outbound_.80_._.a.svc.cluster.local"),
        );
        assert!(snapshot(&good, true).is_ok());
        let e = snapshot(&good, false).unwrap_err().to_string();
        assert!(
            e.contains("cluster x") && e.contains("without a workload identity"),
            "{e}"
        );
        let e = snapshot(&upstream(exact("spiffe://Bad/x"), None), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cluster x") && e.contains("spiffe://Bad/x"),
            "{e}"
        );
        let e = snapshot(
            &upstream(xds_client::model::PeerMatch::Any, Some("bad sni!")),
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad sni!"), "{e}");
    }
}
