//! Filter-chain selection with Envoy's precedence.
//!
//! The candidate set is pruned one criterion at a time, in this order: destination port,
//! destination IP (longest prefix), server name (exact, then the longest `*.suffix`),
//! transport protocol, application protocols, source type, source IP (longest prefix),
//! source port. At each step only the chains that match most specifically survive; a chain
//! that leaves the criterion empty matches anything, but less specifically than any chain
//! that names a matching value. There is no backtracking: when the most specific chains of a
//! step fail a later step, the connection gets the listener's default chain, or none.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use xds_client::model::{FilterChain, Listener, SourceType};

/// The properties of a connection that filter chains match on.
#[derive(Debug, Clone, Copy)]
pub struct MatchInput<'a> {
    /// The (restored) destination.
    pub destination: SocketAddr,
    pub source: SocketAddr,
    /// SNI from a TLS ClientHello.
    pub server_name: Option<&'a str>,
    /// `tls` or `raw_buffer`.
    pub transport_protocol: &'a str,
    /// ALPN offered by a TLS client, or the protocol an HTTP inspector detected, in the
    /// client's order of preference.
    pub application_protocols: &'a [String],
}

/// The chain that handles a connection: the single most specific match, else the listener's
/// default chain, else `None` (the connection is closed).
pub fn select<'l>(listener: &'l Listener, input: &MatchInput<'_>) -> Option<&'l FilterChain> {
    let dest_ip = input.destination.ip().to_canonical();
    let src_ip = input.source.ip().to_canonical();
    let sni = input.server_name.map(str::to_ascii_lowercase);
    let local = src_ip.is_loopback() || src_ip == dest_ip;

    let mut c: Vec<&FilterChain> = listener.filter_chains.iter().collect();
    keep_best(&mut c, |m| match m.destination_port {
        None => Some(0),
        Some(p) => (p == input.destination.port()).then_some(1),
    });
    keep_best(&mut c, |m| prefix_score(&m.prefix_ranges, dest_ip));
    keep_best(&mut c, |m| {
        server_name_score(&m.server_names, sni.as_deref())
    });
    keep_best(&mut c, |m| match &m.transport_protocol {
        None => Some(0),
        Some(t) => (**t == *input.transport_protocol).then_some(1),
    });
    keep_application_protocol(&mut c, input.application_protocols);
    keep_best(&mut c, |m| match m.source_type {
        SourceType::Any => Some(0),
        SourceType::SameIpOrLoopback => local.then_some(1),
        SourceType::External => (!local).then_some(1),
    });
    keep_best(&mut c, |m| prefix_score(&m.source_prefix_ranges, src_ip));
    keep_best(&mut c, |m| {
        if m.source_ports.is_empty() {
            Some(0)
        } else {
            m.source_ports.contains(&input.source.port()).then_some(1)
        }
    });
    c.first()
        .copied()
        .or(listener.default_filter_chain.as_ref())
}

/// Keeps the chains with the highest score; `None` means the chain does not match at all.
fn keep_best(
    chains: &mut Vec<&FilterChain>,
    score: impl Fn(&xds_client::model::FilterChainMatch) -> Option<u32>,
) {
    let scores: Vec<Option<u32>> = chains
        .iter()
        .map(|c| score(&c.filter_chain_match))
        .collect();
    let Some(best) = scores.iter().flatten().max().copied() else {
        chains.clear();
        return;
    };
    let mut i = 0;
    chains.retain(|_| {
        let keep = scores[i] == Some(best);
        i += 1;
        keep
    });
}

/// Longest matching prefix wins; an empty list matches anything, below any real prefix
/// (so an explicit `0.0.0.0/0` beats it).
fn prefix_score(ranges: &[IpNet], ip: IpAddr) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    ranges
        .iter()
        .filter(|r| r.contains(&ip))
        .map(|r| u32::from(r.prefix_len()) + 1)
        .max()
}

/// Exact name beats any wildcard; a longer `*.suffix` beats a shorter one; `*.example.com`
/// matches names with any number of labels before `.example.com`.
fn server_name_score(names: &[std::sync::Arc<str>], sni: Option<&str>) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    let sni = sni?;
    names
        .iter()
        .filter_map(|n| {
            if n.eq_ignore_ascii_case(sni) {
                Some(u32::MAX)
            } else {
                let suffix = n.strip_prefix('*')?;
                let fits = suffix.starts_with('.')
                    && sni.len() > suffix.len()
                    && sni[sni.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
                fits.then(|| u32::try_from(suffix.len()).unwrap_or(u32::MAX - 1))
            }
        })
        .max()
}

/// The client's most preferred protocol that some chain lists selects those chains; if no
/// offered protocol is listed anywhere, only chains without a protocol requirement remain.
fn keep_application_protocol(chains: &mut Vec<&FilterChain>, offered: &[String]) {
    let listed = |c: &FilterChain, p: &str| {
        c.filter_chain_match
            .application_protocols
            .iter()
            .any(|a| **a == *p)
    };
    match offered.iter().find(|p| chains.iter().any(|c| listed(c, p))) {
        Some(p) => chains.retain(|c| listed(c, p)),
        None => chains.retain(|c| c.filter_chain_match.application_protocols.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use xds_client::model::FilterChainMatch;

    use std::time::Duration;

    use super::*;

    fn chain(name: &str, m: FilterChainMatch) -> FilterChain {
        FilterChain {
            name: name.into(),
            filter_chain_match: m,
            filters: Vec::new(),
            transport_socket: Default::default(),
            transport_socket_connect_timeout: None,
        }
    }

    fn listener(chains: Vec<FilterChain>, default: Option<FilterChain>) -> Listener {
        Listener {
            name: "test".into(),
            address: "0.0.0.0:15006".parse().unwrap(),
            bind_to_port: true,
            use_original_dst: false,
            transparent: false,
            listener_filters: Vec::new(),
            listener_filters_disabled: Vec::new(),
            filter_chains: chains,
            default_filter_chain: default,
            traffic_direction: Default::default(),
            listener_filters_timeout: Some(Duration::from_secs(15)),
            continue_on_listener_filters_timeout: false,
        }
    }

    struct Conn {
        dst: &'static str,
        src: &'static str,
        sni: Option<&'static str>,
        transport: &'static str,
        alpn: Vec<String>,
    }

    fn conn(dst: &'static str) -> Conn {
        Conn {
            dst,
            src: "10.1.1.1:40000",
            sni: None,
            transport: "raw_buffer",
            alpn: Vec::new(),
        }
    }

    fn pick<'l>(l: &'l Listener, c: &Conn) -> Option<&'l str> {
        let input = MatchInput {
            destination: c.dst.parse().unwrap(),
            source: c.src.parse().unwrap(),
            server_name: c.sni,
            transport_protocol: c.transport,
            application_protocols: &c.alpn,
        };
        select(l, &input).map(|fc| &*fc.name)
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn names(s: &[&str]) -> Vec<Arc<str>> {
        s.iter().map(|&n| Arc::from(n)).collect()
    }

    #[test]
    fn destination_port_beats_everything_after_it() {
        let l = listener(
            vec![
                chain(
                    "port",
                    FilterChainMatch {
                        destination_port: Some(8080),
                        ..Default::default()
                    },
                ),
                chain(
                    "ip",
                    FilterChainMatch {
                        prefix_ranges: nets(&["10.0.0.5/32"]),
                        ..Default::default()
                    },
                ),
            ],
            None,
        );
        assert_eq!(pick(&l, &conn("10.0.0.5:8080")), Some("port"));
        assert_eq!(pick(&l, &conn("10.0.0.5:9090")), Some("ip"));
        assert_eq!(pick(&l, &conn("10.0.0.6:9090")), None);
    }

    #[test]
    fn no_backtracking_after_a_more_specific_step() {
        // The port chain wins step 1 but wants TLS; the catch-all would match a plaintext
        // connection, yet Envoy never goes back to it.
        let l = listener(
            vec![
                chain(
                    "port-tls",
                    FilterChainMatch {
                        destination_port: Some(443),
                        transport_protocol: Some("tls".into()),
                        ..Default::default()
                    },
                ),
                chain("catch-all", FilterChainMatch::default()),
            ],
            Some(chain("default", FilterChainMatch::default())),
        );
        assert_eq!(pick(&l, &conn("10.0.0.5:443")), Some("default"));
        let tls = Conn {
            transport: "tls",
            ..conn("10.0.0.5:443")
        };
        assert_eq!(pick(&l, &tls), Some("port-tls"));
        assert_eq!(pick(&l, &conn("10.0.0.5:80")), Some("catch-all"));
    }

    #[test]
    fn longest_destination_prefix_wins_and_empty_is_least_specific() {
        let l = listener(
            vec![
                chain(
                    "any",
                    FilterChainMatch {
                        prefix_ranges: nets(&["0.0.0.0/0"]),
                        ..Default::default()
                    },
                ),
                chain(
                    "net",
                    FilterChainMatch {
                        prefix_ranges: nets(&["10.0.0.0/8", "192.168.0.0/16"]),
                        ..Default::default()
                    },
                ),
                chain(
                    "host",
                    FilterChainMatch {
                        prefix_ranges: nets(&["10.0.0.5/32"]),
                        ..Default::default()
                    },
                ),
                chain("unset", FilterChainMatch::default()),
            ],
            None,
        );
        assert_eq!(pick(&l, &conn("10.0.0.5:1")), Some("host"));
        assert_eq!(pick(&l, &conn("10.9.9.9:1")), Some("net"));
        assert_eq!(pick(&l, &conn("192.168.1.1:1")), Some("net"));
        assert_eq!(pick(&l, &conn("8.8.8.8:1")), Some("any"));
        // IPv6 is outside every IPv4 prefix: only the unset chain matches.
        assert_eq!(pick(&l, &conn("[2001:db8::1]:1")), Some("unset"));
        // A v4-mapped destination matches as IPv4.
        assert_eq!(pick(&l, &conn("[::ffff:10.0.0.5]:1")), Some("host"));
    }

    #[test]
    fn server_names_exact_then_longest_wildcard_then_unset() {
        let l = listener(
            vec![
                chain(
                    "exact",
                    FilterChainMatch {
                        server_names: names(&["www.example.com"]),
                        ..Default::default()
                    },
                ),
                chain(
                    "wild",
                    FilterChainMatch {
                        server_names: names(&["*.example.com"]),
                        ..Default::default()
                    },
                ),
                chain(
                    "wild-com",
                    FilterChainMatch {
                        server_names: names(&["*.com"]),
                        ..Default::default()
                    },
                ),
                chain("unset", FilterChainMatch::default()),
            ],
            None,
        );
        let with = |sni| Conn {
            sni: Some(sni),
            transport: "tls",
            ..conn("10.0.0.5:443")
        };
        assert_eq!(pick(&l, &with("www.example.com")), Some("exact"));
        assert_eq!(pick(&l, &with("WWW.Example.COM")), Some("exact"));
        assert_eq!(pick(&l, &with("api.example.com")), Some("wild"));
        assert_eq!(pick(&l, &with("a.b.example.com")), Some("wild"));
        assert_eq!(pick(&l, &with("other.com")), Some("wild-com"));
        // the suffix itself is not covered by its wildcard
        assert_eq!(pick(&l, &with("example.org")), Some("unset"));
        assert_eq!(pick(&l, &conn("10.0.0.5:443")), Some("unset"));
    }

    #[test]
    fn transport_protocol_exact_beats_unset() {
        let l = listener(
            vec![
                chain(
                    "tls",
                    FilterChainMatch {
                        transport_protocol: Some("tls".into()),
                        ..Default::default()
                    },
                ),
                chain(
                    "raw",
                    FilterChainMatch {
                        transport_protocol: Some("raw_buffer".into()),
                        ..Default::default()
                    },
                ),
            ],
            None,
        );
        let tls = Conn {
            transport: "tls",
            ..conn("10.0.0.5:1")
        };
        assert_eq!(pick(&l, &tls), Some("tls"));
        assert_eq!(pick(&l, &conn("10.0.0.5:1")), Some("raw"));
        let other = Conn {
            transport: "quic",
            ..conn("10.0.0.5:1")
        };
        assert_eq!(pick(&l, &other), None);
    }

    #[test]
    fn application_protocols_follow_client_preference() {
        let l = listener(
            vec![
                chain(
                    "h2",
                    FilterChainMatch {
                        application_protocols: names(&["h2"]),
                        ..Default::default()
                    },
                ),
                chain(
                    "http11",
                    FilterChainMatch {
                        application_protocols: names(&["http/1.1", "http/1.0"]),
                        ..Default::default()
                    },
                ),
                chain("unset", FilterChainMatch::default()),
            ],
            None,
        );
        let offering = |alpn: &[&str]| Conn {
            alpn: alpn.iter().map(|s| s.to_string()).collect(),
            ..conn("10.0.0.5:1")
        };
        assert_eq!(pick(&l, &offering(&["h2", "http/1.1"])), Some("h2"));
        assert_eq!(pick(&l, &offering(&["http/1.1", "h2"])), Some("http11"));
        assert_eq!(pick(&l, &offering(&["istio", "http/1.0"])), Some("http11"));
        assert_eq!(pick(&l, &offering(&["istio"])), Some("unset"));
        assert_eq!(pick(&l, &offering(&[])), Some("unset"));
    }

    #[test]
    fn source_type_local_or_external_beats_any() {
        let l = listener(
            vec![
                chain(
                    "local",
                    FilterChainMatch {
                        source_type: SourceType::SameIpOrLoopback,
                        ..Default::default()
                    },
                ),
                chain(
                    "external",
                    FilterChainMatch {
                        source_type: SourceType::External,
                        ..Default::default()
                    },
                ),
            ],
            None,
        );
        let from = |src| Conn {
            src,
            ..conn("10.0.0.5:80")
        };
        assert_eq!(pick(&l, &from("127.0.0.6:5000")), Some("local"));
        assert_eq!(pick(&l, &from("10.0.0.5:5000")), Some("local"));
        assert_eq!(pick(&l, &from("10.0.0.9:5000")), Some("external"));
        let any_only = listener(vec![chain("any", FilterChainMatch::default())], None);
        assert_eq!(pick(&any_only, &from("10.0.0.9:5000")), Some("any"));
    }

    #[test]
    fn longest_source_prefix_then_source_port() {
        let l = listener(
            vec![
                chain(
                    "net",
                    FilterChainMatch {
                        source_prefix_ranges: nets(&["10.0.0.0/8"]),
                        ..Default::default()
                    },
                ),
                chain(
                    "host",
                    FilterChainMatch {
                        source_prefix_ranges: nets(&["10.1.1.1/32"]),
                        ..Default::default()
                    },
                ),
                chain(
                    "host-port",
                    FilterChainMatch {
                        source_prefix_ranges: nets(&["10.1.1.1/32"]),
                        source_ports: vec![40000, 40001],
                        ..Default::default()
                    },
                ),
            ],
            None,
        );
        let from = |src| Conn {
            src,
            ..conn("10.0.0.5:80")
        };
        assert_eq!(pick(&l, &from("10.1.1.1:40001")), Some("host-port"));
        assert_eq!(pick(&l, &from("10.1.1.1:50000")), Some("host"));
        assert_eq!(pick(&l, &from("10.2.2.2:40000")), Some("net"));
        assert_eq!(pick(&l, &from("172.16.0.1:40000")), None);
    }

    #[test]
    fn default_chain_only_when_nothing_matches() {
        let l = listener(
            vec![chain(
                "port",
                FilterChainMatch {
                    destination_port: Some(80),
                    ..Default::default()
                },
            )],
            Some(chain("default", FilterChainMatch::default())),
        );
        assert_eq!(pick(&l, &conn("10.0.0.5:80")), Some("port"));
        assert_eq!(pick(&l, &conn("10.0.0.5:81")), Some("default"));
        let none = listener(Vec::new(), None);
        assert_eq!(pick(&none, &conn("10.0.0.5:81")), None);
    }
}
