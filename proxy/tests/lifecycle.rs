//! Snapshot swaps and drains, with connections open across them.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use vm_proxy::{DrainOutcome, Error, Options};
use xds_client::model::ListenerFilter;

async fn refused(a: std::net::SocketAddr) -> bool {
    match bounded("connect", TcpStream::connect(a)).await {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

async fn wait_open(proxy: &vm_proxy::Proxy, n: usize) {
    bounded("open connection count", async {
        while proxy.open_connections() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_connection_outlives_the_start_of_a_drain() {
    let up = named_echo("up").await;
    let proxy = start(snapshot(
        vec![listener("l", "c")],
        vec![static_cluster("c", &[up])],
    ))
    .await;
    let at = addr(&proxy, "l");
    let mut s = connect(at).await;
    assert_eq!(read_line(&mut s).await, "up");

    let draining = proxy.clone();
    let drain = tokio::spawn(async move {
        draining.start_drain().await;
        draining.finish_drain().await
    });
    // New connections are refused once the listeners are closed...
    bounded("listener closed", async {
        while !refused(at).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(!drain.is_finished());
    // ...while the open one still carries data both ways, and ends when its client ends it.
    s.write_all(b"during drain\n").await.unwrap();
    assert_eq!(read_line(&mut s).await, "during drain");
    s.shutdown().await.unwrap();
    assert!(read_to_end(&mut s).await.is_empty());
    let outcome = bounded("drain finished", drain).await.unwrap();
    assert_eq!(
        outcome,
        DrainOutcome {
            closed_at_deadline: 0
        }
    );
    assert_eq!(proxy.open_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_still_open_at_the_drain_deadline_are_closed() {
    let up = named_echo("up").await;
    let proxy = start_with(
        snapshot(vec![listener("l", "c")], vec![static_cluster("c", &[up])]),
        Options {
            drain_timeout: Duration::from_millis(300),
            ..options()
        },
    )
    .await;
    let mut idle = connect(addr(&proxy, "l")).await;
    assert_eq!(read_line(&mut idle).await, "up");
    let outcome = bounded("drain", proxy.drain()).await;
    assert_eq!(
        outcome,
        DrainOutcome {
            closed_at_deadline: 1
        }
    );
    assert!(read_to_end(&mut idle).await.is_empty());
    assert_eq!(proxy.open_connections(), 0);
    // A drained proxy takes no new configuration.
    let again = snapshot(vec![listener("l", "c")], vec![static_cluster("c", &[up])]);
    assert!(matches!(
        proxy.update(again).await,
        Err(Error::Invalid { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_keeps_the_snapshot_it_was_accepted_under() {
    let old = named_echo("old").await;
    let new = named_echo("new").await;
    // The inspector waits for the client's first bytes, so the connection is accepted under
    // the first snapshot but chooses its chain only after the swap.
    let l = || with_filters(listener("l", "c"), &[ListenerFilter::HttpInspector]);
    let proxy = start(snapshot(vec![l()], vec![static_cluster("c", &[old])])).await;
    let at = addr(&proxy, "l");
    let mut early = connect(at).await;
    wait_open(&proxy, 1).await;

    proxy
        .update(snapshot(vec![l()], vec![static_cluster("c", &[new])]))
        .await
        .unwrap();
    // The listener was unchanged: same socket, no rebind.
    assert_eq!(addr(&proxy, "l"), at);
    early.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(read_line(&mut early).await, "old");
    let mut late = connect(at).await;
    late.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(read_line(&mut late).await, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_adds_and_removes_listeners() {
    let up = named_echo("up").await;
    let proxy = start(snapshot(
        vec![listener("stays", "c"), listener("goes", "c")],
        vec![static_cluster("c", &[up])],
    ))
    .await;
    let stays = addr(&proxy, "stays");
    let goes = addr(&proxy, "goes");
    let mut on_removed = connect(goes).await;
    assert_eq!(read_line(&mut on_removed).await, "up");

    proxy
        .update(snapshot(
            vec![listener("stays", "c"), listener("added", "c")],
            vec![static_cluster("c", &[up])],
        ))
        .await
        .unwrap();
    assert!(proxy.listener_address("goes").is_none());
    assert!(refused(goes).await, "a removed listener stops accepting");
    assert_eq!(which_upstream(stays).await, "up");
    assert_eq!(which_upstream(addr(&proxy, "added")).await, "up");
    // The removed listener's connection finishes normally.
    on_removed.write_all(b"still going\n").await.unwrap();
    assert_eq!(read_line(&mut on_removed).await, "still going");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_moves_to_its_new_address() {
    let up = named_echo("up").await;
    // A fixed address inside 127/8 that no other test uses, so the move can go back to it.
    let fixed: std::net::SocketAddr = "127.0.0.41:18080".parse().unwrap();
    let mut l = listener("l", "c");
    l.address = fixed;
    let proxy = start(snapshot(vec![l.clone()], vec![static_cluster("c", &[up])])).await;
    assert_eq!(addr(&proxy, "l"), fixed);
    let mut moved = l.clone();
    moved.address = "127.0.0.41:0".parse().unwrap();
    proxy
        .update(snapshot(vec![moved], vec![static_cluster("c", &[up])]))
        .await
        .unwrap();
    let now = addr(&proxy, "l");
    assert_ne!(now, fixed);
    assert!(refused(fixed).await);
    assert_eq!(which_upstream(now).await, "up");
    // And back: the old address is free again. Another listener took no part in it.
    proxy
        .update(snapshot(vec![l], vec![static_cluster("c", &[up])]))
        .await
        .unwrap();
    assert_eq!(addr(&proxy, "l"), fixed);
    assert_eq!(which_upstream(fixed).await, "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_snapshot_changes_nothing() {
    let up = named_echo("up").await;
    let proxy = start(snapshot(
        vec![listener("l", "c")],
        vec![static_cluster("c", &[up])],
    ))
    .await;
    let at = addr(&proxy, "l");
    // Its new listener wants an address that is taken by someone else.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut clash = listener("clash", "c");
    clash.address = taken.local_addr().unwrap();
    let other = named_echo("other").await;
    let err = proxy
        .update(snapshot(
            vec![listener("l", "c"), clash],
            vec![static_cluster("c", &[other])],
        ))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("listener clash")
            && message.contains(&taken.local_addr().unwrap().to_string()),
        "{message}"
    );
    assert!(proxy.listener_address("clash").is_none());
    assert_eq!(
        which_upstream(at).await,
        "up",
        "the previous snapshot is still active"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_cleanly_on_a_taken_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut l = listener("l", "c");
    l.address = taken.local_addr().unwrap();
    let err = vm_proxy::Proxy::start(
        snapshot(vec![l], vec![static_cluster("c", &[])]),
        || serde_json::Value::Null,
        options(),
    )
    .await
    .err()
    .expect("start fails");
    assert!(matches!(err, Error::Bind(_)), "{err}");
}
