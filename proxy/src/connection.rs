//! One downstream connection, from accept to its network filters.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::{debug, trace, warn};
use xds_client::model::{Listener, ListenerFilter, NetworkFilter, TransportSocket};

use crate::chain::{self, MatchInput};
use crate::drain::Connections;
use crate::inspect::{InspectError, Inspection};
use crate::metrics::Direction;
use crate::options::Options;
use crate::original_dst::{self, Destination};
use crate::rbac;
use crate::state::{Active, ConfigHolder};
use crate::tcp_proxy;
use crate::tls;

/// What every connection task shares: the configuration, the connection count, the options.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: ConfigHolder,
    pub connections: Arc<Connections>,
    pub options: Options,
}

/// Starts the task of a connection accepted by `listener` (whose socket listens at
/// `listening`), under the configuration active at this moment.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    listener: &str,
    listening: SocketAddr,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let active = shared.config.current();
    let Some(listener) = active.listener(listener).cloned() else {
        // Removed by a swap an instant ago; its accept loop is being stopped.
        debug!(listener, %peer, "listener no longer configured; closing");
        return;
    };
    let mut tracked = shared.connections.track();
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = serve(stream, peer, listening, listener, &active, &shared.options) => {}
            () = tracked.closing() => debug!(%peer, "closed: drain time is over"),
        }
        drop(tracked);
    });
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listening: SocketAddr,
    accepted_by: Arc<Listener>,
    active: &Active,
    options: &Options,
) {
    if let Err(e) = crate::socket::tune(&stream, options.keepalive) {
        debug!(%peer, "socket options on accepted connection: {e}");
    }
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(e) => {
            debug!(%peer, "accepted connection has no local address: {e}");
            return;
        }
    };
    let mut destination = Destination::local(local);
    let mut inspection = Inspection::default();
    let mut listener = accepted_by;
    // The accepting listener's filters run first; a connection handed off to the listener of
    // its original destination runs that listener's filters too, once (Envoy hands off once).
    let mut handed_off = false;
    loop {
        if let Err(e) = listener_filters(
            &listener,
            &stream,
            listening,
            &mut destination,
            &mut inspection,
        )
        .await
        {
            debug!(listener = %listener.name, %peer, "{e}; closing");
            return;
        }
        if handed_off || !listener.use_original_dst || !destination.restored {
            break;
        }
        match active.listener_for(destination.addr) {
            Some(target) if !Arc::ptr_eq(target, &listener) => {
                trace!(from = %listener.name, to = %target.name, destination = %destination.addr, "hand-off");
                listener = target.clone();
                handed_off = true;
            }
            _ => break,
        }
    }
    let detected = &inspection.detected;
    let input = MatchInput {
        destination: destination.addr,
        source: peer,
        server_name: detected.server_name.as_deref(),
        transport_protocol: detected.transport_protocol.unwrap_or("raw_buffer"),
        application_protocols: &detected.application_protocols,
    };
    let Some(chain) = chain::select(&listener, &input) else {
        debug!(listener = %listener.name, %peer, destination = %destination.addr, "no filter chain matches; closing");
        return;
    };
    trace!(listener = %listener.name, chain = %chain.name, %peer, "filter chain selected");
    // tcp_proxy is terminal (validation keeps it last); RBAC filters before it decide first.
    let Some(NetworkFilter::TcpProxy(tp)) = chain.filters.last() else {
        warn!(listener = %listener.name, chain = %chain.name, "filter chain has no terminal network filter; closing");
        return;
    };
    let server_name = input.server_name;
    let stats = chain.filters.iter().find_map(|f| match f {
        NetworkFilter::IstioStats(config) => Some(tcp_proxy::Stats {
            config,
            direction: Direction::of_listener(listener.traffic_direction),
        }),
        _ => None,
    });
    match &chain.transport_socket {
        TransportSocket::Raw => {
            let connection = rbac::Connection::new(None, peer, destination.addr, server_name);
            if rbac::network_allows(&chain.filters, &connection).await {
                tcp_proxy::run(tp, stream, None, destination, active, options, stats).await
            }
        }
        TransportSocket::Tls(config) => {
            let timeout = chain
                .transport_socket_connect_timeout
                .unwrap_or(tls::DEFAULT_HANDSHAKE_TIMEOUT);
            match tls::accept(config, options.identity.as_ref(), stream, timeout).await {
                Ok((stream, peer_id)) => {
                    debug!(listener = %listener.name, chain = %chain.name, %peer, peer_identity = %peer_id, "downstream TLS established");
                    let connection = rbac::Connection::new(
                        Some(peer_id.as_str()),
                        peer,
                        destination.addr,
                        server_name,
                    );
                    if rbac::network_allows(&chain.filters, &connection).await {
                        tcp_proxy::run(
                            tp,
                            stream,
                            Some(peer_id),
                            destination,
                            active,
                            options,
                            stats,
                        )
                        .await
                    }
                }
                Err(e) => {
                    warn!(listener = %listener.name, chain = %chain.name, %peer, "downstream TLS refused: {e}; closing")
                }
            }
        }
    }
}

/// Runs a listener's filters in their configured order. `use_original_dst` implies the
/// original_dst filter, as in Envoy. When the filters time out the connection continues with
/// what was found so far if the listener says so (Istio sets
/// `continue_on_listener_filters_timeout`), and is closed otherwise, as in Envoy.
async fn listener_filters(
    listener: &Listener,
    stream: &TcpStream,
    listening: SocketAddr,
    destination: &mut Destination,
    inspection: &mut Inspection,
) -> Result<(), InspectError> {
    let wants_original_dst = listener.use_original_dst
        || listener
            .listener_filters
            .contains(&ListenerFilter::OriginalDst);
    if wants_original_dst && !destination.restored {
        *destination =
            original_dst::detect(stream, destination.addr, listener.transparent, listening);
    }
    let inspect = async {
        for (i, f) in listener.listener_filters.iter().enumerate() {
            if listener
                .filter_disabled(i)
                .is_some_and(|p| p.matches(destination.addr.port()))
            {
                trace!(listener = %listener.name, filter = ?f, "listener filter disabled for this connection");
                continue;
            }
            match f {
                ListenerFilter::OriginalDst => {}
                ListenerFilter::TlsInspector => inspection.tls(stream).await?,
                ListenerFilter::HttpInspector => inspection.http(stream).await?,
            }
        }
        Ok::<(), InspectError>(())
    };
    let Some(limit) = listener.listener_filters_timeout else {
        return inspect.await;
    };
    match tokio::time::timeout(limit, inspect).await {
        Ok(r) => r,
        Err(_) if listener.continue_on_listener_filters_timeout => {
            trace!(listener = %listener.name, "listener filters timed out; continuing");
            Ok(())
        }
        Err(_) => Err(InspectError::Timeout),
    }
}
