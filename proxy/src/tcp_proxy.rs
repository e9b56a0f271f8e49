//! Envoy's `tcp_proxy` network filter: one upstream connection per downstream connection.

use std::sync::Arc;

use certs::SpiffeId;
use tracing::{debug, warn};
use xds_client::model::{ClusterSpecifier, TcpProxy, TransportSocket};

use crate::copy::{self, CopyError};
use crate::options::Options;
use crate::original_dst::Destination;
use crate::outlier::Outcome;
use crate::state::Active;
use crate::tls;
use crate::upstream::{self, ConnectError};

/// Proxies `downstream` to an endpoint of the filter's cluster until both sides are done,
/// over TLS when the endpoint's transport socket says so. `peer_identity` is the downstream
/// client's verified SPIFFE ID when the filter chain terminated mTLS.
/// Every failure ends in closing the downstream connection, which is all a TCP proxy can
/// tell its client.
pub(crate) async fn run<D>(
    filter: &TcpProxy,
    mut downstream: D,
    peer_identity: Option<SpiffeId>,
    destination: Destination,
    active: &Active,
    options: &Options,
) where
    D: copy::Duplex,
{
    let Some(cluster_name) = pick_cluster(&filter.cluster) else {
        warn!(stat_prefix = %filter.stat_prefix, "tcp_proxy: every weighted cluster has weight 0; closing");
        return;
    };
    let Some(cluster) = active.cluster(cluster_name) else {
        warn!(stat_prefix = %filter.stat_prefix, cluster = %cluster_name, "tcp_proxy: unknown cluster; closing");
        return;
    };
    let pick = match cluster.pick(destination) {
        Ok(p) => p,
        Err(e) => {
            warn!(stat_prefix = %filter.stat_prefix, "tcp_proxy: {e}; closing");
            return;
        }
    };
    let spec = &cluster.cluster;
    // The cluster's max_connections circuit breaker (tcp_proxy's traffic has the default
    // priority): over the limit the connection is refused before anything is opened.
    let max = spec.circuit_breakers.default.max_connections;
    let Some(slot) = cluster.resources.open_connection(max) else {
        warn!(cluster = %spec.name, max_connections = max, overflows = cluster.resources.overflow(), "tcp_proxy: upstream_cx_overflow; closing");
        return;
    };
    let target = match upstream::resolve(&pick.target).await {
        Ok(t) => t,
        Err(e) => {
            warn!(cluster = %spec.name, "tcp_proxy: {e}; closing");
            return;
        }
    };
    let up = match upstream::connect(
        target,
        spec.upstream_bind_address,
        spec.connect_timeout,
        options.keepalive,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            // A failure to bind our own source address is not the endpoint's fault.
            match e {
                ConnectError::Timeout { .. } => pick.report(Outcome::TimedOut),
                ConnectError::Bind { .. } => {}
                _ => pick.report(Outcome::Refused),
            }
            debug!(cluster = %spec.name, "tcp_proxy: {e}; closing");
            return;
        }
    };
    let endpoint = pick.endpoint.and_then(|i| spec.endpoints.get(i));
    // The connection counts as made for outlier detection once the transport is up: for
    // TLS, after the handshake (as Envoy, whose connection is not connected before).
    let result = match spec.transport_socket_for(endpoint) {
        TransportSocket::Raw => {
            pick.report(Outcome::Connected);
            relay(&mut downstream, up, filter, options).await
        }
        TransportSocket::Tls(config) => {
            // Envoy counts the handshake into connect_timeout; vm-proxy gives it its own.
            let handshake = tls::connect(
                config,
                options.identity.as_ref(),
                up,
                target,
                spec.connect_timeout,
            );
            match handshake.await {
                Ok((up, server_id)) => {
                    pick.report(Outcome::Connected);
                    debug!(cluster = %spec.name, upstream = %target, server_identity = %server_id, "upstream TLS established");
                    relay(&mut downstream, up, filter, options).await
                }
                Err(e) => {
                    pick.report(Outcome::Refused);
                    warn!(cluster = %spec.name, upstream = %target, "tcp_proxy: upstream TLS: {e}; closing");
                    return;
                }
            }
        }
    };
    let peer_identity = peer_identity.as_ref().map(SpiffeId::as_str);
    match result {
        Ok(t) => debug!(
            cluster = %spec.name, upstream = %target, downstream_identity = ?peer_identity,
            sent = t.downstream_to_upstream, received = t.upstream_to_downstream,
            "tcp_proxy: connection done"
        ),
        Err(e @ CopyError::Idle(_)) => {
            debug!(cluster = %spec.name, upstream = %target, "tcp_proxy: {e}; closing")
        }
        Err(e) => {
            debug!(cluster = %spec.name, upstream = %target, "tcp_proxy: {e}; closing both sides")
        }
    }
    drop((pick, slot));
}

async fn relay<D, U>(
    downstream: &mut D,
    mut upstream: U,
    filter: &TcpProxy,
    options: &Options,
) -> Result<copy::Transferred, CopyError>
where
    D: copy::Duplex,
    U: copy::Duplex,
{
    copy::bidirectional(
        downstream,
        &mut upstream,
        filter.idle_timeout,
        options.buffer_size,
    )
    .await
}

/// The cluster for this connection; a weighted choice like Envoy's (random, proportional to
/// weight). `None` if all weights are zero.
fn pick_cluster(spec: &ClusterSpecifier) -> Option<&Arc<str>> {
    match spec {
        ClusterSpecifier::Cluster(name) => Some(name),
        ClusterSpecifier::Weighted(clusters) => {
            let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
            if total == 0 {
                return None;
            }
            let mut point = crate::random::below(total);
            for c in clusters {
                let w = u64::from(c.weight);
                if point < w {
                    return Some(&c.name);
                }
                point -= w;
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use xds_client::model::WeightedCluster;

    use super::*;

    #[test]
    fn weighted_choice_follows_weights_and_skips_zero() {
        let spec = ClusterSpecifier::Weighted(vec![
            WeightedCluster {
                name: "never".into(),
                weight: 0,
            },
            WeightedCluster {
                name: "a".into(),
                weight: 1,
            },
            WeightedCluster {
                name: "b".into(),
                weight: 3,
            },
        ]);
        let mut a = 0;
        for _ in 0..4000 {
            match pick_cluster(&spec).map(|n| &**n) {
                Some("a") => a += 1,
                Some("b") => {}
                other => panic!("picked {other:?}"),
            }
        }
        // expected 1000, standard deviation ~27
        assert!((800..=1200).contains(&a), "a picked {a} of 4000 times");
        let zero = ClusterSpecifier::Weighted(vec![WeightedCluster {
            name: "z".into(),
            weight: 0,
        }]);
        assert_eq!(pick_cluster(&zero), None);
    }
}
