//! The current identity, shared by the rotation task (writer) and every TLS endpoint
//! (readers). Handshakes read it lock-free through `arc-swap`; code that reacts to
//! rotations subscribes to a `watch` channel.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use tokio::sync::watch;

use crate::identity::WorkloadIdentity;
use crate::provider;

/// What a handshake needs, prepared once per published identity.
pub(crate) struct Published {
    pub(crate) identity: Arc<WorkloadIdentity>,
    /// Verifies client chains against this identity's trust bundle.
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
}

/// How the identity side is doing, for logs, admin pages and readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityStatus {
    /// Identities published so far.
    pub updates: u64,
    /// Failed attempts so far (CA calls, SDS streams, file reads).
    pub failures: u64,
    /// The most recent failure, cleared by the next success.
    pub last_error: Option<String>,
}

/// Cheap-to-clone access to the current workload identity.
#[derive(Clone)]
pub struct IdentityHandle {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwapOption<Published>,
    tx: watch::Sender<Option<Arc<WorkloadIdentity>>>,
    status: Mutex<IdentityStatus>,
}

impl Default for IdentityHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for IdentityHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityHandle")
            .field("current", &self.current())
            .field("status", &self.status())
            .finish()
    }
}

impl IdentityHandle {
    /// A handle holding no identity yet.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(None);
        Self {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                tx,
                status: Mutex::new(IdentityStatus::default()),
            }),
        }
    }

    /// A handle serving one fixed identity (tests, statically provisioned certificates).
    pub fn with_identity(identity: WorkloadIdentity) -> Self {
        let handle = Self::new();
        handle.publish(identity);
        handle
    }

    /// Makes `identity` current: handshakes from now on present its certificate and trust
    /// its bundle; established connections are untouched.
    pub fn publish(&self, identity: WorkloadIdentity) {
        let identity = Arc::new(identity);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(identity.root_store(), provider())
                .clear_root_hint_subjects()
                .build();
        let client_verifier = match client_verifier {
            Ok(v) => v,
            // WorkloadIdentity::new already rejected empty bundles, the only failure here
            // for a verifier without CRLs.
            Err(e) => {
                tracing::error!(error = %e, "cannot build a client verifier; keeping the previous identity");
                return;
            }
        };
        tracing::info!(
            spiffe_id = %identity.spiffe_id(),
            not_after = ?identity.not_after(),
            roots = identity.roots().len(),
            "workload certificate in place"
        );
        self.inner.current.store(Some(Arc::new(Published {
            identity: identity.clone(),
            client_verifier,
        })));
        self.update_status(|s| {
            s.updates += 1;
            s.last_error = None;
        });
        self.inner.tx.send_replace(Some(identity));
    }

    /// The current identity, if any.
    pub fn current(&self) -> Option<Arc<WorkloadIdentity>> {
        self.inner
            .current
            .load()
            .as_ref()
            .map(|p| p.identity.clone())
    }

    pub(crate) fn published(&self) -> Option<Arc<Published>> {
        self.inner.current.load_full()
    }

    /// Notified on every publish; the value is the new identity.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<WorkloadIdentity>>> {
        self.inner.tx.subscribe()
    }

    /// True while a certificate that is valid right now is held.
    pub fn is_ready(&self) -> bool {
        self.current()
            .is_some_and(|id| id.is_valid_at(SystemTime::now()))
    }

    /// Counters and the last error.
    pub fn status(&self) -> IdentityStatus {
        self.inner
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn record_failure(&self, error: &dyn std::error::Error) {
        let msg = crate::error::chain(error);
        tracing::warn!(error = %msg, ready = self.is_ready(), "workload certificate update failed");
        self.update_status(|s| {
            s.failures += 1;
            s.last_error = Some(msg);
        });
    }

    fn update_status(&self, f: impl FnOnce(&mut IdentityStatus)) {
        f(&mut self
            .inner
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner));
    }
}
