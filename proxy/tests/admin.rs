//! The admin server over real HTTP/1.1, including requests that are not HTTP at all.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vm_proxy::Proxy;

/// Sends raw request bytes and returns (status code, head, body).
async fn raw(admin: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = connect(admin).await;
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    bounded("response", s.read_to_end(&mut out)).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_owned(), body.to_owned())
}

async fn request(admin: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    raw(admin, req.as_bytes()).await
}

async fn admin_proxy() -> Proxy {
    let up = echo_server().await;
    let mut hidden = listener("virtual_9080", "c");
    hidden.bind_to_port = false;
    hidden.address = "0.0.0.0:9080".parse().unwrap();
    Proxy::start(
        snapshot(vec![listener("bound", "c"), hidden], vec![static_cluster("c", &[up])]),
        || serde_json::json!({"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"}]}),
        options(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_config_dump_and_listeners() {
    let proxy = admin_proxy().await;
    let admin = proxy.admin_address();
    let (code, head, body) = request(admin, "GET", "/ready").await;
    assert_eq!((code, body.as_str()), (200, "LIVE\n"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );

    let (code, head, body) = request(admin, "GET", "/config_dump").await;
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        dump["configs"][0]["@type"],
        "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"
    );

    let bound = addr(&proxy, "bound");
    let (code, _, body) = request(admin, "GET", "/listeners").await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        format!("bound::{bound}\nvirtual_9080::0.0.0.0:9080\n")
    );
    let (code, _, body) = request(admin, "GET", "/listeners?format=json").await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["listener_statuses"][0]["name"], "bound");
    assert_eq!(
        json["listener_statuses"][0]["local_address"]["socket_address"]["port_value"],
        bound.port()
    );
    assert_eq!(
        json["listener_statuses"][1]["local_address"]["socket_address"]["address"],
        "0.0.0.0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_fail_and_ok_flip_ready() {
    let proxy = admin_proxy().await;
    let admin = proxy.admin_address();
    assert_eq!(request(admin, "POST", "/healthcheck/fail").await.2, "OK\n");
    let (code, _, body) = request(admin, "GET", "/ready").await;
    assert_eq!((code, body.as_str()), (503, "DRAINING\n"));
    // Traffic still flows: failing health checks only tells load balancers to go away.
    let mut s = connect(addr(&proxy, "bound")).await;
    s.write_all(b"x\n").await.unwrap();
    assert_eq!(read_line(&mut s).await, "x");
    assert_eq!(request(admin, "POST", "/healthcheck/ok").await.0, 200);
    assert_eq!(request(admin, "GET", "/ready").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_asks_for_shutdown_and_drain_shows_in_ready() {
    let proxy = admin_proxy().await;
    let admin = proxy.admin_address();
    let waiting = proxy.clone();
    let quit = tokio::spawn(async move { waiting.quit_requested().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!quit.is_finished());
    assert_eq!(request(admin, "POST", "/quitquitquit").await.2, "OK\n");
    bounded("quit requested", quit).await.unwrap();
    proxy.start_drain().await;
    let (code, _, body) = request(admin, "GET", "/ready").await;
    assert_eq!((code, body.as_str()), (503, "DRAINING\n"));
    proxy.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "admin stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_and_unknown_paths() {
    let proxy = admin_proxy().await;
    let admin = proxy.admin_address();
    let (code, head, body) = request(admin, "GET", "/quitquitquit").await;
    assert_eq!(code, 405);
    assert_eq!(body, "Method GET not allowed, POST required.");
    assert!(head.to_ascii_lowercase().contains("allow: post"), "{head}");
    assert_eq!(request(admin, "GET", "/healthcheck/fail").await.0, 405);
    assert_eq!(request(admin, "DELETE", "/config_dump").await.0, 405);
    assert_eq!(request(admin, "PUT", "/ready").await.0, 405);
    // Nothing changed by the refused requests.
    assert_eq!(request(admin, "GET", "/ready").await.0, 200);

    let (code, _, body) = request(admin, "GET", "/no/such/thing").await;
    assert_eq!(code, 404);
    assert!(
        body.starts_with("invalid path. admin commands are:\n"),
        "{body}"
    );
    assert!(body.contains("/quitquitquit (POST)"));
    // Paths match exactly, query aside.
    assert_eq!(request(admin, "GET", "/readyz").await.0, 404);
    assert_eq!(request(admin, "GET", "/ready?verbose=1").await.0, 200);
    assert_eq!(request(admin, "HEAD", "/ready").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_never_take_the_server_down() {
    let proxy = admin_proxy().await;
    let admin = proxy.admin_address();
    let garbage: &[&[u8]] = &[
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /ready HTTP/9.9\r\n\r\n",
        b"GET /ready HTTP/1.1\r\nHost: a\r\nBroken header line\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
        b"GET /ready HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        &[0u8; 512],
    ];
    for g in garbage {
        let mut s = connect(admin).await;
        s.write_all(g).await.unwrap();
        let mut out = Vec::new();
        // hyper answers 400 (or just closes); the point is that the connection ends.
        let _ = bounded("rejection", s.read_to_end(&mut out)).await;
        if !out.is_empty() {
            let head = String::from_utf8_lossy(&out);
            assert!(
                head.starts_with("HTTP/1.1 4") || head.starts_with("HTTP/1.1 5"),
                "{head}"
            );
        }
    }
    // A client that connects and goes away, and one that stops half-way through its headers.
    drop(connect(admin).await);
    let mut half = connect(admin).await;
    half.write_all(b"GET /ready HTTP/1.1\r\nHo").await.unwrap();
    drop(half);
    // Still serving.
    assert_eq!(request(admin, "GET", "/ready").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_the_admin_server_through_a_proxied_listener() {
    // The default bootstrap's demo: a listener whose cluster is the admin server itself.
    let proxy = admin_proxy().await;
    let admin = proxy.admin_address();
    let up = echo_server().await;
    proxy
        .update(snapshot(
            vec![listener("bound", "c"), listener("admin_loopback", "admin")],
            vec![
                static_cluster("c", &[up]),
                static_cluster("admin", &[admin]),
            ],
        ))
        .await
        .unwrap();
    let via = addr(&proxy, "admin_loopback");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", &format!("http://{via}/ready")])
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "LIVE\n");
}
