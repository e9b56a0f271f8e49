//! File-mounted certificates (`FILE_MOUNTED_CERTS`): `cert-chain.pem`, `key.pem` and
//! `root-cert.pem` provisioned by someone else, reloaded when their contents change.

use std::time::SystemTime;

use crate::error::{FileError, IdentityError};
use crate::handle::IdentityHandle;
use crate::pem_files::{self, CertPaths};
use crate::rotation::RotationPolicy;

/// Watches one certificate directory.
#[derive(Debug, Clone)]
pub struct FileSource {
    paths: CertPaths,
}

impl FileSource {
    /// Watches the three files at `paths`.
    pub fn new(paths: CertPaths) -> Self {
        Self { paths }
    }

    /// The watched paths.
    pub fn paths(&self) -> &CertPaths {
        &self.paths
    }

    /// Polls the files every `file_poll_interval`. Changed contents are parsed and, if they
    /// form a valid identity, published; otherwise the error (naming the file) is recorded
    /// once and the previous identity stays in service. Comparing contents rather than
    /// mtimes also catches a rename over the file within the same second.
    pub(crate) async fn run(self, handle: IdentityHandle, policy: RotationPolicy) {
        let mut last_seen = None;
        let mut last_read_error = None;
        loop {
            match pem_files::read(&self.paths) {
                Ok(bytes) => {
                    last_read_error = None;
                    if last_seen.as_ref() != Some(&bytes) {
                        match self.check(&bytes) {
                            Ok(identity) => handle.publish(identity),
                            Err(e) => handle.record_failure(&e),
                        }
                        last_seen = Some(bytes);
                    }
                }
                Err(e) => {
                    // A file being replaced by hand can be missing for a moment: report
                    // each distinct problem once, not every poll.
                    let text = e.to_string();
                    if last_read_error.as_ref() != Some(&text) {
                        handle.record_failure(&e);
                        last_read_error = Some(text);
                    }
                    last_seen = None;
                }
            }
            tokio::time::sleep(policy.file_poll_interval).await;
        }
    }

    fn check(&self, bytes: &pem_files::CertBytes) -> Result<crate::WorkloadIdentity, FileError> {
        let identity = pem_files::parse(&self.paths, bytes)?;
        if identity.not_after() <= SystemTime::now() {
            return Err(FileError::Identity {
                chain: self.paths.chain.clone(),
                key: self.paths.key.clone(),
                source: IdentityError::NotValidNow {
                    spiffe_id: identity.spiffe_id().clone(),
                    not_before: identity.not_before(),
                    not_after: identity.not_after(),
                },
            });
        }
        Ok(identity)
    }
}
