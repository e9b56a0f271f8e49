//! The workload's private key and the CSR that carries its SPIFFE ID to the CA.

use std::fmt;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::KeyError;
use crate::spiffe::SpiffeId;

/// Which key the workload generates for each CSR.
///
/// The default is ECDSA P-256, unlike pilot-agent, whose default is RSA 2048 and which
/// switches to ECDSA only with `ECC_SIGNATURE_ALGORITHM=ECDSA`: P-256 handshakes are cheaper
/// and every Istio release accepts them. `ECC_SIGNATURE_ALGORITHM=RSA` selects RSA with
/// `WORKLOAD_RSA_KEY_SIZE` bits (see [`crate::CertsConfig::from_lookup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// RSA (PKCS#1 v1.5 signatures with SHA-256) of the given size.
    Rsa(RsaBits),
}

/// RSA key sizes Istio allows (it refuses less than 2048).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaBits {
    B2048,
    B3072,
    B4096,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EcdsaP256 => f.write_str("ECDSA P-256"),
            Self::EcdsaP384 => f.write_str("ECDSA P-384"),
            Self::Rsa(RsaBits::B2048) => f.write_str("RSA 2048"),
            Self::Rsa(RsaBits::B3072) => f.write_str("RSA 3072"),
            Self::Rsa(RsaBits::B4096) => f.write_str("RSA 4096"),
        }
    }
}

/// A fresh key and a PEM CSR for it. The key stays in memory; it is only ever written to
/// the 0600 `key.pem` in the output directory.
pub(crate) struct KeyAndCsr {
    pub(crate) key: PrivateKeyDer<'static>,
    pub(crate) key_pem: String,
    pub(crate) csr_pem: String,
}

/// Generates a key of `algorithm` and a CSR with an empty subject and `spiffe_id` as its
/// only SAN (a URI), which is what pilot-agent sends. istiod ignores the SAN and signs the
/// identity it authenticated, but other CAs read it.
pub(crate) fn generate(
    algorithm: KeyAlgorithm,
    spiffe_id: &SpiffeId,
) -> Result<KeyAndCsr, KeyError> {
    let key_err = |source| KeyError::Generate {
        algorithm: algorithm.to_string(),
        source,
    };
    let pair = match algorithm {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyAlgorithm::Rsa(bits) => KeyPair::generate_rsa_for(
            &rcgen::PKCS_RSA_SHA256,
            match bits {
                RsaBits::B2048 => rcgen::RsaKeySize::_2048,
                RsaBits::B3072 => rcgen::RsaKeySize::_3072,
                RsaBits::B4096 => rcgen::RsaKeySize::_4096,
            },
        ),
    }
    .map_err(key_err)?;

    let csr_err = |source| KeyError::Csr {
        spiffe_id: spiffe_id.clone(),
        source,
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(
        spiffe_id.as_str().try_into().map_err(csr_err)?,
    )];
    let csr_pem = params
        .serialize_request(&pair)
        .and_then(|csr| csr.pem())
        .map_err(csr_err)?;

    Ok(KeyAndCsr {
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.serialize_der())),
        key_pem: pair.serialize_pem(),
        csr_pem,
    })
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::CertificateSigningRequestDer;
    use rustls_pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509CertificationRequest};

    use super::*;

    fn csr_uris(csr_pem: &str) -> Vec<String> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).unwrap();
        let (_, csr) = X509CertificationRequest::from_der(der.as_ref()).unwrap();
        let mut uris = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    if let GeneralName::URI(u) = name {
                        uris.push((*u).to_owned());
                    }
                }
            }
        }
        uris
    }

    #[test]
    fn csr_carries_the_spiffe_id_for_each_algorithm() {
        let id = SpiffeId::istio("cluster.local", "bar", "vm").unwrap();
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa(RsaBits::B2048),
        ] {
            let out = generate(alg, &id).unwrap();
            assert_eq!(csr_uris(&out.csr_pem), [id.as_str()], "{alg}");
            assert!(
                out.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
                "{alg}"
            );
            assert!(matches!(out.key, PrivateKeyDer::Pkcs8(_)));
        }
    }

    #[test]
    fn each_call_makes_a_new_key() {
        let id = SpiffeId::istio("cluster.local", "bar", "vm").unwrap();
        let a = generate(KeyAlgorithm::EcdsaP256, &id).unwrap();
        let b = generate(KeyAlgorithm::EcdsaP256, &id).unwrap();
        assert_ne!(a.key_pem, b.key_pem);
    }
}
