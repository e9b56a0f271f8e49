//! Envoy's `tcp_proxy` network filter: one upstream connection per downstream connection.

use std::sync::Arc;

use certs::SpiffeId;
use tracing::{debug, warn};
use xds_client::model::{ClusterSpecifier, StatsConfig, TcpProxy, TransportSocket};

use crate::copy::{self, CopyError, Progress};
use crate::metrics::{Direction, Peers, TcpConnection};
use crate::options::Options;
use crate::original_dst::Destination;
use crate::outlier::Outcome;
use crate::state::Active;
use crate::tls;
use crate::upstream::{self, ConnectError};

/// How `istio.stats` watches a connection, when the chain has it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats<'a> {
    pub config: &'a StatsConfig,
    pub direction: Direction,
}

/// Proxies `downstream` to an endpoint of the filter's cluster until both sides are done,
/// over TLS when the endpoint's transport socket says so. `peer_identity` is the downstream
/// client's verified SPIFFE ID when the filter chain terminated mTLS.
/// Every failure ends in closing the downstream connection, which is all a TCP proxy can
/// tell its client; with `stats`, it is counted with Envoy's response flag.
pub(crate) async fn run<D>(
    filter: &TcpProxy,
    mut downstream: D,
    peer_identity: Option<SpiffeId>,
    destination: Destination,
    active: &Active,
    options: &Options,
    stats: Option<Stats<'_>>,
) where
    D: copy::Duplex,
{
    let peer = peer_identity.as_ref().map(SpiffeId::as_str);
    let local_identity = options
        .identity
        .as_ref()
        .and_then(|h| h.current())
        .map(|id| id.spiffe_id().clone());
    let local = local_identity.as_ref().map(SpiffeId::as_str);
    // Envoy's response flags for a connection that never got an upstream.
    let failed = |flag: &str, cluster: Option<&str>| {
        if let Some(stats) = stats {
            let peers = Peers {
                direction: stats.direction,
                downstream_principal: peer,
                local_principal: peer.and(local),
                upstream_principal: None,
                upstream_cluster: cluster,
            };
            let progress = Progress::default();
            TcpConnection::open(&options.metrics, stats.config, &peers, flag).close(&progress);
        }
    };
    let Some(cluster_name) = pick_cluster(&filter.cluster) else {
        warn!(stat_prefix = %filter.stat_prefix, "tcp_proxy: every weighted cluster has weight 0; closing");
        failed("NR", None);
        return;
    };
    let Some(cluster) = active.cluster(cluster_name) else {
        warn!(stat_prefix = %filter.stat_prefix, cluster = %cluster_name, "tcp_proxy: unknown cluster; closing");
        failed("NC", Some(cluster_name));
        return;
    };
    let pick = match cluster.pick(destination) {
        Ok(p) => p,
        Err(e) => {
            warn!(stat_prefix = %filter.stat_prefix, "tcp_proxy: {e}; closing");
            failed("UH", Some(cluster_name));
            return;
        }
    };
    let spec = &cluster.cluster;
    // The cluster's max_connections circuit breaker (tcp_proxy's traffic has the default
    // priority): over the limit the connection is refused before anything is opened.
    let max = spec.circuit_breakers.default.max_connections;
    let Some(slot) = cluster.resources.open_connection(max) else {
        warn!(cluster = %spec.name, max_connections = max, overflows = cluster.resources.overflow(), "tcp_proxy: upstream_cx_overflow; closing");
        failed("UO", Some(cluster_name));
        return;
    };
    let target = match upstream::resolve(&pick.target).await {
        Ok(t) => t,
        Err(e) => {
            warn!(cluster = %spec.name, "tcp_proxy: {e}; closing");
            failed("UF", Some(cluster_name));
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
            failed("UF", Some(cluster_name));
            return;
        }
    };
    let endpoint = pick.endpoint.and_then(|i| spec.endpoints.get(i));
    let mut peers = Peers {
        direction: stats.map_or(Direction::Outbound, |s| s.direction),
        downstream_principal: peer,
        local_principal: peer.and(local),
        upstream_principal: None,
        upstream_cluster: Some(cluster_name),
    };
    // The connection counts as made for outlier detection once the transport is up: for
    // TLS, after the handshake (as Envoy, whose connection is not connected before).
    let result = match spec.transport_socket_for(endpoint) {
        TransportSocket::Raw => {
            pick.report(Outcome::Connected);
            relay(&mut downstream, up, filter, options, stats, &peers).await
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
                    peers.upstream_principal = Some(server_id.as_str());
                    peers.local_principal = local;
                    relay(&mut downstream, up, filter, options, stats, &peers).await
                }
                Err(e) => {
                    pick.report(Outcome::Refused);
                    warn!(cluster = %spec.name, upstream = %target, "tcp_proxy: upstream TLS: {e}; closing");
                    failed("UF", Some(cluster_name));
                    return;
                }
            }
        }
    };
    match result {
        Ok(t) => debug!(
            cluster = %spec.name, upstream = %target, downstream_identity = ?peer,
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

/// Copies both ways; with `stats`, the connection is counted opened now, its bytes every
/// `tcp_reporting_duration` while open, and closed at the end.
async fn relay<D, U>(
    downstream: &mut D,
    mut upstream: U,
    filter: &TcpProxy,
    options: &Options,
    stats: Option<Stats<'_>>,
    peers: &Peers<'_>,
) -> Result<copy::Transferred, CopyError>
where
    D: copy::Duplex,
    U: copy::Duplex,
{
    let progress = Progress::default();
    let copying = copy::bidirectional(
        downstream,
        &mut upstream,
        filter.idle_timeout,
        options.buffer_size,
        &progress,
    );
    let Some(stats) = stats else {
        return copying.await;
    };
    let mut connection = TcpConnection::open(&options.metrics, stats.config, peers, "-");
    let interval = stats.config.tcp_reporting_interval;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tokio::pin!(copying);
    let result = loop {
        tokio::select! {
            r = &mut copying => break r,
            _ = ticks.tick() => connection.flush(&progress),
        }
    };
    connection.close(&progress);
    result
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
