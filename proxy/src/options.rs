use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Process-level settings of the data path: what Envoy takes from its command line rather
/// than from its configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// After a drain starts, how long open connections may take to finish before they are
    /// closed. Istio's `terminationDrainDuration` default is 5 s.
    pub drain_timeout: Duration,
    /// Bytes of buffer per direction of a proxied connection, allocated once and reused.
    pub buffer_size: usize,
    /// `listen(2)` backlog of every listener.
    pub backlog: i32,
    /// TCP keepalive on downstream and upstream sockets; `None` leaves the kernel default (off).
    pub keepalive: Option<Keepalive>,
    /// Where the admin server listens when the snapshot names no admin address.
    pub default_admin_address: SocketAddr,
    /// Worker threads of the data-path runtime that [`crate::Proxy::run`] builds; `None` means
    /// one per CPU.
    pub worker_threads: Option<usize>,
    /// The workload identity TLS transport sockets use (SDS secrets `default` and `ROOTCA`).
    /// Without one, a snapshot with a TLS filter chain or cluster is refused.
    pub identity: Option<certs::IdentityHandle>,
    /// Istio's standard metrics, served on the admin server's `/stats/prometheus`; their
    /// labels name the local workload it was made for.
    pub metrics: crate::metrics::SharedMetrics,
}

/// TCP keepalive probing: idle time before the first probe, interval between probes, and
/// how many unanswered probes drop the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub time: Duration,
    pub interval: Duration,
    pub retries: u32,
}

impl Default for Keepalive {
    /// ztunnel's values: dead peers are noticed within about half an hour instead of the
    /// kernel's two hours plus.
    fn default() -> Self {
        Keepalive {
            time: Duration::from_secs(180),
            interval: Duration::from_secs(180),
            retries: 9,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            drain_timeout: Duration::from_secs(5),
            buffer_size: 32 * 1024,
            backlog: 1024,
            keepalive: Some(Keepalive::default()),
            default_admin_address: SocketAddr::from((Ipv4Addr::LOCALHOST, 15000)),
            worker_threads: None,
            identity: None,
            metrics: Default::default(),
        }
    }
}
