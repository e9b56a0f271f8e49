//! A small mesh PKI for tests: a root (or two, while rotating) that issues short-lived
//! SPIFFE leaf certificates, plus the odd certificate a verifier must reject.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Key types a test can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TestKey {
    #[default]
    EcdsaP256,
    Rsa2048,
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub key: TestKey,
}

impl LeafSpec {
    /// A workload certificate for `spiffe_id`, valid from now for `lifetime`.
    pub fn spiffe(spiffe_id: &str, lifetime: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            uris: vec![spiffe_id.to_owned()],
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            not_before: now,
            not_after: now + lifetime,
            key: TestKey::EcdsaP256,
        }
    }
}

/// A certificate with its key and the bundle it chains to, in PEM and DER.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub chain_pem: String,
    pub key_pem: String,
    pub roots_pem: String,
}

impl IssuedCert {
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        pem_certs(&self.chain_pem)
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("test key is PEM")
    }

    pub fn roots(&self) -> Vec<CertificateDer<'static>> {
        pem_certs(&self.roots_pem)
    }

    /// Writes `cert-chain.pem`, `key.pem` and `root-cert.pem` into `dir` (0600).
    pub fn write_to(&self, dir: &Path) {
        for (name, body) in [
            ("cert-chain.pem", &self.chain_pem),
            ("key.pem", &self.key_pem),
            ("root-cert.pem", &self.roots_pem),
        ] {
            let path = dir.join(name);
            fs::write(&path, body).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        }
    }
}

/// Every certificate in a PEM text.
pub fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("test PEM certificates parse")
}

struct Root {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Root {
    /// `n` numbers roots across all PKIs of the process, so two PKIs never share a name
    /// (a verifier then reports an unknown issuer, not a bad signature).
    fn new(trust_domain: &str, n: usize) -> Root {
        let key = KeyPair::generate().expect("root key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        dn.push(DnType::CommonName, format!("test mesh root {n}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // rcgen's default validity ends in 4096; a test root needs a day.
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(24 * 3600)).into();
        let pem = params.self_signed(&key).expect("self-sign root").pem();
        Root { params, key, pem }
    }

    fn issue(&self, spec: &LeafSpec, public_key: &impl PublicKeyData) -> String {
        let params = leaf_params(spec);
        let issuer = Issuer::from_params(&self.params, &self.key);
        params
            .signed_by(public_key, &issuer)
            .expect("sign leaf")
            .pem()
    }
}

fn leaf_params(spec: &LeafSpec) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = spec
        .uris
        .iter()
        .map(|u| SanType::URI(u.as_str().try_into().expect("URI SAN is IA5")))
        .chain(
            spec.dns_names
                .iter()
                .map(|d| SanType::DnsName(d.as_str().try_into().expect("DNS SAN is IA5"))),
        )
        .chain(spec.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)))
        .collect();
    params.not_before = spec.not_before.into();
    params.not_after = spec.not_after.into();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params
}

fn new_key(kind: TestKey) -> KeyPair {
    match kind {
        TestKey::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        TestKey::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
    }
    .expect("generate test key")
}

struct State {
    bundle: Vec<Arc<Root>>,
    signer: Arc<Root>,
}

fn next_root_number() -> usize {
    static N: AtomicUsize = AtomicUsize::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A mesh CA's key material: a trust bundle and the root that signs.
///
/// Root rotation happens the way a mesh does it safely, in three steps:
/// [`TestPki::start_rotation`] adds a new root to the bundle (the old one still signs),
/// [`TestPki::promote_new_root`] makes the new one sign, [`TestPki::finish_rotation`]
/// drops the old one from the bundle.
pub struct TestPki {
    trust_domain: String,
    state: Mutex<State>,
}

impl TestPki {
    pub fn new(trust_domain: &str) -> TestPki {
        let root = Arc::new(Root::new(trust_domain, next_root_number()));
        TestPki {
            trust_domain: trust_domain.to_owned(),
            state: Mutex::new(State {
                bundle: vec![root.clone()],
                signer: root,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// `spiffe://<td>/ns/<ns>/sa/<sa>` in this PKI's trust domain.
    pub fn spiffe_id(&self, namespace: &str, service_account: &str) -> String {
        format!(
            "spiffe://{}/ns/{namespace}/sa/{service_account}",
            self.trust_domain
        )
    }

    /// The trust bundle, every root concatenated.
    pub fn roots_pem(&self) -> String {
        self.state().bundle.iter().map(|r| r.pem.as_str()).collect()
    }

    /// The root that signs now.
    pub fn signer_pem(&self) -> String {
        self.state().signer.pem.clone()
    }

    /// Issues a leaf with a fresh key.
    pub fn issue(&self, spec: &LeafSpec) -> IssuedCert {
        let key = new_key(spec.key);
        let state = self.state();
        IssuedCert {
            chain_pem: state.signer.issue(spec, &key),
            key_pem: key.serialize_pem(),
            roots_pem: state.bundle.iter().map(|r| r.pem.as_str()).collect(),
        }
    }

    /// Issues a workload leaf for `spiffe_id` valid for `lifetime` from now.
    pub fn issue_spiffe(&self, spiffe_id: &str, lifetime: Duration) -> IssuedCert {
        self.issue(&LeafSpec::spiffe(spiffe_id, lifetime))
    }

    /// Signs a PEM CSR's public key for `identity` (ignoring the CSR's own SANs, as istiod
    /// does). Returns the leaf PEM, or why the CSR is unusable.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &str,
        lifetime: Duration,
    ) -> Result<String, String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("bad CSR: {e}"))?;
        let spec = LeafSpec::spiffe(identity, lifetime);
        Ok(self.state().signer.issue(&spec, &csr.public_key))
    }

    pub fn start_rotation(&self) {
        let mut state = self.state();
        let root = Arc::new(Root::new(&self.trust_domain, next_root_number()));
        state.bundle.push(root);
    }

    pub fn promote_new_root(&self) {
        let mut state = self.state();
        let newest = state.bundle.last().expect("bundle is never empty").clone();
        state.signer = newest;
    }

    pub fn finish_rotation(&self) {
        let mut state = self.state();
        let signer = state.signer.clone();
        state.bundle = vec![signer];
    }
}

/// A self-signed leaf carrying `spiffe_id`: valid in form, trusted by nobody.
pub fn self_signed(spiffe_id: &str, lifetime: Duration) -> IssuedCert {
    let key = new_key(TestKey::EcdsaP256);
    let pem = leaf_params(&LeafSpec::spiffe(spiffe_id, lifetime))
        .self_signed(&key)
        .expect("self-sign leaf")
        .pem();
    IssuedCert {
        chain_pem: pem.clone(),
        key_pem: key.serialize_pem(),
        roots_pem: pem,
    }
}
