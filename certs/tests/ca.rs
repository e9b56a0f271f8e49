//! CSR round trips with the fake istiod over real gRPC and TLS: token authentication,
//! request contents, key algorithms, files written, and CA-side failures.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, SystemTime};

use certs::pem_files::{CERT_CHAIN_FILE, CertPaths, KEY_FILE, ROOT_CERT_FILE};
use certs::source::CaSource;
use certs::{IdentitySource, RotationManager, WorkloadIdentity};
use common::*;
use test_support::{TestCa, TestCaOptions, TestPki};
use x509_parser::prelude::FromDer;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn csr_round_trip_with_token_over_tls() {
    init_tracing();
    let ca = TestCa::start(TestCaOptions::default()).await;
    ca.add_token(TOKEN, NS, SA);
    let vm = VmFiles::new(&ca, Some(TOKEN));
    let cfg = vm.config(
        &ca,
        &[
            ("ISTIO_META_CERT_SIGNER", "signer-x"),
            ("CA_HEADER_X-Tenant", "blue"),
        ],
    );
    let source = IdentitySource::from_config(&cfg);
    assert!(
        matches!(source, IdentitySource::Ca(_)),
        "{}",
        source.describe()
    );
    let manager = RotationManager::start(source, cfg.rotation.clone()).unwrap();
    let handle = manager.handle();
    assert!(!handle.is_ready());

    let id = wait_identity(handle, "a certificate", WAIT, |_| true).await;
    assert!(handle.is_ready());
    assert_eq!(
        id.spiffe_id().as_str(),
        "spiffe://cluster.local/ns/bar/sa/vm"
    );
    id.verify_at(SystemTime::now()).unwrap();
    assert_eq!(
        id.roots(),
        test_support::pki::pem_certs(&ca.pki().roots_pem()).as_slice()
    );
    // 24h asked for (SECRET_TTL default), 24h granted.
    let lifetime = id.not_after().duration_since(id.not_before()).unwrap();
    assert!(lifetime > Duration::from_secs(23 * 3600), "{lifetime:?}");

    let stats = ca.stats();
    assert_eq!(
        (stats.issued, stats.by_token, stats.by_client_cert),
        (1, 1, 0),
        "{stats:?}"
    );
    assert_eq!(
        stats.last_authorization.as_deref(),
        Some("Bearer token-for-vm")
    );
    assert_eq!(stats.last_cluster_id.as_deref(), Some("Kubernetes"));
    assert_eq!(stats.last_validity_duration, Some(86400));
    assert_eq!(stats.last_cert_signer.as_deref(), Some("signer-x"));
    assert!(
        stats
            .last_headers
            .contains(&("x-tenant".to_owned(), "blue".to_owned())),
        "{:?}",
        stats.last_headers
    );

    // Written to OUTPUT_CERTS: 0600, owned by us, no temporary files left, and they load
    // back into the same identity.
    let dir = vm.cert_dir();
    wait_until("files written", WAIT, || dir.join(KEY_FILE).exists()).await;
    let me = nix::unistd::geteuid().as_raw();
    for name in [CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE] {
        let meta = std::fs::metadata(dir.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        assert_eq!(meta.uid(), me, "{name}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let on_disk = load_dir(&dir);
    assert_eq!(on_disk.leaf(), id.leaf());
    assert_eq!(on_disk.roots(), id.roots());
}

fn load_dir(dir: &std::path::Path) -> WorkloadIdentity {
    let p = CertPaths::in_dir(dir);
    let chain = test_support::pki::pem_certs(&std::fs::read_to_string(&p.chain).unwrap());
    let roots = test_support::pki::pem_certs(&std::fs::read_to_string(&p.roots).unwrap());
    let key = rustls::pki_types::pem::PemObject::from_pem_file(&p.key).unwrap();
    WorkloadIdentity::new(chain, key, roots).unwrap()
}

fn key_algorithm_oid(id: &WorkloadIdentity) -> String {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(id.leaf()).unwrap();
    cert.public_key().algorithm.algorithm.to_id_string()
}

#[tokio::test]
async fn ecdsa_by_default_rsa_when_selected() {
    init_tracing();
    let ca = TestCa::start(TestCaOptions::default()).await;
    ca.add_token(TOKEN, NS, SA);
    for (extra, oid) in [
        (vec![], "1.2.840.10045.2.1"), // id-ecPublicKey
        (
            vec![("ECC_SIGNATURE_ALGORITHM", "RSA")],
            "1.2.840.113549.1.1.1",
        ), // rsaEncryption
    ] {
        let vm = VmFiles::new(&ca, Some(TOKEN));
        let cfg = vm.config(&ca, &extra);
        let source = CaSource::new(cfg.ca.clone(), cfg.spiffe_id.clone());
        let issued = source.fetch(None).await.unwrap();
        assert_eq!(key_algorithm_oid(&issued.identity), oid, "{extra:?}");
    }
}

#[tokio::test]
async fn secret_ttl_is_requested_and_the_ca_may_shorten_it() {
    init_tracing();
    let ca = TestCa::start(TestCaOptions {
        max_ttl: Duration::from_secs(600),
        ..TestCaOptions::default()
    })
    .await;
    ca.add_token(TOKEN, NS, SA);
    let vm = VmFiles::new(&ca, Some(TOKEN));
    let cfg = vm.config(&ca, &[("SECRET_TTL", "2h")]);
    let issued = CaSource::new(cfg.ca.clone(), cfg.spiffe_id.clone())
        .fetch(None)
        .await
        .unwrap();
    assert_eq!(ca.stats().last_validity_duration, Some(7200));
    let id = &issued.identity;
    let lifetime = id.not_after().duration_since(id.not_before()).unwrap();
    assert!(lifetime <= Duration::from_secs(600), "{lifetime:?}");
}

#[tokio::test]
async fn authentication_failures_are_reported_not_fatal() {
    init_tracing();
    let ca = TestCa::start(TestCaOptions::default()).await;
    ca.add_token(TOKEN, NS, SA);
    let addr = ca.addr().to_string();

    // No token file at all, and no certificate yet.
    let vm = VmFiles::new(&ca, None);
    let cfg = vm.config(&ca, &[]);
    let err = CaSource::new(cfg.ca.clone(), cfg.spiffe_id.clone())
        .fetch(None)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&addr) && msg.contains("Unauthenticated"),
        "{msg}"
    );
    assert_eq!(ca.stats().last_authorization, None);

    // A token the CA does not know.
    let vm = VmFiles::new(&ca, Some("stale-token\n"));
    let cfg = vm.config(&ca, &[]);
    let msg = CaSource::new(cfg.ca.clone(), cfg.spiffe_id.clone())
        .fetch(None)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("token is not valid"), "{msg}");
    // Re-read and trimmed.
    assert_eq!(
        ca.stats().last_authorization.as_deref(),
        Some("Bearer stale-token")
    );

    // The wrong cluster.
    let vm = VmFiles::new(&ca, Some(TOKEN));
    let cfg = vm.config(&ca, &[("ISTIO_META_CLUSTER_ID", "cluster-b")]);
    let msg = CaSource::new(cfg.ca.clone(), cfg.spiffe_id.clone())
        .fetch(None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("PermissionDenied") && msg.contains("cluster-b"),
        "{msg}"
    );

    // Under the manager the same failure is retried with backoff and kept in the status.
    let vm = VmFiles::new(&ca, None);
    let cfg = vm.config(&ca, &[]);
    let manager =
        RotationManager::start(IdentitySource::from_config(&cfg), cfg.rotation.clone()).unwrap();
    let handle = manager.handle().clone();
    wait_until("three failed attempts", WAIT, || {
        handle.status().failures >= 3
    })
    .await;
    assert!(!handle.is_ready());
    let status = handle.status();
    assert!(
        status.last_error.as_deref().unwrap_or("").contains(&addr),
        "{status:?}"
    );

    // The token appears: the next retry succeeds.
    std::fs::write(vm.token_path(), TOKEN).unwrap();
    wait_identity(&handle, "a certificate once the token exists", WAIT, |_| {
        true
    })
    .await;
    assert_eq!(handle.status().last_error, None);
}

#[tokio::test]
async fn istiod_is_verified_with_the_root_file_and_its_san() {
    init_tracing();
    let ca = TestCa::start(TestCaOptions::default()).await;
    ca.add_token(TOKEN, NS, SA);

    // The name istiod's certificate does not carry.
    let vm = VmFiles::new(&ca, Some(TOKEN));
    let cfg = vm.config(&ca, &[("ISTIOD_SAN", "istiod.elsewhere.svc")]);
    let msg = CaSource::new(cfg.ca.clone(), cfg.spiffe_id.clone())
        .fetch(None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("connection failed") && msg.contains("not valid for name"),
        "{msg}"
    );

    // A root file from another mesh.
    let vm = VmFiles::new(&ca, Some(TOKEN));
    std::fs::write(
        vm.cert_dir().join(ROOT_CERT_FILE),
        TestPki::new("cluster.local").roots_pem(),
    )
    .unwrap();
    let cfg = vm.config(&ca, &[]);
    let msg = CaSource::new(cfg.ca.clone(), cfg.spiffe_id.clone())
        .fetch(None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("UnknownIssuer") || msg.contains("unknown issuer"),
        "{msg}"
    );

    // No root file: named in the error.
    let vm = VmFiles::new(&ca, Some(TOKEN));
    std::fs::remove_file(vm.cert_dir().join(ROOT_CERT_FILE)).unwrap();
    let cfg = vm.config(&ca, &[]);
    let msg = CaSource::new(cfg.ca.clone(), cfg.spiffe_id.clone())
        .fetch(None)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("root-cert.pem"), "{msg}");

    // CA_ROOT_CA points elsewhere and wins over PROV_CERT.
    let vm = VmFiles::new(&ca, Some(TOKEN));
    let alt = vm.dir.join("ca-root.pem");
    std::fs::write(&alt, ca.pki().roots_pem()).unwrap();
    std::fs::write(vm.cert_dir().join(ROOT_CERT_FILE), "garbage").unwrap();
    let cfg = vm.config(&ca, &[("CA_ROOT_CA", alt.to_str().unwrap())]);
    CaSource::new(cfg.ca.clone(), cfg.spiffe_id.clone())
        .fetch(None)
        .await
        .unwrap();
}

#[tokio::test]
async fn istiod_signs_the_authenticated_identity() {
    init_tracing();
    let ca = TestCa::start(TestCaOptions::default()).await;
    // The token belongs to another service account than the one configured.
    ca.add_token(TOKEN, NS, "other-sa");
    let vm = VmFiles::new(&ca, Some(TOKEN));
    let cfg = vm.config(&ca, &[]);
    let issued = CaSource::new(cfg.ca.clone(), cfg.spiffe_id.clone())
        .fetch(None)
        .await
        .unwrap();
    assert_eq!(
        issued.identity.spiffe_id().as_str(),
        "spiffe://cluster.local/ns/bar/sa/other-sa"
    );
}
