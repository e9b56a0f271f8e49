//! Where `vm-proxy run` gets its configuration: a bootstrap file, the embedded default, or
//! (`--istio-vm`) the files `istioctl x workload entry configure` writes.
//!
//! Decoding belongs to `xds-client`: the proxy receives only model values and an opaque
//! config dump, never a proto.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use xds_client::ads::{AdsClient, Transport};
use xds_client::istio::{IstioError, VmBootstrap, VmPaths};
use xds_client::model::{Snapshot, WorkloadInfo};

use crate::admin::ConfigDumpFn;

/// The Envoy bootstrap `vm-proxy run` uses without `--config`: admin on 127.0.0.1:15000,
/// 127.0.0.1:15080 proxied to the admin server, and Istio-style outbound (15001) and inbound
/// (15006) capture listeners with ORIGINAL_DST passthrough clusters, inbound bound to
/// 127.0.0.6. Every address is loopback and unprivileged.
pub const DEFAULT_BOOTSTRAP: &str = include_str!("default-bootstrap.yaml");

/// A decoded configuration: what the data path runs, and what `/config_dump` shows.
pub struct LoadedConfig {
    pub snapshot: Snapshot,
    pub config_dump: ConfigDumpFn,
    /// The xDS client to run when the bootstrap has `dynamic_resources`; `/config_dump`
    /// already follows what it accepts.
    pub ads: Option<AdsClient>,
    /// The local workload of the node metadata, which Istio's metric labels name.
    pub local_workload: WorkloadInfo,
}

/// Decodes `--config FILE`, or [`DEFAULT_BOOTSTRAP`] without one.
pub fn load(path: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
    let loaded = match path {
        Some(p) => xds_client::bootstrap::load_file(p),
        None => xds_client::bootstrap::load_str(DEFAULT_BOOTSTRAP, "embedded default bootstrap"),
    }
    .map_err(|e| ConfigError::new(path, e))?;
    Ok(from_bootstrap(loaded))
}

/// Loads an Istio VM's files.
pub fn load_istio_vm(paths: &VmPaths) -> Result<VmBootstrap, IstioError> {
    VmBootstrap::load(paths)
}

/// The configuration of a loaded VM: `plaintext` is the xDS server to use instead of
/// istiod; `transport` dials istiod (over TLS) when there is none.
pub fn istio_vm_config(
    vm: &VmBootstrap,
    plaintext: Option<SocketAddr>,
    transport: Option<Arc<dyn Transport>>,
) -> Result<LoadedConfig, IstioError> {
    let loaded = vm.load_config(plaintext)?;
    Ok(from_bootstrap_with(loaded, transport))
}

fn from_bootstrap(loaded: xds_client::bootstrap::LoadedConfig) -> LoadedConfig {
    from_bootstrap_with(loaded, None)
}

fn from_bootstrap_with(
    loaded: xds_client::bootstrap::LoadedConfig,
    transport: Option<Arc<dyn Transport>>,
) -> LoadedConfig {
    let dump = loaded.dump;
    let local_workload = loaded.local_workload;
    let Some(ads) = loaded.ads else {
        return LoadedConfig {
            snapshot: loaded.snapshot,
            config_dump: Arc::new(move || dump.to_json()),
            ads: None,
            local_workload,
        };
    };
    let mut config = ads.client_config();
    if let Some(transport) = transport {
        config.server = transport.server();
        config.transport = Some(transport);
    }
    let (client, status) = AdsClient::new(config, loaded.snapshot.clone());
    LoadedConfig {
        snapshot: loaded.snapshot,
        config_dump: Arc::new(move || dump.with_dynamic(&status.borrow())),
        ads: Some(client),
        local_workload,
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", source_name(.path.as_deref()))]
pub struct ConfigError {
    /// The file, or `None` for the embedded default.
    pub path: Option<std::path::PathBuf>,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl ConfigError {
    pub fn new(
        path: Option<&Path>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ConfigError {
        ConfigError {
            path: path.map(Path::to_path_buf),
            source: source.into(),
        }
    }
}

fn source_name(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!("configuration file {}", p.display()),
        None => "embedded default bootstrap".to_owned(),
    }
}
