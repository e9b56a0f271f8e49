//! State of the World: every response carries the full set of a type (LDS, CDS) or of the
//! names asked for (EDS); requests carry the last accepted version and the nonce answered.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::warn;

use super::cache::{Incoming, Update};
use super::{AdsClient, AdsError, XdsType, error_detail};

/// Per-stream state: what was last asked for and answered.
struct Session {
    tx: mpsc::Sender<DiscoveryRequest>,
    node: Option<Node>,
    /// Keep sending `node` after the first request.
    every: bool,
    nonces: BTreeMap<XdsType, String>,
    eds_names: BTreeSet<String>,
    route_names: BTreeSet<String>,
    listeners_requested: bool,
}

impl Session {
    async fn send(&mut self, mut request: DiscoveryRequest) -> bool {
        request.node = if self.every {
            self.node.clone()
        } else {
            self.node.take()
        };
        self.tx.send(request).await.is_ok()
    }
}

impl AdsClient {
    pub(super) async fn sotw_stream(&mut self, responded: &mut bool) -> Result<(), AdsError> {
        let channel = self.channel().await?;
        let mut grpc =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::channel(16);
        let mut session = Session {
            tx,
            node: Some(self.config.node.clone()),
            every: !self.config.node_on_first_message_only,
            nonces: BTreeMap::new(),
            eds_names: self.cache.eds_names(),
            // Filled when RDS is first asked for on this stream.
            route_names: Default::default(),
            listeners_requested: false,
        };
        for kind in self.initial_types() {
            session.listeners_requested |= kind == XdsType::Listener;
            if kind == XdsType::Route {
                session.route_names = self.cache.route_names();
            }
            let request = self.sotw_request(&session, kind, None);
            if !session.send(request).await {
                return Err(self.closed());
            }
        }
        let mut responses = grpc
            .stream_aggregated_resources(self.open(ReceiverStream::new(rx)))
            .await
            .map_err(|s| self.stream_error(s))?
            .into_inner();
        self.connected = true;
        self.publish();
        while let Some(response) = responses
            .message()
            .await
            .map_err(|s| self.stream_error(s))?
        {
            *responded = true;
            if !self.sotw_response(&mut session, response).await {
                return Err(self.closed());
            }
        }
        Err(self.closed())
    }

    /// Handles one response and sends what follows from it; `false` when the stream is gone.
    async fn sotw_response(&mut self, session: &mut Session, response: DiscoveryResponse) -> bool {
        let DiscoveryResponse {
            version_info,
            resources,
            type_url,
            nonce,
            ..
        } = response;
        let Some(kind) = XdsType::from_type_url(&type_url) else {
            warn!(%type_url, "response for a type vm-proxy did not subscribe to");
            let nack = DiscoveryRequest {
                type_url: type_url.clone(),
                response_nonce: nonce,
                error_detail: error_detail(&[format!("vm-proxy did not subscribe to {type_url}")]),
                ..Default::default()
            };
            return session.send(nack).await;
        };
        let update = Update {
            kind,
            resources: resources
                .into_iter()
                .map(|any| Incoming {
                    name: None,
                    version: version_info.clone(),
                    any: Some(any),
                })
                .collect(),
            removed: Vec::new(),
            replace: kind.is_wildcard(),
        };
        let errors = self.handle(update).await;
        if errors.is_empty() {
            self.cache.set_version(kind, version_info);
            self.publish();
        }
        session.nonces.insert(kind, nonce);
        // New EDS (RDS) names go out before the CDS (LDS) ACK, as Envoy sends them.
        if kind == XdsType::Cluster {
            let names = self.cache.eds_names();
            if names != session.eds_names {
                session.eds_names = names;
                let request = self.sotw_request(session, XdsType::Endpoint, None);
                if !session.send(request).await {
                    return false;
                }
            }
        }
        if kind == XdsType::Listener {
            let names = self.cache.route_names();
            if names != session.route_names {
                session.route_names = names;
                let request = self.sotw_request(session, XdsType::Route, None);
                if !session.send(request).await {
                    return false;
                }
            }
        }
        let ack = self.sotw_request(session, kind, Some(&errors));
        if !session.send(ack).await {
            return false;
        }
        if kind == XdsType::Cluster && !session.listeners_requested && self.listeners_due() {
            session.listeners_requested = true;
            let request = self.sotw_request(session, XdsType::Listener, None);
            return session.send(request).await;
        }
        true
    }

    /// A request for `kind` with the last accepted version and the last nonce seen; with
    /// `errors`, the ACK (none) or NACK of that nonce.
    fn sotw_request(
        &self,
        session: &Session,
        kind: XdsType,
        errors: Option<&[String]>,
    ) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: self.cache.version(kind),
            resource_names: match kind {
                XdsType::Endpoint => session.eds_names.iter().cloned().collect(),
                XdsType::Route => session.route_names.iter().cloned().collect(),
                _ => Vec::new(),
            },
            type_url: kind.type_url().to_string(),
            response_nonce: session.nonces.get(&kind).cloned().unwrap_or_default(),
            error_detail: errors.and_then(error_detail),
            ..Default::default()
        }
    }
}
