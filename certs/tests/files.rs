//! File-mounted certificates (`FILE_MOUNTED_CERTS=true`): reloaded on change; a bad file
//! is reported by path and the previous identity stays in service.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use certs::{CertsConfig, IdentitySource, RotationManager};
use common::*;
use test_support::{IssuedCert, LeafSpec, TempDir, TestPki};

const WAIT: Duration = Duration::from_secs(10);
const ID: &str = "spiffe://cluster.local/ns/bar/sa/files";

/// Replaces `dir/name` the way provisioning tools do: a temporary file, then a rename.
fn replace(dir: &Path, name: &str, contents: &str) {
    let tmp = dir.join(format!(".{name}.new"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Something done to the mounted files.
type Breakage<'a> = Box<dyn Fn() + 'a>;

fn install(dir: &Path, cert: &IssuedCert) {
    replace(dir, "root-cert.pem", &cert.roots_pem);
    replace(dir, "key.pem", &cert.key_pem);
    replace(dir, "cert-chain.pem", &cert.chain_pem);
}

#[tokio::test]
async fn file_certificates_reload_and_bad_files_are_reported_by_path() {
    init_tracing();
    let pki = TestPki::new("cluster.local");
    let dir = TempDir::new("certs-files");
    let first = pki.issue_spiffe(ID, Duration::from_secs(3600));
    first.write_to(dir.path());

    let mut cfg = CertsConfig::from_vars([
        ("FILE_MOUNTED_CERTS".to_owned(), "true".to_owned()),
        ("PROV_CERT".to_owned(), dir.path().display().to_string()),
    ])
    .unwrap();
    cfg.rotation = fast_policy();
    let source = IdentitySource::from_config(&cfg);
    assert!(
        matches!(source, IdentitySource::Files(_)),
        "{}",
        source.describe()
    );
    let manager = RotationManager::start(source, cfg.rotation.clone()).unwrap();
    let handle = manager.handle();
    let first_leaf = first.chain()[0].clone();
    wait_identity(handle, "the mounted certificate", WAIT, |id| {
        id.leaf() == &first_leaf
    })
    .await;
    assert!(handle.is_ready());

    // A new certificate is mounted: picked up.
    let second = pki.issue_spiffe(ID, Duration::from_secs(3600));
    install(dir.path(), &second);
    let second_leaf = second.chain()[0].clone();
    wait_identity(handle, "the replaced certificate", WAIT, |id| {
        id.leaf() == &second_leaf
    })
    .await;

    let key_path = dir.join("key.pem").display().to_string();
    let chain_path = dir.join("cert-chain.pem").display().to_string();
    let root_path = dir.join("root-cert.pem").display().to_string();
    let third = pki.issue_spiffe(ID, Duration::from_secs(3600));
    let mut expired = LeafSpec::spiffe(ID, Duration::from_secs(60));
    expired.not_before = SystemTime::now() - Duration::from_secs(7200);
    expired.not_after = SystemTime::now() - Duration::from_secs(3600);
    let expired = pki.issue(&expired);
    let cases: Vec<(&str, Breakage, Vec<&str>)> = vec![
        (
            "corrupt key",
            Box::new(|| {
                replace(
                    dir.path(),
                    "key.pem",
                    "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
                )
            }),
            vec![key_path.as_str(), "private key"],
        ),
        (
            "corrupt chain",
            Box::new(|| {
                replace(dir.path(), "key.pem", &second.key_pem);
                replace(dir.path(), "cert-chain.pem", "not a certificate\n");
            }),
            vec![chain_path.as_str(), "no PEM certificate"],
        ),
        (
            "key of another certificate",
            Box::new(|| {
                replace(dir.path(), "cert-chain.pem", &second.chain_pem);
                replace(dir.path(), "key.pem", &third.key_pem);
            }),
            vec![chain_path.as_str(), key_path.as_str(), "does not belong"],
        ),
        (
            "missing root file",
            Box::new(|| {
                replace(dir.path(), "key.pem", &second.key_pem);
                std::fs::remove_file(dir.join("root-cert.pem")).unwrap();
            }),
            vec![root_path.as_str(), "No such file"],
        ),
        (
            "expired certificate",
            Box::new(|| install(dir.path(), &expired)),
            vec![chain_path.as_str(), "not valid now"],
        ),
    ];
    for (case, break_it, words) in cases {
        break_it();
        // Files are replaced one by one, so an intermediate state may be reported first.
        wait_until(case, WAIT, || {
            let err = handle.status().last_error.unwrap_or_default();
            words.iter().all(|w| err.contains(w))
        })
        .await;
        assert_eq!(
            handle.current().unwrap().leaf(),
            &second_leaf,
            "{case}: previous certificate kept"
        );
        assert!(handle.is_ready(), "{case}");
        // The same bad state is reported once, not on every poll.
        let failures = handle.status().failures;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(handle.status().failures, failures, "{case}");
    }

    install(dir.path(), &third);
    let third_leaf = third.chain()[0].clone();
    wait_identity(handle, "the repaired certificate", WAIT, |id| {
        id.leaf() == &third_leaf
    })
    .await;
    assert_eq!(handle.status().last_error, None);
}
