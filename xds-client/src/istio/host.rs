//! What `istio-start.sh` asks the machine: `hostname -s` (the default `POD_NAME`) and
//! `hostname --all-ip-addresses` (the default `ISTIO_SVC_IP` is its first word; pilot-agent
//! adds all of them to `INSTANCE_IPS`).

use std::net::IpAddr;

use nix::net::if_::InterfaceFlags;

/// The machine's name and addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// The short host name (up to the first dot).
    pub short_name: String,
    /// Addresses of interfaces that are up, loopback and link-local left out, in the
    /// kernel's order (as `hostname --all-ip-addresses` lists them).
    pub addresses: Vec<IpAddr>,
}

/// Why the machine could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading the host name from {path}: {source}")]
    Hostname {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("listing interface addresses (getifaddrs): {0}")]
    Addresses(nix::Error),
}

const HOSTNAME: &str = "/proc/sys/kernel/hostname";

impl Host {
    /// The machine we run on.
    pub fn system() -> Result<Host, HostError> {
        let name = std::fs::read_to_string(HOSTNAME).map_err(|source| HostError::Hostname {
            path: HOSTNAME,
            source,
        })?;
        let addresses = nix::ifaddrs::getifaddrs()
            .map_err(HostError::Addresses)?
            .filter(|ifa| {
                ifa.flags.contains(InterfaceFlags::IFF_UP)
                    && !ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK)
            })
            .filter_map(|ifa| {
                let sa = ifa.address?;
                match (sa.as_sockaddr_in(), sa.as_sockaddr_in6()) {
                    (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
                    (None, Some(v6)) => Some(IpAddr::V6(v6.ip())),
                    _ => None,
                }
            })
            .filter(|ip| usable(*ip))
            .collect();
        Ok(Host {
            short_name: short(&name),
            addresses,
        })
    }
}

/// `hostname -s`: the name up to the first dot.
fn short(name: &str) -> String {
    let name = name.trim();
    name.split('.').next().unwrap_or(name).to_string()
}

fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local() && !v6.is_unspecified(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_name_stops_at_the_first_dot() {
        assert_eq!(short("vm-1.example.internal\n"), "vm-1");
        assert_eq!(short("vm-1\n"), "vm-1");
    }

    #[test]
    fn loopback_and_link_local_are_not_host_addresses() {
        for ip in ["127.0.0.1", "169.254.1.1", "::1", "fe80::1", "0.0.0.0"] {
            assert!(!usable(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.7", "fd00::7"] {
            assert!(usable(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn the_system_answers() {
        let host = Host::system().unwrap();
        assert!(!host.short_name.is_empty());
        assert!(!host.short_name.contains('.'));
        assert!(host.addresses.iter().all(|ip| usable(*ip)));
    }
}
