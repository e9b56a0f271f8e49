//! A control plane for tests: a real gRPC ADS server speaking Delta and State of the World,
//! serving `Any` resources that tests set, replace and remove (each change is pushed to
//! every open stream), and recording every request it receives — ACKs, NACKs and their
//! `error_detail`.
//!
//! It runs on a runtime of its own thread, so that [`AdsServer::kill`] is a real crash: every
//! connection is dropped at once, without a goodbye.

mod dump;
pub mod resources;
mod streams;

pub use dump::config_dump_resources;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tokio::sync::{oneshot, watch};

/// Type URLs of the resources the server knows how to name.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which stream (counted from 1 over the server's life, restarts included).
    pub stream: u64,
    pub delta: bool,
    pub type_url: String,
    /// SotW only.
    pub version_info: String,
    pub response_nonce: String,
    /// SotW `resource_names`, or Delta `resource_names_subscribe`.
    pub names: Vec<String>,
    /// Delta `resource_names_unsubscribe`.
    pub unsubscribe: Vec<String>,
    /// Delta `initial_resource_versions`.
    pub initial_versions: BTreeMap<String, String>,
    pub error_detail: Option<RpcStatus>,
    pub node: Option<Node>,
}

impl Received {
    /// An ACK: it answers a response and carries no error.
    pub fn is_ack(&self) -> bool {
        !self.response_nonce.is_empty() && self.error_detail.is_none()
    }

    /// A NACK: it answers a response with an error.
    pub fn is_nack(&self) -> bool {
        !self.response_nonce.is_empty() && self.error_detail.is_some()
    }

    /// The NACK's message, or "".
    pub fn error_message(&self) -> &str {
        self.error_detail
            .as_ref()
            .map_or("", |e| e.message.as_str())
    }
}

/// One response the server sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub stream: u64,
    pub type_url: String,
    pub nonce: String,
    /// SotW `version_info` (empty for Delta).
    pub version_info: String,
    /// Names and versions of the resources it carried.
    pub resources: Vec<(String, String)>,
    /// Delta `removed_resources`.
    pub removed: Vec<String>,
}

/// How a stream was opened: its credentials, as istiod would check them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Which stream (as in [`Received::stream`]).
    pub stream: u64,
    /// The `authorization` metadata.
    pub authorization: Option<String>,
    /// The `clusterid` metadata.
    pub cluster_id: Option<String>,
    /// The DER of the TLS client certificate (leaf), when one was presented.
    pub client_cert: Option<Vec<u8>>,
}

/// A resource as served: its version is the server generation that last set it.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub version: String,
    pub any: Any,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// By type URL, then name.
    pub resources: BTreeMap<String, BTreeMap<String, Served>>,
    /// Bumped by every change of a type, per type URL.
    pub type_versions: BTreeMap<String, u64>,
    pub generation: u64,
    pub received: Vec<Received>,
    pub opened: Vec<Opened>,
    pub sent: Vec<Sent>,
    pub next_nonce: u64,
    pub next_stream: u64,
}

pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// The generation; streams push when it moves.
    pub changed: watch::Sender<u64>,
    /// The number of requests received; waiters look again when it moves.
    pub requests: watch::Sender<usize>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A test thread that panicked while holding the lock leaves consistent data behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record(&self, received: Received) {
        let count = {
            let mut state = self.lock();
            state.received.push(received);
            state.received.len()
        };
        self.requests.send_replace(count);
    }
}

/// The running server. Dropping it kills it.
pub struct AdsServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    /// Served over TLS with this configuration (restarts too).
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The name a resource goes by: `name` of a listener or cluster, `cluster_name` of a load
/// assignment. Panics on other types: a test fixture error.
pub fn resource_name(any: &Any) -> String {
    let name = match any.type_url.as_str() {
        LISTENER => Listener::decode(any.value.as_slice()).map(|l| l.name),
        CLUSTER => Cluster::decode(any.value.as_slice()).map(|c| c.name),
        ENDPOINT => ClusterLoadAssignment::decode(any.value.as_slice()).map(|c| c.cluster_name),
        ROUTE => RouteConfiguration::decode(any.value.as_slice()).map(|r| r.name),
        other => panic!("the test ADS server does not serve {other}"),
    };
    name.unwrap_or_else(|e| panic!("undecodable {}: {e}", any.type_url))
}

impl AdsServer {
    /// Starts on a free loopback port.
    pub fn start() -> AdsServer {
        AdsServer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts on `address`; panics if it cannot be bound.
    pub fn start_on(address: SocketAddr) -> AdsServer {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            requests: watch::channel(0).0,
        });
        AdsServer::spawn(address, shared, None)
    }

    /// Starts on `address` serving gRPC over TLS with `tls` (istiod's 15012, say:
    /// [`crate::ca::istiod_server_config`]); [`AdsServer::opened`] tells what credentials
    /// each stream came with.
    pub fn start_tls(address: SocketAddr, tls: rustls::ServerConfig) -> AdsServer {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            requests: watch::channel(0).0,
        });
        AdsServer::spawn(address, shared, Some(Arc::new(tls)))
    }

    fn spawn(
        address: SocketAddr,
        shared: Arc<Shared>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> AdsServer {
        let listener = std::net::TcpListener::bind(address)
            .unwrap_or_else(|e| panic!("test ADS server: cannot bind {address}: {e}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("test ADS server: no local address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("test ADS server: {e}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let service = streams::Service {
            shared: shared.clone(),
        };
        let tls_for_thread = tls.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ads-server-{}", address.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("test ADS server runtime: {e}"));
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .unwrap_or_else(|e| panic!("test ADS server: {e}"));
                    let router = tonic::transport::Server::builder()
                        .add_service(AggregatedDiscoveryServiceServer::new(service));
                    let serve = async move {
                        match tls_for_thread {
                            None => {
                                router
                                    .serve_with_incoming(
                                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                                    )
                                    .await
                            }
                            Some(tls) => {
                                let (tx, rx) = tokio::sync::mpsc::channel(16);
                                tokio::spawn(tls_accept_loop(listener, tls, tx));
                                router
                                    .serve_with_incoming(
                                        tokio_stream::wrappers::ReceiverStream::new(rx),
                                    )
                                    .await
                            }
                        }
                    };
                    tokio::select! {
                        result = serve => {
                            if let Err(e) = result {
                                tracing::error!("test ADS server on {address}: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection task: the peers see a reset.
                drop(runtime);
            })
            .unwrap_or_else(|e| panic!("test ADS server thread: {e}"));
        AdsServer {
            address,
            shared,
            tls,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://<address>`, for the client.
    pub fn uri(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Kills the server: the listener and every stream are gone at once.
    pub fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Kills it, then starts it again on the same address with the same resources and
    /// records.
    pub fn restart(&mut self) {
        self.kill();
        let again = AdsServer::spawn(self.address, self.shared.clone(), self.tls.clone());
        *self = again;
    }

    /// The credentials of every stream opened so far, in order.
    pub fn opened(&self) -> Vec<Opened> {
        self.shared.lock().opened.clone()
    }

    /// Adds or replaces resources (by type and name) in one change, pushed to every stream.
    pub fn set(&self, resources: impl IntoIterator<Item = Any>) {
        self.change(|state, generation| {
            for any in resources {
                let name = resource_name(&any);
                let type_url = any.type_url.clone();
                state.resources.entry(type_url.clone()).or_default().insert(
                    name,
                    Served {
                        version: generation.to_string(),
                        any,
                    },
                );
                state.type_versions.insert(type_url, generation);
            }
        });
    }

    /// Removes resources of `type_url` by name in one change.
    pub fn remove(&self, type_url: &str, names: &[&str]) {
        self.change(|state, generation| {
            if let Some(of_type) = state.resources.get_mut(type_url) {
                for name in names {
                    of_type.remove(*name);
                }
            }
            state.type_versions.insert(type_url.to_string(), generation);
        });
    }

    fn change(&self, f: impl FnOnce(&mut State, u64)) {
        let generation = {
            let mut state = self.shared.lock();
            state.generation += 1;
            let generation = state.generation;
            f(&mut state, generation);
            generation
        };
        self.shared.changed.send_replace(generation);
    }

    /// The server generation: the version the last change gave its resources.
    pub fn generation(&self) -> u64 {
        self.shared.lock().generation
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// Every response sent so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.shared.lock().sent.clone()
    }

    /// Waits for the client's answer (ACK or NACK) to a response that carried `name` of
    /// `type_url` at server generation `generation` (what [`AdsServer::generation`] said
    /// right after the change).
    pub async fn wait_for_answer(
        &self,
        type_url: &str,
        name: &str,
        generation: u64,
        timeout: Duration,
    ) -> Received {
        let version = generation.to_string();
        let what = format!("answer to {type_url} {name:?} at generation {generation}");
        let shared = self.shared.clone();
        self.wait_for(&what, timeout, move |r| {
            r.type_url == type_url
                && !r.response_nonce.is_empty()
                && shared.lock().sent.iter().any(|s| {
                    s.nonce == r.response_nonce
                        && s.resources.iter().any(|(n, v)| n == name && *v == version)
                })
        })
        .await
    }

    /// Waits up to `timeout` for a request matching `pred` (already received ones count);
    /// panics naming `what` if none comes.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Received {
        let mut seen = self.shared.requests.subscribe();
        let search = async {
            loop {
                // Cloned first: `pred` may look at the state itself.
                let received = self.shared.lock().received.clone();
                if let Some(found) = received.into_iter().find(|r| pred(r)) {
                    return found;
                }
                if seen.changed().await.is_err() {
                    panic!("test ADS server gone while waiting for {what}");
                }
            }
        };
        match tokio::time::timeout(timeout, search).await {
            Ok(found) => found,
            Err(_) => panic!(
                "test ADS server: no {what} within {timeout:?}; received: {:#?}",
                self.requests()
            ),
        }
    }
}

impl Drop for AdsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// TLS handshakes for [`AdsServer::start_tls`]; a failed one is logged and dropped, as a
/// server does. Ends when the server's runtime is dropped.
async fn tls_accept_loop(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    conns: tokio::sync::mpsc::Sender<
        Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
    >,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "test ADS server accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = conns.send(Ok(tls)).await;
                }
                Ok(Err(e)) => tracing::info!(error = %e, "test ADS server TLS handshake failed"),
                Err(_) => tracing::info!("test ADS server TLS handshake timed out"),
            }
        });
    }
}
