//! Real redirection: iptables REDIRECT rules inside a network namespace of the test's own,
//! with the proxy running in that namespace. Covers SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST,
//! `use_original_dst` hand-off (exact and wildcard address), chains matched on the restored
//! destination, ORIGINAL_DST passthrough and Istio's inbound passthrough from 127.0.0.6.
//! Needs root (namespaces, iptables).

mod common;

use std::future::Future;
use std::net::SocketAddr;

use common::*;
use nix::sched::{CloneFlags, setns};
use test_support::netns::Netns;
use tokio::io::AsyncWriteExt;
use xds_client::model::{FilterChainMatch, Listener, ListenerFilter};

/// Runs `test` on a thread that entered `ns`'s network namespace, with a runtime of its own:
/// every socket it creates, the proxy's included, lives in that namespace.
fn inside<F, Fut>(ns: &Netns, test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let path = format!("/var/run/netns/{}", ns.name());
    let thread = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(test());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn hidden(name: &str, address: &str, cluster: &str) -> Listener {
    let mut l = listener(name, cluster);
    l.bind_to_port = false;
    l.address = address.parse().unwrap();
    l
}

fn bound(name: &str, address: &str, cluster: &str) -> Listener {
    let mut l = listener(name, cluster);
    l.address = address.parse().unwrap();
    l
}

fn at(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn ipv4_outbound_and_inbound_capture() {
    let ns = Netns::new("vmp-cap4");
    // As Istio does: whatever the proxy sends from 127.0.0.6 is not captured again.
    for rule in [
        "-A OUTPUT -p tcp -s 127.0.0.6/32 -j RETURN",
        "-A OUTPUT -p tcp -d 127.0.0.1 --dport 9003 -j REDIRECT --to-ports 15006",
        "-A OUTPUT -p tcp -d 127.0.0.1 --dport 9000:9004 -j REDIRECT --to-ports 15001",
    ] {
        let mut argv = vec!["iptables", "-w", "-t", "nat"];
        argv.extend(rule.split(' '));
        ns.run_ok(&argv);
    }
    inside(&ns, || async {
        named_echo_at(at("127.0.0.1:9000"), "app9000").await;
        named_echo_at(at("127.0.0.1:9101"), "svc").await;
        named_echo_at(at("127.0.0.1:9102"), "wild").await;
        peer_reporter_at(at("127.0.0.1:9003")).await;

        let mut outbound = bound("outbound", "127.0.0.1:15001", "PassthroughCluster");
        outbound.use_original_dst = true;
        outbound.filter_chains = vec![chain(
            "port-9000",
            FilterChainMatch {
                destination_port: Some(9000),
                ..Default::default()
            },
            tcp_proxy("PassthroughCluster"),
        )];
        outbound.default_filter_chain = Some(chain(
            "blackhole",
            FilterChainMatch::default(),
            tcp_proxy("BlackHoleCluster"),
        ));
        let inbound = with_filters(
            bound("inbound", "127.0.0.1:15006", "InboundPassthroughCluster"),
            &[ListenerFilter::OriginalDst],
        );
        let mut passthrough = original_dst_cluster("PassthroughCluster");
        passthrough.upstream_bind_address = Some(at("127.0.0.6:0"));
        let mut inbound_passthrough = original_dst_cluster("InboundPassthroughCluster");
        inbound_passthrough.upstream_bind_address = Some(at("127.0.0.6:0"));
        let proxy = start(snapshot(
            vec![
                outbound,
                inbound,
                hidden("127.0.0.1_9001", "127.0.0.1:9001", "svc"),
                hidden("0.0.0.0_9002", "0.0.0.0:9002", "wild"),
            ],
            vec![
                passthrough,
                inbound_passthrough,
                static_cluster("svc", &[at("127.0.0.1:9101")]),
                static_cluster("wild", &[at("127.0.0.1:9102")]),
                static_cluster("BlackHoleCluster", &[]),
            ],
        ))
        .await;

        // No listener for 9000: the outbound listener's own chain, matched on the restored
        // port, passes it through to where the client was going.
        let mut s = connect(at("127.0.0.1:9000")).await;
        assert_eq!(read_line(&mut s).await, "app9000");
        s.write_all(b"through\n").await.unwrap();
        assert_eq!(read_line(&mut s).await, "through");
        drop(s);
        // Hand-off to the listener for exactly 127.0.0.1:9001, and to 0.0.0.0:9002.
        assert_eq!(which_upstream(at("127.0.0.1:9001")).await, "svc");
        assert_eq!(which_upstream(at("127.0.0.1:9002")).await, "wild");
        // Redirected, no listener, no chain for its port: the default (blackhole) chain.
        let mut s = connect(at("127.0.0.1:9004")).await;
        assert!(closed_without_data(&mut s).await);
        // Inbound: the application sees the connection come from 127.0.0.6.
        assert_eq!(which_upstream(at("127.0.0.1:9003")).await, "127.0.0.6");
        // Straight to the capture port: conntrack knows the connection but nothing was
        // redirected, so there is no original destination and passthrough refuses.
        let mut s = connect(at("127.0.0.1:15001")).await;
        assert!(closed_without_data(&mut s).await);
        let mut s = connect(at("127.0.0.1:15006")).await;
        assert!(closed_without_data(&mut s).await);
        assert_eq!(proxy.shutdown().await.closed_at_deadline, 0);
    });
}

#[test]
fn ipv6_original_destination_and_hand_off() {
    let ns = Netns::new("vmp-cap6");
    ns.run_ok(&[
        "ip6tables",
        "-w",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "::1",
        "--dport",
        "9001",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);
    inside(&ns, || async {
        named_echo_at(at("[::1]:9101"), "svc6").await;
        let mut outbound = bound("outbound6", "[::1]:15001", "BlackHoleCluster");
        outbound.use_original_dst = true;
        let proxy = start(snapshot(
            vec![outbound, hidden("[::1]_9001", "[::1]:9001", "svc6")],
            vec![
                static_cluster("svc6", &[at("[::1]:9101")]),
                static_cluster("BlackHoleCluster", &[]),
            ],
        ))
        .await;
        assert_eq!(which_upstream(at("[::1]:9001")).await, "svc6");
        let mut s = connect(at("[::1]:15001")).await;
        assert!(closed_without_data(&mut s).await);
        assert_eq!(proxy.shutdown().await.closed_at_deadline, 0);
    });
}
