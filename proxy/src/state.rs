//! The active configuration: an immutable snapshot with its lookup tables, swapped whole.
//!
//! A connection loads the current [`Active`] once, at accept, and keeps that `Arc` for its
//! whole life; a swap never waits for connections and connections never take a lock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use xds_client::model::{Listener, Snapshot};

use crate::cluster::ClusterState;
use crate::original_dst::canonical;

/// One snapshot, indexed for the connection path.
#[derive(Debug)]
pub(crate) struct Active {
    pub snapshot: Arc<Snapshot>,
    by_name: HashMap<Arc<str>, Arc<Listener>>,
    by_address: HashMap<SocketAddr, Arc<Listener>>,
    clusters: HashMap<Arc<str>, Arc<ClusterState>>,
}

impl Active {
    pub fn new(snapshot: Arc<Snapshot>) -> Active {
        Active::after(snapshot, None)
    }

    /// The active form of `snapshot` replacing `previous`: clusters that stay keep counting
    /// their circuit breakers where the previous snapshot left off.
    pub fn after(snapshot: Arc<Snapshot>, previous: Option<&Active>) -> Active {
        let by_name = snapshot
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.clone()))
            .collect();
        let by_address = snapshot
            .listeners
            .iter()
            .map(|l| (canonical(l.address), l.clone()))
            .collect();
        let clusters = snapshot
            .clusters
            .iter()
            .map(|(name, c)| {
                let resources = previous
                    .and_then(|p| p.clusters.get(name))
                    .map(|s| s.resources.clone())
                    .unwrap_or_default();
                let state = ClusterState::new(c.clone(), resources);
                (name.clone(), Arc::new(state))
            })
            .collect();
        Active {
            snapshot,
            by_name,
            by_address,
            clusters,
        }
    }

    pub fn listener(&self, name: &str) -> Option<&Arc<Listener>> {
        self.by_name.get(name)
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<ClusterState>> {
        self.clusters.get(name)
    }

    /// The listener a `use_original_dst` listener hands a connection to: the one bound to
    /// exactly `destination`, else the one on the same port of the wildcard address.
    pub fn listener_for(&self, destination: SocketAddr) -> Option<&Arc<Listener>> {
        let destination = canonical(destination);
        let wildcard: IpAddr = match destination.ip() {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        self.by_address.get(&destination).or_else(|| {
            self.by_address
                .get(&SocketAddr::new(wildcard, destination.port()))
        })
    }
}

/// The swappable holder of the active configuration.
#[derive(Debug)]
pub(crate) struct ConfigHolder(ArcSwap<Active>);

impl ConfigHolder {
    pub fn new(active: Active) -> ConfigHolder {
        ConfigHolder(ArcSwap::from_pointee(active))
    }

    pub fn current(&self) -> Arc<Active> {
        self.0.load_full()
    }

    pub fn replace(&self, active: Active) {
        self.0.store(Arc::new(active));
    }
}
