//! Istio's TCP metrics end to end: real connections through the proxy, `/stats/prometheus`
//! read with curl (exact values, bytes visible while the connection is open), and a real
//! Prometheus scraping it and answering a PromQL query over its HTTP API.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use test_support::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xds_client::model::{NetworkFilter, StatsConfig, TrafficDirection, WorkloadInfo};

const CLUSTER: &str = "outbound|9000||echo.demo.svc.cluster.local";

fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", url])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl {url}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .collect()
}

/// The one series of `name`, which must carry every label of `labels`; its value.
fn value(text: &str, name: &str, labels: &[&str]) -> u64 {
    let lines = series(text, name);
    assert_eq!(lines.len(), 1, "{name}: {text}");
    for l in labels {
        assert!(lines[0].contains(l), "{l} not in {}", lines[0]);
    }
    lines[0].rsplit(' ').next().unwrap().parse().unwrap()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_metrics_with_labels_and_a_real_prometheus() {
    let up = echo_server().await;
    let mut l = listener("outbound_9000", CLUSTER);
    l.traffic_direction = TrafficDirection::Outbound;
    let stats = StatsConfig {
        tcp_reporting_interval: Duration::from_millis(100),
        ..StatsConfig::default()
    };
    for chain in &mut l.filter_chains {
        chain
            .filters
            .insert(0, NetworkFilter::IstioStats(Arc::new(stats.clone())));
    }
    let local = WorkloadInfo {
        workload_name: Some("vm-client".into()),
        namespace: Some("vms".into()),
        canonical_service: Some("client".into()),
        canonical_revision: Some("v7".into()),
        app: Some("client".into()),
        version: Some("v7".into()),
        cluster_id: Some("Kubernetes".into()),
    };
    let options = vm_proxy::Options {
        metrics: Arc::new(vm_proxy::metrics::Metrics::new(local)),
        ..options()
    };
    let proxy = start_with(
        snapshot(vec![l], vec![static_cluster(CLUSTER, &[up])]),
        options,
    )
    .await;
    let admin = proxy.admin_address();
    let stats_url = format!("http://{admin}/stats/prometheus");
    let labels = [
        "reporter=\"source\"",
        "source_workload=\"vm-client\"",
        "source_workload_namespace=\"vms\"",
        "source_canonical_service=\"client\"",
        "source_canonical_revision=\"v7\"",
        "source_app=\"client\"",
        "source_version=\"v7\"",
        "source_cluster=\"Kubernetes\"",
        "source_principal=\"unknown\"",
        "destination_principal=\"unknown\"",
        "destination_workload=\"unknown\"",
        "destination_service=\"echo.demo.svc.cluster.local\"",
        "destination_service_name=\"echo\"",
        "destination_service_namespace=\"demo\"",
        "request_protocol=\"tcp\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"unknown\"",
    ];

    // One connection held open: its bytes show before it closes.
    let mut c = connect(addr(&proxy, "outbound_9000")).await;
    c.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    bounded("echo", c.read_exact(&mut buf)).await.unwrap();
    let text = bounded("periodic report", async {
        loop {
            let text = tokio::task::spawn_blocking({
                let url = stats_url.clone();
                move || curl(&url)
            })
            .await
            .unwrap();
            // The series exist from the open (at 0); the periodic report fills them.
            let sent = series(&text, "istio_tcp_sent_bytes_total");
            if sent.first().is_some_and(|l| l.ends_with(" 5")) {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        value(&text, "istio_tcp_connections_opened_total", &labels),
        1
    );
    assert_eq!(value(&text, "istio_tcp_received_bytes_total", &labels), 5);
    assert_eq!(value(&text, "istio_tcp_sent_bytes_total", &labels), 5);
    assert!(
        series(&text, "istio_tcp_connections_closed_total").is_empty(),
        "{text}"
    );
    assert!(
        text.contains("istio_build{component=\"proxy\",tag=\""),
        "{text}"
    );

    // Closed, plus a second connection: exact totals.
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    bounded("close", c.read_to_end(&mut rest)).await.unwrap();
    drop(c);
    let mut c2 = connect(addr(&proxy, "outbound_9000")).await;
    c2.write_all(b"0123456789").await.unwrap();
    c2.shutdown().await.unwrap();
    let mut back = Vec::new();
    bounded("second", c2.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"0123456789");
    let text = bounded("close report", async {
        loop {
            let text = tokio::task::spawn_blocking({
                let url = stats_url.clone();
                move || curl(&url)
            })
            .await
            .unwrap();
            let closed = series(&text, "istio_tcp_connections_closed_total");
            if closed.first().is_some_and(|l| l.ends_with(" 2")) {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        value(&text, "istio_tcp_connections_opened_total", &labels),
        2
    );
    assert_eq!(
        value(&text, "istio_tcp_connections_closed_total", &labels),
        2
    );
    assert_eq!(value(&text, "istio_tcp_received_bytes_total", &labels), 15);
    assert_eq!(value(&text, "istio_tcp_sent_bytes_total", &labels), 15);

    // A real Prometheus scrapes the endpoint; PromQL finds our series.
    test_support::require::require_tools(&["prometheus"]);
    let dir = TempDir::new("vmp-prom");
    let prom_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vm-proxy\n    \
             metrics_path: /stats/prometheus\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    let _prometheus = Killed(child);
    let query = format!(
        "http://127.0.0.1:{prom_port}/api/v1/query?query=\
         istio_tcp_sent_bytes_total%7Breporter%3D%22source%22%2Csource_workload%3D%22vm-client%22%7D"
    );
    let answer = tokio::task::spawn_blocking(move || {
        // Bounded: about 60 s for Prometheus to start, scrape and answer.
        for _ in 0..120 {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "2", &query])
                .output()
                .expect("curl runs");
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            if body.contains("\"destination_service_name\":\"echo\"") {
                return body;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("Prometheus never returned our series");
    })
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let result = &v["data"]["result"];
    assert_eq!(result.as_array().map(Vec::len), Some(1), "{answer}");
    assert_eq!(result[0]["metric"]["source_canonical_service"], "client");
    assert_eq!(result[0]["metric"]["job"], "vm-proxy");
    assert_eq!(result[0]["value"][1], "15", "{answer}");
}
