//! Time and memory to apply an Istio-sized configuration: 1,000 services (one EDS cluster and
//! one per-VIP tcp_proxy listener each) and 10,000 endpoints, served by the in-process ADS
//! control plane over loopback gRPC (Delta xDS, istiod's default) to vm-proxy's real ADS
//! client, which decodes every resource and builds the snapshots the proxy would run.
//!
//! Then one load assignment changes at a time (a rollout of one service), and the time until
//! the client hands over the snapshot with the new endpoints is measured.
//!
//! `cargo bench -p vm-proxy-benches --bench config_apply` prints a table and writes
//! `target/bench/config_apply.json`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use test_support::ads_server::AdsServer;
use tokio::sync::watch;
use vm_proxy_benches::{Memory, Mesh, Service};
use xds_client::ads::{AdsClient, AdsConfig, ApplyFn, Backoff, Protocol};
use xds_client::model::{EndpointAddress, Snapshot};
use xds_client::node::IstioNode;

const SERVICES: u32 = 1_000;
const ENDPOINTS_PER_SERVICE: u32 = 10;
/// Single-service updates timed after the full configuration is in.
const INCREMENTAL_UPDATES: u32 = 20;
/// Bound on every wait: far above what a run takes, so only a broken client hits it.
const WAIT: Duration = Duration::from_secs(60);

/// A snapshot as handed to the proxy, with when it arrived.
type Applied = Option<(Instant, Snapshot)>;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(measure());
    print_table(&results);
    let path = write_json(&results);
    println!("written to {}", path.display());
}

struct Results {
    /// RSS taken by loading Envoy's descriptors (once per process).
    descriptors_kib: i64,
    full_apply: Duration,
    snapshots_to_full: u64,
    rss_before_kib: u64,
    rss_after_kib: u64,
    peak_before_kib: u64,
    peak_after_kib: u64,
    incremental: Vec<Duration>,
}

async fn measure() -> Results {
    let mesh = Mesh::new(SERVICES, ENDPOINTS_PER_SERVICE);
    let server = AdsServer::start();
    server.set(mesh.resources());
    // The generated resources and the server's copy are in place before the baseline, so the
    // difference is what the client holds (plus what gRPC keeps buffered).
    let cold = Memory::now().unwrap();
    // The client renders every resource as JSON for /config_dump, with Envoy's descriptors:
    // loading them is a fixed cost, paid once whatever the mesh size, so it is counted apart.
    xds_client::json::any_from_json(serde_json::json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": "descriptor-warm-up",
    }))
    .unwrap();
    let before = Memory::now().unwrap();

    let node = IstioNode {
        ip: Some("127.0.0.1".parse().unwrap()),
        name: "bench".into(),
        namespace: "bench".into(),
        workload_name: "bench".into(),
        ..Default::default()
    }
    .to_node();
    let mut config = AdsConfig::new(server.uri(), Protocol::Delta, node);
    config.backoff = Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    let (client, _status) = AdsClient::new(config, Snapshot::default());
    let (tx, mut applied) = watch::channel::<Applied>(None);
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = count.clone();
    let apply: ApplyFn = Arc::new(move |snapshot| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tx.send_replace(Some((Instant::now(), snapshot)));
        Box::pin(async { Ok(()) })
    });

    let start = Instant::now();
    let task = tokio::spawn(client.run(apply));
    let full_at = wait_for(&mut applied, "the full configuration", |s| {
        s.listeners.len() == SERVICES as usize
            && s.clusters.len() == SERVICES as usize
            && s.clusters
                .values()
                .all(|c| c.endpoints.len() == ENDPOINTS_PER_SERVICE as usize)
    })
    .await;
    let full_apply = full_at - start;
    let snapshots_to_full = count.load(std::sync::atomic::Ordering::Relaxed);
    let after = Memory::now().unwrap();

    let mut incremental = Vec::new();
    for update in 0..INCREMENTAL_UPDATES {
        let index = update * (SERVICES / INCREMENTAL_UPDATES);
        let service = &mesh.services[index as usize];
        let pods: Vec<SocketAddr> = (0..ENDPOINTS_PER_SERVICE)
            .map(|e| Service::endpoint(index, e, update + 1))
            .collect();
        let first = EndpointAddress::Socket(pods[0]);
        let sent = Instant::now();
        server.set([service.assignment(&pods)]);
        let at = wait_for(&mut applied, &service.cluster, |s| {
            s.clusters
                .get(service.cluster.as_str())
                .is_some_and(|c| c.endpoints.first().map(|e| &e.address) == Some(&first))
        })
        .await;
        incremental.push(at - sent);
    }
    task.abort();
    Results {
        descriptors_kib: before.rss_kib as i64 - cold.rss_kib as i64,
        full_apply,
        snapshots_to_full,
        rss_before_kib: before.rss_kib,
        rss_after_kib: after.rss_kib,
        peak_before_kib: before.peak_kib,
        peak_after_kib: after.peak_kib,
        incremental,
    }
}

/// When the first applied snapshot satisfying `done` arrived.
async fn wait_for(
    applied: &mut watch::Receiver<Applied>,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) -> Instant {
    let found = tokio::time::timeout(
        WAIT,
        applied.wait_for(|a| a.as_ref().is_some_and(|(_, s)| done(s))),
    )
    .await;
    match found {
        Ok(Ok(a)) => a.as_ref().map(|(at, _)| *at).unwrap(),
        Ok(Err(_)) => panic!("the ADS client stopped before applying {what}"),
        Err(_) => panic!("{what} not applied within {WAIT:?}"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Summary {
    rss_delta_kib: i64,
    peak_delta_kib: i64,
    bytes_per_endpoint: f64,
    incremental_median: Duration,
    incremental_p90: Duration,
    incremental_max: Duration,
}

fn summary(r: &Results) -> Summary {
    let mut sorted = r.incremental.clone();
    sorted.sort();
    let rss_delta_kib = r.rss_after_kib as i64 - r.rss_before_kib as i64;
    Summary {
        rss_delta_kib,
        peak_delta_kib: r.peak_after_kib as i64 - r.peak_before_kib as i64,
        bytes_per_endpoint: rss_delta_kib as f64 * 1024.0
            / f64::from(SERVICES * ENDPOINTS_PER_SERVICE),
        incremental_median: percentile(&sorted, 0.5),
        incremental_p90: percentile(&sorted, 0.9),
        incremental_max: sorted.last().copied().unwrap_or_default(),
    }
}

fn print_table(r: &Results) {
    let s = summary(r);
    println!(
        "config_apply: {SERVICES} services, {} endpoints, Delta ADS over loopback",
        SERVICES * ENDPOINTS_PER_SERVICE
    );
    println!("{:<46} {:>12}", "measure", "value");
    let rows = [
        (
            "full config: first request → snapshot applied".to_string(),
            format!("{:.1} ms", ms(r.full_apply)),
        ),
        (
            "snapshots applied on the way".to_string(),
            r.snapshots_to_full.to_string(),
        ),
        (
            "Envoy descriptors, loaded once (VmRSS)".to_string(),
            format!("{:.1} MiB", r.descriptors_kib as f64 / 1024.0),
        ),
        (
            "steady RSS delta (VmRSS)".to_string(),
            format!("{:.1} MiB", s.rss_delta_kib as f64 / 1024.0),
        ),
        (
            "peak RSS delta (VmHWM)".to_string(),
            format!("{:.1} MiB", s.peak_delta_kib as f64 / 1024.0),
        ),
        (
            "steady RSS delta per endpoint".to_string(),
            format!("{:.0} B", s.bytes_per_endpoint),
        ),
        (
            format!("one EDS change, median of {}", r.incremental.len()),
            format!("{:.2} ms", ms(s.incremental_median)),
        ),
        (
            "one EDS change, p90".to_string(),
            format!("{:.2} ms", ms(s.incremental_p90)),
        ),
        (
            "one EDS change, max".to_string(),
            format!("{:.2} ms", ms(s.incremental_max)),
        ),
    ];
    for (name, value) in rows {
        println!("{name:<46} {value:>12}");
    }
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn write_json(r: &Results) -> PathBuf {
    let s = summary(r);
    let json = serde_json::json!({
        "services": SERVICES,
        "endpoints": SERVICES * ENDPOINTS_PER_SERVICE,
        "protocol": "delta",
        "full_apply_ms": ms(r.full_apply),
        "snapshots_to_full": r.snapshots_to_full,
        "descriptors_rss_kib": r.descriptors_kib,
        "rss_before_kib": r.rss_before_kib,
        "rss_after_kib": r.rss_after_kib,
        "rss_delta_kib": s.rss_delta_kib,
        "peak_before_kib": r.peak_before_kib,
        "peak_after_kib": r.peak_after_kib,
        "peak_delta_kib": s.peak_delta_kib,
        "rss_delta_bytes_per_endpoint": s.bytes_per_endpoint,
        "incremental_eds_ms": r.incremental.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        "incremental_eds_median_ms": ms(s.incremental_median),
        "incremental_eds_p90_ms": ms(s.incremental_p90),
        "incremental_eds_max_ms": ms(s.incremental_max),
    });
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config_apply.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap() + "\n").unwrap();
    path
}
