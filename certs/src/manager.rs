//! Runs an identity source in the background and owns its task.

use tokio::task::JoinHandle;

use crate::error::NoRuntime;
use crate::handle::IdentityHandle;
use crate::rotation::RotationPolicy;
use crate::source::IdentitySource;

/// Keeps the workload identity current: the source's task publishes into an
/// [`IdentityHandle`] that TLS endpoints read. Dropping the manager stops the task; the
/// handle keeps serving the last identity.
#[derive(Debug)]
pub struct RotationManager {
    handle: IdentityHandle,
    task: JoinHandle<()>,
}

impl RotationManager {
    /// Starts `source` on the current Tokio runtime, publishing into a new handle.
    pub fn start(source: IdentitySource, policy: RotationPolicy) -> Result<Self, NoRuntime> {
        Self::start_with(IdentityHandle::new(), source, policy)
    }

    /// Starts `source`, publishing into `handle` (which may already hold an identity).
    pub fn start_with(
        handle: IdentityHandle,
        source: IdentitySource,
        policy: RotationPolicy,
    ) -> Result<Self, NoRuntime> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NoRuntime)?;
        tracing::info!(source = %source.describe(), "starting workload certificate management");
        let task = runtime.spawn(source.run(handle.clone(), policy));
        Ok(Self { handle, task })
    }

    /// The handle consumers read.
    pub fn handle(&self) -> &IdentityHandle {
        &self.handle
    }
}

impl Drop for RotationManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}
