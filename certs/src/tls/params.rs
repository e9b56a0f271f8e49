//! What a mesh handshake may negotiate: TLS versions, TLS 1.2 cipher suites and key
//! exchange groups (Envoy's `TlsParameters`, as the proxy decodes them).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{ALL_CIPHER_SUITES, ALL_KX_GROUPS};
use rustls::version::{TLS12, TLS13};
use rustls::{CipherSuite, NamedGroup, SupportedProtocolVersion};

use crate::provider;

static BOTH: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];
static ONLY_12: &[&SupportedProtocolVersion] = &[&TLS12];
static ONLY_13: &[&SupportedProtocolVersion] = &[&TLS13];

/// Restrictions on a handshake; the default allows what [`provider`] offers over TLS 1.2
/// and 1.3.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeParams {
    pub versions: Versions,
    /// TLS 1.2 suites allowed, in preference order; empty keeps the provider's. TLS 1.3
    /// suites are never restricted (Envoy does not configure them either).
    pub tls12_cipher_suites: Vec<CipherSuite>,
    /// Key exchange groups allowed, in preference order; empty keeps the provider's.
    pub groups: Vec<NamedGroup>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Versions {
    #[default]
    Tls12And13,
    Tls12Only,
    Tls13Only,
}

impl HandshakeParams {
    pub(crate) fn versions(&self) -> &'static [&'static SupportedProtocolVersion] {
        match self.versions {
            Versions::Tls12And13 => BOTH,
            Versions::Tls12Only => ONLY_12,
            Versions::Tls13Only => ONLY_13,
        }
    }

    /// The crypto provider with only the allowed suites and groups.
    pub(crate) fn provider(&self) -> Arc<CryptoProvider> {
        let base = provider();
        if self.tls12_cipher_suites.is_empty() && self.groups.is_empty() {
            return base;
        }
        let mut restricted = (*base).clone();
        if !self.tls12_cipher_suites.is_empty() {
            let tls13 = base
                .cipher_suites
                .iter()
                .filter(|s| s.tls13().is_some())
                .copied();
            let tls12 = self.tls12_cipher_suites.iter().filter_map(|wanted| {
                ALL_CIPHER_SUITES
                    .iter()
                    .find(|s| s.tls13().is_none() && s.suite() == *wanted)
                    .copied()
            });
            restricted.cipher_suites = tls13.chain(tls12).collect();
        }
        if !self.groups.is_empty() {
            restricted.kx_groups = self
                .groups
                .iter()
                .filter_map(|wanted| ALL_KX_GROUPS.iter().find(|g| g.name() == *wanted).copied())
                .collect();
        }
        Arc::new(restricted)
    }
}
