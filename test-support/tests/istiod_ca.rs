//! The istiod test server's TLS port, as a VM's proxy uses it: the Istio CA signs a CSR for
//! a caller that presents a bearer token (bootstrap) or its current workload certificate
//! (renewal), and TLS ADS serves only callers with an identity.

mod istiod_common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use certs::CertsConfig;
use certs::proto::istio_certificate_service_client::IstioCertificateServiceClient;
use certs::proto::{IstioCertificateRequest, IstioCertificateResponse};
use certs::source::CaSource;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use test_support::{IstiodServer, TempDir};
use tokio::net::TcpStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request};

use istiod_common::{BACKEND_CLUSTER, CDS, MESH, PUSH_TIMEOUT, decode, vm_node};

const TOKEN: &str = "vm-bootstrap-token";
const VM_ID: &str = "spiffe://cluster.local/ns/ns/sa/vm";
/// The name istiod's serving certificate carries, as the proxy's discovery address has it.
const ISTIOD_NAME: &str = "istiod.istio-system.svc";

/// What a TLS client presents, if anything: a certificate chain and its key.
type ClientCert = Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>;

/// A gRPC channel to istiod's TLS port that trusts only the test server's root.
async fn tls_channel(istiod: &IstiodServer, client_cert: ClientCert) -> Channel {
    let root_path = istiod.root_cert().expect("secure server has a root");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root_path).expect("read root cert") {
        roots.add(cert.expect("root cert PEM")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = istiod.secure_addr.expect("secure address");
    let endpoint = Endpoint::from_static("http://istiod.istio-system.svc:15012");
    let connecting = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from(ISTIOD_NAME).map_err(std::io::Error::other)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    }));
    tokio::time::timeout(PUSH_TIMEOUT, connecting)
        .await
        .expect("TLS connect timed out")
        .unwrap_or_else(|e| panic!("TLS connect to istiod at {addr}: {e:?}"))
}

/// A fresh workload key and a CSR for `VM_ID`, as pilot-agent makes them.
fn key_and_csr() -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().expect("generate key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CSR params");
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(VM_ID).expect("SPIFFE ID"),
    )];
    let csr = params
        .serialize_request(&key)
        .expect("sign CSR")
        .pem()
        .expect("CSR PEM");
    (key, csr)
}

async fn create_certificate(
    channel: Channel,
    csr: &str,
    token: Option<&str>,
) -> Result<IstioCertificateResponse, tonic::Status> {
    let mut req = Request::new(IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: 3600,
        metadata: None,
    });
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("header value");
        req.metadata_mut().insert("authorization", value);
    }
    let mut client = IstioCertificateServiceClient::new(channel);
    tokio::time::timeout(PUSH_TIMEOUT, client.create_certificate(req))
        .await
        .expect("CreateCertificate timed out")
        .map(tonic::Response::into_inner)
}

/// `openssl` run on `args`, stdout on success.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}); install it with: apt-get install -y openssl")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks that `chain` (leaf first) is for `VM_ID` and chains to the test server's root.
fn assert_workload_chain(chain: &[String], root: &Path, dir: &Path) {
    assert!(!chain.is_empty(), "empty certificate chain");
    let leaf = dir.join("leaf.pem");
    std::fs::write(&leaf, &chain[0]).expect("write leaf");
    let leaf = leaf.to_str().expect("utf-8 path");
    let san = openssl(&["x509", "-in", leaf, "-noout", "-ext", "subjectAltName"]);
    assert!(san.contains(&format!("URI:{VM_ID}")), "{san}");
    let root = root.to_str().expect("utf-8 path");
    let verified = openssl(&["verify", "-CAfile", root, leaf]);
    assert!(verified.contains(": OK"), "{verified}");
}

fn chain_ders(chain: &[String]) -> Vec<CertificateDer<'static>> {
    chain
        .iter()
        .flat_map(|pem| CertificateDer::pem_slice_iter(pem.as_bytes()))
        .map(|c| c.expect("certificate PEM"))
        .collect()
}

fn secure_istiod() -> IstiodServer {
    IstiodServer::builder()
        .config(MESH)
        .token(TOKEN, VM_ID)
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_signs_for_a_token_and_renews_over_mtls() {
    let istiod = secure_istiod();
    let root = istiod.root_cert().expect("root cert").to_path_buf();
    let dir = root.parent().expect("server dir").to_path_buf();

    let (key, csr) = key_and_csr();
    let issued = create_certificate(tls_channel(&istiod, None).await, &csr, Some(TOKEN))
        .await
        .unwrap_or_else(|s| panic!("CreateCertificate with the token: {s}\n{}", istiod.logs()));
    assert_workload_chain(&issued.cert_chain, &root, &dir);

    // Renewal: no token, the workload certificate just issued as the TLS client identity.
    let client = Some((
        chain_ders(&issued.cert_chain),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    ));
    let (_, csr2) = key_and_csr();
    let renewed = create_certificate(tls_channel(&istiod, client).await, &csr2, None)
        .await
        .unwrap_or_else(|s| panic!("CreateCertificate over mTLS: {s}\n{}", istiod.logs()));
    assert_workload_chain(&renewed.cert_chain, &root, &dir);
    assert_ne!(renewed.cert_chain[0], issued.cert_chain[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_refuses_callers_without_an_identity() {
    let istiod = secure_istiod();
    let (_, csr) = key_and_csr();
    for token in [None, Some("not-the-token")] {
        let err = create_certificate(tls_channel(&istiod, None).await, &csr, token)
            .await
            .expect_err("CA signed for an unauthenticated caller");
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    }
}

async fn tls_cds(istiod: &IstiodServer, token: &str) -> Result<Vec<String>, tonic::Status> {
    let channel = tls_channel(istiod, None).await;
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("header value");
    let mut client =
        AggregatedDiscoveryServiceClient::with_interceptor(channel, move |mut req: Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        });
    let (tx, requests) = tokio::sync::mpsc::channel(1);
    tx.send(DiscoveryRequest {
        node: Some(vm_node()),
        type_url: CDS.to_string(),
        ..Default::default()
    })
    .await
    .expect("send CDS request");
    let call = client.stream_aggregated_resources(ReceiverStream::new(requests));
    let mut stream = tokio::time::timeout(PUSH_TIMEOUT, call)
        .await
        .expect("StreamAggregatedResources timed out")?
        .into_inner();
    let resp = tokio::time::timeout(PUSH_TIMEOUT, stream.message())
        .await
        .expect("no CDS response in time")?
        .expect("stream ended before a CDS response");
    Ok(resp
        .resources
        .iter()
        .map(|r| decode::<envoy_types::pb::envoy::config::cluster::v3::Cluster>(r).name)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ads_serves_only_authenticated_proxies() {
    let istiod = secure_istiod();
    let clusters = tls_cds(&istiod, TOKEN)
        .await
        .unwrap_or_else(|s| panic!("TLS ADS with the token: {s}\n{}", istiod.logs()));
    assert!(
        clusters.iter().any(|c| c == BACKEND_CLUSTER),
        "no {BACKEND_CLUSTER} in {clusters:?}"
    );

    let refused = tls_cds(&istiod, "not-the-token")
        .await
        .expect_err("TLS ADS served an unauthenticated proxy");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");
}

/// vm-proxy's own CA client (the certs crate, configured from pilot-agent's variables) gets
/// a certificate from istiod's CA with the token, then renews it without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_proxy_ca_client_bootstraps_and_renews_against_istiods_ca() {
    let istiod = secure_istiod();
    let dir = TempDir::new("istiod-ca-client");
    let addr = istiod.secure_addr.expect("secure address").to_string();
    let root = istiod.root_cert().expect("root cert").display().to_string();
    let certs = dir.path().display().to_string();
    let vars = [
        ("CA_ADDR", addr.as_str()),
        ("ISTIOD_SAN", ISTIOD_NAME),
        ("CA_ROOT_CA", root.as_str()),
        ("PROV_CERT", certs.as_str()),
        ("OUTPUT_CERTS", ""),
        ("ISTIO_META_CLUSTER_ID", "Kubernetes"),
        ("POD_NAMESPACE", "ns"),
        ("SERVICE_ACCOUNT", "vm"),
    ];
    let mut cfg = CertsConfig::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .expect("certs config");
    cfg.ca.token_path = dir.join("istio-token");
    std::fs::write(&cfg.ca.token_path, TOKEN).expect("write token");
    let source = CaSource::new(cfg.ca.clone(), cfg.spiffe_id.clone());

    let issued = source
        .fetch(None)
        .await
        .unwrap_or_else(|e| panic!("bootstrap with the token: {e}\n{}", istiod.logs()));
    assert_eq!(issued.identity.spiffe_id().to_string(), VM_ID);

    std::fs::remove_file(&cfg.ca.token_path).expect("remove token");
    let renewed = source
        .fetch(Some(&issued.identity))
        .await
        .unwrap_or_else(|e| panic!("renewal over mTLS: {e}\n{}", istiod.logs()));
    assert_eq!(renewed.identity.spiffe_id().to_string(), VM_ID);
}
