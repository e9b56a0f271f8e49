//! Certificate resolvers that always hand rustls the current identity, so rotation needs
//! no configuration rebuild.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::handle::IdentityHandle;

/// Serves the handle's current certificate, on the server and on the client side.
#[derive(Debug, Clone)]
pub struct CurrentCertResolver {
    handle: IdentityHandle,
}

impl CurrentCertResolver {
    /// Resolves from `handle`.
    pub fn new(handle: IdentityHandle) -> Self {
        Self { handle }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.handle.published().map(|p| p.identity.certified_key())
    }
}

impl ResolvesServerCert for CurrentCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let key = self.current();
        if key.is_none() {
            tracing::debug!("TLS handshake before a workload certificate is held");
        }
        key
    }
}

impl ResolvesClientCert for CurrentCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
