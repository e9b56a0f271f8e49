//! The validated, typed input of rule generation, and the parsers that produce its values.
//!
//! Every parser takes the `origin` of the value (the flag, and the environment variable it came
//! from) so that an error says exactly which setting is wrong.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::error::ConfigError;

/// Istio marks proxy-to-application packets with this in TPROXY mode; the inbound mark must differ.
pub const OUTBOUND_MARK: u32 = 1338;

/// Most owner groups whose traffic can be captured: Istio renders them as one rule with one
/// `--gid-owner` match each, and kernels limit matches per rule.
pub const MAX_OWNER_GROUPS_INCLUDE: usize = 64;

/// Istio's default for `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`.
pub const DEFAULT_HOST_IPV4_LOOPBACK_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::LOCALHOST, 32);

/// Everything that decides which packet rules are generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Envoy's outbound listener (`--envoy-port`).
    pub proxy_port: u16,
    /// Envoy's inbound listener (`--inbound-capture-port`).
    pub inbound_capture_port: u16,
    /// The HBONE tunnel port, never captured inbound (`--inbound-tunnel-port`).
    pub inbound_tunnel_port: u16,
    /// Processes running as these users are never captured (`--proxy-uid`).
    pub proxy_uids: Vec<u32>,
    /// Processes running with these groups are never captured (`--proxy-gid`).
    pub proxy_gids: Vec<u32>,
    pub inbound_mode: InterceptionMode,
    pub inbound_ports: InboundPorts,
    /// Interfaces whose traffic is left alone in both directions.
    pub exclude_interfaces: Vec<String>,
    /// Destinations captured outbound.
    pub outbound_ranges: OutboundRanges,
    /// Destinations never captured outbound, checked before `outbound_ranges`.
    pub outbound_ranges_exclude: Vec<IpNet>,
    /// TCP destination ports always captured outbound.
    pub outbound_ports: Vec<u16>,
    /// TCP and UDP destination ports never captured outbound.
    pub outbound_ports_exclude: Vec<u16>,
    /// Interfaces whose inbound traffic is treated as outbound (e.g. `docker0`).
    pub kube_virt_interfaces: Vec<String>,
    pub tproxy_mark: u32,
    pub tproxy_route_table: u32,
    /// Capture DNS to the agent on port 15053.
    pub redirect_dns: bool,
    /// With `redirect_dns`: capture all port-53 traffic, not only traffic to `dns_servers`.
    pub capture_all_dns: bool,
    /// The resolvers whose DNS traffic is captured.
    pub dns_servers: Vec<Nameserver>,
    pub drop_invalid: bool,
    /// Generate IPv6 rules as well (Istio's `EnableIPv6`).
    pub enable_ipv6: bool,
    pub owner_groups: OwnerGroups,
    /// The "loopback" destination of the owner rules and the final RETURN.
    pub host_ipv4_loopback_cidr: Ipv4Net,
}

impl CaptureConfig {
    /// The base configuration of Istio's generator tests (`constructTestConfig`): ports
    /// 15001/15006/15008, uid and gid 1337, TPROXY mark 1337 and table 133, all owner groups,
    /// loopback `127.0.0.1/32`, and nothing captured or enabled beyond that.
    pub fn istio_test_base() -> Self {
        CaptureConfig {
            proxy_port: 15001,
            inbound_capture_port: 15006,
            inbound_tunnel_port: 15008,
            proxy_uids: vec![1337],
            proxy_gids: vec![1337],
            inbound_mode: InterceptionMode::Redirect,
            inbound_ports: InboundPorts::None,
            exclude_interfaces: Vec::new(),
            outbound_ranges: OutboundRanges::None,
            outbound_ranges_exclude: Vec::new(),
            outbound_ports: Vec::new(),
            outbound_ports_exclude: Vec::new(),
            kube_virt_interfaces: Vec::new(),
            tproxy_mark: 1337,
            tproxy_route_table: 133,
            redirect_dns: false,
            capture_all_dns: false,
            dns_servers: Vec::new(),
            drop_invalid: false,
            enable_ipv6: false,
            owner_groups: OwnerGroups::AllExcept(Vec::new()),
            host_ipv4_loopback_cidr: DEFAULT_HOST_IPV4_LOOPBACK_CIDR,
        }
    }

    /// Whether DNS rules are generated: asking for DNS capture without servers and without
    /// `capture_all_dns` captures nothing, exactly as in Istio.
    pub fn dns_capture_active(&self) -> bool {
        self.redirect_dns && (self.capture_all_dns || !self.dns_servers.is_empty())
    }

    /// Whether an included outbound range is a loopback range; app-to-app loopback traffic is
    /// then captured instead of being returned early.
    pub fn includes_loopback_range(&self) -> bool {
        match &self.outbound_ranges {
            OutboundRanges::Cidrs(cidrs) => cidrs.iter().any(|c| c.addr().is_loopback()),
            OutboundRanges::None | OutboundRanges::All => false,
        }
    }

    pub(crate) fn dns_servers_v4(&self) -> impl Iterator<Item = &Nameserver> {
        self.dns_servers.iter().filter(|s| !s.is_ipv6())
    }

    pub(crate) fn dns_servers_v6(&self) -> impl Iterator<Item = &Nameserver> {
        self.dns_servers.iter().filter(|s| s.is_ipv6())
    }
}

/// How inbound connections reach Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    /// NAT `REDIRECT` (the default; the original destination is read with `SO_ORIGINAL_DST`).
    Redirect,
    /// `TPROXY` in the mangle table with policy routing; keeps the original source address.
    Tproxy,
}

/// Which inbound TCP ports are captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    None,
    /// `*`: every port except these.
    All {
        except: Vec<u16>,
    },
    Only(Vec<u16>),
}

/// Which outbound destinations are captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundRanges {
    None,
    /// `*`
    All,
    Cidrs(Vec<IpNet>),
}

/// Whose outbound traffic is captured, by the socket owner's group (name or gid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerGroups {
    /// Every group except these.
    AllExcept(Vec<String>),
    /// Only these groups; an empty list captures no one.
    Only(Vec<String>),
}

/// A resolver address, kept in the spelling it was given because it is written into the rules
/// as is (Istio does the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nameserver {
    addr: IpAddr,
    text: String,
}

impl Nameserver {
    /// Parses an IPv4 or IPv6 address, keeping its spelling.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let addr = text.parse().ok()?;
        Some(Nameserver {
            addr,
            text: text.to_string(),
        })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl From<IpAddr> for Nameserver {
    /// The canonical spelling, the one Istio uses for servers read from `/etc/resolv.conf`.
    fn from(addr: IpAddr) -> Self {
        Nameserver {
            addr,
            text: addr.to_string(),
        }
    }
}

/// Istio's list splitting: comma separated, empty entries dropped (we also drop surrounding blanks).
pub(crate) fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Go's `strconv.ParseBool`, which is what Istio accepts for booleans.
pub fn parse_go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!(
            "{other:?} is not a boolean (use true/false, 1/0, t/f)"
        )),
    }
}

pub(crate) fn parse_port(origin: &str, value: &str) -> Result<u16, ConfigError> {
    port_of(value.trim()).map_err(|reason| ConfigError::invalid(origin, value, reason))
}

fn port_of(entry: &str) -> Result<u16, String> {
    match entry.parse::<u16>() {
        Ok(0) => Err(format!("{entry:?} is not a port (0 is reserved)")),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("{entry:?} is not a port")),
    }
}

pub(crate) fn parse_port_list(origin: &str, value: &str) -> Result<Vec<u16>, ConfigError> {
    split_list(value)
        .map(port_of)
        .collect::<Result<_, _>>()
        .map_err(|reason| ConfigError::invalid(origin, value, reason))
}

/// Inbound ports: empty = none, `*` = all (minus `except`), else a port list.
pub(crate) fn parse_inbound_ports(
    origin: &str,
    value: &str,
    except: Vec<u16>,
) -> Result<InboundPorts, ConfigError> {
    match value.trim() {
        "" => Ok(InboundPorts::None),
        "*" => Ok(InboundPorts::All { except }),
        _ => {
            let ports = parse_port_list(origin, value)?;
            if ports.is_empty() {
                Ok(InboundPorts::None)
            } else {
                Ok(InboundPorts::Only(ports))
            }
        }
    }
}

/// A comma list of numeric user or group ids (at least one).
pub(crate) fn parse_id_list(
    origin: &str,
    value: &str,
    kind: &str,
) -> Result<Vec<u32>, ConfigError> {
    let ids = split_list(value)
        .map(|entry| match entry.parse::<u32>() {
            Ok(u32::MAX) => Err(format!(
                "{entry:?} is not a valid {kind} ((uid_t)-1 is reserved)"
            )),
            Ok(id) => Ok(id),
            Err(_) => Err(format!("{entry:?} is not a numeric {kind}")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| ConfigError::invalid(origin, value, reason))?;
    if ids.is_empty() {
        return Err(ConfigError::invalid(
            origin,
            value,
            format!("no {kind} given"),
        ));
    }
    Ok(ids)
}

pub(crate) fn parse_interception_mode(
    origin: &str,
    value: &str,
) -> Result<InterceptionMode, ConfigError> {
    match value.trim() {
        "" | "REDIRECT" => Ok(InterceptionMode::Redirect),
        "TPROXY" => Ok(InterceptionMode::Tproxy),
        _ => Err(ConfigError::invalid(
            origin,
            value,
            "the interception mode is REDIRECT or TPROXY",
        )),
    }
}

/// A comma list of interface names, checked the way the kernel checks device names.
pub(crate) fn parse_interfaces(origin: &str, value: &str) -> Result<Vec<String>, ConfigError> {
    split_list(value)
        .map(|name| {
            let bad = if name.len() > 15 {
                Some("is longer than 15 bytes")
            } else if name == "." || name == ".." {
                Some("is reserved")
            } else if name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
            {
                Some("contains '/', ':', a blank or a control character")
            } else {
                None
            };
            match bad {
                Some(why) => Err(format!("interface name {name:?} {why}")),
                None => Ok(name.to_string()),
            }
        })
        .collect::<Result<_, _>>()
        .map_err(|reason| ConfigError::invalid(origin, value, reason))
}

fn cidr_of(entry: &str) -> Result<IpNet, String> {
    if entry == "*" {
        return Err("\"*\" cannot be combined with other ranges".to_string());
    }
    entry
        .parse::<IpNet>()
        .map_err(|_| format!("{entry:?} is not a CIDR (address/prefix-length)"))
}

/// Outbound ranges to capture: empty = none, `*` = everything, else CIDRs.
pub(crate) fn parse_outbound_ranges(
    origin: &str,
    value: &str,
) -> Result<OutboundRanges, ConfigError> {
    match value.trim() {
        "" => Ok(OutboundRanges::None),
        "*" => Ok(OutboundRanges::All),
        _ => {
            let cidrs = split_list(value)
                .map(cidr_of)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| ConfigError::invalid(origin, value, reason))?;
            if cidrs.is_empty() {
                Ok(OutboundRanges::None)
            } else {
                Ok(OutboundRanges::Cidrs(cidrs))
            }
        }
    }
}

/// Outbound ranges never captured; `*` is refused because it would disable outbound capture
/// while looking like a configuration of it (Istio refuses it too).
pub(crate) fn parse_excluded_ranges(origin: &str, value: &str) -> Result<Vec<IpNet>, ConfigError> {
    if value.trim() == "*" {
        return Err(ConfigError::invalid(
            origin,
            value,
            "\"*\" is not allowed here; to capture nothing outbound leave --istio-service-cidr empty",
        ));
    }
    split_list(value)
        .map(cidr_of)
        .collect::<Result<_, _>>()
        .map_err(|reason| ConfigError::invalid(origin, value, reason))
}

pub(crate) fn parse_mark(origin: &str, value: &str) -> Result<u32, ConfigError> {
    match value.trim().parse::<u32>() {
        Ok(0) => Err(ConfigError::invalid(
            origin,
            value,
            "0 means unmarked and cannot be the TPROXY mark",
        )),
        Ok(mark) => Ok(mark),
        Err(_) => Err(ConfigError::invalid(
            origin,
            value,
            "the mark is a number from 1 to 4294967295",
        )),
    }
}

pub(crate) fn parse_route_table(origin: &str, value: &str) -> Result<u32, ConfigError> {
    match value.trim().parse::<u32>() {
        Ok(0) => Err(ConfigError::invalid(
            origin,
            value,
            "table 0 is unspecified",
        )),
        Ok(table @ 253..=255) => Err(ConfigError::invalid(
            origin,
            value,
            format!("table {table} is reserved (default, main, local)"),
        )),
        Ok(table) => Ok(table),
        Err(_) => Err(ConfigError::invalid(
            origin,
            value,
            "the routing table is a number from 1 to 4294967295",
        )),
    }
}

fn group_of(entry: &str) -> Result<String, String> {
    let portable = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let name = entry.strip_suffix('$').unwrap_or(entry);
    if name.is_empty() || !name.chars().all(portable) || name.starts_with('-') {
        return Err(format!("{entry:?} is neither a group name nor a gid"));
    }
    Ok(entry.to_string())
}

/// The owner-group filter from `ISTIO_OUTBOUND_OWNER_GROUPS` (`*` or a list) and
/// `ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE` (a list, only meaningful with `*`).
pub(crate) fn parse_owner_groups(
    include_origin: &str,
    include: &str,
    exclude_origin: &str,
    exclude: &str,
) -> Result<OwnerGroups, ConfigError> {
    let parse = |origin: &str, value: &str| -> Result<Vec<String>, ConfigError> {
        split_list(value)
            .map(group_of)
            .collect::<Result<_, _>>()
            .map_err(|reason| ConfigError::invalid(origin, value, reason))
    };
    let excluded = parse(exclude_origin, exclude)?;
    if include.trim() == "*" {
        return Ok(OwnerGroups::AllExcept(excluded));
    }
    if !excluded.is_empty() {
        return Err(ConfigError::Conflict {
            first: include_origin.to_string(),
            second: exclude_origin.to_string(),
            reason: "exclusions only apply when all groups (\"*\") are included".to_string(),
        });
    }
    let included = parse(include_origin, include)?;
    if included.len() > MAX_OWNER_GROUPS_INCLUDE {
        return Err(ConfigError::invalid(
            include_origin,
            include,
            format!(
                "at most {MAX_OWNER_GROUPS_INCLUDE} groups can be included, got {}",
                included.len()
            ),
        ));
    }
    Ok(OwnerGroups::Only(included))
}

/// The IPv4 loopback CIDR: an IPv4 loopback address with a prefix length from 8 to 32.
pub(crate) fn parse_loopback_cidr(origin: &str, value: &str) -> Result<Ipv4Net, ConfigError> {
    let net: Ipv4Net = value.trim().parse().map_err(|_| {
        ConfigError::invalid(origin, value, "not an IPv4 CIDR (address/prefix-length)")
    })?;
    if !net.addr().is_loopback() {
        return Err(ConfigError::invalid(
            origin,
            value,
            format!("{} is not an IPv4 loopback address", net.addr()),
        ));
    }
    if net.prefix_len() < 8 {
        return Err(ConfigError::invalid(
            origin,
            value,
            format!("prefix length {} is outside 8..=32", net.prefix_len()),
        ));
    }
    Ok(net)
}

/// A comma list of resolver addresses, IPv4 and IPv6 mixed.
pub(crate) fn parse_nameservers(origin: &str, value: &str) -> Result<Vec<Nameserver>, ConfigError> {
    split_list(value)
        .map(|entry| {
            Nameserver::parse(entry).ok_or_else(|| format!("{entry:?} is not an IP address"))
        })
        .collect::<Result<_, _>>()
        .map_err(|reason| ConfigError::invalid(origin, value, reason))
}

/// The `nameserver` entries of a resolv.conf, in the canonical spelling Istio normalises them to.
/// Entries that are not plain addresses (for example with a `%zone`) cannot appear in a rule and
/// are skipped with a warning.
pub fn parse_resolv_conf(contents: &str) -> Vec<Nameserver> {
    contents
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let entry = words.next()?;
            match entry.parse::<IpAddr>() {
                Ok(addr) => Some(Nameserver::from(addr)),
                Err(_) => {
                    tracing::warn!(
                        nameserver = entry,
                        "ignoring resolv.conf nameserver that is not an IP address"
                    );
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(err: ConfigError) -> String {
        err.to_string()
    }

    #[test]
    fn go_bool_forms() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Ok(false), "{f}");
        }
        for bad in ["yes", "tRUE", "", "2"] {
            assert!(parse_go_bool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_list_names_the_bad_entry() {
        let err = parse_port_list("--istio-inbound-ports", "80,abc").unwrap_err();
        assert_eq!(
            message(err),
            r#"--istio-inbound-ports: "80,abc": "abc" is not a port"#
        );
        assert_eq!(
            parse_port_list("-x", "6000,7000,").unwrap(),
            vec![6000, 7000]
        );
        assert!(parse_port_list("-x", "0").is_err());
        assert!(parse_port_list("-x", "65536").is_err());
        assert!(parse_port_list("-x", "*").is_err());
    }

    #[test]
    fn single_port() {
        assert_eq!(parse_port("--envoy-port", "15001").unwrap(), 15001);
        let err = parse_port("--envoy-port", "").unwrap_err();
        assert!(message(err).starts_with("--envoy-port: \"\":"));
    }

    #[test]
    fn inbound_ports_forms() {
        assert_eq!(
            parse_inbound_ports("-b", "", vec![22]).unwrap(),
            InboundPorts::None
        );
        assert_eq!(
            parse_inbound_ports("-b", "*", vec![22]).unwrap(),
            InboundPorts::All { except: vec![22] }
        );
        assert_eq!(
            parse_inbound_ports("-b", "32000,31000", vec![]).unwrap(),
            InboundPorts::Only(vec![32000, 31000])
        );
        assert!(parse_inbound_ports("-b", "*,80", vec![]).is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id_list("-u", "3,4", "uid").unwrap(), vec![3, 4]);
        assert!(parse_id_list("-u", "istio-proxy", "uid").is_err());
        assert!(parse_id_list("-u", ",", "uid").is_err());
        assert!(parse_id_list("-u", "-1", "uid").is_err());
        assert!(parse_id_list("-u", "4294967295", "uid").is_err());
    }

    #[test]
    fn interception_modes() {
        assert_eq!(
            parse_interception_mode("-m", "").unwrap(),
            InterceptionMode::Redirect
        );
        assert_eq!(
            parse_interception_mode("-m", "TPROXY").unwrap(),
            InterceptionMode::Tproxy
        );
        let err =
            parse_interception_mode("--istio-inbound-interception-mode", "tproxy").unwrap_err();
        assert!(message(err).contains("REDIRECT or TPROXY"));
    }

    #[test]
    fn interfaces() {
        assert_eq!(
            parse_interfaces("-c", "eth0,docker0").unwrap(),
            vec!["eth0", "docker0"]
        );
        assert!(parse_interfaces("-c", "a-very-long-interface-name").is_err());
        assert!(parse_interfaces("-c", "eth0:1").is_err());
        assert!(parse_interfaces("-c", "a/b").is_err());
        assert!(parse_interfaces("-c", "..").is_err());
        assert!(parse_interfaces("-c", "eth 0").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_outbound_ranges("-i", "*").unwrap(),
            OutboundRanges::All
        );
        assert_eq!(
            parse_outbound_ranges("-i", "").unwrap(),
            OutboundRanges::None
        );
        let OutboundRanges::Cidrs(cidrs) =
            parse_outbound_ranges("-i", "10.0.0.0/8,2001:db8::/32").unwrap()
        else {
            panic!("expected CIDRs");
        };
        assert_eq!(cidrs.len(), 2);
        assert!(parse_outbound_ranges("-i", "10.0.0.0").is_err());
        assert!(parse_outbound_ranges("-i", "*,10.0.0.0/8").is_err());
        let err = parse_excluded_ranges("--istio-service-exclude-cidr", "*").unwrap_err();
        assert!(message(err).starts_with("--istio-service-exclude-cidr: \"*\":"));
        assert!(parse_excluded_ranges("-x", "1.1.0.0/16").is_ok());
        assert!(parse_excluded_ranges("-x", "1.1.0.0/33").is_err());
    }

    #[test]
    fn marks_and_tables() {
        assert_eq!(parse_mark("-t", "1337").unwrap(), 1337);
        assert!(parse_mark("-t", "0").is_err());
        assert!(parse_mark("-t", "0x539").is_err());
        assert_eq!(parse_route_table("-r", "133").unwrap(), 133);
        for reserved in ["0", "253", "254", "255", "main"] {
            assert!(parse_route_table("-r", reserved).is_err(), "{reserved}");
        }
    }

    #[test]
    fn owner_groups() {
        assert_eq!(
            parse_owner_groups("I", "*", "E", "888,ftp").unwrap(),
            OwnerGroups::AllExcept(vec!["888".into(), "ftp".into()])
        );
        assert_eq!(
            parse_owner_groups("I", "java,202", "E", "").unwrap(),
            OwnerGroups::Only(vec!["java".into(), "202".into()])
        );
        let err = parse_owner_groups(
            "--owner-groups-include",
            "java",
            "--owner-groups-exclude",
            "ftp",
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Conflict { .. }));
        assert!(message(err).contains("--owner-groups-include and --owner-groups-exclude"));
        assert!(parse_owner_groups("I", "a b", "E", "").is_err());
        let many = (0..65).map(|g| g.to_string()).collect::<Vec<_>>().join(",");
        assert!(parse_owner_groups("I", &many, "E", "").is_err());
    }

    #[test]
    fn loopback_cidr() {
        assert_eq!(
            parse_loopback_cidr("L", "127.0.0.1/8").unwrap().to_string(),
            "127.0.0.1/8"
        );
        assert!(parse_loopback_cidr("L", "10.0.0.1/32").is_err());
        assert!(parse_loopback_cidr("L", "127.0.0.1/7").is_err());
        assert!(parse_loopback_cidr("L", "::1/128").is_err());
        assert!(parse_loopback_cidr("L", "127.0.0.1").is_err());
    }

    #[test]
    fn nameservers_keep_spelling() {
        let servers = parse_nameservers("--dns-servers", "127.0.0.53, ::127.0.0.53").unwrap();
        assert_eq!(servers[0].as_str(), "127.0.0.53");
        assert_eq!(servers[1].as_str(), "::127.0.0.53");
        assert!(servers[1].is_ipv6());
        assert!(parse_nameservers("--dns-servers", "dns.google").is_err());
    }

    #[test]
    fn resolv_conf_nameservers() {
        let conf = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver ::127.0.0.53 # x\n\
                    nameserver fe80::1%eth0\nnameserver\noptions edns0\n";
        let servers = parse_resolv_conf(conf);
        let texts: Vec<_> = servers.iter().map(Nameserver::as_str).collect();
        assert_eq!(texts, vec!["127.0.0.53", "::7f00:35"]);
    }

    #[test]
    fn loopback_include_detection() {
        let mut cfg = CaptureConfig::istio_test_base();
        assert!(!cfg.includes_loopback_range());
        cfg.outbound_ranges = parse_outbound_ranges("-i", "127.1.2.3/32").unwrap();
        assert!(cfg.includes_loopback_range());
        cfg.outbound_ranges = parse_outbound_ranges("-i", "::1/128").unwrap();
        assert!(cfg.includes_loopback_range());
    }
}
