//! Outlier detection on tcp_proxy through real loopback sockets: an endpoint that refuses
//! connections is ejected after its consecutive failures, and traffic goes to the others.

mod common;

use std::time::Duration;

use common::*;
use xds_client::model::OutlierDetection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_endpoint_is_ejected_after_consecutive_failures() {
    let up = named_echo("up").await;
    // A port nothing listens on: bind one, take its number, close it.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cluster = static_cluster("c", &[up, gone]);
    cluster.outlier_detection = Some(OutlierDetection {
        consecutive_5xx: 2,
        max_ejection_percent: 100,
        base_ejection_time: Duration::from_secs(60),
        ..OutlierDetection::default()
    });
    let proxy = start(snapshot(vec![listener("l", "c")], vec![cluster])).await;
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        let mut s = connect(addr(&proxy, "l")).await;
        outcomes.push(read_line(&mut s).await == "up");
    }
    let failed = outcomes.iter().filter(|ok| !**ok).count();
    assert_eq!(
        failed, 2,
        "two failures eject the refusing endpoint: {outcomes:?}"
    );
    let last_failure = outcomes.iter().rposition(|ok| !ok).unwrap();
    assert!(
        last_failure < 4,
        "after ejection every connection succeeds: {outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_outlier_detection_the_refusing_endpoint_keeps_its_share() {
    let up = named_echo("up").await;
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start(snapshot(
        vec![listener("l", "c")],
        vec![static_cluster("c", &[up, gone])],
    ))
    .await;
    let mut failed = 0;
    for _ in 0..20 {
        let mut s = connect(addr(&proxy, "l")).await;
        if read_line(&mut s).await != "up" {
            failed += 1;
        }
    }
    assert_eq!(failed, 10, "round robin over both endpoints");
}
