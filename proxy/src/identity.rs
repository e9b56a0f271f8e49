//! Where `vm-proxy run` gets its workload identity: the certificate side of pilot-agent,
//! configured by pilot-agent's environment variables (`CA_ADDR`, `PROV_CERT`,
//! `OUTPUT_CERTS`, `FILE_MOUNTED_CERTS`, `SECRET_TTL`, ...). On an Istio VM those come from
//! `cluster.env` as `istio-start.sh` leaves them; with `--config` from the process
//! environment.

use std::path::{Path, PathBuf};

use certs::{CertsConfig, IdentityHandle, IdentitySource, RotationPolicy};
use xds_client::istio::{Origin, VmBootstrap};

/// What the identity side runs: the source pilot-agent would pick and its renewal timing,
/// publishing into `handle` (which the data path reads).
#[derive(Debug, Clone)]
pub struct Provisioning {
    pub handle: IdentityHandle,
    pub source: IdentitySource,
    pub policy: RotationPolicy,
    /// The configuration it was built from (xDS to istiod reuses its TLS settings).
    pub config: CertsConfig,
}

/// The workload identity settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("workload identity from {origin}: {source}")]
    Config {
        /// Where the variables came from: the environment, or the VM's env files.
        origin: &'static str,
        #[source]
        source: certs::error::ConfigError,
    },
}

impl Provisioning {
    fn new(config: CertsConfig) -> Provisioning {
        let source = IdentitySource::from_config(&config);
        tracing::info!(
            spiffe_id = %config.spiffe_id,
            source = %source.describe(),
            "workload identity configured"
        );
        Provisioning {
            handle: IdentityHandle::new(),
            policy: config.rotation.clone(),
            source,
            config,
        }
    }

    /// `--workload-identity` with `--config`: pilot-agent's variables from this process's
    /// environment; `token` is the bearer token file unless `JWT_POLICY=first-party-jwt`
    /// asks for the Kubernetes service-account token.
    pub fn from_env(token: &Path) -> Result<Provisioning, IdentityError> {
        let mut config = CertsConfig::from_env().map_err(|source| IdentityError::Config {
            origin: "the environment",
            source,
        })?;
        if std::env::var("JWT_POLICY").as_deref() != Ok("first-party-jwt") {
            config.ca.token_path = token.to_path_buf();
        }
        Ok(Provisioning::new(config))
    }

    /// `--istio-vm`: the variables as `istio-start.sh` hands them to pilot-agent, with the
    /// token and root certificate the VM's files (or flags) name.
    pub fn for_istio_vm(vm: &VmBootstrap) -> Result<Provisioning, IdentityError> {
        let mut vars: Vec<(String, String)> = vm
            .env
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        // pilot-agent sends CSRs to discoveryAddress when no CA_ADDR was given; the one
        // istio-start.sh derives is that same default unless the operator chose a pilot.
        if matches!(vm.env.origin("CA_ADDR"), Some(Origin::Derived)) {
            vars.retain(|(k, _)| k != "CA_ADDR");
            vars.push(("CA_ADDR".into(), vm.discovery_address.clone()));
        }
        let mut config = CertsConfig::from_vars(vars).map_err(|source| IdentityError::Config {
            origin: "cluster.env and the environment",
            source,
        })?;
        config.ca.token_path = vm.token_path.clone();
        if vm.env.non_empty("CA_ROOT_CA").is_none() {
            config.ca.root_cert = PathBuf::from(&vm.root_cert_path);
        }
        Ok(Provisioning::new(config))
    }
}
