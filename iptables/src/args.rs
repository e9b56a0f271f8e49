//! The `vm-proxy capture` command line: istio-iptables' flags and environment variables, turned
//! into a [`CaptureConfig`] and a [`Plan`].
//!
//! Values come from the flag if given, else from the environment variables Istio binds (the
//! later name in each list wins, as in Istio), else from the default. An empty environment
//! variable counts as unset, which is how `cluster.env` writes "nothing" (`KEY=''`).
//! What Istio reads from the machine (the proxy user's uid, the IPv6 decision, the resolvers)
//! goes through [`Host`], and can be given explicitly for reproducible output.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::Path;

use crate::config::{
    self, CaptureConfig, DEFAULT_HOST_IPV4_LOOPBACK_CIDR, InboundPorts, InterceptionMode,
    Nameserver, OUTBOUND_MARK,
};
use crate::error::ConfigError;
use crate::plan::{Backend, IptablesFlavor, Mode, Plan, TproxyRouting};
use crate::render;

/// Where Istio reads the resolvers from.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Flags of `vm-proxy capture`, named and bound to the environment exactly like `istio-iptables`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CaptureArgs {
    /// Envoy port to which all outbound TCP traffic is redirected [default: 15001] (no env, as in Istio)
    #[arg(short = 'p', long, value_name = "PORT")]
    pub envoy_port: Option<String>,

    /// Port to which all inbound TCP traffic is redirected [env: INBOUND_CAPTURE_PORT] [default: 15006]
    #[arg(short = 'z', long, value_name = "PORT")]
    pub inbound_capture_port: Option<String>,

    /// HBONE tunnel port, never captured inbound [env: INBOUND_TUNNEL_PORT] [default: 15008]
    #[arg(short = 'e', long, value_name = "PORT")]
    pub inbound_tunnel_port: Option<String>,

    /// Comma list of uids whose traffic is never captured [env: PROXY_UID]
    /// [default: uid of $ENVOY_USER (istio-proxy), else 1337]
    #[arg(short = 'u', long, value_name = "UIDS")]
    pub proxy_uid: Option<String>,

    /// Comma list of gids whose traffic is never captured [env: PROXY_GID] [default: the uids]
    #[arg(short = 'g', long, value_name = "GIDS")]
    pub proxy_gid: Option<String>,

    /// Inbound interception: REDIRECT or TPROXY [env: ISTIO_INBOUND_INTERCEPTION_MODE] [default: REDIRECT]
    #[arg(short = 'm', long, value_name = "MODE")]
    pub istio_inbound_interception_mode: Option<String>,

    /// Inbound TCP ports to capture: comma list, "*" for all, empty for none [env: ISTIO_INBOUND_PORTS]
    #[arg(short = 'b', long, value_name = "PORTS")]
    pub istio_inbound_ports: Option<String>,

    /// Inbound ports never captured; only applies with "*" [env: ISTIO_LOCAL_EXCLUDE_PORTS]
    #[arg(short = 'd', long, value_name = "PORTS")]
    pub istio_local_exclude_ports: Option<String>,

    /// Interfaces whose traffic is never captured [env: ISTIO_EXCLUDE_INTERFACES]
    #[arg(short = 'c', long, value_name = "NICS")]
    pub istio_exclude_interfaces: Option<String>,

    /// Outbound CIDRs to capture: comma list, "*" for all, empty for none [env: ISTIO_SERVICE_CIDR]
    #[arg(short = 'i', long, value_name = "CIDRS")]
    pub istio_service_cidr: Option<String>,

    /// Outbound CIDRs never captured [env: ISTIO_SERVICE_EXCLUDE_CIDR]
    #[arg(short = 'x', long, value_name = "CIDRS")]
    pub istio_service_exclude_cidr: Option<String>,

    /// Outbound TCP ports always captured [env: ISTIO_OUTBOUND_PORTS]
    #[arg(short = 'q', long, value_name = "PORTS")]
    pub istio_outbound_ports: Option<String>,

    /// Outbound TCP/UDP ports never captured [env: ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE]
    #[arg(short = 'o', long, value_name = "PORTS")]
    pub istio_local_outbound_ports_exclude: Option<String>,

    /// Interfaces whose inbound traffic is treated as outbound, e.g. docker0 [env: KUBE_VIRT_INTERFACES]
    #[arg(short = 'k', long, value_name = "NICS")]
    pub kube_virt_interfaces: Option<String>,

    /// Packet mark for TPROXY [env: ISTIO_INBOUND_TPROXY_MARK] [default: 1337]
    #[arg(short = 't', long, value_name = "MARK")]
    pub istio_inbound_tproxy_mark: Option<String>,

    /// Routing table for TPROXY [env: ISTIO_INBOUND_TPROXY_ROUTE_TABLE] [default: 133]
    #[arg(short = 'r', long, value_name = "TABLE")]
    pub istio_inbound_tproxy_route_table: Option<String>,

    /// Capture DNS to the agent on port 15053 [env: REDIRECT_DNS, ISTIO_META_DNS_CAPTURE]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = config::parse_go_bool)]
    pub redirect_dns: Option<bool>,

    /// With --redirect-dns: capture all port-53 traffic, not only to the resolvers [env: CAPTURE_ALL_DNS]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = config::parse_go_bool)]
    pub capture_all_dns: Option<bool>,

    /// Drop packets conntrack marks INVALID [env: DROP_INVALID, INVALID_DROP]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = config::parse_go_bool)]
    pub drop_invalid: Option<bool>,

    /// Detect IPv6 from any global IPv6 address, not only the first address [env: DUAL_STACK, ISTIO_DUAL_STACK]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = config::parse_go_bool)]
    pub dual_stack: Option<bool>,

    /// Use native nftables (tables inet istio-proxy-*) instead of iptables [env: NATIVE_NFTABLES]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = config::parse_go_bool)]
    pub native_nftables: Option<bool>,

    /// Remove our rules and apply nothing [env: CLEANUP_ONLY]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = config::parse_go_bool)]
    pub cleanup_only: Option<bool>,

    /// On drift, remove what is there and apply again [env: RECONCILE]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = config::parse_go_bool)]
    pub reconcile: Option<bool>,

    /// Print the rules and change nothing [env: DRY_RUN]
    #[arg(short = 'n', long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = config::parse_go_bool)]
    pub dry_run: Option<bool>,

    /// Use iptables-legacy or iptables-nft instead of detecting [env: FORCE_IPTABLES_BINARY]
    #[arg(long, value_name = "legacy|nft")]
    pub force_iptables_binary: Option<String>,

    /// Generate IPv6 rules [default: detected like Istio from the interface addresses]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = config::parse_go_bool)]
    pub ipv6: Option<bool>,

    /// Resolvers whose DNS traffic is captured, comma list of IPv4/IPv6 addresses
    /// [default: nameservers of /etc/resolv.conf, read only with --redirect-dns and no --capture-all-dns]
    #[arg(long, value_name = "ADDRS")]
    pub dns_servers: Option<String>,

    /// Groups (names or gids) whose outbound traffic is captured, or "*" [env: ISTIO_OUTBOUND_OWNER_GROUPS] [default: *]
    #[arg(long, value_name = "GROUPS")]
    pub owner_groups_include: Option<String>,

    /// With all groups included: groups whose outbound traffic is not captured
    /// [env: ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE]
    #[arg(long, value_name = "GROUPS")]
    pub owner_groups_exclude: Option<String>,

    /// IPv4 loopback CIDR of the owner rules and the loopback RETURN [env: ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR]
    /// [default: 127.0.0.1/32]
    #[arg(long, value_name = "CIDR")]
    pub host_ipv4_loopback_cidr: Option<String>,
}

/// A flag and the environment variables bound to it, lowest precedence first.
struct Setting {
    flag: &'static str,
    envs: &'static [&'static str],
}

const fn setting(flag: &'static str, envs: &'static [&'static str]) -> Setting {
    Setting { flag, envs }
}

const ENVOY_PORT: Setting = setting("--envoy-port", &[]);
const INBOUND_CAPTURE_PORT: Setting = setting("--inbound-capture-port", &["INBOUND_CAPTURE_PORT"]);
const INBOUND_TUNNEL_PORT: Setting = setting("--inbound-tunnel-port", &["INBOUND_TUNNEL_PORT"]);
const PROXY_UID: Setting = setting("--proxy-uid", &["PROXY_UID"]);
const PROXY_GID: Setting = setting("--proxy-gid", &["PROXY_GID"]);
const INTERCEPTION_MODE: Setting = setting(
    "--istio-inbound-interception-mode",
    &["ISTIO_INBOUND_INTERCEPTION_MODE"],
);
const INBOUND_PORTS: Setting = setting("--istio-inbound-ports", &["ISTIO_INBOUND_PORTS"]);
const LOCAL_EXCLUDE_PORTS: Setting = setting(
    "--istio-local-exclude-ports",
    &["ISTIO_LOCAL_EXCLUDE_PORTS"],
);
const EXCLUDE_INTERFACES: Setting =
    setting("--istio-exclude-interfaces", &["ISTIO_EXCLUDE_INTERFACES"]);
const SERVICE_CIDR: Setting = setting("--istio-service-cidr", &["ISTIO_SERVICE_CIDR"]);
const SERVICE_EXCLUDE_CIDR: Setting = setting(
    "--istio-service-exclude-cidr",
    &["ISTIO_SERVICE_EXCLUDE_CIDR"],
);
const OUTBOUND_PORTS: Setting = setting("--istio-outbound-ports", &["ISTIO_OUTBOUND_PORTS"]);
const LOCAL_OUTBOUND_PORTS_EXCLUDE: Setting = setting(
    "--istio-local-outbound-ports-exclude",
    &["ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE"],
);
const KUBE_VIRT_INTERFACES: Setting = setting("--kube-virt-interfaces", &["KUBE_VIRT_INTERFACES"]);
const TPROXY_MARK: Setting = setting(
    "--istio-inbound-tproxy-mark",
    &["ISTIO_INBOUND_TPROXY_MARK"],
);
const TPROXY_ROUTE_TABLE: Setting = setting(
    "--istio-inbound-tproxy-route-table",
    &["ISTIO_INBOUND_TPROXY_ROUTE_TABLE"],
);
const REDIRECT_DNS: Setting = setting(
    "--redirect-dns",
    &["REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"],
);
const CAPTURE_ALL_DNS: Setting = setting("--capture-all-dns", &["CAPTURE_ALL_DNS"]);
const DROP_INVALID: Setting = setting("--drop-invalid", &["DROP_INVALID", "INVALID_DROP"]);
const DUAL_STACK: Setting = setting("--dual-stack", &["DUAL_STACK", "ISTIO_DUAL_STACK"]);
const NATIVE_NFTABLES: Setting = setting("--native-nftables", &["NATIVE_NFTABLES"]);
const CLEANUP_ONLY: Setting = setting("--cleanup-only", &["CLEANUP_ONLY"]);
const RECONCILE: Setting = setting("--reconcile", &["RECONCILE"]);
const DRY_RUN: Setting = setting("--dry-run", &["DRY_RUN"]);
const FORCE_IPTABLES_BINARY: Setting =
    setting("--force-iptables-binary", &["FORCE_IPTABLES_BINARY"]);
const DNS_SERVERS: Setting = setting("--dns-servers", &[]);
const OWNER_GROUPS_INCLUDE: Setting =
    setting("--owner-groups-include", &["ISTIO_OUTBOUND_OWNER_GROUPS"]);
const OWNER_GROUPS_EXCLUDE: Setting = setting(
    "--owner-groups-exclude",
    &["ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"],
);
const HOST_IPV4_LOOPBACK_CIDR: Setting = setting(
    "--host-ipv4-loopback-cidr",
    &["ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"],
);

/// The user whose uid is the default `--proxy-uid`, and the variable naming another one.
const DEFAULT_ENVOY_USER: &str = "istio-proxy";
const ENVOY_USER: &str = "ENVOY_USER";
/// Istio's fallback when the proxy user does not exist.
const FALLBACK_PROXY_UID: u32 = 1337;

/// What `istio-iptables` reads from the machine besides its flags.
pub trait Host {
    /// An environment variable, `None` if unset.
    fn env(&self, name: &str) -> Option<OsString>;
    /// The uid of a user, `None` if there is no such user.
    fn uid_of_user(&self, name: &str) -> Option<u32>;
    /// Every interface address, in the kernel's order (IPv4 before IPv6).
    fn interface_addresses(&self) -> Result<Vec<IpAddr>, ConfigError>;
    /// The contents of `/etc/resolv.conf`.
    fn resolv_conf(&self) -> std::io::Result<String>;
}

/// The machine we run on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemHost;

impl Host for SystemHost {
    fn env(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }

    fn uid_of_user(&self, name: &str) -> Option<u32> {
        // Istio treats a failed lookup like a missing user.
        match nix::unistd::User::from_name(name) {
            Ok(user) => user.map(|u| u.uid.as_raw()),
            Err(err) => {
                tracing::warn!(user = name, %err, "looking up the proxy user failed");
                None
            }
        }
    }

    fn interface_addresses(&self) -> Result<Vec<IpAddr>, ConfigError> {
        let addrs = nix::ifaddrs::getifaddrs().map_err(ConfigError::InterfaceAddresses)?;
        Ok(addrs
            .filter_map(|ifa| {
                let sa = ifa.address?;
                if let Some(v4) = sa.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect())
    }

    fn resolv_conf(&self) -> std::io::Result<String> {
        std::fs::read_to_string(RESOLV_CONF)
    }
}

/// Istio's IPv6 decision: the first address that is not loopback or link-local decides; with
/// dual-stack, any such IPv6 address enables IPv6. `None` when there is no such address.
pub fn detect_ipv6(addrs: &[IpAddr], dual_stack: bool) -> Option<bool> {
    let mut found = None;
    for addr in addrs {
        let addr = addr.to_canonical();
        if addr.is_loopback() || is_link_local(addr) {
            continue;
        }
        let v6 = addr.is_ipv6();
        found = Some(v6);
        if !dual_stack || v6 {
            break;
        }
    }
    found
}

fn is_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_link_local() || (a.octets()[..3] == [224, 0, 0]),
        IpAddr::V6(a) => {
            let s = a.segments();
            (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xff0f) == 0xff02
        }
    }
}

/// A value and where it came from, for error messages.
struct Found {
    value: String,
    origin: String,
}

struct Resolver<'a> {
    host: &'a dyn Host,
}

impl Resolver<'_> {
    fn env(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.host.env(name) {
            None => Ok(None),
            Some(raw) => match raw.into_string() {
                Ok(v) if v.is_empty() => Ok(None),
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(ConfigError::NotUnicode {
                    var: name.to_string(),
                }),
            },
        }
    }

    fn string(&self, cli: &Option<String>, s: &Setting) -> Result<Option<Found>, ConfigError> {
        if let Some(value) = cli {
            return Ok(Some(Found {
                value: value.clone(),
                origin: s.flag.to_string(),
            }));
        }
        for var in s.envs.iter().rev() {
            if let Some(value) = self.env(var)? {
                return Ok(Some(Found {
                    value,
                    origin: format!("{} (from {var})", s.flag),
                }));
            }
        }
        Ok(None)
    }

    fn parsed<T>(
        &self,
        cli: &Option<String>,
        s: &Setting,
        default: T,
        parse: impl FnOnce(&str, &str) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        match self.string(cli, s)? {
            Some(found) => parse(&found.origin, &found.value),
            None => Ok(default),
        }
    }

    fn bool(&self, cli: Option<bool>, s: &Setting) -> Result<bool, ConfigError> {
        if let Some(value) = cli {
            return Ok(value);
        }
        match self.string(&None, s)? {
            Some(found) => config::parse_go_bool(&found.value)
                .map_err(|reason| ConfigError::invalid(found.origin, found.value, reason)),
            None => Ok(false),
        }
    }
}

impl CaptureArgs {
    /// Validates everything and renders the rules for the chosen backend, reading the machine.
    pub fn into_plan(self) -> Result<Plan, ConfigError> {
        self.plan_on(&SystemHost)
    }

    /// [`CaptureArgs::into_plan`] against a given machine.
    pub fn plan_on(&self, host: &dyn Host) -> Result<Plan, ConfigError> {
        let r = Resolver { host };
        let mode = self.mode(&r)?;
        let backend = self.backend(&r)?;
        let config = if mode == Mode::CleanupOnly && self.ipv6.is_none() {
            // Cleanup works from the machine's state, both families, whatever the rules would
            // be: it must not depend on the machine having a usable address (a VM whose network
            // is down still needs its capture rules removed).
            let mut any_family = self.clone();
            any_family.ipv6 = Some(false);
            any_family.config_on(host)?
        } else {
            self.config_on(host)?
        };
        let tproxy = (config.inbound_mode == InterceptionMode::Tproxy
            && config.inbound_ports != InboundPorts::None)
            .then_some(TproxyRouting {
                mark: config.tproxy_mark,
                table: config.tproxy_route_table,
                ipv6: config.enable_ipv6,
            });
        Ok(Plan {
            mode,
            backend,
            rules: render::render(&config, backend),
            tproxy,
        })
    }

    fn mode(&self, r: &Resolver<'_>) -> Result<Mode, ConfigError> {
        let dry_run = r.bool(self.dry_run, &DRY_RUN)?;
        let cleanup_only = r.bool(self.cleanup_only, &CLEANUP_ONLY)?;
        let reconcile = r.bool(self.reconcile, &RECONCILE)?;
        Ok(match (dry_run, cleanup_only, reconcile) {
            (true, true, _) => {
                return Err(ConfigError::Conflict {
                    first: DRY_RUN.flag.to_string(),
                    second: CLEANUP_ONLY.flag.to_string(),
                    reason:
                        "a dry run prints the rules that would be applied, a cleanup applies none"
                            .to_string(),
                });
            }
            (true, false, _) => Mode::DryRun,
            (false, true, _) => Mode::CleanupOnly,
            (false, false, true) => Mode::Reconcile,
            (false, false, false) => Mode::Apply,
        })
    }

    fn backend(&self, r: &Resolver<'_>) -> Result<Backend, ConfigError> {
        let native = r.bool(self.native_nftables, &NATIVE_NFTABLES)?;
        let flavor = match r.string(&self.force_iptables_binary, &FORCE_IPTABLES_BINARY)? {
            None => None,
            Some(found) => Some(match found.value.trim() {
                "legacy" => (IptablesFlavor::Legacy, found),
                "nft" => (IptablesFlavor::Nft, found),
                _ => {
                    return Err(ConfigError::invalid(
                        found.origin,
                        found.value,
                        "the iptables binary is \"legacy\" or \"nft\"",
                    ));
                }
            }),
        };
        match (native, flavor) {
            (true, Some((_, found))) => Err(ConfigError::Conflict {
                first: found.origin,
                second: NATIVE_NFTABLES.flag.to_string(),
                reason: "native nftables does not use an iptables binary".to_string(),
            }),
            (true, None) => Ok(Backend::Nftables),
            (false, flavor) => Ok(Backend::Iptables(flavor.map(|(f, _)| f))),
        }
    }

    /// Resolves and validates the rule inputs from flags, environment and machine.
    pub fn config_on(&self, host: &dyn Host) -> Result<CaptureConfig, ConfigError> {
        let r = Resolver { host };

        let proxy_port = r.parsed(&self.envoy_port, &ENVOY_PORT, 15001, config::parse_port)?;
        let inbound_capture_port = r.parsed(
            &self.inbound_capture_port,
            &INBOUND_CAPTURE_PORT,
            15006,
            config::parse_port,
        )?;
        let inbound_tunnel_port = r.parsed(
            &self.inbound_tunnel_port,
            &INBOUND_TUNNEL_PORT,
            15008,
            config::parse_port,
        )?;

        let proxy_uids = match r.string(&self.proxy_uid, &PROXY_UID)? {
            Some(found) => config::parse_id_list(&found.origin, &found.value, "uid")?,
            None => vec![default_proxy_uid(&r)?],
        };
        // Istio's default gid is the uid *string*, i.e. the same numbers.
        let proxy_gids = match r.string(&self.proxy_gid, &PROXY_GID)? {
            Some(found) => config::parse_id_list(&found.origin, &found.value, "gid")?,
            None => proxy_uids.clone(),
        };

        let inbound_mode = r.parsed(
            &self.istio_inbound_interception_mode,
            &INTERCEPTION_MODE,
            InterceptionMode::Redirect,
            config::parse_interception_mode,
        )?;
        let local_exclude = r.string(&self.istio_local_exclude_ports, &LOCAL_EXCLUDE_PORTS)?;
        let except = match &local_exclude {
            Some(found) => config::parse_port_list(&found.origin, &found.value)?,
            None => Vec::new(),
        };
        let inbound_ports = match r.string(&self.istio_inbound_ports, &INBOUND_PORTS)? {
            Some(found) => {
                config::parse_inbound_ports(&found.origin, &found.value, except.clone())?
            }
            None => InboundPorts::None,
        };
        if !except.is_empty() && !matches!(inbound_ports, InboundPorts::All { .. }) {
            // istioctl always writes exclusions, also next to an explicit port list.
            tracing::warn!(
                setting = local_exclude.as_ref().map(|f| f.origin.as_str()),
                "inbound port exclusions only apply when all inbound ports (\"*\") are captured"
            );
        }

        let tproxy_mark = match r.string(&self.istio_inbound_tproxy_mark, &TPROXY_MARK)? {
            Some(found) => {
                let mark = config::parse_mark(&found.origin, &found.value)?;
                if inbound_mode == InterceptionMode::Tproxy && mark == OUTBOUND_MARK {
                    return Err(ConfigError::invalid(
                        found.origin,
                        found.value,
                        "1338 marks proxy-to-application traffic in TPROXY mode and cannot be the inbound mark",
                    ));
                }
                mark
            }
            None => 1337,
        };
        let tproxy_route_table = r.parsed(
            &self.istio_inbound_tproxy_route_table,
            &TPROXY_ROUTE_TABLE,
            133,
            config::parse_route_table,
        )?;

        let redirect_dns = r.bool(self.redirect_dns, &REDIRECT_DNS)?;
        let capture_all_dns = r.bool(self.capture_all_dns, &CAPTURE_ALL_DNS)?;
        if capture_all_dns && !redirect_dns {
            tracing::warn!("--capture-all-dns has no effect without --redirect-dns");
        }
        let dns_servers = self.dns_servers(&r, redirect_dns, capture_all_dns)?;
        if redirect_dns && !capture_all_dns && dns_servers.is_empty() {
            tracing::warn!(
                "DNS capture is on but there are no DNS servers and not all DNS is captured: DNS capture disabled"
            );
        }

        let dual_stack = r.bool(self.dual_stack, &DUAL_STACK)?;
        let enable_ipv6 = match self.ipv6 {
            Some(v6) => v6,
            None => {
                let addrs = host.interface_addresses()?;
                let v6 = detect_ipv6(&addrs, dual_stack).ok_or(ConfigError::NoHostAddress)?;
                tracing::info!(
                    ipv6 = v6,
                    dual_stack,
                    "IPv6 capture decided from the interface addresses"
                );
                v6
            }
        };

        let include = r.string(&self.owner_groups_include, &OWNER_GROUPS_INCLUDE)?;
        let exclude = r.string(&self.owner_groups_exclude, &OWNER_GROUPS_EXCLUDE)?;
        let owner_groups = config::parse_owner_groups(
            include
                .as_ref()
                .map_or(OWNER_GROUPS_INCLUDE.flag, |f| &f.origin),
            include.as_ref().map_or("*", |f| &f.value),
            exclude
                .as_ref()
                .map_or(OWNER_GROUPS_EXCLUDE.flag, |f| &f.origin),
            exclude.as_ref().map_or("", |f| &f.value),
        )?;

        Ok(CaptureConfig {
            proxy_port,
            inbound_capture_port,
            inbound_tunnel_port,
            proxy_uids,
            proxy_gids,
            inbound_mode,
            inbound_ports,
            exclude_interfaces: r.parsed(
                &self.istio_exclude_interfaces,
                &EXCLUDE_INTERFACES,
                Vec::new(),
                config::parse_interfaces,
            )?,
            outbound_ranges: r.parsed(
                &self.istio_service_cidr,
                &SERVICE_CIDR,
                config::OutboundRanges::None,
                config::parse_outbound_ranges,
            )?,
            outbound_ranges_exclude: r.parsed(
                &self.istio_service_exclude_cidr,
                &SERVICE_EXCLUDE_CIDR,
                Vec::new(),
                config::parse_excluded_ranges,
            )?,
            outbound_ports: r.parsed(
                &self.istio_outbound_ports,
                &OUTBOUND_PORTS,
                Vec::new(),
                config::parse_port_list,
            )?,
            outbound_ports_exclude: r.parsed(
                &self.istio_local_outbound_ports_exclude,
                &LOCAL_OUTBOUND_PORTS_EXCLUDE,
                Vec::new(),
                config::parse_port_list,
            )?,
            kube_virt_interfaces: r.parsed(
                &self.kube_virt_interfaces,
                &KUBE_VIRT_INTERFACES,
                Vec::new(),
                config::parse_interfaces,
            )?,
            tproxy_mark,
            tproxy_route_table,
            redirect_dns,
            capture_all_dns,
            dns_servers,
            drop_invalid: r.bool(self.drop_invalid, &DROP_INVALID)?,
            enable_ipv6,
            owner_groups,
            host_ipv4_loopback_cidr: r.parsed(
                &self.host_ipv4_loopback_cidr,
                &HOST_IPV4_LOOPBACK_CIDR,
                DEFAULT_HOST_IPV4_LOOPBACK_CIDR,
                config::parse_loopback_cidr,
            )?,
        })
    }

    /// The resolvers: given explicitly, or read from resolv.conf exactly when Istio reads it.
    fn dns_servers(
        &self,
        r: &Resolver<'_>,
        redirect_dns: bool,
        capture_all_dns: bool,
    ) -> Result<Vec<Nameserver>, ConfigError> {
        if let Some(found) = r.string(&self.dns_servers, &DNS_SERVERS)? {
            let unused_because = if !redirect_dns {
                Some((
                    REDIRECT_DNS.flag,
                    "DNS servers are only used when DNS is captured (it is off)",
                ))
            } else if capture_all_dns {
                Some((
                    CAPTURE_ALL_DNS.flag,
                    "all DNS traffic is captured, whatever the server",
                ))
            } else {
                None
            };
            if let Some((other, reason)) = unused_because {
                return Err(ConfigError::Conflict {
                    first: found.origin,
                    second: other.to_string(),
                    reason: reason.to_string(),
                });
            }
            return config::parse_nameservers(&found.origin, &found.value);
        }
        if !redirect_dns || capture_all_dns {
            return Ok(Vec::new());
        }
        let contents = r
            .host
            .resolv_conf()
            .map_err(|source| ConfigError::ResolvConf {
                path: Path::new(RESOLV_CONF).to_path_buf(),
                source,
            })?;
        Ok(config::parse_resolv_conf(&contents))
    }
}

fn default_proxy_uid(r: &Resolver<'_>) -> Result<u32, ConfigError> {
    let user = r
        .env(ENVOY_USER)?
        .unwrap_or_else(|| DEFAULT_ENVOY_USER.to_string());
    Ok(match r.host.uid_of_user(&user) {
        Some(uid) => uid,
        None => {
            tracing::info!(
                user,
                uid = FALLBACK_PROXY_UID,
                "proxy user not found, using the fallback uid"
            );
            FALLBACK_PROXY_UID
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io;

    use clap::Parser;

    use super::*;
    use crate::config::{OutboundRanges, OwnerGroups};
    use crate::plan::RenderedRules;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        capture: CaptureArgs,
    }

    fn args(argv: &[&str]) -> CaptureArgs {
        let mut full = vec!["capture"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full) {
            Ok(cli) => cli.capture,
            Err(err) => panic!("{err}"),
        }
    }

    /// A machine with an IPv4 address, no istio-proxy user and a resolv.conf with one server.
    #[derive(Default)]
    struct FakeHost {
        env: HashMap<&'static str, &'static str>,
        users: HashMap<&'static str, u32>,
        addrs: Vec<IpAddr>,
        resolv_conf: Option<&'static str>,
    }

    impl FakeHost {
        fn new() -> Self {
            FakeHost {
                addrs: vec!["127.0.0.1".parse().unwrap(), "10.0.0.5".parse().unwrap()],
                resolv_conf: Some("nameserver 127.0.0.53\n"),
                ..FakeHost::default()
            }
        }

        fn with_env(mut self, pairs: &[(&'static str, &'static str)]) -> Self {
            self.env.extend(pairs.iter().copied());
            self
        }
    }

    impl Host for FakeHost {
        fn env(&self, name: &str) -> Option<OsString> {
            self.env.get(name).map(OsString::from)
        }
        fn uid_of_user(&self, name: &str) -> Option<u32> {
            self.users.get(name).copied()
        }
        fn interface_addresses(&self) -> Result<Vec<IpAddr>, ConfigError> {
            Ok(self.addrs.clone())
        }
        fn resolv_conf(&self) -> io::Result<String> {
            self.resolv_conf
                .map(str::to_string)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no resolv.conf"))
        }
    }

    fn config(argv: &[&str], host: &FakeHost) -> CaptureConfig {
        match args(argv).config_on(host) {
            Ok(cfg) => cfg,
            Err(err) => panic!("{err}"),
        }
    }

    fn error(argv: &[&str], host: &FakeHost) -> String {
        match args(argv).plan_on(host) {
            Ok(plan) => panic!("expected an error, got {plan:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn defaults_match_istio_on_a_plain_host() {
        let cfg = config(&[], &FakeHost::new());
        let expected = CaptureConfig {
            enable_ipv6: false,
            ..CaptureConfig::istio_test_base()
        };
        assert_eq!(cfg, expected);
    }

    #[test]
    fn proxy_uid_defaults_to_envoy_user() {
        let mut host = FakeHost::new();
        host.users.insert("istio-proxy", 983);
        host.users.insert("envoy", 990);
        let cfg = config(&[], &host);
        assert_eq!((cfg.proxy_uids, cfg.proxy_gids), (vec![983], vec![983]));
        let host = FakeHost {
            env: HashMap::from([("ENVOY_USER", "envoy")]),
            ..host
        };
        assert_eq!(config(&[], &host).proxy_uids, vec![990]);
        assert_eq!(config(&["-u", "3,4"], &host).proxy_gids, vec![3, 4]);
        assert_eq!(config(&["-u", "3,4", "-g", "1"], &host).proxy_gids, vec![1]);
    }

    #[test]
    fn vm_cluster_env_is_understood() {
        let host = FakeHost::new().with_env(&[
            ("ISTIO_INBOUND_PORTS", "*"),
            ("ISTIO_LOCAL_EXCLUDE_PORTS", "22,15090,15021,15020"),
            ("ISTIO_SERVICE_CIDR", "*"),
            ("ISTIO_META_DNS_CAPTURE", "true"),
        ]);
        let cfg = config(&[], &host);
        assert_eq!(
            cfg.inbound_ports,
            InboundPorts::All {
                except: vec![22, 15090, 15021, 15020]
            }
        );
        assert_eq!(cfg.outbound_ranges, OutboundRanges::All);
        assert!(cfg.redirect_dns);
        let servers: Vec<_> = cfg.dns_servers.iter().map(Nameserver::as_str).collect();
        assert_eq!(servers, vec!["127.0.0.53"]);
    }

    #[test]
    fn every_istio_environment_variable_is_bound() {
        let host = FakeHost::new().with_env(&[
            ("INBOUND_CAPTURE_PORT", "16006"),
            ("INBOUND_TUNNEL_PORT", "16008"),
            ("PROXY_UID", "7"),
            ("PROXY_GID", "8"),
            ("ISTIO_INBOUND_INTERCEPTION_MODE", "TPROXY"),
            ("ISTIO_INBOUND_PORTS", "80,443"),
            ("ISTIO_EXCLUDE_INTERFACES", "eth9"),
            ("ISTIO_SERVICE_CIDR", "10.0.0.0/8"),
            ("ISTIO_SERVICE_EXCLUDE_CIDR", "10.1.0.0/16"),
            ("ISTIO_OUTBOUND_PORTS", "8080"),
            ("ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE", "9090"),
            ("KUBE_VIRT_INTERFACES", "docker0"),
            ("ISTIO_INBOUND_TPROXY_MARK", "7331"),
            ("ISTIO_INBOUND_TPROXY_ROUTE_TABLE", "77"),
            ("REDIRECT_DNS", "1"),
            ("CAPTURE_ALL_DNS", "T"),
            ("DROP_INVALID", "True"),
            ("ISTIO_OUTBOUND_OWNER_GROUPS", "java"),
            ("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/8"),
            ("DRY_RUN", "true"),
            ("NATIVE_NFTABLES", "true"),
        ]);
        let cfg = config(&[], &host);
        assert_eq!(cfg.inbound_capture_port, 16006);
        assert_eq!(cfg.inbound_tunnel_port, 16008);
        assert_eq!(
            (cfg.proxy_uids.clone(), cfg.proxy_gids.clone()),
            (vec![7], vec![8])
        );
        assert_eq!(cfg.inbound_mode, InterceptionMode::Tproxy);
        assert_eq!(cfg.inbound_ports, InboundPorts::Only(vec![80, 443]));
        assert_eq!(cfg.exclude_interfaces, vec!["eth9"]);
        assert_eq!(cfg.outbound_ranges_exclude.len(), 1);
        assert_eq!(cfg.outbound_ports, vec![8080]);
        assert_eq!(cfg.outbound_ports_exclude, vec![9090]);
        assert_eq!(cfg.kube_virt_interfaces, vec!["docker0"]);
        assert_eq!((cfg.tproxy_mark, cfg.tproxy_route_table), (7331, 77));
        assert!(cfg.redirect_dns && cfg.capture_all_dns && cfg.drop_invalid);
        assert!(
            cfg.dns_servers.is_empty(),
            "resolv.conf is not read with capture-all-dns"
        );
        assert_eq!(cfg.owner_groups, OwnerGroups::Only(vec!["java".into()]));
        assert_eq!(cfg.host_ipv4_loopback_cidr.to_string(), "127.0.0.1/8");

        let plan = args(&[]).plan_on(&host).unwrap();
        assert_eq!(plan.mode, Mode::DryRun);
        assert_eq!(plan.backend, Backend::Nftables);
        assert!(matches!(plan.rules, RenderedRules::Nftables(_)));
        assert_eq!(
            plan.tproxy,
            Some(TproxyRouting {
                mark: 7331,
                table: 77,
                ipv6: false
            })
        );
    }

    #[test]
    fn flags_override_environment() {
        let host = FakeHost::new().with_env(&[
            ("ISTIO_INBOUND_PORTS", "*"),
            ("REDIRECT_DNS", "true"),
            ("CLEANUP_ONLY", "true"),
        ]);
        let cfg = config(&["-b", "8080", "--redirect-dns=false"], &host);
        assert_eq!(cfg.inbound_ports, InboundPorts::Only(vec![8080]));
        assert!(!cfg.redirect_dns);
        let plan = args(&["--cleanup-only=f"]).plan_on(&host).unwrap();
        assert_eq!(plan.mode, Mode::Apply);
    }

    #[test]
    fn additional_environment_names_win_over_the_primary_ones() {
        let host = FakeHost::new().with_env(&[
            ("REDIRECT_DNS", "true"),
            ("ISTIO_META_DNS_CAPTURE", "false"),
            ("INVALID_DROP", "true"),
            ("ISTIO_DUAL_STACK", "1"),
        ]);
        let cfg = config(&[], &host);
        assert!(!cfg.redirect_dns);
        assert!(cfg.drop_invalid);
        let mut host = host;
        host.addrs = vec!["10.0.0.5".parse().unwrap(), "2001:db8::5".parse().unwrap()];
        assert!(
            config(&[], &host).enable_ipv6,
            "dual stack via ISTIO_DUAL_STACK"
        );
    }

    #[test]
    fn empty_environment_values_count_as_unset() {
        let host = FakeHost::new().with_env(&[("INBOUND_CAPTURE_PORT", ""), ("DRY_RUN", "")]);
        assert_eq!(config(&[], &host).inbound_capture_port, 15006);
        assert_eq!(args(&[]).plan_on(&host).unwrap().mode, Mode::Apply);
    }

    #[test]
    fn bad_environment_boolean_names_the_variable() {
        let host = FakeHost::new().with_env(&[("ISTIO_META_DNS_CAPTURE", "yes")]);
        let msg = error(&[], &host);
        assert!(
            msg.starts_with("--redirect-dns (from ISTIO_META_DNS_CAPTURE): \"yes\":"),
            "{msg}"
        );
    }

    #[test]
    fn command_definition_is_consistent() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        cmd.clone().debug_assert();
        let help = cmd.render_long_help().to_string();
        for flag in [
            "--istio-inbound-ports",
            "--redirect-dns[=<BOOL>]",
            "--force-iptables-binary <legacy|nft>",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }

    #[test]
    fn bad_flag_boolean_is_rejected_by_the_parser() {
        let err = Cli::try_parse_from(["capture", "--dry-run=maybe"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("--dry-run"), "{err}");
        assert!(args(&["-n"]).dry_run == Some(true));
    }

    #[test]
    fn short_flags_match_istio() {
        let a = args(&[
            "-p",
            "1",
            "-z",
            "2",
            "-e",
            "3",
            "-u",
            "4",
            "-g",
            "5",
            "-m",
            "TPROXY",
            "-b",
            "6",
            "-d",
            "7",
            "-c",
            "eth0",
            "-i",
            "*",
            "-x",
            "1.1.0.0/16",
            "-q",
            "8",
            "-o",
            "9",
            "-k",
            "eth1",
            "-t",
            "10",
            "-r",
            "11",
            "-n",
        ]);
        let cfg = a.config_on(&FakeHost::new()).unwrap();
        assert_eq!(
            (
                cfg.proxy_port,
                cfg.inbound_capture_port,
                cfg.inbound_tunnel_port
            ),
            (1, 2, 3)
        );
        assert_eq!((cfg.tproxy_mark, cfg.tproxy_route_table), (10, 11));
        assert_eq!(a.dry_run, Some(true));
    }

    #[test]
    fn ipv6_detection_follows_istio() {
        let addrs = |list: &[&str]| {
            list.iter()
                .map(|a| a.parse().unwrap())
                .collect::<Vec<IpAddr>>()
        };
        let v4_first = addrs(&["127.0.0.1", "10.0.0.5", "fe80::1", "2001:db8::5"]);
        assert_eq!(detect_ipv6(&v4_first, false), Some(false));
        assert_eq!(detect_ipv6(&v4_first, true), Some(true));
        let v6_only = addrs(&["::1", "fe80::1", "2001:db8::5"]);
        assert_eq!(detect_ipv6(&v6_only, false), Some(true));
        let link_local = addrs(&["127.0.0.1", "169.254.1.1", "fe80::1"]);
        assert_eq!(detect_ipv6(&link_local, true), None);
        let mapped = addrs(&["::ffff:10.0.0.5"]);
        assert_eq!(detect_ipv6(&mapped, false), Some(false));

        let host = FakeHost {
            addrs: addrs(&["127.0.0.1"]),
            ..FakeHost::new()
        };
        assert!(error(&[], &host).contains("--ipv6"));
        assert!(config(&["--ipv6"], &host).enable_ipv6);
        assert!(!config(&["--ipv6=false"], &host).enable_ipv6);
    }

    #[test]
    fn dns_servers_come_from_resolv_conf_only_when_istio_reads_it() {
        let host = FakeHost {
            resolv_conf: None,
            ..FakeHost::new()
        };
        // Not read without DNS capture, or with capture of all DNS.
        assert!(config(&[], &host).dns_servers.is_empty());
        assert!(
            config(&["--redirect-dns", "--capture-all-dns"], &host)
                .dns_servers
                .is_empty()
        );
        let msg = error(&["--redirect-dns"], &host);
        assert!(msg.starts_with("reading /etc/resolv.conf:"), "{msg}");
        let cfg = config(
            &["--redirect-dns", "--dns-servers", "127.0.0.53,::127.0.0.53"],
            &host,
        );
        let servers: Vec<_> = cfg.dns_servers.iter().map(Nameserver::as_str).collect();
        assert_eq!(servers, vec!["127.0.0.53", "::127.0.0.53"]);
    }

    #[test]
    fn dns_servers_without_their_use_are_rejected() {
        let host = FakeHost::new();
        assert!(error(&["--dns-servers", "1.1.1.1"], &host).contains("--redirect-dns"));
        assert!(
            error(
                &[
                    "--redirect-dns",
                    "--capture-all-dns",
                    "--dns-servers",
                    "1.1.1.1"
                ],
                &host
            )
            .contains("--capture-all-dns")
        );
        assert!(
            error(&["--redirect-dns", "--dns-servers", "1.1.1.1,x"], &host)
                .starts_with("--dns-servers: \"1.1.1.1,x\": \"x\" is not an IP address")
        );
    }

    #[test]
    fn each_validation_error_names_its_flag() {
        let host = FakeHost::new();
        let cases: &[(&[&str], &str)] = &[
            (
                &["-b", "80,abc"],
                r#"--istio-inbound-ports: "80,abc": "abc" is not a port"#,
            ),
            (&["-p", "70000"], "--envoy-port: \"70000\""),
            (&["-z", "x"], "--inbound-capture-port: \"x\""),
            (&["-e", "0"], "--inbound-tunnel-port: \"0\""),
            (&["-d", "22,ssh"], "--istio-local-exclude-ports: \"22,ssh\""),
            (&["-q", "1-2"], "--istio-outbound-ports: \"1-2\""),
            (&["-o", "a"], "--istio-local-outbound-ports-exclude: \"a\""),
            (&["-u", "root"], "--proxy-uid: \"root\""),
            (&["-g", "x"], "--proxy-gid: \"x\""),
            (
                &["-m", "tproxy"],
                "--istio-inbound-interception-mode: \"tproxy\"",
            ),
            (&["-c", "eth0:1"], "--istio-exclude-interfaces: \"eth0:1\""),
            (&["-k", "bad/nic"], "--kube-virt-interfaces: \"bad/nic\""),
            (
                &["-i", "10.0.0.0/33"],
                "--istio-service-cidr: \"10.0.0.0/33\"",
            ),
            (&["-x", "*"], "--istio-service-exclude-cidr: \"*\""),
            (&["-t", "0"], "--istio-inbound-tproxy-mark: \"0\""),
            (
                &["-m", "TPROXY", "-t", "1338"],
                "--istio-inbound-tproxy-mark: \"1338\"",
            ),
            (
                &["-r", "254"],
                "--istio-inbound-tproxy-route-table: \"254\"",
            ),
            (
                &["--owner-groups-include", "a b"],
                "--owner-groups-include: \"a b\"",
            ),
            (
                &["--owner-groups-exclude", "a;b"],
                "--owner-groups-exclude: \"a;b\"",
            ),
            (
                &[
                    "--owner-groups-include",
                    "java",
                    "--owner-groups-exclude",
                    "ftp",
                ],
                "--owner-groups-include and --owner-groups-exclude cannot be used together",
            ),
            (
                &["--host-ipv4-loopback-cidr", "10.0.0.1/32"],
                "--host-ipv4-loopback-cidr: \"10.0.0.1/32\"",
            ),
            (
                &["--force-iptables-binary", "auto"],
                "--force-iptables-binary: \"auto\"",
            ),
            (
                &["--native-nftables", "--force-iptables-binary", "nft"],
                "--force-iptables-binary and --native-nftables cannot be used together",
            ),
            (
                &["-n", "--cleanup-only"],
                "--dry-run and --cleanup-only cannot be used together",
            ),
        ];
        for (argv, expected) in cases {
            let msg = error(argv, &host);
            assert!(msg.starts_with(expected), "{argv:?}: {msg}");
        }
    }

    #[test]
    fn environment_errors_name_flag_and_variable() {
        let host = FakeHost::new().with_env(&[("ISTIO_SERVICE_EXCLUDE_CIDR", "*")]);
        assert!(
            error(&[], &host).starts_with(
                "--istio-service-exclude-cidr (from ISTIO_SERVICE_EXCLUDE_CIDR): \"*\":"
            )
        );
        let host = FakeHost::new().with_env(&[
            ("ISTIO_OUTBOUND_OWNER_GROUPS", "java"),
            ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "ftp"),
        ]);
        assert!(error(&[], &host).contains("(from ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE)"));
    }

    #[test]
    fn plan_modes_and_backends() {
        let host = FakeHost::new();
        let plan = |argv: &[&str]| args(argv).plan_on(&host).unwrap();
        assert_eq!(plan(&[]).mode, Mode::Apply);
        assert_eq!(plan(&["--reconcile"]).mode, Mode::Reconcile);
        assert_eq!(
            plan(&["--cleanup-only", "--reconcile"]).mode,
            Mode::CleanupOnly
        );
        assert_eq!(plan(&["--dry-run"]).mode, Mode::DryRun);
        assert_eq!(plan(&[]).backend, Backend::Iptables(None));
        assert_eq!(
            plan(&["--force-iptables-binary", "legacy"]).backend,
            Backend::Iptables(Some(IptablesFlavor::Legacy))
        );
        assert_eq!(
            plan(&["--force-iptables-binary", "nft"]).backend,
            Backend::Iptables(Some(IptablesFlavor::Nft))
        );
        let iptables = plan(&["-b", "*", "--ipv6"]);
        let RenderedRules::Iptables(rules) = iptables.rules else {
            panic!("iptables rules expected");
        };
        assert!(rules.v4.contains("-A PREROUTING -p tcp -j ISTIO_INBOUND\n"));
        assert!(rules.v6.is_some_and(|v6| v6.contains("::6/128")));
        // TPROXY routing only when inbound traffic is captured, as in Istio.
        assert_eq!(plan(&["-m", "TPROXY"]).tproxy, None);
        assert_eq!(
            plan(&["-m", "TPROXY", "-b", "*", "--ipv6"]).tproxy,
            Some(TproxyRouting {
                mark: 1337,
                table: 133,
                ipv6: true
            })
        );
    }

    #[test]
    fn system_host_reads_this_machine() {
        let host = SystemHost;
        let addrs = host.interface_addresses().unwrap();
        assert!(addrs.iter().any(IpAddr::is_loopback), "{addrs:?}");
        assert_eq!(host.uid_of_user("root"), Some(0));
        assert_eq!(host.uid_of_user("no-such-user-vm-proxy"), None);
    }

    #[test]
    fn cleanup_needs_no_host_address() {
        let host = FakeHost {
            addrs: vec!["127.0.0.1".parse().unwrap()],
            ..FakeHost::new()
        };
        assert!(error(&[], &host).contains("address"));
        let plan = args(&["--cleanup-only"]).plan_on(&host).unwrap();
        assert_eq!(plan.mode, Mode::CleanupOnly);
    }
}
