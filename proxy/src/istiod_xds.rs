//! xDS to istiod over TLS, as pilot-agent dials it for Envoy: the same TLS and credentials
//! as its CA client (token, `ClusterID`, the workload certificate once held), with the root
//! from `XDS_ROOT_CA` (else the mesh root file) and the server name from `ISTIOD_SAN` (else
//! the host of `discoveryAddress`). Every stream opens a new connection, so one made after
//! a rotation presents the new certificate.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use certs::IdentityHandle;
use certs::istiod::IstiodEndpoint;
use tonic::metadata::{AsciiMetadataKey, MetadataMap};
use tonic::transport::Channel;
use xds_client::ads::Transport;
use xds_client::istio::VmBootstrap;

use crate::identity::Provisioning;

/// The name istiod's certificate carries, which pilot-agent expects for `localhost`.
const ISTIOD_DEFAULT_SAN: &str = "istiod.istio-system.svc";
const XDS_HEADER_PREFIX: &str = "XDS_HEADER_";

/// The ADS stream's [`Transport`] to istiod.
#[derive(Debug)]
pub struct IstiodXds {
    endpoint: IstiodEndpoint,
    handle: IdentityHandle,
}

/// The xDS-to-istiod settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum XdsTlsError {
    #[error("discoveryAddress {address:?}: expected host:port")]
    Address { address: String },
    #[error("{var}: {reason}")]
    Variable { var: String, reason: String },
}

impl IstiodXds {
    /// For `vm`'s `discoveryAddress`, authenticated as `identity` is.
    pub fn new(vm: &VmBootstrap, identity: &Provisioning) -> Result<IstiodXds, XdsTlsError> {
        let address = &vm.discovery_address;
        let (host, port) = host_port(address).ok_or_else(|| XdsTlsError::Address {
            address: address.clone(),
        })?;
        let mut cfg = identity.config.ca.clone();
        cfg.server_name = match vm.env.non_empty("ISTIOD_SAN") {
            Some(san) => san.to_owned(),
            None if host == "localhost" => ISTIOD_DEFAULT_SAN.to_owned(),
            None => host.clone(),
        };
        cfg.host = host;
        cfg.port = port;
        cfg.root_cert = match vm.env.non_empty("XDS_ROOT_CA") {
            Some("SYSTEM") => {
                return Err(XdsTlsError::Variable {
                    var: "XDS_ROOT_CA".into(),
                    reason: "the OS trust store is not supported; give the path of a PEM root file"
                        .into(),
                });
            }
            Some(path) => PathBuf::from(path),
            None => vm.root_cert_path.clone(),
        };
        // pilot-agent sends XDS_HEADER_* to istiod's xDS, CA_HEADER_* only to the CA.
        let mut headers = Vec::new();
        for (name, value) in vm.env.iter() {
            let Some(header) = name.strip_prefix(XDS_HEADER_PREFIX) else {
                continue;
            };
            let lower = header.to_ascii_lowercase();
            let bad = |reason: &str| XdsTlsError::Variable {
                var: name.to_owned(),
                reason: reason.to_owned(),
            };
            AsciiMetadataKey::from_bytes(lower.as_bytes())
                .map_err(|_| bad("not a valid gRPC metadata name"))?;
            if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(bad("value is not printable ASCII"));
            }
            headers.push((lower, value.to_owned()));
        }
        headers.sort();
        cfg.extra_headers = headers;
        tracing::info!(
            istiod = %cfg.addr(),
            server_name = %cfg.server_name,
            root = %cfg.root_cert.display(),
            "xDS to istiod over TLS"
        );
        Ok(IstiodXds {
            endpoint: IstiodEndpoint::new(cfg),
            handle: identity.handle.clone(),
        })
    }
}

impl Transport for IstiodXds {
    fn server(&self) -> String {
        format!("https://{}", self.endpoint.addr())
    }

    fn connect(&self) -> Pin<Box<dyn Future<Output = Result<Channel, String>> + Send + '_>> {
        Box::pin(async move {
            self.endpoint
                .connect(&self.handle)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn metadata(&self) -> MetadataMap {
        self.endpoint.metadata()
    }
}

/// `host:port` or `[v6]:port`.
fn host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn discovery_addresses() {
        assert_eq!(
            host_port("istiod.istio-system.svc:15012"),
            Some(("istiod.istio-system.svc".into(), 15012))
        );
        assert_eq!(host_port("[::1]:15012"), Some(("::1".into(), 15012)));
        assert_eq!(host_port("istiod"), None);
        assert_eq!(host_port(":15012"), None);
        assert_eq!(host_port("istiod:port"), None);
    }
}
