//! The two ADS stream protocols, server side: one task per stream, answering requests and
//! pushing every change of the served resources.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::{CLUSTER, LISTENER, Opened, Received, Sent, Shared};

pub(crate) struct Service {
    pub shared: Arc<Shared>,
}

type Out<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let stream = opened(&self.shared, &request);
        tokio::spawn(sotw(self.shared.clone(), stream, request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let stream = opened(&self.shared, &request);
        tokio::spawn(delta(self.shared.clone(), stream, request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn is_wildcard_type(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER
}

/// Numbers a new stream and records how it was opened.
fn opened<T>(shared: &Shared, request: &Request<T>) -> u64 {
    let text = |name: &str| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let client_cert = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
    let mut state = shared.lock();
    state.next_stream += 1;
    let stream = state.next_stream;
    state.opened.push(Opened {
        stream,
        authorization: text("authorization"),
        cluster_id: text("clusterid"),
        client_cert,
    });
    stream
}

fn next_nonce(state: &mut super::State) -> String {
    state.next_nonce += 1;
    state.next_nonce.to_string()
}

/// SotW: a type is answered with its whole (requested) state when first asked, when its
/// names change, and when it changes.
async fn sotw(
    shared: Arc<Shared>,
    stream: u64,
    mut requests: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut changed = shared.changed.subscribe();
    // Per type: the names asked for, and the type version last sent.
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let mut due: BTreeSet<String> = BTreeSet::new();
        tokio::select! {
            request = requests.message() => {
                let Ok(Some(request)) = request else { return };
                shared.record(Received {
                    stream,
                    delta: false,
                    type_url: request.type_url.clone(),
                    version_info: request.version_info.clone(),
                    response_nonce: request.response_nonce.clone(),
                    names: request.resource_names.clone(),
                    unsubscribe: Vec::new(),
                    initial_versions: BTreeMap::new(),
                    error_detail: request.error_detail.clone(),
                    node: request.node.clone(),
                });
                let asked: BTreeSet<String> = request.resource_names.into_iter().collect();
                let first = !names.contains_key(&request.type_url);
                if first || names.get(&request.type_url) != Some(&asked) {
                    due.insert(request.type_url.clone());
                }
                names.insert(request.type_url, asked);
            }
            moved = changed.changed() => {
                if moved.is_err() { return }
                let state = shared.lock();
                for type_url in names.keys() {
                    let now = state.type_versions.get(type_url).copied().unwrap_or(0);
                    if sent.get(type_url).is_none_or(|s| *s < now) {
                        due.insert(type_url.clone());
                    }
                }
            }
        }
        for type_url in due {
            let response = {
                let mut state = shared.lock();
                let version = state.type_versions.get(&type_url).copied().unwrap_or(0);
                let asked = names.get(&type_url).cloned().unwrap_or_default();
                let served: Vec<(String, super::Served)> = state
                    .resources
                    .get(&type_url)
                    .map(|m| {
                        m.iter()
                            .filter(|(n, _)| is_wildcard_type(&type_url) || asked.contains(*n))
                            .map(|(n, s)| (n.clone(), s.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let nonce = next_nonce(&mut state);
                state.sent.push(Sent {
                    stream,
                    type_url: type_url.clone(),
                    nonce: nonce.clone(),
                    version_info: version.to_string(),
                    resources: served
                        .iter()
                        .map(|(n, s)| (n.clone(), s.version.clone()))
                        .collect(),
                    removed: Vec::new(),
                });
                sent.insert(type_url.clone(), version);
                DiscoveryResponse {
                    version_info: version.to_string(),
                    resources: served.into_iter().map(|(_, s)| s.any).collect(),
                    type_url,
                    nonce,
                    ..Default::default()
                }
            };
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
        }
    }
}

/// What a Delta stream subscribed to, per type.
#[derive(Default)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Name → version the client holds.
    held: BTreeMap<String, String>,
}

impl Subscription {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// Delta: changed resources and removals, per subscription; the first request of a type is
/// always answered, even with nothing.
async fn delta(
    shared: Arc<Shared>,
    stream: u64,
    mut requests: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) {
    let mut changed = shared.changed.subscribe();
    let mut subs: BTreeMap<String, Subscription> = BTreeMap::new();
    loop {
        let mut due: BTreeMap<String, bool> = BTreeMap::new();
        tokio::select! {
            request = requests.message() => {
                let Ok(Some(request)) = request else { return };
                shared.record(Received {
                    stream,
                    delta: true,
                    type_url: request.type_url.clone(),
                    version_info: String::new(),
                    response_nonce: request.response_nonce.clone(),
                    names: request.resource_names_subscribe.clone(),
                    unsubscribe: request.resource_names_unsubscribe.clone(),
                    initial_versions: request.initial_resource_versions.clone().into_iter().collect(),
                    error_detail: request.error_detail.clone(),
                    node: request.node.clone(),
                });
                let first = !subs.contains_key(&request.type_url);
                let sub = subs.entry(request.type_url.clone()).or_default();
                if first {
                    sub.wildcard = request.resource_names_subscribe.is_empty()
                        || request.resource_names_subscribe.iter().any(|n| n == "*");
                    sub.held = request.initial_resource_versions.into_iter().collect();
                }
                let subscribing = !request.resource_names_subscribe.is_empty();
                for name in request.resource_names_subscribe {
                    if name != "*" {
                        sub.names.insert(name);
                    }
                }
                for name in &request.resource_names_unsubscribe {
                    sub.names.remove(name);
                    sub.held.remove(name);
                }
                if first || subscribing {
                    due.insert(request.type_url, first);
                }
            }
            moved = changed.changed() => {
                if moved.is_err() { return }
                for type_url in subs.keys() {
                    due.insert(type_url.clone(), false);
                }
            }
        }
        for (type_url, always) in due {
            let Some(sub) = subs.get_mut(&type_url) else {
                continue;
            };
            let response = {
                let mut state = shared.lock();
                let current = state.resources.get(&type_url).cloned().unwrap_or_default();
                let resources: Vec<Resource> = current
                    .iter()
                    .filter(|(n, s)| sub.wants(n) && sub.held.get(*n) != Some(&s.version))
                    .map(|(n, s)| Resource {
                        name: n.clone(),
                        version: s.version.clone(),
                        resource: Some(s.any.clone()),
                        ..Default::default()
                    })
                    .collect();
                let removed: Vec<String> = sub
                    .held
                    .keys()
                    .filter(|n| !current.contains_key(*n))
                    .cloned()
                    .collect();
                if resources.is_empty() && removed.is_empty() && !always {
                    continue;
                }
                for r in &resources {
                    sub.held.insert(r.name.clone(), r.version.clone());
                }
                for n in &removed {
                    sub.held.remove(n);
                }
                let nonce = next_nonce(&mut state);
                state.sent.push(Sent {
                    stream,
                    type_url: type_url.clone(),
                    nonce: nonce.clone(),
                    version_info: String::new(),
                    resources: resources
                        .iter()
                        .map(|r| (r.name.clone(), r.version.clone()))
                        .collect(),
                    removed: removed.clone(),
                });
                DeltaDiscoveryResponse {
                    system_version_info: state.generation.to_string(),
                    resources,
                    type_url,
                    removed_resources: removed,
                    nonce,
                    ..Default::default()
                }
            };
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
        }
    }
}
