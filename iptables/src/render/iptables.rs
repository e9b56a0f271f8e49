//! Istio's `istio-iptables` rule layout (1.25 and later), generated per address family.
//!
//! The order of the calls below is the order of the rules in the output; it follows Istio's
//! generator so that the text is identical, including the quirks (for instance gid rules never
//! carving out port 53, and `--to-port` for the UDP DNS redirect).

use super::restore::{Position, RuleSet, Table};
use super::{AGENT_DNS_PORT, PASSTHROUGH_SOURCE_V4, PASSTHROUGH_SOURCE_V6, V6_LOOPBACK};
use crate::config::{
    CaptureConfig, InboundPorts, InterceptionMode, OUTBOUND_MARK, OutboundRanges, OwnerGroups,
};
use crate::plan::IptablesRules;

const INBOUND: &str = "ISTIO_INBOUND";
const REDIRECT: &str = "ISTIO_REDIRECT";
const IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
const OUTPUT: &str = "ISTIO_OUTPUT";
const OUTPUT_DNS: &str = "ISTIO_OUTPUT_DNS";
const DIVERT: &str = "ISTIO_DIVERT";
const TPROXY: &str = "ISTIO_TPROXY";
const DROP: &str = "ISTIO_DROP";

/// Which families a rule is added to; IPv6 ones are dropped when IPv6 is off.
#[derive(Clone, Copy)]
enum Families {
    Both,
    V4,
    V6,
}

struct Builder {
    ipv6: bool,
    v4: RuleSet,
    v6: RuleSet,
}

impl Builder {
    fn add(
        &mut self,
        families: Families,
        position: Position,
        table: Table,
        chain: &'static str,
        spec: &str,
    ) {
        if matches!(families, Families::Both | Families::V4) {
            self.v4.push(position, table, chain, spec.to_string());
        }
        if self.ipv6 && matches!(families, Families::Both | Families::V6) {
            self.v6.push(position, table, chain, spec.to_string());
        }
    }

    fn append(&mut self, table: Table, chain: &'static str, spec: &str) {
        self.add(Families::Both, Position::Append, table, chain, spec);
    }

    fn append_v4(&mut self, table: Table, chain: &'static str, spec: &str) {
        self.add(Families::V4, Position::Append, table, chain, spec);
    }

    fn append_v6(&mut self, table: Table, chain: &'static str, spec: &str) {
        self.add(Families::V6, Position::Append, table, chain, spec);
    }

    /// One rule per family that differs only in an address: `make` gets the family's value.
    fn append_versioned(
        &mut self,
        table: Table,
        chain: &'static str,
        v4: &str,
        v6: &str,
        make: impl Fn(&str) -> String,
    ) {
        self.append_v4(table, chain, &make(v4));
        self.append_v6(table, chain, &make(v6));
    }

    fn insert(
        &mut self,
        families: Families,
        table: Table,
        chain: &'static str,
        at: u32,
        spec: &str,
    ) {
        self.add(families, Position::Insert(at), table, chain, spec);
    }
}

/// Renders the restore text for IPv4, and for IPv6 when `enable_ipv6` is set.
pub(crate) fn render(cfg: &CaptureConfig) -> IptablesRules {
    let mut b = Builder {
        ipv6: cfg.enable_ipv6,
        v4: RuleSet::default(),
        v6: RuleSet::default(),
    };
    generate(cfg, &mut b);
    IptablesRules {
        v4: b.v4.restore_text(),
        v6: cfg.enable_ipv6.then(|| b.v6.restore_text()),
    }
}

fn generate(cfg: &CaptureConfig, b: &mut Builder) {
    let tproxy = cfg.inbound_mode == InterceptionMode::Tproxy;
    let dns = cfg.dns_capture_active();
    let loopback = cfg.host_ipv4_loopback_cidr.to_string();
    let tunnel = cfg.inbound_tunnel_port;

    for nic in &cfg.exclude_interfaces {
        b.append(Table::Nat, "PREROUTING", &format!("-i {nic} -j RETURN"));
        b.append(Table::Nat, "OUTPUT", &format!("-o {nic} -j RETURN"));
    }
    if tproxy {
        for nic in &cfg.exclude_interfaces {
            b.append(Table::Mangle, "PREROUTING", &format!("-i {nic} -j RETURN"));
            b.append(Table::Mangle, "OUTPUT", &format!("-o {nic} -j RETURN"));
        }
    }
    for nic in &cfg.kube_virt_interfaces {
        b.insert(
            Families::Both,
            Table::Nat,
            "PREROUTING",
            1,
            &format!("-i {nic} -j RETURN"),
        );
    }
    if cfg.drop_invalid {
        b.append(
            Table::Mangle,
            "PREROUTING",
            &format!("-m conntrack --ctstate INVALID -j {DROP}"),
        );
        b.append(Table::Mangle, DROP, "-j DROP");
    }

    b.append(
        Table::Nat,
        INBOUND,
        &format!("-p tcp --dport {tunnel} -j RETURN"),
    );
    b.append(
        Table::Nat,
        REDIRECT,
        &format!("-p tcp -j REDIRECT --to-ports {}", cfg.proxy_port),
    );
    b.append(
        Table::Nat,
        IN_REDIRECT,
        &format!("-p tcp -j REDIRECT --to-ports {}", cfg.inbound_capture_port),
    );

    inbound(cfg, b, &loopback);

    b.append(Table::Nat, "OUTPUT", &format!("-j {OUTPUT}"));
    for port in &cfg.outbound_ports_exclude {
        b.append(
            Table::Nat,
            OUTPUT,
            &format!("-p tcp --dport {port} -j RETURN"),
        );
        b.append(
            Table::Nat,
            OUTPUT,
            &format!("-p udp --dport {port} -j RETURN"),
        );
    }
    b.append_versioned(
        Table::Nat,
        OUTPUT,
        PASSTHROUGH_SOURCE_V4,
        PASSTHROUGH_SOURCE_V6,
        |src| format!("-o lo -s {src} -j RETURN"),
    );

    let app_loopback_returns = !cfg.includes_loopback_range();
    for uid in &cfg.proxy_uids {
        b.append_versioned(Table::Nat, OUTPUT, &loopback, V6_LOOPBACK, |lo| {
            if dns {
                format!(
                    "-o lo ! -d {lo} -p tcp -m multiport ! --dports 53,{tunnel} -m owner --uid-owner {uid} -j {IN_REDIRECT}"
                )
            } else {
                format!("-o lo ! -d {lo} -p tcp ! --dport {tunnel} -m owner --uid-owner {uid} -j {IN_REDIRECT}")
            }
        });
        if app_loopback_returns {
            let spec = if dns {
                format!("-o lo -p tcp ! --dport 53 -m owner ! --uid-owner {uid} -j RETURN")
            } else {
                format!("-o lo -m owner ! --uid-owner {uid} -j RETURN")
            };
            b.append(Table::Nat, OUTPUT, &spec);
        }
        b.append(
            Table::Nat,
            OUTPUT,
            &format!("-m owner --uid-owner {uid} -j RETURN"),
        );
    }
    for gid in &cfg.proxy_gids {
        b.append_versioned(Table::Nat, OUTPUT, &loopback, V6_LOOPBACK, |lo| {
            format!("-o lo ! -d {lo} -p tcp ! --dport {tunnel} -m owner --gid-owner {gid} -j {IN_REDIRECT}")
        });
        if app_loopback_returns {
            let spec = if dns {
                format!("-o lo -p tcp ! --dport 53 -m owner ! --gid-owner {gid} -j RETURN")
            } else {
                format!("-o lo -m owner ! --gid-owner {gid} -j RETURN")
            };
            b.append(Table::Nat, OUTPUT, &spec);
        }
        b.append(
            Table::Nat,
            OUTPUT,
            &format!("-m owner --gid-owner {gid} -j RETURN"),
        );
    }

    match &cfg.owner_groups {
        OwnerGroups::AllExcept(groups) => {
            for group in groups {
                b.append(
                    Table::Nat,
                    OUTPUT,
                    &format!("-m owner --gid-owner {group} -j RETURN"),
                );
            }
        }
        OwnerGroups::Only(groups) => {
            let mut spec: String = groups
                .iter()
                .map(|g| format!("-m owner ! --gid-owner {g} "))
                .collect();
            spec.push_str("-j RETURN");
            b.append(Table::Nat, OUTPUT, &spec);
        }
    }

    if dns {
        dns_rules(cfg, b);
    }

    b.append_versioned(Table::Nat, OUTPUT, &loopback, V6_LOOPBACK, |lo| {
        format!("-d {lo} -j RETURN")
    });
    for cidr in &cfg.outbound_ranges_exclude {
        let spec = format!("-d {cidr} -j RETURN");
        match cidr {
            ipnet::IpNet::V4(_) => b.append_v4(Table::Nat, OUTPUT, &spec),
            ipnet::IpNet::V6(_) => b.append_v6(Table::Nat, OUTPUT, &spec),
        }
    }
    for port in &cfg.outbound_ports {
        b.append(
            Table::Nat,
            OUTPUT,
            &format!("-p tcp --dport {port} -j {REDIRECT}"),
        );
    }
    outbound_includes(cfg, b);

    if tproxy {
        tproxy_marks(cfg, b, &loopback);
    }
}

fn inbound(cfg: &CaptureConfig, b: &mut Builder, loopback: &str) {
    if cfg.inbound_ports == InboundPorts::None {
        return;
    }
    let tproxy = cfg.inbound_mode == InterceptionMode::Tproxy;
    let table = if tproxy {
        let mark = cfg.tproxy_mark;
        b.append(Table::Mangle, DIVERT, &format!("-j MARK --set-mark {mark}"));
        b.append(Table::Mangle, DIVERT, "-j ACCEPT");
        b.append_versioned(Table::Mangle, TPROXY, loopback, V6_LOOPBACK, |lo| {
            format!(
                "! -d {lo} -p tcp -j TPROXY --tproxy-mark {mark}/0xffffffff --on-port {}",
                cfg.inbound_capture_port
            )
        });
        Table::Mangle
    } else {
        Table::Nat
    };
    b.append(table, "PREROUTING", &format!("-p tcp -j {INBOUND}"));
    match &cfg.inbound_ports {
        InboundPorts::None => {}
        InboundPorts::All { except } => {
            for port in except {
                b.append(table, INBOUND, &format!("-p tcp --dport {port} -j RETURN"));
            }
            if tproxy {
                b.append(
                    table,
                    INBOUND,
                    &format!("-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j {DIVERT}"),
                );
                b.append(table, INBOUND, &format!("-p tcp -j {TPROXY}"));
            } else {
                b.append(table, INBOUND, &format!("-p tcp -j {IN_REDIRECT}"));
            }
        }
        InboundPorts::Only(ports) => {
            for port in ports {
                if tproxy {
                    b.append(
                        table,
                        INBOUND,
                        &format!(
                            "-p tcp --dport {port} -m conntrack --ctstate RELATED,ESTABLISHED -j {DIVERT}"
                        ),
                    );
                    b.append(
                        table,
                        INBOUND,
                        &format!("-p tcp --dport {port} -j {TPROXY}"),
                    );
                } else {
                    b.append(
                        table,
                        INBOUND,
                        &format!("-p tcp --dport {port} -j {IN_REDIRECT}"),
                    );
                }
            }
        }
    }
}

/// DNS to the agent on 15053, and the conntrack zones that keep the app↔agent and agent↔resolver
/// UDP flows (same 5-tuple after NAT) apart.
fn dns_rules(cfg: &CaptureConfig, b: &mut Builder) {
    let all = cfg.capture_all_dns;
    let has_v4 = cfg.dns_servers_v4().next().is_some();
    let has_v6 = cfg.dns_servers_v6().next().is_some();

    b.append(Table::Raw, "OUTPUT", &format!("-j {OUTPUT_DNS}"));
    if all || has_v4 {
        b.append_v4(Table::Nat, OUTPUT, &format!("-j {OUTPUT_DNS}"));
    }
    if all || has_v6 {
        b.append_v6(Table::Nat, OUTPUT, &format!("-j {OUTPUT_DNS}"));
    }

    for (proto, to_ports) in [("tcp", "--to-ports"), ("udp", "--to-port")] {
        if all {
            b.append(
                Table::Nat,
                OUTPUT_DNS,
                &format!("-p {proto} --dport 53 -j REDIRECT {to_ports} {AGENT_DNS_PORT}"),
            );
            continue;
        }
        for s in cfg.dns_servers_v4() {
            b.append_v4(
                Table::Nat,
                OUTPUT_DNS,
                &format!(
                    "-p {proto} --dport 53 -d {}/32 -j REDIRECT {to_ports} {AGENT_DNS_PORT}",
                    s.as_str()
                ),
            );
        }
        for s in cfg.dns_servers_v6() {
            b.append_v6(
                Table::Nat,
                OUTPUT_DNS,
                &format!(
                    "-p {proto} --dport 53 -d {}/128 -j REDIRECT {to_ports} {AGENT_DNS_PORT}",
                    s.as_str()
                ),
            );
        }
    }

    for (kind, ids) in [("uid", &cfg.proxy_uids), ("gid", &cfg.proxy_gids)] {
        for id in ids {
            b.append(
                Table::Raw,
                OUTPUT_DNS,
                &format!("-p udp --dport 53 -m owner --{kind}-owner {id} -j CT --zone 1"),
            );
            b.append(
                Table::Raw,
                OUTPUT_DNS,
                &format!(
                    "-p udp --sport {AGENT_DNS_PORT} -m owner --{kind}-owner {id} -j CT --zone 2"
                ),
            );
        }
    }

    if all {
        b.append(Table::Raw, "PREROUTING", &format!("-j {INBOUND}"));
        b.append(Table::Raw, OUTPUT_DNS, "-p udp --dport 53 -j CT --zone 2");
        b.append(Table::Raw, INBOUND, "-p udp --sport 53 -j CT --zone 1");
        return;
    }
    if has_v4 {
        b.append_v4(Table::Raw, "PREROUTING", &format!("-j {INBOUND}"));
    }
    for s in cfg.dns_servers_v4() {
        let s = s.as_str();
        b.append_v4(
            Table::Raw,
            OUTPUT_DNS,
            &format!("-p udp --dport 53 -d {s}/32 -j CT --zone 2"),
        );
        b.append_v4(
            Table::Raw,
            INBOUND,
            &format!("-p udp --sport 53 -s {s}/32 -j CT --zone 1"),
        );
    }
    if has_v6 {
        b.append_v6(Table::Raw, "PREROUTING", &format!("-j {INBOUND}"));
    }
    for s in cfg.dns_servers_v6() {
        let s = s.as_str();
        b.append_v6(
            Table::Raw,
            OUTPUT_DNS,
            &format!("-p udp --dport 53 -d {s}/128 -j CT --zone 2"),
        );
        b.append_v6(
            Table::Raw,
            INBOUND,
            &format!("-p udp --sport 53 -s {s}/128 -j CT --zone 1"),
        );
    }
}

fn outbound_includes(cfg: &CaptureConfig, b: &mut Builder) {
    match &cfg.outbound_ranges {
        OutboundRanges::None => {}
        OutboundRanges::All => {
            b.append(Table::Nat, OUTPUT, &format!("-j {REDIRECT}"));
            for nic in &cfg.kube_virt_interfaces {
                b.insert(
                    Families::Both,
                    Table::Nat,
                    "PREROUTING",
                    1,
                    &format!("-i {nic} -j {REDIRECT}"),
                );
            }
        }
        OutboundRanges::Cidrs(cidrs) => {
            // Each family gets its own ranges, v4 first, as two separate passes.
            for want_v6 in [false, true] {
                let families = if want_v6 { Families::V6 } else { Families::V4 };
                for cidr in cidrs
                    .iter()
                    .filter(|c| matches!(c, ipnet::IpNet::V6(_)) == want_v6)
                {
                    for nic in &cfg.kube_virt_interfaces {
                        b.insert(
                            families,
                            Table::Nat,
                            "PREROUTING",
                            1,
                            &format!("-i {nic} -d {cidr} -j {REDIRECT}"),
                        );
                    }
                    b.add(
                        families,
                        Position::Append,
                        Table::Nat,
                        OUTPUT,
                        &format!("-d {cidr} -j {REDIRECT}"),
                    );
                }
            }
        }
    }
}

/// TPROXY bookkeeping: keep Envoy's original-source mark on the connection, mark proxy→app
/// loopback traffic with 1338 so it is not captured again, and restore marks for policy routing.
fn tproxy_marks(cfg: &CaptureConfig, b: &mut Builder, loopback: &str) {
    let mark = cfg.tproxy_mark;
    b.append(
        Table::Mangle,
        "PREROUTING",
        &format!("-p tcp -m mark --mark {mark} -j CONNMARK --save-mark"),
    );
    b.append(
        Table::Mangle,
        "OUTPUT",
        &format!("-p tcp -o lo -m mark --mark {mark} -j RETURN"),
    );
    for (kind, ids) in [("uid", &cfg.proxy_uids), ("gid", &cfg.proxy_gids)] {
        for id in ids {
            b.append_versioned(Table::Mangle, "OUTPUT", loopback, V6_LOOPBACK, |lo| {
                format!("! -d {lo} -p tcp -o lo -m owner --{kind}-owner {id} -j MARK --set-mark {OUTBOUND_MARK}")
            });
        }
    }
    b.append(
        Table::Mangle,
        "OUTPUT",
        &format!("-p tcp -m connmark --mark {mark} -j CONNMARK --restore-mark"),
    );
    b.insert(
        Families::Both,
        Table::Mangle,
        INBOUND,
        1,
        &format!("-p tcp -m mark --mark {mark} -j RETURN"),
    );
    b.insert(
        Families::V4,
        Table::Mangle,
        INBOUND,
        2,
        &format!("-p tcp -s {PASSTHROUGH_SOURCE_V4} -i lo -j RETURN"),
    );
    b.insert(
        Families::V6,
        Table::Mangle,
        INBOUND,
        2,
        &format!("-p tcp -s {PASSTHROUGH_SOURCE_V6} -i lo -j RETURN"),
    );
    b.insert(
        Families::Both,
        Table::Mangle,
        INBOUND,
        3,
        &format!("-p tcp -i lo -m mark ! --mark {OUTBOUND_MARK} -j RETURN"),
    );
}
