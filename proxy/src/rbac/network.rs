//! The network RBAC filters of a filter chain, run once the connection's attributes (its TLS
//! peer included) are known and before the terminal filter connects anywhere.
//!
//! Envoy decides on the first byte from the client (`ONE_TIME_ON_FIRST_BYTE`) while its
//! tcp_proxy already connects upstream; every attribute a network rule reads is known when
//! the connection is established, so deciding then gives Envoy's answer without opening an
//! upstream connection for a connection that is going to be denied, and without letting a
//! server-first upstream talk to a client that never sends.

use tracing::{debug, info};
use xds_client::model::NetworkFilter;

use super::attributes::Connection;
use super::engine::check_network;

/// Whether every network RBAC filter in `filters` allows `connection`. A denied connection
/// is held for the filter's `delay_deny` before the caller closes it.
pub(crate) async fn allows(filters: &[NetworkFilter], connection: &Connection<'_>) -> bool {
    for filter in filters {
        let NetworkFilter::Rbac(rbac) = filter else {
            continue;
        };
        let verdict = check_network(rbac, connection);
        if let Some(shadow) = &verdict.shadow {
            // Envoy counts these as `<shadow_rules_stat_prefix>rbac.shadow_allowed/denied`.
            debug!(
                stat_prefix = %rbac.shadow_rules_stat_prefix,
                shadow_allowed = shadow.allowed,
                shadow_effective_policy_id = shadow.policy.as_deref(),
                source = %connection.source,
                "rbac shadow rules",
            );
        }
        if verdict.allowed() {
            debug!(stat_prefix = %rbac.stat_prefix, source = %connection.source, "rbac.allowed");
            continue;
        }
        let policy = verdict.enforced.as_ref().and_then(|d| d.policy.as_deref());
        // Envoy: `<stat_prefix>rbac.denied`, termination details
        // `rbac_access_denied_matched_policy[<policy or none>]`.
        info!(
            stat_prefix = %rbac.stat_prefix,
            source = %connection.source,
            destination = %connection.destination,
            peer = connection.peer_principal,
            "rbac.denied: rbac_access_denied_matched_policy[{}]",
            policy.unwrap_or("none"),
        );
        if let Some(delay) = rbac.delay_deny {
            tokio::time::sleep(delay).await;
        }
        return false;
    }
    true
}
