//! The workload identity every source produces and every TLS building block consumes.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::error::IdentityError;
use crate::provider;
use crate::spiffe::SpiffeId;

/// A certificate chain with its private key and the trust bundle that came with it.
///
/// Built only through [`WorkloadIdentity::new`], which checks that the key belongs to the
/// leaf, that the leaf carries one SPIFFE ID, and that every root is a usable trust anchor;
/// the rustls objects handshakes need are prepared once here, not per connection.
pub struct WorkloadIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Vec<CertificateDer<'static>>,
    not_before: SystemTime,
    not_after: SystemTime,
    spiffe_id: SpiffeId,
    certified_key: Arc<CertifiedKey>,
    root_store: Arc<RootCertStore>,
}

impl WorkloadIdentity {
    /// Checks and assembles an identity. `chain` is leaf first; `roots` may hold several
    /// roots (both the old and the new one while the mesh CA rotates).
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, IdentityError> {
        let leaf = chain.first().ok_or(IdentityError::EmptyChain)?;
        if roots.is_empty() {
            return Err(IdentityError::NoRoots);
        }
        for (index, cert) in chain.iter().enumerate() {
            x509_parser::parse_x509_certificate(cert).map_err(|e| {
                IdentityError::BadCertificate {
                    index,
                    reason: e.to_string(),
                }
            })?;
        }
        let (not_before, not_after) =
            validity(leaf).map_err(|reason| IdentityError::BadCertificate { index: 0, reason })?;
        let spiffe_id = SpiffeId::from_certificate(leaf)?;

        let certified_key =
            match CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()) {
                Ok(ck) => ck,
                Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                    return Err(IdentityError::KeyMismatch);
                }
                Err(e) => return Err(IdentityError::BadKey(e.to_string())),
            };

        let mut root_store = RootCertStore::empty();
        for (index, root) in roots.iter().enumerate() {
            root_store
                .add(root.clone())
                .map_err(|e| IdentityError::BadRoot {
                    index,
                    reason: e.to_string(),
                })?;
        }

        Ok(Self {
            chain,
            key,
            roots,
            not_before,
            not_after,
            spiffe_id,
            certified_key: Arc::new(certified_key),
            root_store: Arc::new(root_store),
        })
    }

    /// The certificate chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The private key of the leaf.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The trust bundle: every root peers' chains may end in.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Start of the leaf's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the leaf's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The leaf's SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// Whether the leaf is within its validity period at `at`.
    pub fn is_valid_at(&self, at: SystemTime) -> bool {
        self.not_before <= at && at < self.not_after
    }

    /// The chain and signing key, ready for rustls.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified_key.clone()
    }

    /// The trust bundle, ready for rustls.
    pub fn root_store(&self) -> Arc<RootCertStore> {
        self.root_store.clone()
    }

    /// Checks that the leaf is valid at `at` and chains (through the intermediates) to one of
    /// the bundled roots, which is what a peer holding the same bundle will check.
    pub fn verify_at(&self, at: SystemTime) -> Result<(), IdentityError> {
        if !self.is_valid_at(at) {
            return Err(IdentityError::NotValidNow {
                spiffe_id: self.spiffe_id.clone(),
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        let parsed = ParsedCertificate::try_from(self.leaf())
            .map_err(|e| IdentityError::Untrusted(e.to_string()))?;
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.root_store,
            &self.chain[1..],
            UnixTime::since_unix_epoch(since_epoch),
            provider().signature_verification_algorithms.all,
        )
        .map_err(|e| IdentityError::Untrusted(e.to_string()))
    }
}

impl fmt::Debug for WorkloadIdentity {
    // Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .field("roots_len", &self.roots.len())
            .finish_non_exhaustive()
    }
}

/// `notBefore` and `notAfter` of a DER certificate.
pub(crate) fn validity(cert: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    let v = parsed.validity();
    Ok((
        unix_to_system(v.not_before.timestamp()),
        unix_to_system(v.not_after.timestamp()),
    ))
}

fn unix_to_system(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}
