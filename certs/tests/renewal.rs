//! Renewal: timing, mTLS to the CA once a certificate is held (the token may be gone),
//! restart from persisted certificates, and a CA that is down or answers garbage.

mod common;

use std::time::{Duration, SystemTime};

use certs::{IdentitySource, RotationManager, RotationPolicy};
use common::*;
use test_support::{Fault, TestCa, TestCaOptions};

const WAIT: Duration = Duration::from_secs(30);

fn short_lived() -> TestCaOptions {
    TestCaOptions {
        max_ttl: Duration::from_secs(4),
        ..TestCaOptions::default()
    }
}

#[tokio::test]
async fn renewal_goes_over_mtls_after_the_token_is_deleted() {
    init_tracing();
    let ca = TestCa::start(short_lived()).await;
    ca.add_token(TOKEN, NS, SA);
    let vm = VmFiles::new(&ca, Some(TOKEN));
    let cfg = vm.config(&ca, &[]);
    let manager =
        RotationManager::start(IdentitySource::from_config(&cfg), cfg.rotation.clone()).unwrap();
    let handle = manager.handle();
    let first = wait_identity(handle, "the first certificate", WAIT, |_| true).await;
    assert_eq!(ca.stats().by_token, 1);

    // The 1-hour istio-token expires and is removed; the CA forgets it as well.
    std::fs::remove_file(vm.token_path()).unwrap();
    ca.revoke_token(TOKEN);

    let mut last = first;
    for round in 1..=3 {
        let prev = last.clone();
        last = wait_identity(handle, &format!("renewal {round}"), WAIT, |id| {
            id.leaf() != prev.leaf()
        })
        .await;
        assert_eq!(last.spiffe_id(), prev.spiffe_id());
        assert!(last.not_after() >= prev.not_after());
    }
    let stats = ca.stats();
    assert_eq!(stats.by_token, 1, "{stats:?}");
    assert!(stats.by_client_cert >= 3, "{stats:?}");
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert_eq!(
        stats.last_authorization, None,
        "no token sent once the file is gone"
    );
    assert!(handle.is_ready());
}

#[tokio::test]
async fn a_restart_without_token_serves_and_renews_the_persisted_certificate() {
    init_tracing();
    let ca = TestCa::start(TestCaOptions {
        max_ttl: Duration::from_secs(6),
        ..TestCaOptions::default()
    })
    .await;
    ca.add_token(TOKEN, NS, SA);
    let vm = VmFiles::new(&ca, Some(TOKEN));
    let cfg = vm.config(&ca, &[]);
    let persisted = {
        let manager =
            RotationManager::start(IdentitySource::from_config(&cfg), cfg.rotation.clone())
                .unwrap();
        let id = wait_identity(manager.handle(), "the first certificate", WAIT, |_| true).await;
        wait_until("files written", WAIT, || {
            std::fs::read(vm.cert_dir().join("cert-chain.pem")).is_ok_and(|b| !b.is_empty())
        })
        .await;
        id
    };
    // "Reboot": the token lived on tmpfs and is gone.
    std::fs::remove_file(vm.token_path()).unwrap();
    ca.revoke_token(TOKEN);
    let requests_before = ca.stats().requests;

    let manager =
        RotationManager::start(IdentitySource::from_config(&cfg), cfg.rotation.clone()).unwrap();
    let handle = manager.handle();
    let served = wait_identity(handle, "the persisted certificate", WAIT, |_| true).await;
    assert_eq!(
        served.leaf(),
        persisted.leaf(),
        "served from disk before asking the CA"
    );
    assert!(handle.is_ready());
    assert_eq!(ca.stats().requests, requests_before);

    let renewed = wait_identity(handle, "a renewal", WAIT, |id| {
        id.leaf() != persisted.leaf()
    })
    .await;
    assert_eq!(renewed.spiffe_id(), persisted.spiffe_id());
    let stats = ca.stats();
    assert_eq!(stats.by_token, 1, "{stats:?}");
    assert!(stats.by_client_cert >= 1, "{stats:?}");
}

#[tokio::test]
async fn an_expired_persisted_certificate_is_not_served() {
    init_tracing();
    let ca = TestCa::start(TestCaOptions::default()).await;
    ca.add_token(TOKEN, NS, SA);
    let vm = VmFiles::new(&ca, Some(TOKEN));
    let mut spec =
        test_support::LeafSpec::spiffe(&ca.pki().spiffe_id(NS, SA), Duration::from_secs(60));
    spec.not_before = SystemTime::now() - Duration::from_secs(7200);
    spec.not_after = SystemTime::now() - Duration::from_secs(3600);
    ca.pki().issue(&spec).write_to(&vm.cert_dir());
    let cfg = vm.config(&ca, &[]);
    let manager =
        RotationManager::start(IdentitySource::from_config(&cfg), cfg.rotation.clone()).unwrap();
    let id = wait_identity(manager.handle(), "a fresh certificate", WAIT, |_| true).await;
    assert!(id.is_valid_at(SystemTime::now()));
    // The expired certificate was not presented: the token authenticated.
    let stats = ca.stats();
    assert_eq!((stats.by_token, stats.by_client_cert), (1, 0), "{stats:?}");
}

#[tokio::test]
async fn a_ca_that_is_down_or_answers_garbage_never_replaces_the_held_certificate() {
    init_tracing();
    let ca = TestCa::start(short_lived()).await;
    ca.add_token(TOKEN, NS, SA);
    let addr = ca.addr().to_string();
    let vm = VmFiles::new(&ca, Some(TOKEN));
    let cfg = vm.config(&ca, &[]);

    // Down from the start: not ready, retried, reported.
    ca.set_fault(Fault::Down);
    let manager =
        RotationManager::start(IdentitySource::from_config(&cfg), cfg.rotation.clone()).unwrap();
    let handle = manager.handle().clone();
    wait_until("three failed attempts", WAIT, || {
        handle.status().failures >= 3
    })
    .await;
    assert!(!handle.is_ready());
    assert!(ca.stats().dropped_connections >= 3);
    let err = handle.status().last_error.unwrap_or_default();
    assert!(
        err.contains(&addr) && err.contains("connection failed"),
        "{err}"
    );

    // Back up: served.
    ca.set_fault(Fault::None);
    let good = wait_identity(&handle, "a certificate once the CA is up", WAIT, |_| true).await;

    for (fault, reason) in [
        (Fault::Garbage, "unusable response"),
        (Fault::ForeignKey, "does not belong to the leaf"),
        (Fault::Down, "connection failed"),
    ] {
        let failures = handle.status().failures;
        ca.set_fault(fault);
        wait_until(&format!("a failed renewal with {fault:?}"), WAIT, || {
            let s = handle.status();
            s.failures > failures && s.last_error.as_deref().is_some_and(|e| e.contains(reason))
        })
        .await;
        let held = handle.current().unwrap();
        assert_eq!(held.spiffe_id(), good.spiffe_id());
        let err = handle.status().last_error.unwrap();
        assert!(err.contains(&addr), "{err}");
        ca.set_fault(Fault::None);
        let prev = held.clone();
        wait_identity(&handle, &format!("recovery after {fault:?}"), WAIT, |id| {
            id.leaf() != prev.leaf()
        })
        .await;
        assert_eq!(handle.status().last_error, None);
    }
    assert!(handle.is_ready());
}

#[tokio::test]
async fn renewal_time_is_half_the_lifetime_within_the_jitter() {
    init_tracing();
    let ca = TestCa::start(TestCaOptions::default()).await;
    let cert = ca.issue(
        &ca.pki().spiffe_id(NS, SA),
        Duration::from_secs(10_000),
        Default::default(),
    );
    let id = identity(&cert);
    let lifetime = id.not_after().duration_since(id.not_before()).unwrap();

    let policy = RotationPolicy::default();
    for _ in 0..200 {
        let at = policy.renew_at(&id);
        let into = at.duration_since(id.not_before()).unwrap();
        let fraction = into.as_secs_f64() / lifetime.as_secs_f64();
        assert!((0.49..=0.51).contains(&fraction), "{fraction}");
    }
    let exact = RotationPolicy {
        grace_ratio: 0.25,
        grace_jitter: 0.0,
        ..RotationPolicy::default()
    };
    assert_eq!(exact.renew_at(&id), id.not_after() - lifetime / 4);
}

#[tokio::test]
async fn certificates_written_to_output_certs_are_found_after_a_restart() {
    init_tracing();
    let ca = TestCa::start(TestCaOptions::default()).await;
    ca.add_token(TOKEN, NS, SA);
    let vm = VmFiles::new(&ca, Some(TOKEN));
    let out = vm.dir.join("out");
    let mut cfg = vm.config(&ca, &[("OUTPUT_CERTS", out.to_str().unwrap())]);
    cfg.rotation = fast_policy();
    let source = certs::source::CaSource::new(cfg.ca.clone(), cfg.spiffe_id.clone());
    assert!(source.persisted().is_none());
    let issued = {
        let manager =
            RotationManager::start(IdentitySource::from_config(&cfg), cfg.rotation.clone())
                .unwrap();
        let id = wait_identity(manager.handle(), "a certificate", WAIT, |_| true).await;
        wait_until("files written", WAIT, || out.join("key.pem").exists()).await;
        id
    };
    // PROV_CERT still holds only the operator's root; the output directory has the rest.
    assert!(!vm.cert_dir().join("key.pem").exists());
    let found = source.persisted().expect("found in OUTPUT_CERTS");
    assert_eq!(found.leaf(), issued.leaf());

    // Someone else's identity in the directory is not taken.
    let other = ca.issue(
        &ca.pki().spiffe_id(NS, "someone-else"),
        Duration::from_secs(600),
        Default::default(),
    );
    other.write_to(&out);
    assert!(source.persisted().is_none());
}

#[test]
fn the_manager_needs_a_runtime() {
    let cfg = certs::CertsConfig::from_vars(Vec::new()).unwrap();
    let err = RotationManager::start(IdentitySource::from_config(&cfg), RotationPolicy::default())
        .unwrap_err();
    assert!(err.to_string().contains("Tokio runtime"), "{err}");
}
