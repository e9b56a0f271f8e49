//! The ADS client: one gRPC stream to the control plane carrying CDS, EDS and LDS, in either
//! of xDS's two protocols (Delta, istiod's default since 1.22, and State of the World).
//!
//! Each response is decoded resource by resource with the bootstrap's decoders; the good
//! resources are taken, each bad one is named in the NACK with all its reasons and keeps its
//! previous version. Every accepted change becomes a new [`Snapshot`] handed to the caller's
//! [`ApplyFn`]; if that fails, the change is undone and NACKed. The last good configuration
//! stays in force across NACKs and disconnects; the stream is re-opened with exponential,
//! jittered backoff and re-subscribes with the versions already held.
//!
//! Ordering follows Envoy: LDS is requested only after the first CDS response, EDS names
//! follow the accepted EDS clusters, RDS names follow the accepted listeners' HTTP connection
//! managers, and a listener (or an EDS cluster) that depends on something not yet delivered
//! *warms*: it is ACKed but left out of the snapshot until it is complete (an EDS cluster's
//! endpoints, a listener's clusters and route configurations). A listener naming a cluster
//! that CDS did not deliver at all is NACKed; a route naming one is not (as in Envoy, whose
//! RDS `validate_clusters` defaults to false: the request gets a 503). NDS is not subscribed.

mod backoff;
mod cache;
mod delta;
mod kind;
mod sotw;
mod status;

pub use backoff::Backoff;
pub use kind::XdsType;
pub use status::{AdsStatus, DynamicResource};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use crate::model::Snapshot;
use backoff::Retry;
use cache::{Cache, Update};

/// Which of xDS's two stream protocols to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Incremental xDS (`DeltaAggregatedResources`).
    Delta,
    /// State of the World (`StreamAggregatedResources`).
    StateOfTheWorld,
}

/// How a stream reaches the control plane when it is not plaintext gRPC to
/// [`AdsConfig::server`]: istiod over TLS, say, dialled and authenticated by code that holds
/// the credentials (the workload certificate, the token).
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// The server, for messages (`https://istiod.istio-system.svc:15012`).
    fn server(&self) -> String;
    /// A new connection for one stream; asked again on every reconnect, so credentials that
    /// rotated in between are used.
    fn connect(&self) -> Pin<Box<dyn Future<Output = Result<Channel, String>> + Send + '_>>;
    /// Metadata the stream opens with (an `authorization` token, `ClusterID`), read afresh
    /// for every stream.
    fn metadata(&self) -> tonic::metadata::MetadataMap;
}

/// Where and how to reach the control plane, and what to ask it for.
#[derive(Debug, Clone)]
pub struct AdsConfig {
    /// The server as a URI: `http://127.0.0.1:15010`, or for messages only when
    /// [`AdsConfig::transport`] does the dialling.
    pub server: String,
    /// Dials the server instead of plaintext gRPC to `server`.
    pub transport: Option<Arc<dyn Transport>>,
    pub protocol: Protocol,
    /// Sent on the first request of every stream.
    pub node: Node,
    /// Subscribe to CDS (and EDS for its EDS clusters).
    pub clusters: bool,
    /// Subscribe to LDS.
    pub listeners: bool,
    pub backoff: Backoff,
    /// Bound on establishing the TCP/HTTP2 connection.
    pub connect_timeout: Duration,
    /// Send `node` on the first request of a stream only (Istio's setting), not on every one.
    pub node_on_first_message_only: bool,
}

impl AdsConfig {
    /// CDS and LDS over `protocol` to `server`, with Envoy's default backoff.
    pub fn new(server: impl Into<String>, protocol: Protocol, node: Node) -> AdsConfig {
        AdsConfig {
            server: server.into(),
            transport: None,
            protocol,
            node,
            clusters: true,
            listeners: true,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            node_on_first_message_only: true,
        }
    }
}

/// Applies a new snapshot (the proxy's `update`). An error undoes the change in the client
/// and is sent to the server as the NACK's reason.
pub type ApplyFn =
    Arc<dyn Fn(Snapshot) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Why a stream ended; the client logs it and reconnects.
#[derive(Debug, thiserror::Error)]
pub enum AdsError {
    #[error("ADS server {server:?}: not a usable URI: {message}")]
    Address { server: String, message: String },
    #[error("ADS server {server}: cannot connect: {source}")]
    Connect {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("ADS server {server}: stream failed: {status}")]
    Stream {
        server: String,
        status: Box<tonic::Status>,
    },
    #[error("ADS server {server}: cannot connect: {message}")]
    Dial { server: String, message: String },
    #[error("ADS server {server}: stream closed")]
    Closed { server: String },
}

/// gRPC code `INTERNAL`, which Envoy puts in a NACK's `error_detail`.
const NACK_CODE: i32 = 13;

/// The client: made with [`AdsClient::new`] (so that its status can be watched before it
/// runs), driven by [`AdsClient::run`].
pub struct AdsClient {
    config: AdsConfig,
    cache: Cache,
    apply: Option<ApplyFn>,
    status: watch::Sender<Arc<AdsStatus>>,
    connected: bool,
    rejected: Vec<String>,
}

impl AdsClient {
    /// A client whose snapshots are `base` (the bootstrap's static resources) plus what the
    /// server sends. The receiver follows [`AdsStatus`] after every response.
    pub fn new(config: AdsConfig, base: Snapshot) -> (AdsClient, watch::Receiver<Arc<AdsStatus>>) {
        let cache = Cache::new(base);
        let (status, receiver) = watch::channel(Arc::new(cache.status(false, Vec::new())));
        let client = AdsClient {
            config,
            cache,
            apply: None,
            status,
            connected: false,
            rejected: Vec::new(),
        };
        (client, receiver)
    }

    /// Keeps a stream open for as long as the future is polled, reconnecting with backoff;
    /// every accepted change goes to `apply`.
    pub async fn run(mut self, apply: ApplyFn) {
        self.apply = Some(apply);
        let mut retry = Retry::new(self.config.backoff);
        loop {
            let mut responded = false;
            let result = match self.config.protocol {
                Protocol::Delta => self.delta_stream(&mut responded).await,
                Protocol::StateOfTheWorld => self.sotw_stream(&mut responded).await,
            };
            self.connected = false;
            self.publish();
            if responded {
                retry.reset();
            }
            let delay = retry.next_delay();
            match result {
                Ok(()) => info!(?delay, "ADS stream ended; reconnecting"),
                Err(error) => warn!(%error, ?delay, "ADS stream ended; reconnecting"),
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn channel(&self) -> Result<Channel, AdsError> {
        let server = &self.config.server;
        if let Some(transport) = &self.config.transport {
            return transport.connect().await.map_err(|message| AdsError::Dial {
                server: server.clone(),
                message,
            });
        }
        let endpoint = Endpoint::from_shared(server.clone())
            .map_err(|e| AdsError::Address {
                server: server.clone(),
                message: e.to_string(),
            })?
            .connect_timeout(self.config.connect_timeout)
            // A control plane that vanished without a FIN is noticed, as pilot-agent does.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        endpoint
            .connect()
            .await
            .map_err(|source| AdsError::Connect {
                server: server.clone(),
                source,
            })
    }

    /// The stream's opening request: `messages` and the transport's metadata.
    fn open<T>(&self, messages: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(messages);
        if let Some(transport) = &self.config.transport {
            *request.metadata_mut() = transport.metadata();
        }
        request
    }

    fn stream_error(&self, status: tonic::Status) -> AdsError {
        AdsError::Stream {
            server: self.config.server.clone(),
            status: Box::new(status),
        }
    }

    fn closed(&self) -> AdsError {
        AdsError::Closed {
            server: self.config.server.clone(),
        }
    }

    /// The types to request when a stream opens: clusters first; listeners only once CDS has
    /// answered at least once (on a reconnect, all together with the versions held).
    fn initial_types(&self) -> Vec<XdsType> {
        let mut types = Vec::new();
        if self.config.clusters {
            types.push(XdsType::Cluster);
            if !self.cache.eds_names().is_empty() {
                types.push(XdsType::Endpoint);
            }
        }
        if self.listeners_due() {
            types.push(XdsType::Listener);
            if !self.cache.route_names().is_empty() {
                types.push(XdsType::Route);
            }
        }
        types
    }

    fn listeners_due(&self) -> bool {
        self.config.listeners && (!self.config.clusters || self.cache.clusters_received())
    }

    /// Takes one response's update; returns the reasons for a NACK (none: ACK).
    async fn handle(&mut self, update: Update) -> Vec<String> {
        let kind = update.kind;
        let (next, changed, mut errors) = self.cache.apply(update);
        if changed && let Some(apply) = self.apply.clone() {
            match apply(next.snapshot()).await {
                Ok(()) => self.cache = next,
                Err(reason) => {
                    errors.push(format!("{kind} update could not be applied: {reason}"));
                    // A failed apply may have taken effect in part: put the last good one back.
                    if let Err(again) = apply(self.cache.snapshot()).await {
                        warn!(%again, "re-applying the last good snapshot failed");
                    }
                }
            }
        } else {
            self.cache = next;
        }
        if errors.is_empty() {
            info!(%kind, "xDS update accepted");
        } else {
            warn!(%kind, rejected = errors.len(), reasons = %errors.join("; "), "xDS update rejected (NACK)");
        }
        self.rejected = errors.clone();
        self.publish();
        errors
    }

    fn publish(&self) {
        self.status.send_replace(Arc::new(
            self.cache.status(self.connected, self.rejected.clone()),
        ));
    }
}

/// The `error_detail` of a NACK: every reason, each naming its resource.
fn error_detail(errors: &[String]) -> Option<RpcStatus> {
    (!errors.is_empty()).then(|| RpcStatus {
        code: NACK_CODE,
        message: errors.join("; "),
        details: Vec::new(),
    })
}
