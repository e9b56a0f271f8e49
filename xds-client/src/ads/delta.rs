//! Delta (incremental) xDS: responses carry changed resources with their own versions and
//! the names removed; requests subscribe and unsubscribe names and ACK by nonce.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::warn;

use super::cache::{Incoming, Update};
use super::{AdsClient, AdsError, XdsType, error_detail};

struct Session {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    node: Option<Node>,
    /// Keep sending `node` after the first request.
    every: bool,
    eds_names: BTreeSet<String>,
    route_names: BTreeSet<String>,
    listeners_requested: bool,
}

impl Session {
    async fn send(&mut self, mut request: DeltaDiscoveryRequest) -> bool {
        request.node = if self.every {
            self.node.clone()
        } else {
            self.node.take()
        };
        self.tx.send(request).await.is_ok()
    }
}

impl AdsClient {
    pub(super) async fn delta_stream(&mut self, responded: &mut bool) -> Result<(), AdsError> {
        let channel = self.channel().await?;
        let mut grpc =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::channel(16);
        let mut session = Session {
            tx,
            node: Some(self.config.node.clone()),
            every: !self.config.node_on_first_message_only,
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
            let request = self.delta_subscribe(&session, kind);
            if !session.send(request).await {
                return Err(self.closed());
            }
        }
        let mut responses = grpc
            .delta_aggregated_resources(self.open(ReceiverStream::new(rx)))
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
            if !self.delta_response(&mut session, response).await {
                return Err(self.closed());
            }
        }
        Err(self.closed())
    }

    /// The first request of a type on a stream: wildcard for LDS/CDS (an empty name list,
    /// which every server reads as wildcard), the EDS names otherwise, with the versions held
    /// so that the server sends only what changed.
    fn delta_subscribe(&self, session: &Session, kind: XdsType) -> DeltaDiscoveryRequest {
        let mut versions = self.cache.resource_versions(kind);
        let subscribe = match kind {
            XdsType::Endpoint => {
                versions.retain(|name, _| session.eds_names.contains(name));
                session.eds_names.iter().cloned().collect()
            }
            XdsType::Route => {
                versions.retain(|name, _| session.route_names.contains(name));
                session.route_names.iter().cloned().collect()
            }
            _ => Vec::new(),
        };
        DeltaDiscoveryRequest {
            type_url: kind.type_url().to_string(),
            resource_names_subscribe: subscribe,
            initial_resource_versions: versions.into_iter().collect(),
            ..Default::default()
        }
    }

    async fn delta_response(
        &mut self,
        session: &mut Session,
        response: DeltaDiscoveryResponse,
    ) -> bool {
        let DeltaDiscoveryResponse {
            resources,
            type_url,
            removed_resources,
            nonce,
            ..
        } = response;
        let Some(kind) = XdsType::from_type_url(&type_url) else {
            warn!(%type_url, "response for a type vm-proxy did not subscribe to");
            let nack = DeltaDiscoveryRequest {
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
                .map(|r| Incoming {
                    name: Some(r.name),
                    version: r.version,
                    any: r.resource,
                })
                .collect(),
            removed: removed_resources,
            replace: false,
        };
        let errors = self.handle(update).await;
        // New EDS (RDS) names go out before the CDS (LDS) ACK, as Envoy sends them.
        let names_change = match kind {
            XdsType::Cluster => Some((XdsType::Endpoint, self.cache.eds_names())),
            XdsType::Listener => Some((XdsType::Route, self.cache.route_names())),
            _ => None,
        };
        if let Some((named, names)) = names_change {
            let held = match named {
                XdsType::Endpoint => &mut session.eds_names,
                _ => &mut session.route_names,
            };
            if names != *held {
                let change = DeltaDiscoveryRequest {
                    type_url: named.type_url().to_string(),
                    resource_names_subscribe: names.difference(held).cloned().collect(),
                    resource_names_unsubscribe: held.difference(&names).cloned().collect(),
                    ..Default::default()
                };
                *held = names;
                if !session.send(change).await {
                    return false;
                }
            }
        }
        let ack = DeltaDiscoveryRequest {
            type_url,
            response_nonce: nonce,
            error_detail: error_detail(&errors),
            ..Default::default()
        };
        if !session.send(ack).await {
            return false;
        }
        if kind == XdsType::Cluster && !session.listeners_requested && self.listeners_due() {
            session.listeners_requested = true;
            let request = self.delta_subscribe(session, XdsType::Listener);
            return session.send(request).await;
        }
        true
    }
}
