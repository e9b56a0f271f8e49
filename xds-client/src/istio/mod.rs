//! Joining an Istio mesh as a VM from the files `istioctl x workload entry configure`
//! writes, without pilot-agent or `istio-start.sh`.
//!
//! | file | Istio's VM path | read by |
//! | --- | --- | --- |
//! | `cluster.env` | `/var/lib/istio/envoy/cluster.env` | [`cluster_env`], layered by [`VmEnv`] |
//! | `sidecar.env` | `/var/lib/istio/envoy/sidecar.env` | the same, below `cluster.env` |
//! | `mesh.yaml` | `/etc/istio/config/mesh` | [`mesh`] |
//! | `istio-token` | `/var/run/secrets/tokens/istio-token` | path kept for the CA/TLS client |
//! | `root-cert.pem` | `/etc/certs/root-cert.pem` | path kept for the CA/TLS client |
//! | `hosts` | appended to `/etc/hosts` | the system resolver, when `discoveryAddress` is resolved |
//!
//! [`VmBootstrap::load`] turns them into the node istiod sees (id, cluster, metadata as
//! pilot-agent sends it), the effective ProxyConfig, the control-plane addresses and the
//! environment `istio-start.sh` would hand to pilot-agent and istio-iptables.

pub mod cluster_env;
pub mod environment;
pub mod host;
pub mod mesh;
pub mod vm_bootstrap;

pub use environment::{Origin, VmEnv};
pub use host::{Host, HostError};
pub use mesh::{AuthPolicy, MeshError, ProxyConfig, ProxySettings};
pub use vm_bootstrap::{EMULATED_ISTIO_VERSION, VmBootstrap, VmPaths, source_env_files};

use std::path::PathBuf;

use crate::bootstrap::BootstrapError;
use crate::proto::ProtoError;

/// Why a VM bootstrap could not be loaded; each names the file or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum IstioError {
    #[error("{}: no such file (copy the cluster.env `istioctl x workload entry configure` wrote here, or name it with --cluster-env)", path.display())]
    MissingClusterEnv { path: PathBuf },
    #[error(transparent)]
    EnvFile(#[from] cluster_env::EnvFileError),
    #[error("reading mesh config {}: {source}", path.display())]
    ReadMesh {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error("{name}={value:?} (set in {origin}): {message}")]
    Variable {
        name: String,
        value: String,
        origin: Origin,
        message: String,
    },
    #[error(
        "ISTIO_SVC_IP is not set and this machine has no address other than loopback or link-local"
    )]
    NoAddress,
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("discoveryAddress {address}: cannot resolve: {message}")]
    Resolve { address: String, message: String },
    #[error("rendering the node as JSON: {0}")]
    Node(ProtoError),
    #[error("the generated bootstrap was refused: {0}")]
    Generated(BootstrapError),
}

#[cfg(test)]
mod tests;
