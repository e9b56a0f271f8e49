//! Istio's `istio-nftables` rule layout: the same decisions as the iptables generator, written as
//! nft expressions in `inet` tables, where one rule serves both families unless it matches an
//! address (then an `ip6` twin is added when IPv6 is on).

use super::transaction::{NftTable, Transaction};
use super::{AGENT_DNS_PORT, PASSTHROUGH_SOURCE_V4, PASSTHROUGH_SOURCE_V6, V6_LOOPBACK};
use crate::config::{
    CaptureConfig, InboundPorts, InterceptionMode, OUTBOUND_MARK, OutboundRanges, OwnerGroups,
};

const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
const INBOUND: &str = "istio-inbound";
const REDIRECT: &str = "istio-redirect";
const IN_REDIRECT: &str = "istio-in-redirect";
const ISTIO_OUTPUT: &str = "istio-output";
const OUTPUT_DNS: &str = "istio-output-dns";
const DIVERT: &str = "istio-divert";
const TPROXY: &str = "istio-tproxy";
const DROP: &str = "istio-drop";

use NftTable::{Mangle, Nat, Raw};

/// Renders the whole transaction.
pub(crate) fn render(cfg: &CaptureConfig) -> String {
    let mut tx = Transaction::new(cfg.enable_ipv6);
    generate(cfg, &mut tx);
    tx.render()
}

fn generate(cfg: &CaptureConfig, tx: &mut Transaction) {
    let tproxy = cfg.inbound_mode == InterceptionMode::Tproxy;
    let dns = cfg.dns_capture_active();
    let lo4 = cfg.host_ipv4_loopback_cidr.to_string();
    let tunnel = cfg.inbound_tunnel_port;

    for nic in &cfg.exclude_interfaces {
        tx.add(Nat, PREROUTING, format!("iifname {nic} counter return"));
        tx.add(Nat, OUTPUT, format!("oifname {nic} counter return"));
    }
    if tproxy {
        for nic in &cfg.exclude_interfaces {
            tx.add(Mangle, PREROUTING, format!("iifname {nic} counter return"));
            tx.add(Mangle, OUTPUT, format!("oifname {nic} counter return"));
        }
    }
    for nic in &cfg.kube_virt_interfaces {
        tx.insert(Nat, PREROUTING, 0, format!("iifname {nic} counter return"));
    }
    if cfg.drop_invalid {
        tx.add(
            Mangle,
            PREROUTING,
            format!("meta l4proto tcp ct state invalid counter jump {DROP}"),
        );
        tx.add(Mangle, DROP, "counter drop".to_string());
    }

    tx.add(
        Nat,
        INBOUND,
        format!("meta l4proto tcp tcp dport {tunnel} counter return"),
    );
    tx.add(
        Nat,
        REDIRECT,
        format!("meta l4proto tcp counter redirect to :{}", cfg.proxy_port),
    );
    tx.add(
        Nat,
        IN_REDIRECT,
        format!(
            "meta l4proto tcp counter redirect to :{}",
            cfg.inbound_capture_port
        ),
    );

    inbound(cfg, tx, &lo4);

    tx.add(Nat, OUTPUT, format!("counter jump {ISTIO_OUTPUT}"));
    for port in &cfg.outbound_ports_exclude {
        tx.add(
            Nat,
            ISTIO_OUTPUT,
            format!("tcp dport {port} counter return"),
        );
        tx.add(
            Nat,
            ISTIO_OUTPUT,
            format!("udp dport {port} counter return"),
        );
    }
    tx.add(
        Nat,
        ISTIO_OUTPUT,
        format!("oifname lo ip saddr {PASSTHROUGH_SOURCE_V4} counter return"),
    );
    tx.add_v6(
        Nat,
        ISTIO_OUTPUT,
        format!("oifname lo ip6 saddr {PASSTHROUGH_SOURCE_V6} counter return"),
    );

    let app_loopback_returns = !cfg.includes_loopback_range();
    for (key, ids) in [("skuid", &cfg.proxy_uids), ("skgid", &cfg.proxy_gids)] {
        for id in ids {
            // Only the uid rules leave port 53 alone, as in Istio.
            let ports = if dns && key == "skuid" {
                format!("{{ 53, {tunnel} }}")
            } else {
                tunnel.to_string()
            };
            tx.add(
                Nat,
                ISTIO_OUTPUT,
                format!(
                    "oifname lo meta l4proto tcp ip daddr != {lo4} tcp dport != {ports} {key} {id} counter jump {IN_REDIRECT}"
                ),
            );
            tx.add_v6(
                Nat,
                ISTIO_OUTPUT,
                format!(
                    "oifname lo meta l4proto tcp ip6 daddr != {V6_LOOPBACK} tcp dport != {ports} {key} {id} counter jump {IN_REDIRECT}"
                ),
            );
            if app_loopback_returns {
                let expr = if dns {
                    format!(
                        "oifname lo meta l4proto tcp tcp dport != 53 {key} != {id} counter return"
                    )
                } else {
                    format!("oifname lo {key} != {id} counter return")
                };
                tx.add(Nat, ISTIO_OUTPUT, expr);
            }
            tx.add(Nat, ISTIO_OUTPUT, format!("{key} {id} counter return"));
        }
    }

    match &cfg.owner_groups {
        OwnerGroups::AllExcept(groups) => {
            for group in groups {
                tx.add(Nat, ISTIO_OUTPUT, format!("skgid {group} counter return"));
            }
        }
        OwnerGroups::Only(groups) => {
            let mut expr: String = groups.iter().map(|g| format!("skgid != {g} ")).collect();
            expr.push_str("counter return");
            tx.add(Nat, ISTIO_OUTPUT, expr);
        }
    }

    if dns {
        dns_rules(cfg, tx);
    }

    tx.add(Nat, ISTIO_OUTPUT, format!("ip daddr {lo4} counter return"));
    tx.add_v6(
        Nat,
        ISTIO_OUTPUT,
        format!("ip6 daddr {V6_LOOPBACK} counter return"),
    );
    for cidr in cfg.outbound_ranges_exclude.iter().filter(|c| is_v4(c)) {
        tx.add(Nat, ISTIO_OUTPUT, format!("ip daddr {cidr} counter return"));
    }
    for cidr in cfg.outbound_ranges_exclude.iter().filter(|c| !is_v4(c)) {
        tx.add_v6(
            Nat,
            ISTIO_OUTPUT,
            format!("ip6 daddr {cidr} counter return"),
        );
    }
    for port in &cfg.outbound_ports {
        tx.add(
            Nat,
            ISTIO_OUTPUT,
            format!("tcp dport {port} counter jump {REDIRECT}"),
        );
    }
    outbound_includes(cfg, tx);

    if tproxy {
        tproxy_marks(cfg, tx, &lo4);
    }
}

fn is_v4(cidr: &ipnet::IpNet) -> bool {
    matches!(cidr, ipnet::IpNet::V4(_))
}

fn inbound(cfg: &CaptureConfig, tx: &mut Transaction, lo4: &str) {
    if cfg.inbound_ports == InboundPorts::None {
        return;
    }
    let tproxy = cfg.inbound_mode == InterceptionMode::Tproxy;
    let table = if tproxy {
        let mark = cfg.tproxy_mark;
        let port = cfg.inbound_capture_port;
        tx.add(Mangle, DIVERT, format!("counter meta mark set {mark}"));
        tx.add(Mangle, DIVERT, "counter accept".to_string());
        tx.add(
            Mangle,
            TPROXY,
            format!(
                "meta l4proto tcp ip daddr != {lo4} tproxy ip to :{port} meta mark set {mark} counter accept"
            ),
        );
        tx.add_v6(
            Mangle,
            TPROXY,
            format!(
                "meta l4proto tcp ip6 daddr != {V6_LOOPBACK} tproxy ip6 to :{port} meta mark set {mark} counter accept"
            ),
        );
        Mangle
    } else {
        Nat
    };
    tx.add(
        table,
        PREROUTING,
        format!("meta l4proto tcp counter jump {INBOUND}"),
    );
    match &cfg.inbound_ports {
        InboundPorts::None => {}
        InboundPorts::All { except } => {
            for port in except {
                tx.add(
                    table,
                    INBOUND,
                    format!("meta l4proto tcp tcp dport {port} counter return"),
                );
            }
            if tproxy {
                tx.add(
                    table,
                    INBOUND,
                    format!("meta l4proto tcp ct state related,established counter jump {DIVERT}"),
                );
                tx.add(
                    table,
                    INBOUND,
                    format!("meta l4proto tcp counter jump {TPROXY}"),
                );
            } else {
                tx.add(
                    table,
                    INBOUND,
                    format!("meta l4proto tcp counter jump {IN_REDIRECT}"),
                );
            }
        }
        InboundPorts::Only(ports) => {
            for port in ports {
                if tproxy {
                    tx.add(
                        table,
                        INBOUND,
                        format!(
                            "meta l4proto tcp ct state related,established tcp dport {port} counter jump {DIVERT}"
                        ),
                    );
                    tx.add(
                        table,
                        INBOUND,
                        format!("meta l4proto tcp tcp dport {port} counter jump {TPROXY}"),
                    );
                } else {
                    tx.add(
                        table,
                        INBOUND,
                        format!("meta l4proto tcp tcp dport {port} counter jump {IN_REDIRECT}"),
                    );
                }
            }
        }
    }
}

fn dns_rules(cfg: &CaptureConfig, tx: &mut Transaction) {
    let all = cfg.capture_all_dns;
    let any_server = !cfg.dns_servers.is_empty();

    tx.add(Raw, OUTPUT, format!("counter jump {OUTPUT_DNS}"));
    if all || any_server {
        tx.add(Nat, ISTIO_OUTPUT, format!("counter jump {OUTPUT_DNS}"));
    }

    for proto in ["tcp", "udp"] {
        if all {
            // Istio spells the TCP one with an explicit protocol match and the UDP one without.
            let l4 = if proto == "tcp" {
                "meta l4proto tcp "
            } else {
                ""
            };
            tx.add(
                Nat,
                OUTPUT_DNS,
                format!("{l4}{proto} dport 53 counter redirect to :{AGENT_DNS_PORT}"),
            );
            continue;
        }
        for s in cfg.dns_servers_v4() {
            tx.add(
                Nat,
                OUTPUT_DNS,
                format!(
                    "ip daddr {}/32 {proto} dport 53 counter redirect to :{AGENT_DNS_PORT}",
                    s.as_str()
                ),
            );
        }
        for s in cfg.dns_servers_v6() {
            tx.add_v6(
                Nat,
                OUTPUT_DNS,
                format!(
                    "ip6 daddr {}/128 {proto} dport 53 counter redirect to :{AGENT_DNS_PORT}",
                    s.as_str()
                ),
            );
        }
    }

    for (key, ids) in [("skuid", &cfg.proxy_uids), ("skgid", &cfg.proxy_gids)] {
        for id in ids {
            tx.add(
                Raw,
                OUTPUT_DNS,
                format!("udp dport 53 meta {key} {id} counter ct zone set 1"),
            );
            tx.add(
                Raw,
                OUTPUT_DNS,
                format!("udp sport {AGENT_DNS_PORT} meta {key} {id} counter ct zone set 2"),
            );
        }
    }

    if all {
        tx.add(Raw, PREROUTING, format!("counter jump {INBOUND}"));
        tx.add(
            Raw,
            OUTPUT_DNS,
            "udp dport 53 counter ct zone set 2".to_string(),
        );
        tx.add(
            Raw,
            INBOUND,
            "udp sport 53 counter ct zone set 1".to_string(),
        );
        return;
    }
    if any_server {
        tx.add(Raw, PREROUTING, format!("counter jump {INBOUND}"));
    }
    for s in cfg.dns_servers_v4() {
        let s = s.as_str();
        tx.add(
            Raw,
            OUTPUT_DNS,
            format!("udp dport 53 ip daddr {s}/32 counter ct zone set 2"),
        );
        tx.add(
            Raw,
            INBOUND,
            format!("udp sport 53 ip saddr {s}/32 counter ct zone set 1"),
        );
    }
    for s in cfg.dns_servers_v6() {
        let s = s.as_str();
        tx.add_v6(
            Raw,
            OUTPUT_DNS,
            format!("udp dport 53 ip6 daddr {s}/128 counter ct zone set 2"),
        );
        tx.add_v6(
            Raw,
            INBOUND,
            format!("udp sport 53 ip6 saddr {s}/128 counter ct zone set 1"),
        );
    }
}

fn outbound_includes(cfg: &CaptureConfig, tx: &mut Transaction) {
    match &cfg.outbound_ranges {
        OutboundRanges::None => {}
        OutboundRanges::All => {
            tx.add(Nat, ISTIO_OUTPUT, format!("counter jump {REDIRECT}"));
            for nic in &cfg.kube_virt_interfaces {
                tx.insert(
                    Nat,
                    PREROUTING,
                    0,
                    format!("iifname {nic} counter jump {REDIRECT}"),
                );
            }
        }
        OutboundRanges::Cidrs(cidrs) => {
            for cidr in cidrs.iter().filter(|c| is_v4(c)) {
                for nic in &cfg.kube_virt_interfaces {
                    tx.insert(
                        Nat,
                        PREROUTING,
                        0,
                        format!("iifname {nic} ip daddr {cidr} counter jump {REDIRECT}"),
                    );
                }
                tx.add(
                    Nat,
                    ISTIO_OUTPUT,
                    format!("ip daddr {cidr} counter jump {REDIRECT}"),
                );
            }
            for cidr in cidrs.iter().filter(|c| !is_v4(c)) {
                for nic in &cfg.kube_virt_interfaces {
                    tx.insert_v6(
                        Nat,
                        PREROUTING,
                        0,
                        format!("iifname {nic} ip6 daddr {cidr} counter jump {REDIRECT}"),
                    );
                }
                tx.add_v6(
                    Nat,
                    ISTIO_OUTPUT,
                    format!("ip6 daddr {cidr} counter jump {REDIRECT}"),
                );
            }
        }
    }
}

fn tproxy_marks(cfg: &CaptureConfig, tx: &mut Transaction, lo4: &str) {
    let mark = cfg.tproxy_mark;
    tx.add(
        Mangle,
        PREROUTING,
        format!("meta l4proto tcp mark {mark} counter ct mark set mark"),
    );
    tx.add(
        Mangle,
        OUTPUT,
        format!("oifname lo meta l4proto tcp mark {mark} counter return"),
    );
    for (key, ids) in [("skuid", &cfg.proxy_uids), ("skgid", &cfg.proxy_gids)] {
        for id in ids {
            tx.add(
                Mangle,
                OUTPUT,
                format!(
                    "oifname lo meta l4proto tcp ip daddr != {lo4} {key} {id} counter meta mark set {OUTBOUND_MARK}"
                ),
            );
            tx.add_v6(
                Mangle,
                OUTPUT,
                format!(
                    "oifname lo meta l4proto tcp ip6 daddr != {V6_LOOPBACK} {key} {id} counter meta mark set {OUTBOUND_MARK}"
                ),
            );
        }
    }
    tx.add(
        Mangle,
        OUTPUT,
        format!("meta l4proto tcp ct mark {mark} counter meta mark set ct mark"),
    );
    tx.insert(
        Mangle,
        INBOUND,
        0,
        format!("meta l4proto tcp mark {mark} counter return"),
    );
    tx.insert(
        Mangle,
        INBOUND,
        1,
        format!("iifname lo meta l4proto tcp ip saddr {PASSTHROUGH_SOURCE_V4} counter return"),
    );
    tx.insert_v6(
        Mangle,
        INBOUND,
        1,
        format!("iifname lo meta l4proto tcp ip6 saddr {PASSTHROUGH_SOURCE_V6} counter return"),
    );
    tx.insert(
        Mangle,
        INBOUND,
        2,
        format!("iifname lo meta l4proto tcp mark != {OUTBOUND_MARK} counter return"),
    );
}
