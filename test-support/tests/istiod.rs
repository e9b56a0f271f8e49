//! The istiod test server as vm-proxy will meet it: a real ADS client (envoy-types' tonic
//! client) connects as a VM sidecar and gets istiod's clusters, endpoints and listeners for
//! a ServiceEntry and its WorkloadEntries, over SotW and Delta, with run-time changes pushed.

mod istiod_common;

use std::collections::BTreeSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use test_support::{IstiodError, IstiodServer, Netns, istioctl, wait_for_tcp};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use istiod_common::{BACKEND_CLUSTER, CDS, MESH, PUSH_TIMEOUT, decode, vm_node};

const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// At most this many responses are read while waiting for one that matches.
const MAX_RESPONSES: usize = 50;

const BACKEND_2: &str = "\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: backend-2
  namespace: ns
spec:
  address: 198.18.0.10
  labels: {app: backend}
  serviceAccount: backend
";

const BACKEND_1_REF: &str = "\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: backend-1
  namespace: ns
";

/// The endpoint IPs of a load assignment.
fn endpoint_ips(cla: &ClusterLoadAssignment) -> BTreeSet<String> {
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep.address.as_ref(),
            _ => None,
        })
        .filter_map(|a| match &a.address {
            Some(address::Address::SocketAddress(sa)) => Some(sa),
            _ => None,
        })
        .map(|sa| match sa.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(p)) => format!("{}:{p}", sa.address),
            _ => sa.address.clone(),
        })
        .collect()
}

fn ips(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn connect(
    istiod: &IstiodServer,
) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let connecting =
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", istiod.xds_addr));
    tokio::time::timeout(PUSH_TIMEOUT, connecting)
        .await
        .unwrap_or_else(|_| panic!("connecting to istiod ADS at {} timed out", istiod.xds_addr))
        .unwrap_or_else(|e| panic!("connect to istiod ADS at {}: {e}", istiod.xds_addr))
}

fn to_strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn sotw_request(type_url: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(vm_node()),
        type_url: type_url.to_string(),
        resource_names: to_strings(names),
        ..Default::default()
    }
}

/// A SotW ADS stream that ACKs every response it reads.
struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    /// Resource names last requested, per type, repeated in ACKs.
    names: std::collections::HashMap<String, Vec<String>>,
}

impl Sotw {
    /// Opens the stream with its first request: istiod answers the call (sends its response
    /// headers) only with its first response, so the request must already be on its way.
    async fn open(istiod: &IstiodServer, type_url: &str, names: &[&str]) -> Sotw {
        let (tx, requests) = mpsc::channel(16);
        tx.send(sotw_request(type_url, names))
            .await
            .expect("send DiscoveryRequest");
        let mut client = connect(istiod).await;
        let call = client.stream_aggregated_resources(ReceiverStream::new(requests));
        let rx = tokio::time::timeout(PUSH_TIMEOUT, call)
            .await
            .expect("StreamAggregatedResources: no answer in time")
            .expect("StreamAggregatedResources")
            .into_inner();
        let names = [(type_url.to_string(), to_strings(names))].into();
        Sotw { tx, rx, names }
    }

    async fn request(&mut self, type_url: &str, names: &[&str]) {
        self.names.insert(type_url.to_string(), to_strings(names));
        self.tx
            .send(sotw_request(type_url, names))
            .await
            .expect("send DiscoveryRequest");
    }

    /// Reads (and ACKs) responses until one of `type_url` satisfies `want`.
    async fn until(
        &mut self,
        istiod: &IstiodServer,
        type_url: &str,
        want: impl Fn(&DiscoveryResponse) -> bool,
    ) -> DiscoveryResponse {
        for _ in 0..MAX_RESPONSES {
            let next = tokio::time::timeout(PUSH_TIMEOUT, self.rx.message()).await;
            let resp = match next {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => panic!("istiod closed the stream\n{}", istiod.logs()),
                Ok(Err(s)) => panic!("ADS error: {s}\n{}", istiod.logs()),
                Err(_) => panic!(
                    "no {type_url} push within {PUSH_TIMEOUT:?}\n{}",
                    istiod.logs()
                ),
            };
            self.tx
                .send(DiscoveryRequest {
                    node: None,
                    type_url: resp.type_url.clone(),
                    version_info: resp.version_info.clone(),
                    response_nonce: resp.nonce.clone(),
                    resource_names: self.names.get(&resp.type_url).cloned().unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .expect("send ACK");
            if resp.type_url == type_url && want(&resp) {
                return resp;
            }
        }
        panic!(
            "no matching {type_url} response among {MAX_RESPONSES}\n{}",
            istiod.logs()
        );
    }
}

fn sotw_clas(resp: &DiscoveryResponse) -> Vec<ClusterLoadAssignment> {
    resp.resources.iter().map(decode).collect()
}

fn sotw_backend_ips(resp: &DiscoveryResponse) -> Option<BTreeSet<String>> {
    sotw_clas(resp)
        .iter()
        .find(|c| c.cluster_name == BACKEND_CLUSTER)
        .map(endpoint_ips)
}

/// Runs blocking work (control requests, istioctl) off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_ads_serves_service_entry_and_pushes_changes() {
    let istiod = std::sync::Arc::new(IstiodServer::start(&[MESH]));
    let mut ads = Sotw::open(&istiod, CDS, &[]).await;
    let cds = ads.until(&istiod, CDS, |_| true).await;
    let clusters: Vec<String> = cds
        .resources
        .iter()
        .map(|r| decode::<Cluster>(r).name)
        .collect();
    assert!(
        clusters.iter().any(|c| c == BACKEND_CLUSTER),
        "no {BACKEND_CLUSTER} in {clusters:?}"
    );

    ads.request(EDS, &[BACKEND_CLUSTER]).await;
    let eds = ads.until(&istiod, EDS, |_| true).await;
    assert_eq!(
        sotw_backend_ips(&eds),
        Some(ips(&["198.18.0.9:9080"])),
        "{:?}",
        sotw_clas(&eds)
    );

    ads.request(LDS, &[]).await;
    let lds = ads.until(&istiod, LDS, |_| true).await;
    let listeners: Vec<String> = lds
        .resources
        .iter()
        .map(|r| decode::<Listener>(r).name)
        .collect();
    for want in ["virtualOutbound", "virtualInbound", "0.0.0.0_8080"] {
        assert!(
            listeners.iter().any(|l| l == want),
            "no {want} listener in {listeners:?}"
        );
    }

    // istioctl sees the connected proxy through istiod's syncz debug type. An explicit
    // revision keeps it from waiting on a Kubernetes API for the default one.
    let addr = istiod.xds_addr.to_string();
    let out = blocking(move || {
        istioctl(&[
            "proxy-status",
            "--xds-address",
            &addr,
            "--plaintext",
            "--revision",
            "default",
        ])
    })
    .await
    .expect("istioctl proxy-status");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("vm.ns"),
        "istioctl proxy-status ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let server = istiod.clone();
    let applied = blocking(move || server.apply(BACKEND_2))
        .await
        .expect("apply backend-2");
    assert_eq!(applied.trim(), "WorkloadEntry ns/backend-2 created");
    ads.until(&istiod, EDS, |r| {
        sotw_backend_ips(r) == Some(ips(&["198.18.0.9:9080", "198.18.0.10:9080"]))
    })
    .await;

    let server = istiod.clone();
    let deleted = blocking(move || server.delete(BACKEND_1_REF))
        .await
        .expect("delete backend-1");
    assert_eq!(deleted.trim(), "WorkloadEntry ns/backend-1 deleted");
    ads.until(&istiod, EDS, |r| {
        sotw_backend_ips(r) == Some(ips(&["198.18.0.10:9080"]))
    })
    .await;
}

fn delta_subscribe(type_url: &str, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(vm_node()),
        type_url: type_url.to_string(),
        resource_names_subscribe: to_strings(names),
        ..Default::default()
    }
}

/// A Delta ADS stream that ACKs every response it reads.
struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    /// Opens the stream with its first subscription (see [`Sotw::open`] for why).
    async fn open(istiod: &IstiodServer, type_url: &str, names: &[&str]) -> Delta {
        let (tx, requests) = mpsc::channel(16);
        tx.send(delta_subscribe(type_url, names))
            .await
            .expect("send DeltaDiscoveryRequest");
        let mut client = connect(istiod).await;
        let call = client.delta_aggregated_resources(ReceiverStream::new(requests));
        let rx = tokio::time::timeout(PUSH_TIMEOUT, call)
            .await
            .expect("DeltaAggregatedResources: no answer in time")
            .expect("DeltaAggregatedResources")
            .into_inner();
        Delta { tx, rx }
    }

    async fn subscribe(&mut self, type_url: &str, names: &[&str]) {
        self.tx
            .send(delta_subscribe(type_url, names))
            .await
            .expect("send DeltaDiscoveryRequest");
    }

    async fn until(
        &mut self,
        istiod: &IstiodServer,
        type_url: &str,
        want: impl Fn(&DeltaDiscoveryResponse) -> bool,
    ) -> DeltaDiscoveryResponse {
        for _ in 0..MAX_RESPONSES {
            let next = tokio::time::timeout(PUSH_TIMEOUT, self.rx.message()).await;
            let resp = match next {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => panic!("istiod closed the stream\n{}", istiod.logs()),
                Ok(Err(s)) => panic!("delta ADS error: {s}\n{}", istiod.logs()),
                Err(_) => panic!(
                    "no {type_url} push within {PUSH_TIMEOUT:?}\n{}",
                    istiod.logs()
                ),
            };
            self.tx
                .send(DeltaDiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    response_nonce: resp.nonce.clone(),
                    ..Default::default()
                })
                .await
                .expect("send delta ACK");
            if resp.type_url == type_url && want(&resp) {
                return resp;
            }
        }
        panic!(
            "no matching {type_url} delta response among {MAX_RESPONSES}\n{}",
            istiod.logs()
        );
    }
}

fn delta_backend_ips(resp: &DeltaDiscoveryResponse) -> Option<BTreeSet<String>> {
    resp.resources
        .iter()
        .filter(|r| r.name == BACKEND_CLUSTER)
        .filter_map(|r| r.resource.as_ref())
        .map(|a| endpoint_ips(&decode::<ClusterLoadAssignment>(a)))
        .next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_ads_serves_service_entry_and_pushes_changes() {
    let istiod = std::sync::Arc::new(IstiodServer::start(&[MESH]));
    let mut ads = Delta::open(&istiod, CDS, &[]).await;
    let cds = ads.until(&istiod, CDS, |_| true).await;
    let names: Vec<&str> = cds.resources.iter().map(|r| r.name.as_str()).collect();
    assert!(
        names.contains(&BACKEND_CLUSTER),
        "no {BACKEND_CLUSTER} in {names:?}"
    );
    let cluster: Cluster = cds
        .resources
        .iter()
        .find(|r| r.name == BACKEND_CLUSTER)
        .and_then(|r| r.resource.as_ref())
        .map(decode)
        .expect("backend cluster resource");
    assert_eq!(cluster.name, BACKEND_CLUSTER);

    ads.subscribe(EDS, &[BACKEND_CLUSTER]).await;
    let eds = ads.until(&istiod, EDS, |_| true).await;
    assert_eq!(delta_backend_ips(&eds), Some(ips(&["198.18.0.9:9080"])));

    ads.subscribe(LDS, &[]).await;
    let lds = ads.until(&istiod, LDS, |_| true).await;
    let listeners: Vec<&str> = lds.resources.iter().map(|r| r.name.as_str()).collect();
    assert!(listeners.contains(&"virtualOutbound"), "{listeners:?}");

    let server = istiod.clone();
    blocking(move || server.apply(BACKEND_2))
        .await
        .expect("apply backend-2");
    ads.until(&istiod, EDS, |r| {
        delta_backend_ips(r) == Some(ips(&["198.18.0.9:9080", "198.18.0.10:9080"]))
    })
    .await;

    let server = istiod.clone();
    blocking(move || server.delete(BACKEND_1_REF))
        .await
        .expect("delete backend-1");
    ads.until(&istiod, EDS, |r| {
        delta_backend_ips(r) == Some(ips(&["198.18.0.10:9080"]))
    })
    .await;
}

const INVALID: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: broken
  namespace: ns
spec:
  hosts: [broken.ns.svc.cluster.local]
  ports:
  - {number: 0, name: http, protocol: HTTP}
";

#[test]
fn yaml_istiod_rejects_fails_start_with_istiods_message() {
    let err = IstiodServer::builder()
        .config(MESH)
        .config(INVALID)
        .try_start()
        .err()
        .expect("istiod started with an invalid ServiceEntry");
    match err {
        IstiodError::Exited { status, stderr } => {
            assert!(!status.success());
            assert!(
                stderr.contains("document 1 (ServiceEntry ns/broken)")
                    && stderr.contains("configuration is invalid")
                    && stderr.contains("port number 0 must be in the range 1..65535"),
                "{stderr}"
            );
        }
        other => panic!("expected an exit, got {other}"),
    }
}

#[test]
fn yaml_istiod_rejects_at_run_time_is_refused_with_istiods_message() {
    let istiod = IstiodServer::start(&[MESH]);
    match istiod.apply(INVALID) {
        Err(IstiodError::Refused {
            status, message, ..
        }) => {
            assert_eq!(status, 400);
            assert!(
                message.contains("configuration is invalid")
                    && message.contains("port number 0 must be in the range 1..65535"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Nothing of the refused request was stored.
    let configz = istiod.debug("configz").expect("configz");
    assert!(!configz.contains("broken"), "{configz}");
    assert!(configz.contains("backend-1"), "{configz}");

    match istiod.delete(BACKEND_2) {
        Err(IstiodError::Refused {
            status, message, ..
        }) => {
            assert_eq!(status, 404);
            assert!(
                message.contains("document 1 (WorkloadEntry ns/backend-2): not found"),
                "{message}"
            );
        }
        other => panic!("expected not found, got {other:?}"),
    }
}

#[test]
fn unparsable_yaml_fails_start_naming_the_document() {
    let err = IstiodServer::builder()
        .config("apiVersion: networking.istio.io/v1\nkind: [ServiceEntry\n")
        .try_start()
        .err()
        .expect("istiod started with unparsable YAML");
    match err {
        IstiodError::Exited { status, stderr } => {
            assert!(!status.success());
            assert!(
                stderr.contains("--config") && stderr.contains("document 1"),
                "{stderr}"
            );
        }
        other => panic!("expected an exit, got {other}"),
    }
}

#[test]
fn taken_port_fails_start_naming_the_flag() {
    let first = IstiodServer::start(&[]);
    let err = IstiodServer::builder()
        .listen(first.xds_addr)
        .try_start()
        .err()
        .expect("a second istiod started on a taken port");
    match err {
        IstiodError::Exited { status, stderr } => {
            assert!(!status.success());
            assert!(
                stderr.contains(&format!("--listen {}", first.xds_addr))
                    && stderr.contains("address already in use"),
                "{stderr}"
            );
        }
        other => panic!("expected an exit, got {other}"),
    }
}

#[test]
fn runs_inside_a_network_namespace() {
    let ns = Netns::new("istiod");
    let istiod = IstiodServer::builder().config(MESH).netns(&ns).start();
    // The announced address is the namespace's loopback.
    wait_for_tcp(&ns, istiod.xds_addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("ADS inside the namespace: {e}\n{}", istiod.logs()));
    let applied = istiod
        .apply(BACKEND_2)
        .expect("apply through the namespace");
    assert_eq!(applied.trim(), "WorkloadEntry ns/backend-2 created");
    let configz = istiod.debug("configz").expect("configz");
    assert!(configz.contains("backend-2"), "{configz}");
}

#[test]
fn mesh_config_is_istiods() {
    let istiod = IstiodServer::builder()
        .mesh("trustDomain: example.org\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}\n")
        .start();
    let mesh = istiod.debug("mesh").expect("debug/mesh");
    // REGISTRY_ONLY is the enum's zero value, so its JSON form is empty (the default is
    // ALLOW_ANY).
    assert!(
        mesh.contains(r#""trustDomain":"example.org""#)
            && mesh.contains(r#""outboundTrafficPolicy":{}"#),
        "{mesh}"
    );
    // Defaults fill in what the file leaves out, as istiod's own mesh reader does.
    assert!(mesh.contains("rootNamespace"), "{mesh}");
}

#[test]
fn mesh_config_istiod_rejects_fails_start() {
    let err = IstiodServer::builder()
        .mesh("outboundTrafficPolicy: {mode: NOPE}\n")
        .try_start()
        .err()
        .expect("istiod started with a bad MeshConfig");
    match err {
        IstiodError::Exited { status, stderr } => {
            assert!(!status.success());
            assert!(
                stderr.contains("--mesh") && stderr.contains("NOPE"),
                "{stderr}"
            );
        }
        other => panic!("expected an exit, got {other}"),
    }
}
