//! Where the workload identity comes from: istiod's CA, a local SDS server, or files.

pub mod ca;
pub mod files;
pub mod sds;

use crate::config::CertsConfig;
use crate::handle::IdentityHandle;
use crate::pem_files::CertPaths;
use crate::rotation::RotationPolicy;

pub use ca::{CaSource, Issued};
pub use files::FileSource;
pub use sds::SdsSource;

/// One of the three ways to obtain certificates; [`crate::RotationManager`] runs it.
#[derive(Debug, Clone)]
pub enum IdentitySource {
    /// CSR to istiod (the VM default), renewed by the rotation policy.
    Ca(Box<CaSource>),
    /// Pushed by a local SDS server.
    Sds(SdsSource),
    /// Provisioned files, reloaded on change.
    Files(FileSource),
}

impl IdentitySource {
    /// Picks the source pilot-agent would: files if `FILE_MOUNTED_CERTS`, else the SDS
    /// socket if a server answers on it, else the CA.
    pub fn from_config(cfg: &CertsConfig) -> Self {
        if cfg.file_mounted {
            Self::Files(FileSource::new(CertPaths::in_dir(&cfg.ca.prov_cert_dir)))
        } else if sds::answers(&cfg.sds_socket) {
            Self::Sds(SdsSource::new(
                cfg.sds_socket.clone(),
                cfg.spiffe_id.to_string(),
            ))
        } else {
            Self::Ca(Box::new(CaSource::new(
                cfg.ca.clone(),
                cfg.spiffe_id.clone(),
            )))
        }
    }

    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Ca(ca) => format!("istiod CA at {}", ca.addr()),
            Self::Sds(sds) => format!("SDS server at {}", sds.path().display()),
            Self::Files(f) => format!("certificate files {}", f.paths().chain.display()),
        }
    }

    pub(crate) async fn run(self, handle: IdentityHandle, policy: RotationPolicy) {
        match self {
            Self::Ca(ca) => ca.run(handle, policy).await,
            Self::Sds(sds) => sds.run(handle, policy).await,
            Self::Files(files) => files.run(handle, policy).await,
        }
    }
}
