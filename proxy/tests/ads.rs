//! The proxy following the test control plane over ADS, with real traffic on loopback:
//! pushed listeners and clusters take traffic, EDS removals stop it, NACKs and control-plane
//! crashes leave flowing traffic alone.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{WAIT, bounded, connect, named_echo, read_line, which_upstream};
use serde_json::json;
use test_support::AdsServer;
use test_support::ads_server::resources::{
    any, assignment, eds_cluster, http_listener, route_config, static_cluster, tcp_listener,
    tcp_listener_json,
};
use test_support::ads_server::{LISTENER, ROUTE, Received};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use vm_proxy::Proxy;
use xds_client::ads::{AdsClient, AdsConfig, AdsStatus, Backoff, Protocol};
use xds_client::node::IstioNode;

const PROTOCOLS: [Protocol; 2] = [Protocol::Delta, Protocol::StateOfTheWorld];

struct Following {
    proxy: Proxy,
    status: watch::Receiver<Arc<AdsStatus>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(server: &AdsServer, protocol: Protocol) -> Following {
    let base = common::snapshot(Vec::new(), Vec::new());
    let proxy = common::start(base.clone()).await;
    let node = IstioNode {
        ip: Some("127.0.0.1".parse().unwrap()),
        name: "vm".into(),
        namespace: "test".into(),
        ..Default::default()
    };
    let mut config = AdsConfig::new(server.uri(), protocol, node.to_node());
    config.backoff = Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    let (client, status) = AdsClient::new(config, base);
    let task = vm_proxy::xds::follow(client, &proxy);
    Following {
        proxy,
        status,
        task,
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Waits until the listener `name` is bound (or, with `bound == false`, gone).
async fn listener_bound(proxy: &Proxy, name: &str, bound: bool) -> Option<SocketAddr> {
    bounded(&format!("listener {name} bound={bound}"), async {
        loop {
            let address = proxy.listener_address(name);
            if address.is_some() == bound {
                return address;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn answer(server: &AdsServer, type_url: &str, name: &str) -> Received {
    server
        .wait_for_answer(type_url, name, server.generation(), WAIT)
        .await
}

#[tokio::test]
async fn pushed_listeners_take_traffic_and_removed_ones_stop_accepting() {
    for protocol in PROTOCOLS {
        let server = AdsServer::start();
        let up = named_echo("one").await;
        server.set([static_cluster("up", &[up])]);
        let f = follow(&server, protocol).await;
        server.set([tcp_listener("pushed", any_port(), "up")]);
        let at = listener_bound(&f.proxy, "pushed", true).await.unwrap();
        assert_eq!(which_upstream(at).await, "one");
        assert!(answer(&server, LISTENER, "pushed").await.is_ack());

        server.remove(LISTENER, &["pushed"]);
        listener_bound(&f.proxy, "pushed", false).await;
        assert!(
            tokio::net::TcpStream::connect(at).await.is_err(),
            "{protocol:?}: removed listener still accepts"
        );
    }
}

#[tokio::test]
async fn an_endpoint_removed_by_eds_gets_no_more_traffic() {
    for protocol in PROTOCOLS {
        let server = AdsServer::start();
        let (a, b) = (named_echo("a").await, named_echo("b").await);
        server.set([eds_cluster("svc", "outbound|80||svc")]);
        server.set([assignment("outbound|80||svc", &[a, b])]);
        server.set([tcp_listener("front", any_port(), "svc")]);
        let mut f = follow(&server, protocol).await;
        let at = listener_bound(&f.proxy, "front", true).await.unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            seen.insert(which_upstream(at).await);
        }
        assert_eq!(
            seen.len(),
            2,
            "{protocol:?}: round robin over both: {seen:?}"
        );

        server.set([assignment("outbound|80||svc", &[b])]);
        let version = server.generation().to_string();
        bounded(
            "EDS update",
            f.status.wait_for(|s| {
                s.assignment("outbound|80||svc")
                    .is_some_and(|r| r.version == version)
            }),
        )
        .await
        .unwrap();
        for _ in 0..10 {
            assert_eq!(which_upstream(at).await, "b", "{protocol:?}");
        }
    }
}

#[tokio::test]
async fn a_nacked_listener_leaves_traffic_on_the_last_good_config() {
    for protocol in PROTOCOLS {
        let server = AdsServer::start();
        let up = named_echo("good").await;
        server.set([static_cluster("up", &[up])]);
        server.set([tcp_listener("front", any_port(), "up")]);
        let f = follow(&server, protocol).await;
        let at = listener_bound(&f.proxy, "front", true).await.unwrap();
        let mut open = connect(at).await;
        assert_eq!(read_line(&mut open).await, "good");

        let mut bad = tcp_listener_json("front", any_port(), "up");
        bad["filter_chains"][0]["filter_chain_match"] = json!({"server_names": ["a*b.example"]});
        server.set([any(bad)]);
        let nack = answer(&server, LISTENER, "front").await;
        assert!(nack.is_nack(), "{protocol:?}: {nack:?}");
        assert!(
            nack.error_message().contains("listener \"front\"")
                && nack.error_message().contains("a*b.example"),
            "{}",
            nack.error_message()
        );

        open.write_all(b"still here\n").await.unwrap();
        assert_eq!(read_line(&mut open).await, "still here");
        assert_eq!(f.proxy.listener_address("front"), Some(at));
        assert_eq!(which_upstream(at).await, "good");
    }
}

#[tokio::test]
async fn a_control_plane_crash_and_restart_loses_no_flowing_traffic() {
    for protocol in PROTOCOLS {
        let mut server = AdsServer::start();
        let up = named_echo("up").await;
        server.set([static_cluster("up", &[up])]);
        server.set([tcp_listener("front", any_port(), "up")]);
        let mut f = follow(&server, protocol).await;
        let at = listener_bound(&f.proxy, "front", true).await.unwrap();
        let mut open = connect(at).await;
        assert_eq!(read_line(&mut open).await, "up");

        server.kill();
        bounded("disconnect noticed", f.status.wait_for(|s| !s.connected))
            .await
            .unwrap();
        open.write_all(b"during\n").await.unwrap();
        assert_eq!(read_line(&mut open).await, "during");
        assert_eq!(which_upstream(at).await, "up", "new connections too");

        server.restart();
        server.set([tcp_listener("later", any_port(), "up")]);
        let later = listener_bound(&f.proxy, "later", true).await.unwrap();
        assert_eq!(which_upstream(later).await, "up");
        open.write_all(b"after\n").await.unwrap();
        assert_eq!(read_line(&mut open).await, "after");
        assert_eq!(f.proxy.listener_address("front"), Some(at));
    }
}

/// A bootstrap with `dynamic_resources` (as `vm-proxy run --config` loads it): the static
/// ADS cluster stays, the client follows the server it names, and `/config_dump` shows the
/// dynamic listeners and clusters with their versions.
#[tokio::test]
async fn a_bootstrap_with_ads_follows_its_server_and_dumps_dynamic_resources() {
    let server = AdsServer::start();
    let up = named_echo("dyn").await;
    server.set([static_cluster("up", &[up])]);
    server.set([
        tcp_listener("front", any_port(), "up"),
        http_listener("http", any_port(), "r"),
        route_config("r", "up"),
    ]);
    let bootstrap = json!({
        "node": {"id": "sidecar~127.0.0.1~vm.test~test.svc.cluster.local", "cluster": "vm.test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [{
            "name": "xds-grpc",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": server.address().port()}}}}
            ]}]},
        }]},
    });
    let path = std::env::temp_dir().join(format!("vm-proxy-ads-{}.json", std::process::id()));
    std::fs::write(&path, bootstrap.to_string()).unwrap();
    let loaded = vm_proxy::config::load(Some(&path));
    let _ = std::fs::remove_file(&path);
    let loaded = loaded.unwrap();
    let client = loaded.ads.expect("an ADS client");
    let dump = loaded.config_dump.clone();
    let proxy = Proxy::start(loaded.snapshot, move || dump(), common::options())
        .await
        .unwrap();
    let task = vm_proxy::xds::follow(client, &proxy);

    let at = listener_bound(&proxy, "front", true).await.unwrap();
    assert_eq!(which_upstream(at).await, "dyn");
    let ack = answer(&server, LISTENER, "front").await;
    assert!(ack.is_ack(), "{ack:?}");
    let first = &server.requests()[0];
    assert_eq!(
        first.node.as_ref().map(|n| n.id.as_str()),
        Some("sidecar~127.0.0.1~vm.test~test.svc.cluster.local")
    );

    let dump = (loaded.config_dump)();
    let configs = dump["configs"].as_array().unwrap();
    let of = |suffix: &str| {
        configs
            .iter()
            .find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(suffix)))
            .unwrap()
    };
    let listeners = &of(".ListenersConfigDump")["dynamic_listeners"];
    assert_eq!(listeners[0]["name"], "front", "{listeners}");
    assert_eq!(
        listeners[0]["active_state"]["version_info"],
        server.generation().to_string()
    );
    assert_eq!(listeners[0]["active_state"]["listener"]["name"], "front");
    let clusters = of(".ClustersConfigDump");
    assert_eq!(
        clusters["dynamic_active_clusters"][0]["cluster"]["name"],
        "up"
    );
    assert_eq!(
        clusters["static_clusters"][0]["cluster"]["name"],
        "xds-grpc"
    );
    // What RDS delivered, where `istioctl proxy-config route` reads it.
    let ack = answer(&server, ROUTE, "r").await;
    assert!(ack.is_ack(), "{ack:?}");
    let dump = bounded("route r in /config_dump", async {
        loop {
            let dump = (loaded.config_dump)();
            let has_route = dump["configs"].as_array().into_iter().flatten().any(|c| {
                c["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(".RoutesConfigDump"))
                    && c["dynamic_route_configs"][0]["route_config"]["name"] == "r"
            });
            if has_route {
                return dump;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let routes = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with(".RoutesConfigDump"))
        })
        .unwrap();
    let entry = &routes["dynamic_route_configs"][0];
    assert_eq!(
        entry["route_config"]["@type"],
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    );
    assert_eq!(
        entry["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"],
        "up"
    );
    assert!(entry["version_info"].is_string() && entry["last_updated"].is_string());
    task.abort();
}
