//! Addresses, ports and CIDR ranges.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    Address, CidrRange, SocketAddress, address, socket_address,
};
use ipnet::IpNet;

use super::error::{Ctx, DecodeError};
use crate::model::EndpointAddress;

/// Where a socket address points: an IP literal, or a name for DNS clusters to resolve.
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// An `Address` that must be an IP socket address (listeners, bind addresses, admin).
pub(crate) fn ip_socket_address(
    ctx: &Ctx,
    field: &str,
    addr: Option<&Address>,
) -> Result<SocketAddr, DecodeError> {
    let ctx = ctx.at(field);
    let socket = socket_address(&ctx, addr)?;
    ip_socket(&ctx, "socket_address", socket)
}

/// A bare `SocketAddress` that must hold an IP (upstream bind source addresses).
pub(crate) fn ip_socket(
    ctx: &Ctx,
    field: &str,
    socket: &SocketAddress,
) -> Result<SocketAddr, DecodeError> {
    let ctx = ctx.at(field);
    match socket_host(&ctx, socket)? {
        (Host::Ip(ip), port) => Ok(SocketAddr::new(ip, port)),
        (Host::Name(name), _) => {
            Err(ctx.invalid("address", format!("{name:?} is not an IP address")))
        }
    }
}

/// An endpoint's address: an IP, or a DNS name when `dns_names` (STRICT_DNS / LOGICAL_DNS).
pub(crate) fn endpoint_address(
    ctx: &Ctx,
    field: &str,
    addr: Option<&Address>,
    dns_names: bool,
) -> Result<EndpointAddress, DecodeError> {
    let ctx = ctx.at(field);
    let socket = socket_address(&ctx, addr)?;
    let ctx = ctx.at("socket_address");
    match socket_host(&ctx, socket)? {
        (Host::Ip(ip), port) => Ok(EndpointAddress::Socket(SocketAddr::new(ip, port))),
        (Host::Name(host), port) if dns_names => Ok(EndpointAddress::Dns {
            host: Arc::from(host),
            port,
        }),
        (Host::Name(name), _) => Err(ctx.invalid(
            "address",
            format!("{name:?} is not an IP address (only DNS clusters resolve names)"),
        )),
    }
}

fn socket_address<'p>(
    ctx: &Ctx,
    addr: Option<&'p Address>,
) -> Result<&'p SocketAddress, DecodeError> {
    match addr.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(socket)) => Ok(socket),
        Some(address::Address::Pipe(pipe)) => {
            Err(ctx.unsupported(format!("Unix socket address (pipe {:?})", pipe.path)))
        }
        Some(address::Address::EnvoyInternalAddress(_)) => {
            Err(ctx.unsupported("Envoy internal address"))
        }
        None => Err(ctx.invalid("", "an address is required")),
    }
}

fn socket_host(ctx: &Ctx, socket: &SocketAddress) -> Result<(Host, u16), DecodeError> {
    let SocketAddress {
        protocol,
        address,
        resolver_name,
        ipv4_compat,
        network_namespace_filepath,
        port_specifier,
    } = socket;
    ctx.unsupported_fields()
        .check(
            "protocol UDP",
            *protocol == socket_address::Protocol::Udp as i32,
        )
        .check("resolver_name", !resolver_name.is_empty())
        .check("ipv4_compat", *ipv4_compat)
        .check(
            "network_namespace_filepath",
            !network_namespace_filepath.is_empty(),
        )
        .finish()?;
    if *protocol != socket_address::Protocol::Tcp as i32
        && *protocol != socket_address::Protocol::Udp as i32
    {
        return Err(ctx.invalid("protocol", format!("unknown protocol {protocol}")));
    }
    let port = match port_specifier {
        Some(socket_address::PortSpecifier::PortValue(port)) => u16::try_from(*port)
            .map_err(|_| ctx.invalid("port_value", format!("port {port} is above 65535")))?,
        Some(socket_address::PortSpecifier::NamedPort(name)) => {
            return Err(ctx.unsupported(format!("named_port {name:?}")));
        }
        None => return Err(ctx.invalid("port_value", "a port is required")),
    };
    if address.is_empty() {
        return Err(ctx.invalid("address", "an address is required"));
    }
    let host = match address.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(address.clone()),
    };
    Ok((host, port))
}

/// A port number from a `uint32` field that Envoy bounds to 1..=65535.
pub(crate) fn port(ctx: &Ctx, field: &str, value: u32) -> Result<u16, DecodeError> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ctx.invalid(field, format!("port {value} is outside 1..=65535"))),
    }
}

/// A `CidrRange`; as in Envoy, a missing `prefix_len` means 0 and host bits are cleared.
pub(crate) fn cidr(ctx: &Ctx, range: &CidrRange) -> Result<IpNet, DecodeError> {
    let CidrRange {
        address_prefix,
        prefix_len,
    } = range;
    let ip: IpAddr = address_prefix.parse().map_err(|_| {
        ctx.invalid(
            "address_prefix",
            format!("{address_prefix:?} is not an IP address"),
        )
    })?;
    let len = prefix_len.map_or(0, |l| l.value);
    let len = u8::try_from(len)
        .ok()
        .and_then(|len| IpNet::new(ip, len).ok())
        .ok_or_else(|| ctx.invalid("prefix_len", format!("{len} is too long for {ip}")))?;
    Ok(len.trunc())
}
